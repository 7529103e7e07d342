//! ClearingService (first part): close periods, statements, confirm and dispute.

use super::{Ctx, GrpcResult, mutating, respond};
use crate::domain::money::Amount;
use crate::domain::time::fmt_date;
use crate::proto::clearing_service_server::ClearingService;
use crate::proto::*;
use crate::service::clearing::{self, Period};
use crate::service::required_text;
use crate::store::clearing::{LineRow, StatementRow};
use tonic::{Request, Response};

mutating!(
    ClosePeriodRequest,
    ConfirmStatementRequest,
    DisputeLinesRequest
);

fn period_pb(p: Period) -> ClearingPeriod {
    ClearingPeriod {
        period: p.period,
        status: p.row.as_ref().map_or(PeriodStatus::Open as i32, |r| {
            i32::try_from(r.status).unwrap_or(0)
        }),
        closed_at: p
            .row
            .as_ref()
            .map(|r| r.closed_at.to_rfc3339())
            .unwrap_or_default(),
        confirm_deadline: p
            .row
            .as_ref()
            .map(|r| fmt_date(r.confirm_deadline))
            .unwrap_or_default(),
        statements: u32::try_from(p.statements).unwrap_or(0),
        confirmed_statements: u32::try_from(p.confirmed).unwrap_or(0),
    }
}

fn statement_pb(s: StatementRow) -> Statement {
    let a = |fen| Amount::from_fen(fen).to_string();
    Statement {
        statement_id: s.statement_id,
        period: s.period,
        home_region: s.home_region,
        treatment_region: s.treatment_region,
        clearing_type: i32::try_from(s.clearing_type).unwrap_or(0),
        status: i32::try_from(s.status).unwrap_or(0),
        line_count: u64::try_from(s.line_count).unwrap_or(0),
        medfee_sumamt: a(s.medfee_fen),
        fund_pay_sumamt: a(s.fund_fen),
        acct_pay: a(s.acct_fen),
        disputed_count: u64::try_from(s.disputed_count).unwrap_or(0),
        disputed_due: a(s.disputed_due_fen),
        due: a(s.due_fen),
        confirmed_at: s.confirmed_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
        lines: Vec::new(),
        next_page_token: String::new(),
    }
}

fn line_pb(l: LineRow) -> StatementLine {
    let a = |fen| Amount::from_fen(fen).to_string();
    StatementLine {
        setl_id: l.setl_id,
        reverses: l.reverses.unwrap_or_default(),
        medfee_sumamt: a(l.medfee_fen),
        fund_pay_sumamt: a(l.fund_fen),
        acct_pay: a(l.acct_fen),
        due: a(l.fund_fen + l.acct_fen),
        disputed: l.disputed,
        dispute_reason: l.dispute_reason.unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl ClearingService for Ctx {
    async fn close_period(&self, req: Request<ClosePeriodRequest>) -> GrpcResult<ClearingPeriod> {
        let (call, r) = self.call(req).await?;
        let out = crate::mutate!(self.app, &call, |conn, now| {
            clearing::close(conn, &call.principal, &r.period, r.confirm_days, now)
                .await
                .map(period_pb)
        });
        respond(out)
    }

    async fn get_period(&self, req: Request<GetPeriodRequest>) -> GrpcResult<ClearingPeriod> {
        let (who, mut conn) = self.read(&req).await?;
        respond(
            clearing::get(&mut conn, &who, &req.get_ref().period)
                .await
                .map(period_pb),
        )
    }

    async fn list_statements(
        &self,
        req: Request<ListStatementsRequest>,
    ) -> GrpcResult<ListStatementsResponse> {
        let (who, mut conn) = self.read(&req).await?;
        let r = req.get_ref();
        let page = clearing::list(&mut conn, &who, &r.period, r.page_size, &r.page_token).await?;
        Ok(Response::new(ListStatementsResponse {
            statements: page.items.into_iter().map(statement_pb).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn get_statement(&self, req: Request<GetStatementRequest>) -> GrpcResult<Statement> {
        let (who, mut conn) = self.read(&req).await?;
        let r = req.get_ref();
        let (s, page) =
            clearing::get_statement(&mut conn, &who, &r.statement_id, r.page_size, &r.page_token)
                .await?;
        let mut out = statement_pb(s);
        out.lines = page.items.into_iter().map(line_pb).collect();
        out.next_page_token = page.next_page_token;
        Ok(Response::new(out))
    }

    async fn confirm_statement(
        &self,
        req: Request<ConfirmStatementRequest>,
    ) -> GrpcResult<Statement> {
        let (call, r) = self.call(req).await?;
        let out = crate::mutate!(self.app, &call, |conn, now| {
            clearing::confirm(conn, &call.principal, &r.statement_id, now)
                .await
                .map(statement_pb)
        });
        respond(out)
    }

    async fn dispute_lines(&self, req: Request<DisputeLinesRequest>) -> GrpcResult<Statement> {
        let (call, r) = self.call(req).await?;
        let out = crate::mutate!(self.app, &call, |conn, _now| {
            let lines = r
                .lines
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    Ok((
                        l.setl_id.clone(),
                        required_text(&format!("lines[{i}].reason"), &l.reason, 256)?,
                    ))
                })
                .collect::<Result<Vec<_>, crate::service::AppError>>()?;
            clearing::dispute(conn, &call.principal, &r.statement_id, &lines)
                .await
                .map(statement_pb)
        });
        respond(out)
    }
}

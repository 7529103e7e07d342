//! ClearingService (first part): close periods, statements, confirm and dispute.

use super::{Ctx, GrpcResult, mutating, respond};
use crate::domain::money::Amount;
use crate::domain::time::fmt_date;
use crate::domain::time::parse_date;
use crate::proto::clearing_service_server::ClearingService;
use crate::proto::*;
use crate::service::clearing::{self, Period};
use crate::service::clearing_export;
use crate::service::{required_text, text};
use crate::store::clearing::{InstructionRow, LineRow, NetPositionRow, StatementRow};
use tonic::{Request, Response, Status};

mutating!(
    ClosePeriodRequest,
    ConfirmStatementRequest,
    DisputeLinesRequest,
    ResolveDisputeRequest,
    NetPeriodRequest,
    RecordTransferRequest,
    DepositPrepaymentRequest,
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
        deadline_action: p
            .row
            .as_ref()
            .map_or(0, |r| i32::try_from(r.deadline_action).unwrap_or(0)),
        netted_at: p
            .row
            .as_ref()
            .and_then(|r| r.netted_at)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default(),
        settled_at: p
            .row
            .as_ref()
            .and_then(|r| r.settled_at)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default(),
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
        auto_confirmed: s.auto_confirmed,
        overdue: s.overdue,
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
        dispute_state: i32::try_from(l.dispute_state).unwrap_or(0),
        follows: l.follows.unwrap_or_default(),
        carried_from: l.carried_from.unwrap_or_default(),
        carried_into: l.carried_into.unwrap_or_default(),
        resolution_note: l.resolution_note.unwrap_or_default(),
        resolved_at: l.resolved_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
    }
}

fn position_pb(p: NetPositionRow) -> NetPosition {
    let a = |fen| Amount::from_fen(fen).to_string();
    let (after, top_up) = (p.prepay_after_fen(), p.top_up());
    NetPosition {
        region: p.region,
        payable: a(p.payable_fen),
        receivable: a(p.receivable_fen),
        net: a(p.net_fen),
        prepay_before: a(p.prepay_before_fen),
        prepay_drawn: a(p.prepay_drawn_fen),
        prepay_after: a(after),
        warning_line: a(p.warning_line_fen),
        top_up,
    }
}

fn instruction_pb(t: InstructionRow) -> TransferInstruction {
    let a = |fen| Amount::from_fen(fen).to_string();
    TransferInstruction {
        recorded: t.recorded_at.is_some() || t.bank_fen == 0,
        instruction_id: t.instruction_id,
        period: t.period,
        seq: u32::try_from(t.seq).unwrap_or(0),
        payer: t.payer,
        receiver: t.receiver,
        amount: a(t.amount_fen),
        prepay: a(t.prepay_fen),
        bank: a(t.bank_fen),
        bank_reference: t.bank_reference.unwrap_or_default(),
        value_date: t.value_date.map(fmt_date).unwrap_or_default(),
        recorded_at: t.recorded_at.map(|x| x.to_rfc3339()).unwrap_or_default(),
    }
}

fn netting_pb(n: clearing::Netting) -> Netting {
    Netting {
        period: Some(period_pb(n.period)),
        positions: n.positions.into_iter().map(position_pb).collect(),
        instructions: n.instructions.into_iter().map(instruction_pb).collect(),
    }
}

fn prepayment_pb(p: clearing::Prepayment) -> Prepayment {
    let a = |fen| Amount::from_fen(fen).to_string();
    Prepayment {
        region: p.region,
        balance: a(p.balance_fen),
        warning_line: a(p.warning_line_fen),
        top_up: p.top_up,
        deposit_id: p.deposit.map(|d| d.deposit_id).unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl ClearingService for Ctx {
    async fn close_period(&self, req: Request<ClosePeriodRequest>) -> GrpcResult<ClearingPeriod> {
        let (call, r) = self.call(req).await?;
        let out = crate::mutate!(self.app, &call, |conn, now| {
            clearing::close(
                conn,
                &call.principal,
                &r.period,
                r.confirm_days,
                i64::from(r.deadline_action),
                &self.app.clearing,
                now,
            )
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
        let out = crate::mutate!(self.app, &call, |conn, now| {
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
            clearing::dispute(conn, &call.principal, &r.statement_id, &lines, now)
                .await
                .map(statement_pb)
        });
        respond(out)
    }

    async fn resolve_dispute(
        &self,
        req: Request<ResolveDisputeRequest>,
    ) -> GrpcResult<ResolveDisputeResponse> {
        let (call, r) = self.call(req).await?;
        let out = crate::mutate!(self.app, &call, |conn, now| {
            let note = text("note", &r.note, 256)?;
            clearing::resolve(
                conn,
                &call.principal,
                &r.statement_id,
                &r.setl_id,
                r.accept,
                &note,
                now,
            )
            .await
            .map(|(_, line, n)| ResolveDisputeResponse {
                line: Some(line_pb(line)),
                lines_resolved: u32::try_from(n).unwrap_or(u32::MAX),
            })
        });
        respond(out)
    }

    async fn list_disputes(
        &self,
        req: Request<ListDisputesRequest>,
    ) -> GrpcResult<ListDisputesResponse> {
        let (who, mut conn) = self.read(&req).await?;
        let r = req.get_ref();
        let page = clearing::disputes(
            &mut conn,
            &who,
            i64::from(r.state),
            r.page_size,
            &r.page_token,
        )
        .await?;
        Ok(Response::new(ListDisputesResponse {
            disputes: page
                .items
                .into_iter()
                .map(|(statement_id, setl_id, reason)| DisputeEntry {
                    statement_id,
                    setl_id,
                    reason,
                })
                .collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn net_period(&self, req: Request<NetPeriodRequest>) -> GrpcResult<Netting> {
        let (call, r) = self.call(req).await?;
        let out = crate::mutate!(self.app, &call, |conn, now| {
            clearing::net(conn, &call.principal, &r.period, &self.app.clearing, now)
                .await
                .map(netting_pb)
        });
        respond(out)
    }

    async fn get_netting(&self, req: Request<GetNettingRequest>) -> GrpcResult<Netting> {
        let (who, mut conn) = self.read(&req).await?;
        respond(
            clearing::get_netting(&mut conn, &who, &req.get_ref().period)
                .await
                .map(netting_pb),
        )
    }

    async fn record_transfer(
        &self,
        req: Request<RecordTransferRequest>,
    ) -> GrpcResult<RecordTransferResponse> {
        let (call, r) = self.call(req).await?;
        let out = crate::mutate!(self.app, &call, |conn, now| {
            let amount = Amount::parse("amount", &r.amount)?;
            let bank_reference = required_text("bank_reference", &r.bank_reference, 64)?;
            let value_date = parse_date("value_date", &r.value_date)?;
            clearing::record_transfer(
                conn,
                &call.principal,
                &r.instruction_id,
                amount.to_fen(),
                &bank_reference,
                value_date,
                now,
            )
            .await
            .map(|(ins, p)| RecordTransferResponse {
                instruction: Some(instruction_pb(ins)),
                period: Some(period_pb(p)),
            })
        });
        respond(out)
    }

    async fn deposit_prepayment(
        &self,
        req: Request<DepositPrepaymentRequest>,
    ) -> GrpcResult<Prepayment> {
        let (call, r) = self.call(req).await?;
        let out = crate::mutate!(self.app, &call, |conn, now| {
            let amount = Amount::parse("amount", &r.amount)?;
            let bank_reference = required_text("bank_reference", &r.bank_reference, 64)?;
            let value_date = parse_date("value_date", &r.value_date)?;
            clearing::deposit_prepayment(
                conn,
                &call.principal,
                &r.region,
                amount.to_fen(),
                &bank_reference,
                value_date,
                now,
            )
            .await
            .map(prepayment_pb)
        });
        respond(out)
    }

    async fn get_prepayment(&self, req: Request<GetPrepaymentRequest>) -> GrpcResult<Prepayment> {
        let (who, mut conn) = self.read(&req).await?;
        respond(
            clearing::get_prepayment(&mut conn, &who, &req.get_ref().region)
                .await
                .map(prepayment_pb),
        )
    }

    type ExportClearingStream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<CsvChunk, Status>> + Send>>;

    async fn export_clearing(
        &self,
        req: Request<ExportClearingRequest>,
    ) -> GrpcResult<Self::ExportClearingStream> {
        let who = self.principal(&req).await?;
        let r = req.into_inner();
        let region = clearing_export::authorize(&who, &r.period)?;
        let kind = clearing_export::Kind::from_proto(r.kind)?;
        let app = self.app.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut cursor = Some((String::new(), String::new()));
            while let Some(at) = cursor.take() {
                let chunk = async {
                    let mut conn = app.read().await?;
                    clearing_export::page(&mut conn, &r.period, &region, kind, at).await
                }
                .await;
                match chunk {
                    Ok((data, next)) => {
                        cursor = next;
                        if tx.send(Ok(CsvChunk { data })).await.is_err() {
                            return; // the client went away
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

//! ReconciliationService: totals (3201) and streamed detail (3202).

use super::{Ctx, GrpcResult};
use crate::domain::kinds::InsuranceType;
use crate::domain::money::Amount;
use crate::domain::time::parse_date;
use crate::proto::reconciliation_service_server::ReconciliationService;
use crate::proto::*;
use crate::service::AppError;
use crate::service::reconciliation::{self, Detail, Difference, Figures};
use crate::store::reconciliation::DetailRow as Row;
use std::collections::BTreeMap;
use std::pin::Pin;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Rows inserted per statement while their stream is read.
const BATCH: usize = 1000;

fn clearing(field: &str, v: i32) -> Result<i64, AppError> {
    match v {
        11 | 21 | 41 | 51 => Ok(i64::from(v)),
        0 => Err(AppError::invalid(field, "must be specified")),
        other => Err(AppError::invalid(
            field,
            format!("unknown clearing type {other}"),
        )),
    }
}

fn group(key: (i64, i64), f: Figures) -> TotalsGroup {
    let a = |fen| Amount::from_fen(fen).to_string();
    TotalsGroup {
        insurance_type: i32::try_from(key.0).unwrap_or(0),
        clearing_type: i32::try_from(key.1).unwrap_or(0),
        count: f.0,
        medfee_sumamt: a(f.1),
        fund_pay_sumamt: a(f.2),
        acct_pay: a(f.3),
        psn_cash_pay: a(f.4),
    }
}

fn parse_groups(groups: &[TotalsGroup]) -> Result<BTreeMap<(i64, i64), Figures>, AppError> {
    let mut theirs = BTreeMap::new();
    for (i, g) in groups.iter().enumerate() {
        let f = |name: &str| format!("groups[{i}].{name}");
        let key = (
            InsuranceType::parse(&f("insurance_type"), g.insurance_type)?.code(),
            clearing(&f("clearing_type"), g.clearing_type)?,
        );
        let figures = (
            g.count,
            reconciliation::fen(&f("medfee_sumamt"), &g.medfee_sumamt)?,
            reconciliation::fen(&f("fund_pay_sumamt"), &g.fund_pay_sumamt)?,
            reconciliation::fen(&f("acct_pay"), &g.acct_pay)?,
            reconciliation::fen(&f("psn_cash_pay"), &g.psn_cash_pay)?,
        );
        if theirs.insert(key, figures).is_some() {
            return Err(AppError::invalid(
                format!("groups[{i}]"),
                "the same group appears twice",
            ));
        }
    }
    Ok(theirs)
}

fn parse_row(i: usize, r: &DetailRow) -> Result<Row, AppError> {
    let f = |name: &str| format!("rows[{i}].{name}");
    if r.setl_id.is_empty() || r.setl_id.len() > 64 {
        return Err(AppError::invalid(f("setl_id"), "1..64 characters"));
    }
    Ok(Row {
        setl_id: r.setl_id.clone(),
        request_id: r.request_id.chars().take(64).collect(),
        medfee_fen: reconciliation::fen(&f("medfee_sumamt"), &r.medfee_sumamt)?,
        fund_fen: reconciliation::fen(&f("fund_pay_sumamt"), &r.fund_pay_sumamt)?,
        acct_fen: reconciliation::fen(&f("acct_pay"), &r.acct_pay)?,
        cash_fen: reconciliation::fen(&f("psn_cash_pay"), &r.psn_cash_pay)?,
        refund: r.refund,
    })
}

fn row_pb(r: Row) -> DetailRow {
    let a = |fen| Amount::from_fen(fen).to_string();
    DetailRow {
        setl_id: r.setl_id,
        request_id: r.request_id,
        medfee_sumamt: a(r.medfee_fen),
        fund_pay_sumamt: a(r.fund_fen),
        acct_pay: a(r.acct_fen),
        psn_cash_pay: a(r.cash_fen),
        refund: r.refund,
    }
}

fn difference_pb(d: Difference) -> DetailDifference {
    let kind = match (&d.ours, &d.theirs) {
        (None, _) => DifferenceKind::MissingOurs,
        (_, None) => DifferenceKind::MissingTheirs,
        _ => DifferenceKind::AmountMismatch,
    };
    DetailDifference {
        kind: kind as i32,
        setl_id: d.setl_id,
        ours: d.ours.map(row_pb),
        theirs: d.theirs.map(row_pb),
    }
}

/// Reads their rows into the comparison, then streams the differences.
async fn drive(
    detail: &mut Detail,
    input: &mut Streaming<DetailMessage>,
    tx: &tokio::sync::mpsc::Sender<Result<DetailDifference, Status>>,
) -> Result<(), Status> {
    let mut batch = Vec::with_capacity(BATCH);
    let mut i = 0usize;
    while let Some(msg) = input.message().await? {
        match msg.message {
            Some(detail_message::Message::Row(r)) => {
                batch.push(parse_row(i, &r)?);
                i += 1;
                if batch.len() == BATCH {
                    detail.add(&batch).await?;
                    batch.clear();
                }
            }
            _ => {
                return Err(
                    AppError::invalid("header", "only the first message is a header").into(),
                );
            }
        }
    }
    detail.add(&batch).await?;
    detail
        .differences(|d| {
            let tx = tx.clone();
            async move {
                tx.send(Ok(difference_pb(d)))
                    .await
                    .map_err(|_| AppError::Internal(anyhow::anyhow!("the client went away")))
            }
        })
        .await?;
    Ok(())
}

#[tonic::async_trait]
impl ReconciliationService for Ctx {
    async fn reconcile_totals(
        &self,
        req: Request<ReconcileTotalsRequest>,
    ) -> GrpcResult<ReconcileTotalsResponse> {
        let (who, mut conn) = self.read(&req).await?;
        let r = req.get_ref();
        let from = parse_date("from_date", &r.from_date).map_err(AppError::from)?;
        let to = parse_date("to_date", &r.to_date).map_err(AppError::from)?;
        let theirs = parse_groups(&r.groups)?;
        let compared = reconciliation::totals(&mut conn, &who, from, to, &theirs).await?;
        let groups: Vec<TotalsComparison> = compared
            .into_iter()
            .map(|(key, (ours, theirs))| TotalsComparison {
                insurance_type: i32::try_from(key.0).unwrap_or(0),
                clearing_type: i32::try_from(key.1).unwrap_or(0),
                ours: Some(group(key, ours)),
                theirs: Some(group(key, theirs)),
                matches: ours == theirs,
            })
            .collect();
        Ok(Response::new(ReconcileTotalsResponse {
            balanced: groups.iter().all(|g| g.matches),
            groups,
        }))
    }

    type ReconcileDetailStream =
        Pin<Box<dyn Stream<Item = Result<DetailDifference, Status>> + Send + 'static>>;

    async fn reconcile_detail(
        &self,
        req: Request<Streaming<DetailMessage>>,
    ) -> GrpcResult<Self::ReconcileDetailStream> {
        let who = self.principal(&req).await?;
        let mut input = req.into_inner();
        let header = match input.message().await?.and_then(|m| m.message) {
            Some(detail_message::Message::Header(h)) => h,
            _ => {
                return Err(
                    AppError::invalid("header", "the first message must be the header").into(),
                );
            }
        };
        let from = parse_date("header.from_date", &header.from_date).map_err(AppError::from)?;
        let to = parse_date("header.to_date", &header.to_date).map_err(AppError::from)?;
        let mut detail = Detail::open(&self.app.db, &who, from, to).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            let result = drive(&mut detail, &mut input, &tx).await;
            detail.close().await;
            if let Err(status) = result {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

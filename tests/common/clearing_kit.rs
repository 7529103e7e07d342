//! Helpers for the clearing tests: ClearingService clients as every principal, request
//! builders, and business-time moves (the server's clock, UTC+8 business dates).
#![allow(dead_code)]

use super::kit::*;
use super::*;
use chrono::NaiveDate;
use medsettle::domain::ids::{InstitutionCode, RegionCode};
use medsettle::proto;
use medsettle::proto::clearing_service_client::ClearingServiceClient;
use medsettle::proto::pharmacy_service_client::PharmacyServiceClient;
use medsettle::service::auth::Grant;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

// ------------------------------------------------------------------------------ clients

/// Adds `authorization: Bearer <token>` to every request (the pattern of kit.rs).
#[derive(Clone)]
pub struct Auth(pub MetadataValue<Ascii>);

impl Interceptor for Auth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

pub type Clr = ClearingServiceClient<InterceptedService<Channel, Auth>>;
pub type Pharm = PharmacyServiceClient<InterceptedService<Channel, Auth>>;

pub async fn auth(ts: &TestServer, grant: Grant) -> Auth {
    let token = ts.token(grant).await;
    Auth(format!("Bearer {token}").parse().expect("ASCII token"))
}

pub fn bureau_grant(region: &str) -> Grant {
    Grant::Bureau(RegionCode::parse("region", region).expect("region code"))
}

pub fn inst_grant(code: &str) -> Grant {
    Grant::Institution(InstitutionCode::parse("code", code).expect("institution code"))
}

pub async fn clr_as(ts: &TestServer, grant: Grant) -> Clr {
    ClearingServiceClient::with_interceptor(ts.channel.clone(), auth(ts, grant).await)
}

pub async fn pharm_as(ts: &TestServer, code: &str) -> Pharm {
    PharmacyServiceClient::with_interceptor(ts.channel.clone(), auth(ts, inst_grant(code)).await)
}

/// ClearingService as every principal the tests need.
pub struct Clients {
    pub op: Clr,
    pub wuhai: Clr,
    pub ordos: Clr,
    pub nx: Clr,
    pub beijing: Clr,
    pub hosp: Clr,
}

pub async fn clients(ts: &TestServer) -> Clients {
    Clients {
        op: clr_as(ts, Grant::Operator).await,
        wuhai: clr_as(ts, bureau_grant(WUHAI)).await,
        ordos: clr_as(ts, bureau_grant(ORDOS)).await,
        nx: clr_as(ts, bureau_grant(SHIZUISHAN)).await,
        beijing: clr_as(ts, bureau_grant(BEIJING)).await,
        hosp: clr_as(ts, inst_grant(HOSP)).await,
    }
}

// ------------------------------------------------------------------------------ calls

pub fn close_req(period: &str, confirm_days: u32) -> proto::ClosePeriodRequest {
    proto::ClosePeriodRequest {
        request_id: rid(),
        period: period.into(),
        confirm_days,
        deadline_action: 0,
    }
}

pub async fn close(c: &Clr, period: &str, confirm_days: u32) -> proto::ClearingPeriod {
    c.clone()
        .close_period(close_req(period, confirm_days))
        .await
        .must()
}

pub async fn get_period(c: &Clr, period: &str) -> proto::ClearingPeriod {
    c.clone()
        .get_period(proto::GetPeriodRequest {
            period: period.into(),
        })
        .await
        .must()
}

pub fn statements_req(
    period: &str,
    page_size: u32,
    page_token: &str,
) -> proto::ListStatementsRequest {
    proto::ListStatementsRequest {
        period: period.into(),
        page_size,
        page_token: page_token.into(),
    }
}

/// Every statement of `period` `c` sees (one page of up to 1000).
pub async fn statements(c: &Clr, period: &str) -> Vec<proto::Statement> {
    let r = c
        .clone()
        .list_statements(statements_req(period, 1000, ""))
        .await
        .must();
    assert_eq!(r.next_page_token, "");
    r.statements
}

pub fn get_req(id: &str, page_size: u32, page_token: &str) -> proto::GetStatementRequest {
    proto::GetStatementRequest {
        statement_id: id.into(),
        page_size,
        page_token: page_token.into(),
    }
}

/// A statement with all its lines (one page of up to 1000).
pub async fn statement(c: &Clr, id: &str) -> proto::Statement {
    let s = c.clone().get_statement(get_req(id, 1000, "")).await.must();
    assert_eq!(s.next_page_token, "");
    s
}

pub fn confirm_req(id: &str) -> proto::ConfirmStatementRequest {
    proto::ConfirmStatementRequest {
        request_id: rid(),
        statement_id: id.into(),
    }
}

pub fn dispute_req(id: &str, lines: &[(&str, &str)]) -> proto::DisputeLinesRequest {
    proto::DisputeLinesRequest {
        request_id: rid(),
        statement_id: id.into(),
        lines: lines
            .iter()
            .map(|(setl_id, reason)| proto::DisputedLine {
                setl_id: (*setl_id).into(),
                reason: (*reason).into(),
            })
            .collect(),
    }
}

// ------------------------------------------------------------------------------ time

/// The server's business date (UTC+8).
pub fn biz_today(ts: &TestServer) -> NaiveDate {
    (ts.app.clock.now() + chrono::Duration::hours(8)).date_naive()
}

pub fn period_of(d: NaiveDate) -> String {
    d.format("%Y%m").to_string()
}

pub fn first_of(period: &str) -> NaiveDate {
    let y = period[..4].parse().expect("year");
    let m = period[4..].parse().expect("month");
    NaiveDate::from_ymd_opt(y, m, 1).expect("a month")
}

pub fn next_period(period: &str) -> String {
    period_of(first_of(period) + chrono::Months::new(1))
}

pub fn prev_period(period: &str) -> String {
    period_of(first_of(period) - chrono::Months::new(1))
}

/// Moves business time forward to `to` (no-op if already there or later).
pub fn advance_to(ts: &TestServer, to: NaiveDate) {
    let today = biz_today(ts);
    if today < to {
        ts.app
            .clock
            .advance(chrono::Duration::days((to - today).num_days()));
    }
    assert!(biz_today(ts) >= to);
}

/// Moves business time to the 2nd of the month after `period`: the first day it may close.
pub fn advance_past(ts: &TestServer, period: &str) {
    let second = first_of(&next_period(period)) + chrono::Days::new(1);
    advance_to(ts, second);
}

// ------------------------------------------------------------------------------ netting calls

pub async fn net(c: &Clr, period: &str) -> proto::Netting {
    c.clone()
        .net_period(proto::NetPeriodRequest {
            request_id: rid(),
            period: period.into(),
        })
        .await
        .must()
}

pub async fn netting(c: &Clr, period: &str) -> proto::Netting {
    c.clone()
        .get_netting(proto::GetNettingRequest {
            period: period.into(),
        })
        .await
        .must()
}

pub fn deposit_prepay_req(
    region: &str,
    amount: &str,
    bank_reference: &str,
) -> proto::DepositPrepaymentRequest {
    proto::DepositPrepaymentRequest {
        request_id: rid(),
        region: region.into(),
        amount: amount.into(),
        bank_reference: bank_reference.into(),
        value_date: "2026-11-27".into(),
    }
}

pub async fn deposit_prepay(
    c: &Clr,
    region: &str,
    amount: &str,
    bank_reference: &str,
) -> proto::Prepayment {
    c.clone()
        .deposit_prepayment(deposit_prepay_req(region, amount, bank_reference))
        .await
        .must()
}

pub async fn prepayment(c: &Clr, region: &str) -> proto::Prepayment {
    c.clone()
        .get_prepayment(proto::GetPrepaymentRequest {
            region: region.into(),
        })
        .await
        .must()
}

pub fn transfer_req(
    instruction_id: &str,
    amount: &str,
    bank_reference: &str,
) -> proto::RecordTransferRequest {
    proto::RecordTransferRequest {
        request_id: rid(),
        instruction_id: instruction_id.into(),
        amount: amount.into(),
        bank_reference: bank_reference.into(),
        value_date: "2026-12-20".into(),
    }
}

pub async fn record_transfer(
    c: &Clr,
    instruction_id: &str,
    amount: &str,
    bank_reference: &str,
) -> proto::RecordTransferResponse {
    c.clone()
        .record_transfer(transfer_req(instruction_id, amount, bank_reference))
        .await
        .must()
}

pub fn resolve_req(
    statement_id: &str,
    setl_id: &str,
    accept: bool,
    note: &str,
) -> proto::ResolveDisputeRequest {
    proto::ResolveDisputeRequest {
        request_id: rid(),
        statement_id: statement_id.into(),
        setl_id: setl_id.into(),
        accept,
        note: note.into(),
    }
}

pub async fn resolve(
    c: &Clr,
    statement_id: &str,
    setl_id: &str,
    accept: bool,
    note: &str,
) -> proto::ResolveDisputeResponse {
    c.clone()
        .resolve_dispute(resolve_req(statement_id, setl_id, accept, note))
        .await
        .must()
}

/// The whole CSV export of `kind` for `period`, as `c` sees it.
pub async fn export(c: &Clr, period: &str, kind: proto::ExportKind) -> String {
    let mut stream = c
        .clone()
        .export_clearing(proto::ExportClearingRequest {
            period: period.into(),
            kind: kind as i32,
        })
        .await
        .must();
    let mut out = String::new();
    while let Some(chunk) = stream.message().await.expect("export chunk") {
        out.push_str(&chunk.data);
    }
    out
}

/// (region, net) of a netting's positions.
pub fn nets(n: &proto::Netting) -> Vec<(String, String)> {
    n.positions
        .iter()
        .map(|p| (p.region.clone(), p.net.clone()))
        .collect()
}

/// (payer, receiver, amount, prepay, bank) of a netting's instructions, in order.
pub fn instructions(n: &proto::Netting) -> Vec<(String, String, String, String, String)> {
    n.instructions
        .iter()
        .map(|i| {
            (
                i.payer.clone(),
                i.receiver.clone(),
                i.amount.clone(),
                i.prepay.clone(),
                i.bank.clone(),
            )
        })
        .collect()
}

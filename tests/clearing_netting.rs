//! ClearingService end to end, second part: the treatment bureau's resolution of disputes
//! (accepted lines carried into the next period, rejected lines out for good, reversals that
//! follow a dispute), the confirmation deadline (auto-confirm or flag), netting with prepayment
//! draw-down and warning line, recorded transfers, the period state machine up to SETTLED, and
//! the CSV exports.
//!
//! Business time is the server's clock (`ts.app.clock`): settlements are made "now" and land in
//! the current month P; the clock then moves to the 2nd of the following month, the first day P
//! may close; settlements made after that land in P+1, and so on. Every figure is hand-computed
//! in the comments. Every test builds its own world over gRPC and runs on SQLite and on
//! PostgreSQL; LedgerService/Verify must pass after every phase.
//!
//! The world (see [`world3`]): regions Wuhai 150300, Ordos 150600, Shizuishan 640200 and
//! Beijing 110000 (a bureau that is party to nothing); H15060000001 (Ordos) and H64020000001
//! (Shizuishan), both level 3 with the catalogue of `ordos_items`; Wuhai and Ordos employees
//! insured under the same policy: inpatient ratio 0.80, no deductible, no cap. Every bill here
//! is an inpatient stay of A001 (class A, no cap) × 1 at price X:
//!   fund = X × 0.80; personal part = X × 0.20 (account if used, else cash); due = fund + account.

#[macro_use]
mod common;

use common::clearing_kit::*;
use common::kit::*;
use common::*;
use medsettle::proto;
use proto::{
    CareType, DeadlineAction, DeductibleBasis, DisputeState, ExportKind, FilingType, InsuranceType,
    LevelScope, PeriodStatus, PersonCategory, ProvinceScope, StatementStatus,
};
use tonic::Code;

both_engines!(
    dispute_accepted_joins_next_period,
    dispute_rejected_then_reversed_is_not_double_counted,
    dispute_pending_when_reversed_then_resolved,
    dispute_accepted_then_reversed_before_next_close,
    resolve_validation_and_permissions,
    deadline_auto_confirm,
    deadline_flag,
    netting_state_machine,
    prepayment_draw_down_and_warning,
    netting_visibility_and_export,
    reversal_on_same_statement_follows_dispute,
    accepted_line_is_not_carried_into_an_earlier_period,
    dispute_refused_once_the_reversal_is_cleared,
    upgrade_to_derived_lines_keeps_statements,
);

// ------------------------------------------------------------------------------ the world

/// The Ordos person's national ID area (Dongsheng district).
const ORDOS_AREA: &str = "150602";

fn rule(care: CareType, ratio: &str) -> proto::PolicyRule {
    proto::PolicyRule {
        insurance_type: InsuranceType::Employee as i32,
        category: PersonCategory::Active as i32,
        care_type: care as i32,
        level: LevelScope::Any as i32,
        province_scope: ProvinceScope::Any as i32,
        deductible_basis: DeductibleBasis::PerAdmission as i32,
        deductible: "0.00".into(),
        repeat_admission_deductible: String::new(),
        ratio: ratio.into(),
        annual_cap: String::new(),
        critical_illness: None,
        assistance: None,
    }
}

/// Employees inpatient 0.80, outpatient 0.50; no deductible, no cap; filing required.
fn policy() -> proto::PolicyBody {
    proto::PolicyBody {
        rules: vec![
            rule(CareType::Inpatient, "0.80"),
            rule(CareType::Outpatient, "0.50"),
        ],
        filing_reductions: vec![],
        unfiled_allowed: false,
        unfiled_reduction: None,
        account_pays_class_c: false,
        pharmacy_national: false,
    }
}

async fn file_to(bureau: &Caller, p: &Psn, destination: &str) {
    bureau
        .fil()
        .file_filing(proto::FileFilingRequest {
            request_id: rid(),
            psn_no: p.psn_no.clone(),
            filing_type: FilingType::LongTermResident as i32,
            destination: destination.into(),
            valid_from: String::new(),
            valid_until: String::new(),
            referring_institution: String::new(),
        })
        .await
        .must();
}

struct W {
    ts: TestServer,
    c: Clients,
    /// Registry / ledger operator.
    op: Caller,
    /// SettlementService as H15060000001 (Ordos).
    h: Setl,
    /// SettlementService as H64020000001 (Shizuishan).
    nx_h: Setl,
    /// Wuhai employees filed to Ordos, 300.00 in the account each.
    wo: Vec<Psn>,
    /// A Wuhai employee filed to Shizuishan (account 300.00).
    wn: Psn,
    /// An Ordos employee filed to Shizuishan (account 300.00).
    on: Psn,
    /// The month everything settled before the first clock move lands in.
    p: String,
}

async fn world3(b: Backend) -> W {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    create_region(&w.op, BEIJING).await;
    register(&w, HOSP_NX, SHIZUISHAN, 3).await;
    catalogue(&w.nx, SHIZUISHAN, ordos_items()).await;
    put_policy(&w.wuhai, WUHAI, JAN1, policy()).await;
    put_policy(&w.ordos, ORDOS, JAN1, policy()).await;
    let mut wo = Vec::new();
    for seq in 1..=4 {
        let p = wuhai_employee(&w, seq, "300.00").await;
        file_to(&w.wuhai, &p, ORDOS).await;
        wo.push(p);
    }
    let wn = wuhai_employee(&w, 5, "300.00").await;
    file_to(&w.wuhai, &wn, SHIZUISHAN).await;
    let on = enrol(
        &w.ordos,
        employee(&national_id(ORDOS_AREA, "19850101", 1), ORDOS, "300.00"),
    )
    .await;
    file_to(&w.ordos, &on, SHIZUISHAN).await;
    W {
        c: clients(&ts).await,
        op: w.op,
        h: w.h,
        nx_h: hosp(&ts, HOSP_NX).await,
        wo,
        wn,
        on,
        p: period_of(biz_today(&ts)),
        ts,
    }
}

/// An inpatient stay today (server date): A001 × 1 at `price`, settled.
async fn stay(h: &Setl, p: &Psn, price: &str, use_account: bool) -> proto::Settlement {
    let v = open(
        h,
        &p.national_id,
        InsuranceType::Employee,
        CareType::Inpatient,
        "",
    )
    .await;
    upload(h, &v.mdtrt_id, vec![line("1", "A001", "1", price)]).await;
    settle(h, &v.mdtrt_id, use_account).await
}

/// medfee_sumamt, fund_pay_sumamt, acct_pay, psn_cash_pay.
fn four(s: &proto::Settlement) -> [&str; 4] {
    [
        &s.medfee_sumamt,
        &s.fund_pay_sumamt,
        &s.acct_pay,
        &s.psn_cash_pay,
    ]
}

#[track_caller]
fn landed(ss: &[&proto::Settlement], period: &str) {
    for s in ss {
        assert_eq!(
            s.clearing_period, period,
            "{} landed in another period (the run straddled a month end?)",
            s.setl_id
        );
    }
}

/// The inpatient statement of `home` → `treat` in `period`.
fn st(period: &str, home: &str, treat: &str) -> String {
    format!("ST{period}-{home}-{treat}-21")
}

fn tr(period: &str, seq: u32) -> String {
    format!("TR{period}-{seq:03}")
}

/// Moves business time forward by `days`.
fn days(ts: &TestServer, days: i64) {
    ts.app.clock.advance(chrono::Duration::days(days));
}

/// The period and its statements as an operator sees them.
async fn period_state(c: &Clr, period: &str) -> (i32, u32, u32) {
    let g = get_period(c, period).await;
    (g.status, g.statements, g.confirmed_statements)
}

/// status, line_count, medfee, fund, acct, disputed_count, disputed_due, due.
type Fig = (i32, u64, String, String, String, u64, String, String);

fn fig(s: &proto::Statement) -> Fig {
    (
        s.status,
        s.line_count,
        s.medfee_sumamt.clone(),
        s.fund_pay_sumamt.clone(),
        s.acct_pay.clone(),
        s.disputed_count,
        s.disputed_due.clone(),
        s.due.clone(),
    )
}

fn fg(
    status: StatementStatus,
    lines: u64,
    [medfee, fund, acct]: [&str; 3],
    disputed: (u64, &str),
    due: &str,
) -> Fig {
    (
        status as i32,
        lines,
        medfee.into(),
        fund.into(),
        acct.into(),
        disputed.0,
        disputed.1.into(),
        due.into(),
    )
}

/// The undisputed line of settlement `s` with its hand-computed `due`.
fn line_of(s: &proto::Settlement, due: &str) -> proto::StatementLine {
    proto::StatementLine {
        setl_id: s.setl_id.clone(),
        reverses: s.reverses.clone(),
        medfee_sumamt: s.medfee_sumamt.clone(),
        fund_pay_sumamt: s.fund_pay_sumamt.clone(),
        acct_pay: s.acct_pay.clone(),
        due: due.into(),
        ..Default::default()
    }
}

fn sorted(mut v: Vec<proto::StatementLine>) -> Vec<proto::StatementLine> {
    v.sort_by(|a, b| a.setl_id.cmp(&b.setl_id));
    v
}

/// The line of `setl_id` on a statement.
fn line_on<'a>(s: &'a proto::Statement, setl_id: &str) -> &'a proto::StatementLine {
    s.lines
        .iter()
        .find(|l| l.setl_id == setl_id)
        .unwrap_or_else(|| panic!("{setl_id} is not on {}", s.statement_id))
}

fn pos(
    region: &str,
    [payable, receivable, net]: [&str; 3],
    [before, drawn, after, warning]: [&str; 4],
    top_up: bool,
) -> proto::NetPosition {
    proto::NetPosition {
        region: region.into(),
        payable: payable.into(),
        receivable: receivable.into(),
        net: net.into(),
        prepay_before: before.into(),
        prepay_drawn: drawn.into(),
        prepay_after: after.into(),
        warning_line: warning.into(),
        top_up,
    }
}

/// (instruction_id, seq, payer, receiver, amount, prepay, bank, recorded).
type Tr = (String, u32, String, String, String, String, String, bool);

fn trs(n: &proto::Netting) -> Vec<Tr> {
    n.instructions
        .iter()
        .map(|i| {
            (
                i.instruction_id.clone(),
                i.seq,
                i.payer.clone(),
                i.receiver.clone(),
                i.amount.clone(),
                i.prepay.clone(),
                i.bank.clone(),
                i.recorded,
            )
        })
        .collect()
}

fn t(
    period: &str,
    seq: u32,
    payer: &str,
    receiver: &str,
    [amount, prepay, bank]: [&str; 3],
    recorded: bool,
) -> Tr {
    (
        tr(period, seq),
        seq,
        payer.into(),
        receiver.into(),
        amount.into(),
        prepay.into(),
        bank.into(),
        recorded,
    )
}

/// Journal balances of `accounts`, as (account, balance).
async fn balances(op: &Caller, accounts: &[&str]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for a in accounts {
        out.push(((*a).to_owned(), balance(op, a).await.balance));
    }
    out
}

fn want(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

async fn disputes(c: &Clr, state: DisputeState) -> Vec<(String, String, String)> {
    let r = c
        .clone()
        .list_disputes(proto::ListDisputesRequest {
            state: state as i32,
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .must();
    assert_eq!(r.next_page_token, "");
    r.disputes
        .into_iter()
        .map(|d| (d.statement_id, d.setl_id, d.reason))
        .collect()
}

fn entry(statement_id: &str, setl_id: &str, reason: &str) -> (String, String, String) {
    (statement_id.into(), setl_id.into(), reason.into())
}

async fn dispute(c: &Clr, statement_id: &str, lines: &[(&str, &str)]) -> proto::Statement {
    c.clone()
        .dispute_lines(dispute_req(statement_id, lines))
        .await
        .must()
}

async fn confirm(c: &Clr, statement_id: &str) -> proto::Statement {
    let s = c
        .clone()
        .confirm_statement(confirm_req(statement_id))
        .await
        .must();
    assert_eq!(s.status, StatementStatus::Confirmed as i32);
    s
}

fn close_with(
    period: &str,
    confirm_days: u32,
    action: DeadlineAction,
) -> proto::ClosePeriodRequest {
    proto::ClosePeriodRequest {
        deadline_action: action as i32,
        ..close_req(period, confirm_days)
    }
}

/// The server's deadline timer, run once now.
async fn timer(ts: &TestServer) -> Vec<String> {
    medsettle::service::clearing::run_deadlines(&ts.app)
        .await
        .expect("the deadline timer runs")
}

#[track_caller]
fn rfc3339_on(s: &str, day: chrono::NaiveDate) {
    let at = chrono::DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
    assert_eq!(
        (at.with_timezone(&chrono::Utc) + chrono::Duration::hours(8)).date_naive(),
        day,
        "{s} is not on business date {day}"
    );
}

/// The three flows of one month (everything account off):
///   a  Wuhai wo[0] at H15060000001: 1250.00 → fund 1000.00, cash 250.00; due W→O 1000.00
///   b  Wuhai wn at H64020000001:     500.00 → fund  400.00, cash 100.00; due W→NX 400.00
///   c  Ordos on at H64020000001:    2000.00 → fund 1600.00, cash 400.00; due O→NX 1600.00
/// Positions: Wuhai payable 1000.00 + 400.00 = 1400.00, net −1400.00;
///            Ordos payable 1600.00, receivable 1000.00, net −600.00;
///            Shizuishan receivable 400.00 + 1600.00 = 2000.00, net +2000.00 (sum 0.00).
/// Instructions (payers by amount desc: Wuhai 1400.00, Ordos 600.00; one receiver):
///   001 Wuhai → Shizuishan 1400.00; 002 Ordos → Shizuishan 600.00 (2 ≤ 3 − 1).
async fn three_flows(w: &W) -> [proto::Settlement; 3] {
    let a = stay(&w.h, &w.wo[0], "1250.00", false).await;
    assert_eq!(four(&a), ["1250.00", "1000.00", "0.00", "250.00"]);
    let b = stay(&w.nx_h, &w.wn, "500.00", false).await;
    assert_eq!(four(&b), ["500.00", "400.00", "0.00", "100.00"]);
    let c = stay(&w.nx_h, &w.on, "2000.00", false).await;
    assert_eq!(four(&c), ["2000.00", "1600.00", "0.00", "400.00"]);
    assert_eq!(
        (c.home_region.as_str(), c.treatment_region.as_str()),
        (ORDOS, SHIZUISHAN)
    );
    [a, b, c]
}

/// The three statements of [`three_flows`], in id order.
fn three_ids(p: &str) -> [String; 3] {
    [
        st(p, WUHAI, ORDOS),
        st(p, WUHAI, SHIZUISHAN),
        st(p, ORDOS, SHIZUISHAN),
    ]
}

/// Every clearing account of the three bureaus.
const CLEARING_ACCOUNTS: [&str; 10] = [
    "due:150300->150600",
    "due:150300->640200",
    "due:150600->640200",
    "advance:150600",
    "advance:640200",
    "net:150300",
    "net:150600",
    "net:640200",
    "prepay:150300",
    "prepay:150600",
];

// ------------------------------------------------------------------------------ disputes

async fn dispute_accepted_joins_next_period(b: Backend) {
    let w = world3(b).await;
    let p = w.p.clone();
    let q = next_period(&p);
    // P, Wuhai patients at H15060000001 (Ordos):
    //   s1  wo[0] 1250.00, account off: fund 1000.00, cash 250.00; due 1000.00
    //   s2  wo[1] 500.00, account on (300.00): fund 400.00; personal 100.00 all from the
    //       account (class A); cash 0.00; due 400.00 + 100.00 = 500.00
    let s1 = stay(&w.h, &w.wo[0], "1250.00", false).await;
    assert_eq!(four(&s1), ["1250.00", "1000.00", "0.00", "250.00"]);
    let s2 = stay(&w.h, &w.wo[1], "500.00", true).await;
    assert_eq!(four(&s2), ["500.00", "400.00", "100.00", "0.00"]);
    landed(&[&s1, &s2], &p);

    advance_past(&w.ts, &p);
    let day = biz_today(&w.ts);
    assert_eq!(close(&w.c.op, &p, 0).await.statements, 1);
    let sp = st(&p, WUHAI, ORDOS);
    // Statement: 1750.00 / 1400.00 / 100.00, due 1500.00.
    assert_eq!(
        fig(&statement(&w.c.op, &sp).await),
        fg(
            StatementStatus::Pending,
            2,
            ["1750.00", "1400.00", "100.00"],
            (0, "0.00"),
            "1500.00"
        )
    );

    // Wuhai disputes s1: out of the figures → 500.00 / 400.00 / 100.00, due 500.00.
    let d = dispute(
        &w.c.wuhai,
        &sp,
        &[(s1.setl_id.as_str(), "patient not admitted")],
    )
    .await;
    assert_eq!(
        fig(&d),
        fg(
            StatementStatus::Pending,
            2,
            ["500.00", "400.00", "100.00"],
            (1, "1000.00"),
            "500.00"
        )
    );
    assert_eq!(
        disputes(&w.c.ordos, DisputeState::Disputed).await,
        [entry(&sp, &s1.setl_id, "patient not admitted")]
    );
    verify_ok(&w.ts).await;

    // Ordos (the treatment bureau) accepts: the line stays out of P, ACCEPTED.
    let r = resolve(
        &w.c.ordos,
        &sp,
        &s1.setl_id,
        true,
        "admission records found",
    )
    .await;
    assert_eq!(r.lines_resolved, 1);
    let resolved = r.line.expect("the resolved line");
    rfc3339_on(&resolved.resolved_at, day);
    assert_eq!(
        resolved,
        proto::StatementLine {
            disputed: true,
            dispute_reason: "patient not admitted".into(),
            dispute_state: DisputeState::Accepted as i32,
            resolution_note: "admission records found".into(),
            resolved_at: resolved.resolved_at.clone(),
            ..line_of(&s1, "1000.00")
        }
    );
    let after = statement(&w.c.wuhai, &sp).await;
    assert_eq!(
        fig(&after),
        fig(&d),
        "an accepted line stays out of its period"
    );
    assert_eq!(line_on(&after, &s1.setl_id), &resolved);
    assert!(disputes(&w.c.op, DisputeState::Disputed).await.is_empty());
    assert_eq!(
        disputes(&w.c.wuhai, DisputeState::Accepted).await,
        [entry(&sp, &s1.setl_id, "patient not admitted")]
    );
    assert!(
        disputes(&w.c.beijing, DisputeState::Accepted)
            .await
            .is_empty()
    );

    // P confirmed at 500.00 and netted: Wuhai −500.00, Ordos +500.00, one transfer.
    assert_eq!(confirm(&w.c.wuhai, &sp).await.due, "500.00");
    assert_eq!(
        period_state(&w.c.op, &p).await,
        (PeriodStatus::Confirmed as i32, 1, 1)
    );
    let n = net(&w.c.op, &p).await;
    assert_eq!(
        nets(&n),
        [
            (WUHAI.to_owned(), "-500.00".to_owned()),
            (ORDOS.to_owned(), "500.00".to_owned())
        ]
    );
    assert_eq!(
        trs(&n),
        [t(&p, 1, WUHAI, ORDOS, ["500.00", "0.00", "500.00"], false)]
    );
    // s1 is not netted: due:150300->150600 keeps 1000.00 and advance:150600 −1000.00.
    assert_eq!(
        balances(
            &w.op,
            &[
                "due:150300->150600",
                "advance:150600",
                "net:150300",
                "net:150600"
            ]
        )
        .await,
        want(&[
            ("due:150300->150600", "1000.00"),
            ("advance:150600", "-1000.00"),
            ("net:150300", "500.00"),
            ("net:150600", "-500.00"),
        ])
    );
    let rec = record_transfer(&w.c.wuhai, &tr(&p, 1), "500.00", "BK-WH-P-1").await;
    assert_eq!(
        rec.period.expect("period").status,
        PeriodStatus::Settled as i32
    );
    verify_ok(&w.ts).await;

    // Q: nothing settled between Wuhai and Ordos. Closing it carries the accepted line into a
    // statement created for it: s1 again, 1250.00 / 1000.00 / 0.00, due 1000.00.
    advance_past(&w.ts, &q);
    let gq = close(&w.c.op, &q, 0).await;
    assert_eq!((gq.status, gq.statements), (PeriodStatus::Closed as i32, 1));
    let sq = st(&q, WUHAI, ORDOS);
    let stq = statement(&w.c.op, &sq).await;
    assert_eq!(
        fig(&stq),
        fg(
            StatementStatus::Pending,
            1,
            ["1250.00", "1000.00", "0.00"],
            (0, "0.00"),
            "1000.00"
        )
    );
    assert_eq!(
        stq.lines,
        [proto::StatementLine {
            carried_from: sp.clone(),
            ..line_of(&s1, "1000.00")
        }]
    );
    // The original says where it went; P's figures do not change.
    let orig = statement(&w.c.op, &sp).await;
    assert_eq!(
        line_on(&orig, &s1.setl_id),
        &proto::StatementLine {
            carried_into: sq.clone(),
            ..resolved.clone()
        }
    );
    assert_eq!(
        fig(&orig),
        fg(
            StatementStatus::Confirmed,
            2,
            ["500.00", "400.00", "100.00"],
            (1, "1000.00"),
            "500.00"
        )
    );
    // Closing again carries nothing twice.
    assert_eq!(close(&w.c.op, &q, 0).await, gq);
    assert_eq!(statement(&w.c.op, &sq).await, stq);
    verify_ok(&w.ts).await;

    // Q confirmed and netted: Wuhai −1000.00, Ordos +1000.00.
    assert_eq!(confirm(&w.c.wuhai, &sq).await.due, "1000.00");
    let nq = net(&w.c.op, &q).await;
    assert_eq!(
        trs(&nq),
        [t(
            &q,
            1,
            WUHAI,
            ORDOS,
            ["1000.00", "0.00", "1000.00"],
            false
        )]
    );
    assert_eq!(nq.positions[0].payable, "1000.00");
    record_transfer(&w.c.op, &tr(&q, 1), "1000.00", "BK-WH-Q-1").await;
    assert_eq!(
        get_period(&w.c.op, &q).await.status,
        PeriodStatus::Settled as i32
    );
    // Everything settled: P paid 500.00 (s2), Q 1000.00 (s1) = all that was settled.
    assert_eq!(
        balances(
            &w.op,
            &[
                "due:150300->150600",
                "advance:150600",
                "net:150300",
                "net:150600"
            ]
        )
        .await,
        want(&[
            ("due:150300->150600", "0.00"),
            ("advance:150600", "0.00"),
            ("net:150300", "0.00"),
            ("net:150600", "0.00"),
        ])
    );
    verify_ok(&w.ts).await;

    // The carried line does not come back: the month after closes empty.
    let r3 = next_period(&q);
    advance_past(&w.ts, &r3);
    let g3 = close(&w.c.op, &r3, 0).await;
    assert_eq!(
        (g3.status, g3.statements),
        (PeriodStatus::Confirmed as i32, 0)
    );
    verify_ok(&w.ts).await;
}

async fn dispute_rejected_then_reversed_is_not_double_counted(b: Backend) {
    let w = world3(b).await;
    let p = w.p.clone();
    let q = next_period(&p);
    // P at H15060000001: s1 wo[0] 1250.00 → due 1000.00; s2 wo[1] 500.00 account off →
    // fund 400.00, cash 100.00, due 400.00.
    let s1 = stay(&w.h, &w.wo[0], "1250.00", false).await;
    let s2 = stay(&w.h, &w.wo[1], "500.00", false).await;
    assert_eq!(four(&s2), ["500.00", "400.00", "0.00", "100.00"]);
    landed(&[&s1, &s2], &p);
    advance_past(&w.ts, &p);
    close(&w.c.op, &p, 0).await;
    let sp = st(&p, WUHAI, ORDOS);
    dispute(&w.c.wuhai, &sp, &[(s1.setl_id.as_str(), "duplicate bill")]).await;

    // Ordos rejects: s1 stays out for good (the hospital is to reverse it).
    let r = resolve(
        &w.c.ordos,
        &sp,
        &s1.setl_id,
        false,
        "agreed, to be reversed",
    )
    .await;
    assert_eq!(r.lines_resolved, 1);
    let rejected = r.line.expect("line");
    assert_eq!(
        (
            rejected.dispute_state,
            rejected.disputed,
            rejected.resolution_note.as_str(),
            rejected.carried_into.as_str()
        ),
        (
            DisputeState::Rejected as i32,
            true,
            "agreed, to be reversed",
            ""
        )
    );
    // P: due 400.00 (s2), netted and settled.
    let cp = confirm(&w.c.wuhai, &sp).await;
    assert_eq!(
        fig(&cp),
        fg(
            StatementStatus::Confirmed,
            2,
            ["500.00", "400.00", "0.00"],
            (1, "1000.00"),
            "400.00"
        )
    );
    let np = net(&w.c.op, &p).await;
    assert_eq!(
        nets(&np),
        [
            (WUHAI.to_owned(), "-400.00".to_owned()),
            (ORDOS.to_owned(), "400.00".to_owned())
        ]
    );
    record_transfer(&w.c.wuhai, &tr(&p, 1), "400.00", "BK-P-1").await;
    assert_eq!(
        balances(&w.op, &["due:150300->150600", "advance:150600"]).await,
        want(&[
            ("due:150300->150600", "1000.00"),
            ("advance:150600", "-1000.00")
        ])
    );
    verify_ok(&w.ts).await;

    // Q: the hospital reverses s1 (−1250.00 / −1000.00 / 0.00 / −250.00, due −1000.00) and
    // wo[2] stays: 250.00 → fund 200.00, cash 50.00, due 200.00.
    let r1 = reverse(&w.h, &s1).await;
    assert_eq!(four(&r1), ["-1250.00", "-1000.00", "0.00", "-250.00"]);
    let s3 = stay(&w.h, &w.wo[2], "250.00", false).await;
    assert_eq!(four(&s3), ["250.00", "200.00", "0.00", "50.00"]);
    landed(&[&r1, &s3], &q);
    advance_past(&w.ts, &q);
    close(&w.c.op, &q, 0).await;
    let sq = st(&q, WUHAI, ORDOS);
    let stq = statement(&w.c.op, &sq).await;
    // The reversal follows the rejected dispute: stated, out of the figures, REJECTED.
    assert_eq!(
        stq.lines,
        sorted(vec![
            proto::StatementLine {
                disputed: true,
                dispute_reason: format!("follows the dispute of {}", s1.setl_id),
                dispute_state: DisputeState::Rejected as i32,
                follows: s1.setl_id.clone(),
                // A follower of a resolved dispute carries its resolution.
                resolution_note: "agreed, to be reversed".into(),
                resolved_at: rejected.resolved_at.clone(),
                ..line_of(&r1, "-1000.00")
            },
            line_of(&s3, "200.00"),
        ])
    );
    assert_eq!(line_on(&stq, &r1.setl_id).reverses, s1.setl_id);
    // Q figures: s3 only: 250.00 / 200.00 / 0.00, due 200.00; disputed 1, −1000.00.
    assert_eq!(
        fig(&stq),
        fg(
            StatementStatus::Pending,
            2,
            ["250.00", "200.00", "0.00"],
            (1, "-1000.00"),
            "200.00"
        )
    );
    // The follower is resolved with its original only, and cannot be disputed.
    refused(
        w.c.ordos
            .clone()
            .resolve_dispute(resolve_req(&sq, &r1.setl_id, true, ""))
            .await,
        "line_follows_dispute",
    );
    refused(
        w.c.ordos
            .clone()
            .resolve_dispute(resolve_req(&sp, &s1.setl_id, true, ""))
            .await,
        "dispute_already_resolved",
    );
    refused(
        w.c.wuhai
            .clone()
            .dispute_lines(dispute_req(&sq, &[(r1.setl_id.as_str(), "not ours")]))
            .await,
        "line_dispute_settled",
    );
    assert_eq!(statement(&w.c.op, &sq).await, stq);
    verify_ok(&w.ts).await;

    assert_eq!(confirm(&w.c.wuhai, &sq).await.due, "200.00");
    let nq = net(&w.c.op, &q).await;
    assert_eq!(
        nq.positions,
        [
            pos(
                WUHAI,
                ["200.00", "0.00", "-200.00"],
                ["0.00", "0.00", "0.00", "150.00"],
                true
            ),
            pos(
                ORDOS,
                ["0.00", "200.00", "200.00"],
                ["0.00", "0.00", "0.00", "0.00"],
                false
            ),
        ],
        "Wuhai's warning line: 50% of (400.00 + 200.00) / 2 = 150.00"
    );
    record_transfer(&w.c.wuhai, &tr(&q, 1), "200.00", "BK-Q-1").await;
    // Over P and Q Wuhai paid 400.00 + 200.00 = 600.00 = s2 + s3: s1 was never credited to
    // Ordos and its reversal never debited; the due account is back to zero (s1 + r1).
    let paid: i64 = [&np, &nq]
        .iter()
        .map(|n| fen(&n.positions[0].payable))
        .sum();
    assert_eq!(yuan(paid), "600.00");
    assert_eq!(
        balances(
            &w.op,
            &[
                "due:150300->150600",
                "advance:150600",
                "net:150300",
                "net:150600"
            ]
        )
        .await,
        want(&[
            ("due:150300->150600", "0.00"),
            ("advance:150600", "0.00"),
            ("net:150300", "0.00"),
            ("net:150600", "0.00"),
        ])
    );
    verify_ok(&w.ts).await;

    // Nothing rejected is ever carried: the next month closes empty.
    let r3 = next_period(&q);
    advance_past(&w.ts, &r3);
    assert_eq!(close(&w.c.op, &r3, 0).await.statements, 0);
}

/// The reversals land while the disputes are still pending; the disputes are resolved after
/// the reversals' month has closed: s1 accepted (its reversal is accepted with it and both are
/// carried, net zero), s2 rejected (its reversal stays out with it).
async fn dispute_pending_when_reversed_then_resolved(b: Backend) {
    let w = world3(b).await;
    let p = w.p.clone();
    let q = next_period(&p);
    let r3 = next_period(&q);
    // P at H15060000001: s1 wo[0] 1250.00 → 1000.00; s2 wo[1] 500.00 → 400.00;
    // s3 wo[2] 250.00 → 200.00 (account off, due = fund).
    let s1 = stay(&w.h, &w.wo[0], "1250.00", false).await;
    let s2 = stay(&w.h, &w.wo[1], "500.00", false).await;
    let s3 = stay(&w.h, &w.wo[2], "250.00", false).await;
    landed(&[&s1, &s2, &s3], &p);
    advance_past(&w.ts, &p);
    close(&w.c.op, &p, 0).await;
    let sp = st(&p, WUHAI, ORDOS);
    dispute(
        &w.c.wuhai,
        &sp,
        &[
            (s1.setl_id.as_str(), "not admitted"),
            (s2.setl_id.as_str(), "wrong patient"),
        ],
    )
    .await;
    // Confirmed with both disputes pending: due 200.00 (s3); disputed 1000.00 + 400.00.
    assert_eq!(
        fig(&confirm(&w.c.wuhai, &sp).await),
        fg(
            StatementStatus::Confirmed,
            3,
            ["250.00", "200.00", "0.00"],
            (2, "1400.00"),
            "200.00"
        )
    );
    net(&w.c.op, &p).await;
    record_transfer(&w.c.wuhai, &tr(&p, 1), "200.00", "BK-P-1").await;
    verify_ok(&w.ts).await;

    // Q: both reversed (due −1000.00, −400.00) and wo[3] 625.00 → fund 500.00, due 500.00.
    let r1 = reverse(&w.h, &s1).await;
    let r2 = reverse(&w.h, &s2).await;
    let s4 = stay(&w.h, &w.wo[3], "625.00", false).await;
    assert_eq!(four(&s4), ["625.00", "500.00", "0.00", "125.00"]);
    landed(&[&r1, &r2, &s4], &q);
    advance_past(&w.ts, &q);
    close(&w.c.op, &q, 0).await;
    let sq = st(&q, WUHAI, ORDOS);
    let follower = |r: &proto::Settlement, o: &proto::Settlement, due: &str| proto::StatementLine {
        disputed: true,
        dispute_reason: format!("follows the dispute of {}", o.setl_id),
        dispute_state: DisputeState::Disputed as i32,
        follows: o.setl_id.clone(),
        ..line_of(r, due)
    };
    let stq = statement(&w.c.op, &sq).await;
    assert_eq!(
        stq.lines,
        sorted(vec![
            follower(&r1, &s1, "-1000.00"),
            follower(&r2, &s2, "-400.00"),
            line_of(&s4, "500.00"),
        ])
    );
    // Figures: s4 only; disputed −1000.00 − 400.00 = −1400.00.
    assert_eq!(
        fig(&stq),
        fg(
            StatementStatus::Pending,
            3,
            ["625.00", "500.00", "0.00"],
            (2, "-1400.00"),
            "500.00"
        )
    );
    let mut listed = vec![
        entry(&sp, &s1.setl_id, "not admitted"),
        entry(&sp, &s2.setl_id, "wrong patient"),
    ];
    listed.sort();
    let mut followers = vec![
        entry(
            &sq,
            &r1.setl_id,
            &format!("follows the dispute of {}", s1.setl_id),
        ),
        entry(
            &sq,
            &r2.setl_id,
            &format!("follows the dispute of {}", s2.setl_id),
        ),
    ];
    followers.sort();
    listed.extend(followers);
    assert_eq!(disputes(&w.c.op, DisputeState::Disputed).await, listed);
    verify_ok(&w.ts).await;

    // Ordos accepts s1: r1 is accepted with it (2 lines); an operator rejects s2 (2 lines).
    let day = biz_today(&w.ts);
    let a = resolve(&w.c.ordos, &sp, &s1.setl_id, true, "records found").await;
    assert_eq!(a.lines_resolved, 2);
    assert_eq!(
        a.line.expect("line").dispute_state,
        DisputeState::Accepted as i32
    );
    let rj = resolve(&w.c.op, &sp, &s2.setl_id, false, "wrong patient indeed").await;
    assert_eq!(rj.lines_resolved, 2);
    let stq2 = statement(&w.c.op, &sq).await;
    let f1 = line_on(&stq2, &r1.setl_id);
    assert_eq!(
        (
            f1.dispute_state,
            f1.disputed,
            f1.resolution_note.as_str(),
            f1.follows.as_str()
        ),
        (
            DisputeState::Accepted as i32,
            true,
            "records found",
            s1.setl_id.as_str()
        )
    );
    rfc3339_on(&f1.resolved_at, day);
    let f2 = line_on(&stq2, &r2.setl_id);
    assert_eq!(
        (f2.dispute_state, f2.resolution_note.as_str()),
        (DisputeState::Rejected as i32, "wrong patient indeed")
    );
    assert_eq!(fig(&stq2), fig(&stq), "resolving changes no figures");
    assert!(disputes(&w.c.op, DisputeState::Disputed).await.is_empty());

    // Q: due 500.00, netted and settled.
    assert_eq!(confirm(&w.c.wuhai, &sq).await.due, "500.00");
    let nq = net(&w.c.op, &q).await;
    assert_eq!(
        trs(&nq),
        [t(&q, 1, WUHAI, ORDOS, ["500.00", "0.00", "500.00"], false)]
    );
    record_transfer(&w.c.wuhai, &tr(&q, 1), "500.00", "BK-Q-1").await;
    // Settled so far 1000.00 + 400.00 + 200.00 − 1000.00 − 400.00 + 500.00 = 700.00; netted
    // 200.00 + 500.00 = 700.00: the due account is at zero with s1/r1 still to be carried.
    assert_eq!(
        balances(&w.op, &["due:150300->150600", "advance:150600"]).await,
        want(&[("due:150300->150600", "0.00"), ("advance:150600", "0.00")])
    );
    verify_ok(&w.ts).await;

    // R: both accepted lines are carried (s1 +1000.00, r1 −1000.00): net effect zero. The
    // rejected pair stays behind.
    advance_past(&w.ts, &r3);
    let g3 = close(&w.c.op, &r3, 0).await;
    assert_eq!((g3.status, g3.statements), (PeriodStatus::Closed as i32, 1));
    let sr = st(&r3, WUHAI, ORDOS);
    let str3 = statement(&w.c.op, &sr).await;
    assert_eq!(
        str3.lines,
        sorted(vec![
            proto::StatementLine {
                carried_from: sp.clone(),
                ..line_of(&s1, "1000.00")
            },
            proto::StatementLine {
                carried_from: sq.clone(),
                ..line_of(&r1, "-1000.00")
            },
        ])
    );
    // 1250.00 − 1250.00 = 0.00 … due 0.00.
    assert_eq!(
        fig(&str3),
        fg(
            StatementStatus::Pending,
            2,
            ["0.00", "0.00", "0.00"],
            (0, "0.00"),
            "0.00"
        )
    );
    let stp = statement(&w.c.op, &sp).await;
    assert_eq!(line_on(&stp, &s1.setl_id).carried_into, sr);
    assert_eq!(line_on(&stp, &s2.setl_id).carried_into, "");
    let stq3 = statement(&w.c.op, &sq).await;
    assert_eq!(line_on(&stq3, &r1.setl_id).carried_into, sr);
    assert_eq!(line_on(&stq3, &r2.setl_id).carried_into, "");
    verify_ok(&w.ts).await;

    // R nets to nothing: both positions 0.00, no instruction, SETTLED at once.
    confirm(&w.c.wuhai, &sr).await;
    let nr = net(&w.c.op, &r3).await;
    assert_eq!(
        nets(&nr),
        [
            (WUHAI.to_owned(), "0.00".to_owned()),
            (ORDOS.to_owned(), "0.00".to_owned())
        ]
    );
    assert!(nr.instructions.is_empty());
    let gp = nr.period.expect("period");
    assert_eq!(gp.status, PeriodStatus::Settled as i32);
    assert!(!gp.netted_at.is_empty() && !gp.settled_at.is_empty());
    assert_eq!(
        balances(
            &w.op,
            &[
                "due:150300->150600",
                "advance:150600",
                "net:150300",
                "net:150600"
            ]
        )
        .await,
        want(&[
            ("due:150300->150600", "0.00"),
            ("advance:150600", "0.00"),
            ("net:150300", "0.00"),
            ("net:150600", "0.00"),
        ])
    );
    verify_ok(&w.ts).await;
}

/// The dispute is accepted, then the hospital reverses the settlement before the next month
/// closes: the reversal is an ordinary line of that month (it follows nothing: the dispute is
/// settled) next to the carried copy, net zero. A second settlement, paid in P, is reversed in
/// Q too: Q's statement is negative and Ordos pays Wuhai back.
async fn dispute_accepted_then_reversed_before_next_close(b: Backend) {
    let w = world3(b).await;
    let p = w.p.clone();
    let q = next_period(&p);
    // P at H15060000001: s1 1250.00 → 1000.00; s2 500.00 → 400.00 (account off).
    let s1 = stay(&w.h, &w.wo[0], "1250.00", false).await;
    let s2 = stay(&w.h, &w.wo[1], "500.00", false).await;
    landed(&[&s1, &s2], &p);
    advance_past(&w.ts, &p);
    close(&w.c.op, &p, 0).await;
    let sp = st(&p, WUHAI, ORDOS);
    dispute(&w.c.wuhai, &sp, &[(s1.setl_id.as_str(), "not admitted")]).await;
    resolve(&w.c.ordos, &sp, &s1.setl_id, true, "records found").await;
    assert_eq!(confirm(&w.c.wuhai, &sp).await.due, "400.00");
    net(&w.c.op, &p).await;
    record_transfer(&w.c.wuhai, &tr(&p, 1), "400.00", "BK-P-1").await;

    // Q: both reversed before Q closes: r1 −1000.00, r2 −400.00.
    let r1 = reverse(&w.h, &s1).await;
    let r2 = reverse(&w.h, &s2).await;
    landed(&[&r1, &r2], &q);
    advance_past(&w.ts, &q);
    close(&w.c.op, &q, 0).await;
    let sq = st(&q, WUHAI, ORDOS);
    let stq = statement(&w.c.op, &sq).await;
    // s1's line moved to Q (+1000.00, carried_into on P, carried_from here); r1 and r2 are
    // plain lines. Copies and reversals share a statement: s1 appears once (its copy).
    assert_eq!(
        stq.lines,
        sorted(vec![
            proto::StatementLine {
                carried_from: sp.clone(),
                ..line_of(&s1, "1000.00")
            },
            line_of(&r1, "-1000.00"),
            line_of(&r2, "-400.00"),
        ])
    );
    // 1250.00 − 1250.00 − 500.00 = −500.00; fund 1000.00 − 1000.00 − 400.00 = −400.00;
    // due −400.00.
    assert_eq!(
        fig(&stq),
        fg(
            StatementStatus::Pending,
            3,
            ["-500.00", "-400.00", "0.00"],
            (0, "0.00"),
            "-400.00"
        )
    );
    assert_eq!(
        line_on(&statement(&w.c.op, &sp).await, &s1.setl_id).carried_into,
        sq
    );
    verify_ok(&w.ts).await;

    // Netting a negative statement: Wuhai's payable is −400.00, so it receives 400.00 and
    // Ordos pays. Warning lines: Wuhai 50% × (400.00 + 0.00) / 2 = 100.00; Ordos
    // 50% × (0.00 + 400.00) / 2 = 100.00; neither holds prepayment → top up.
    assert_eq!(confirm(&w.c.wuhai, &sq).await.due, "-400.00");
    let nq = net(&w.c.op, &q).await;
    assert_eq!(
        nq.positions,
        [
            pos(
                WUHAI,
                ["-400.00", "0.00", "400.00"],
                ["0.00", "0.00", "0.00", "100.00"],
                true
            ),
            pos(
                ORDOS,
                ["0.00", "-400.00", "-400.00"],
                ["0.00", "0.00", "0.00", "100.00"],
                true
            ),
        ]
    );
    assert_eq!(
        trs(&nq),
        [t(&q, 1, ORDOS, WUHAI, ["400.00", "0.00", "400.00"], false)]
    );
    // Wuhai is the receiver now: it may not record; Ordos does.
    w.c.wuhai
        .clone()
        .record_transfer(transfer_req(&tr(&q, 1), "400.00", "X"))
        .await
        .code_is(Code::PermissionDenied);
    record_transfer(&w.c.ordos, &tr(&q, 1), "400.00", "BOC-Q-1").await;
    // Everything was reversed: Wuhai paid 400.00 and got it back; every account is square.
    assert_eq!(
        balances(
            &w.op,
            &[
                "due:150300->150600",
                "advance:150600",
                "net:150300",
                "net:150600"
            ]
        )
        .await,
        want(&[
            ("due:150300->150600", "0.00"),
            ("advance:150600", "0.00"),
            ("net:150300", "0.00"),
            ("net:150600", "0.00"),
        ])
    );
    verify_ok(&w.ts).await;
}

async fn resolve_validation_and_permissions(b: Backend) {
    let w = world3(b).await;
    let p = w.p.clone();
    let q = next_period(&p);
    // P at H15060000001: s1 1250.00 → 1000.00, s2 500.00 → 400.00, s3 250.00 → 200.00,
    // s4 625.00 → 500.00 (account off).
    let s1 = stay(&w.h, &w.wo[0], "1250.00", false).await;
    let s2 = stay(&w.h, &w.wo[1], "500.00", false).await;
    let s3 = stay(&w.h, &w.wo[2], "250.00", false).await;
    let s4 = stay(&w.h, &w.wo[3], "625.00", false).await;
    landed(&[&s1, &s2, &s3, &s4], &p);
    advance_past(&w.ts, &p);
    close(&w.c.op, &p, 0).await;
    let sp = st(&p, WUHAI, ORDOS);
    // s1, s2, s4 disputed: due s3 = 200.00; disputed 1000.00 + 400.00 + 500.00 = 1900.00.
    let d = dispute(
        &w.c.wuhai,
        &sp,
        &[
            (s1.setl_id.as_str(), "r1"),
            (s2.setl_id.as_str(), "r2"),
            (s4.setl_id.as_str(), "r4"),
        ],
    )
    .await;
    assert_eq!(
        (d.disputed_count, d.disputed_due.as_str(), d.due.as_str()),
        (3, "1900.00", "200.00")
    );
    let before = statement(&w.c.op, &sp).await;

    // Only the treatment bureau or an operator: not the home bureau, a third bureau, an
    // institution.
    for c in [&w.c.wuhai, &w.c.nx, &w.c.beijing, &w.c.hosp] {
        c.clone()
            .resolve_dispute(resolve_req(&sp, &s1.setl_id, true, ""))
            .await
            .code_is(Code::PermissionDenied);
    }
    // Unknown statement, a line not on it, a note too long or with control characters.
    w.c.ordos
        .clone()
        .resolve_dispute(resolve_req(
            &st(&p, WUHAI, SHIZUISHAN),
            &s1.setl_id,
            true,
            "",
        ))
        .await
        .code_is(Code::NotFound);
    w.c.ordos
        .clone()
        .resolve_dispute(resolve_req(&sp, "S-unknown", true, ""))
        .await
        .code_is(Code::NotFound);
    w.c.ordos
        .clone()
        .resolve_dispute(resolve_req(&sp, &s1.setl_id, true, &"x".repeat(257)))
        .await
        .invalid("note");
    w.c.ordos
        .clone()
        .resolve_dispute(resolve_req(&sp, &s1.setl_id, true, "bad\u{7}note"))
        .await
        .invalid("note");
    // A request id is required.
    w.c.ordos
        .clone()
        .resolve_dispute(proto::ResolveDisputeRequest {
            request_id: String::new(),
            ..resolve_req(&sp, &s1.setl_id, true, "")
        })
        .await
        .code_is(Code::InvalidArgument);
    // An undisputed line.
    refused(
        w.c.ordos
            .clone()
            .resolve_dispute(resolve_req(&sp, &s3.setl_id, true, ""))
            .await,
        "line_not_disputed",
    );
    assert_eq!(
        statement(&w.c.op, &sp).await,
        before,
        "refused resolutions changed nothing"
    );

    // Ordos accepts s1 (a 256-character note is fine); replay answers the same; the same
    // request id with another payload is ALREADY_EXISTS; again (new id): already resolved.
    let note = "n".repeat(256);
    let req = resolve_req(&sp, &s1.setl_id, true, &note);
    let first = w.c.ordos.clone().resolve_dispute(req.clone()).await.must();
    assert_eq!(first.lines_resolved, 1);
    assert_eq!(first.line.as_ref().expect("line").resolution_note, note);
    assert_eq!(
        w.c.ordos.clone().resolve_dispute(req.clone()).await.must(),
        first
    );
    w.c.ordos
        .clone()
        .resolve_dispute(proto::ResolveDisputeRequest {
            accept: false,
            ..req.clone()
        })
        .await
        .code_is(Code::AlreadyExists);
    refused(
        w.c.ordos
            .clone()
            .resolve_dispute(resolve_req(&sp, &s1.setl_id, false, ""))
            .await,
        "dispute_already_resolved",
    );
    // An operator rejects s2; twice: already resolved (for the treatment bureau too).
    let rj = resolve(&w.c.op, &sp, &s2.setl_id, false, "").await;
    assert_eq!(
        rj.line.expect("line").dispute_state,
        DisputeState::Rejected as i32
    );
    for c in [&w.c.op, &w.c.ordos] {
        refused(
            c.clone()
                .resolve_dispute(resolve_req(&sp, &s2.setl_id, true, ""))
                .await,
            "dispute_already_resolved",
        );
    }
    // The home bureau may not dispute a resolved line again (the statement is still pending).
    for id in [&s1.setl_id, &s2.setl_id] {
        refused(
            w.c.wuhai
                .clone()
                .dispute_lines(dispute_req(&sp, &[(id.as_str(), "again")]))
                .await,
            "line_dispute_settled",
        );
    }
    let now = statement(&w.c.op, &sp).await;
    assert_eq!(fig(&now), fig(&before), "resolving changes no figures");
    assert_eq!(now.status, StatementStatus::Pending as i32);
    verify_ok(&w.ts).await;

    // Q: s4, still disputed, is reversed; its reversal follows the dispute.
    let r4 = reverse(&w.h, &s4).await;
    landed(&[&r4], &q);
    confirm(&w.c.wuhai, &sp).await;
    advance_past(&w.ts, &q);
    close(&w.c.op, &q, 0).await;
    let sq = st(&q, WUHAI, ORDOS);
    let stq = statement(&w.c.op, &sq).await;
    assert_eq!(
        (
            line_on(&stq, &r4.setl_id).follows.as_str(),
            line_on(&stq, &r4.setl_id).dispute_state
        ),
        (s4.setl_id.as_str(), DisputeState::Disputed as i32)
    );
    // The follower: not resolvable on its own (by the treatment bureau or an operator), not
    // disputable.
    for c in [&w.c.ordos, &w.c.op] {
        refused(
            c.clone()
                .resolve_dispute(resolve_req(&sq, &r4.setl_id, false, ""))
                .await,
            "line_follows_dispute",
        );
    }
    refused(
        w.c.wuhai
            .clone()
            .dispute_lines(dispute_req(&sq, &[(r4.setl_id.as_str(), "no")]))
            .await,
        "line_dispute_settled",
    );
    // The original resolves both.
    let r = resolve(&w.c.ordos, &sp, &s4.setl_id, false, "reversed").await;
    assert_eq!(r.lines_resolved, 2);
    assert_eq!(
        line_on(&statement(&w.c.op, &sq).await, &r4.setl_id).dispute_state,
        DisputeState::Rejected as i32
    );
    // Only the original is the resolvable one; the follower stays a follower.
    refused(
        w.c.ordos
            .clone()
            .resolve_dispute(resolve_req(&sq, &r4.setl_id, false, ""))
            .await,
        "line_follows_dispute",
    );
    verify_ok(&w.ts).await;
}

// ------------------------------------------------------------------------------ deadline

async fn deadline_auto_confirm(b: Backend) {
    let w = world3(b).await;
    let p = w.p.clone();
    let q = next_period(&p);
    // P: s1 wo[0] at Ordos 1250.00 → 1000.00; s2 wo[1] at Ordos 500.00 → 400.00;
    // n1 wn at Shizuishan 500.00 → 400.00 (account off).
    let s1 = stay(&w.h, &w.wo[0], "1250.00", false).await;
    let s2 = stay(&w.h, &w.wo[1], "500.00", false).await;
    let n1 = stay(&w.nx_h, &w.wn, "500.00", false).await;
    landed(&[&s1, &s2, &n1], &p);
    advance_past(&w.ts, &p);
    let day = biz_today(&w.ts);

    // An unknown deadline action is refused before anything else.
    w.c.op
        .clone()
        .close_period(proto::ClosePeriodRequest {
            deadline_action: 7,
            ..close_req(&p, 1)
        })
        .await
        .invalid("deadline_action");
    // 1 day, the server default rule (AUTO_CONFIRM): the deadline is the close date + 1.
    let g = close(&w.c.op, &p, 1).await;
    assert_eq!(g.deadline_action, DeadlineAction::AutoConfirm as i32);
    assert_eq!(g.confirm_deadline, ymd(day + chrono::Days::new(1)));
    let so = st(&p, WUHAI, ORDOS);
    let sn = st(&p, WUHAI, SHIZUISHAN);
    // Close day: Wuhai disputes s2 (due 1000.00 left on so).
    dispute(&w.c.wuhai, &so, &[(s2.setl_id.as_str(), "not admitted")]).await;
    assert!(timer(&w.ts).await.is_empty(), "nothing is due yet");

    // The deadline day is the last day to confirm.
    days(&w.ts, 1);
    assert_eq!(ymd(biz_today(&w.ts)), g.confirm_deadline);
    let cn = confirm(&w.c.wuhai, &sn).await;
    assert!(!cn.auto_confirmed);
    assert!(timer(&w.ts).await.is_empty());
    assert_eq!(
        period_state(&w.c.op, &p).await,
        (PeriodStatus::Closed as i32, 2, 1)
    );

    // The day after: too late for the home bureau.
    days(&w.ts, 1);
    let pending = statement(&w.c.op, &so).await;
    let s = refused(
        w.c.wuhai.clone().confirm_statement(confirm_req(&so)).await,
        "statement_not_pending",
    );
    assert!(s.message().contains("auto-confirmed"), "{}", s.message());
    refused(
        w.c.wuhai
            .clone()
            .dispute_lines(dispute_req(&so, &[(s1.setl_id.as_str(), "late")]))
            .await,
        "statement_not_pending",
    );
    // An operator may not confirm (the rule confirms; nothing is flagged).
    w.c.op
        .clone()
        .confirm_statement(confirm_req(&so))
        .await
        .code_is(Code::PermissionDenied);
    // The refused calls wrote nothing: the auto-confirmation they applied was rolled back.
    assert_eq!(statement(&w.c.op, &so).await, pending);
    assert_eq!(pending.status, StatementStatus::Pending as i32);
    assert_eq!(
        period_state(&w.c.op, &p).await,
        (PeriodStatus::Closed as i32, 2, 1)
    );
    verify_ok(&w.ts).await;

    // The timer applies the rule: so confirmed as it stands (s2 out), figures frozen.
    assert_eq!(timer(&w.ts).await, std::slice::from_ref(&p));
    assert!(timer(&w.ts).await.is_empty(), "applied once");
    let auto = statement(&w.c.op, &so).await;
    assert!(auto.auto_confirmed && !auto.overdue);
    rfc3339_on(&auto.confirmed_at, biz_today(&w.ts));
    assert_eq!(
        fig(&auto),
        fg(
            StatementStatus::Confirmed,
            2,
            ["1250.00", "1000.00", "0.00"],
            (1, "400.00"),
            "1000.00"
        )
    );
    let cn2 = statement(&w.c.op, &sn).await;
    assert!(!cn2.auto_confirmed);
    assert_eq!(cn2.confirmed_at, cn.confirmed_at);
    assert_eq!(
        period_state(&w.c.op, &p).await,
        (PeriodStatus::Confirmed as i32, 2, 2)
    );
    refused(
        w.c.wuhai.clone().confirm_statement(confirm_req(&so)).await,
        "statement_not_pending",
    );
    verify_ok(&w.ts).await;

    // The treatment bureau still resolves the dispute of an auto-confirmed statement; the
    // frozen figures do not move.
    resolve(&w.c.ordos, &so, &s2.setl_id, true, "ok").await;
    assert_eq!(fig(&statement(&w.c.op, &so).await), fig(&auto));
    // P nets: Wuhai −1400.00; Ordos +1000.00, Shizuishan +400.00.
    let n = net(&w.c.op, &p).await;
    assert_eq!(
        trs(&n),
        [
            t(&p, 1, WUHAI, ORDOS, ["1000.00", "0.00", "1000.00"], false),
            t(
                &p,
                2,
                WUHAI,
                SHIZUISHAN,
                ["400.00", "0.00", "400.00"],
                false
            ),
        ]
    );
    record_transfer(&w.c.wuhai, &tr(&p, 1), "1000.00", "BK-1").await;
    record_transfer(&w.c.wuhai, &tr(&p, 2), "400.00", "BK-2").await;
    verify_ok(&w.ts).await;

    // Q: wo[2] 250.00 → 200.00; closing carries s2 (400.00): due 600.00.
    let s3 = stay(&w.h, &w.wo[2], "250.00", false).await;
    landed(&[&s3], &q);
    advance_past(&w.ts, &q);
    close(&w.c.op, &q, 1).await;
    let sq = st(&q, WUHAI, ORDOS);
    assert_eq!(statement(&w.c.op, &sq).await.due, "600.00");
    refused(
        w.c.op
            .clone()
            .net_period(proto::NetPeriodRequest {
                request_id: rid(),
                period: q.clone(),
            })
            .await,
        "statements_pending",
    );
    // Past its deadline NetPeriod confirms by the rule and nets in one go.
    days(&w.ts, 2);
    let nq = net(&w.c.op, &q).await;
    let gq = nq.period.clone().expect("period");
    assert_eq!(
        (gq.status, gq.statements, gq.confirmed_statements),
        (PeriodStatus::Netted as i32, 1, 1)
    );
    let aq = statement(&w.c.op, &sq).await;
    assert!(aq.auto_confirmed);
    assert_eq!(aq.status, StatementStatus::Confirmed as i32);
    assert_eq!(
        trs(&nq),
        [t(&q, 1, WUHAI, ORDOS, ["600.00", "0.00", "600.00"], false)]
    );
    record_transfer(&w.c.wuhai, &tr(&q, 1), "600.00", "BK-3").await;
    assert_eq!(
        get_period(&w.c.op, &q).await.status,
        PeriodStatus::Settled as i32
    );
    verify_ok(&w.ts).await;
}

async fn deadline_flag(b: Backend) {
    let w = world3(b).await;
    let p = w.p.clone();
    let flows = three_flows(&w).await;
    landed(&flows.iter().collect::<Vec<_>>(), &p);
    advance_past(&w.ts, &p);
    let day = biz_today(&w.ts);
    let g =
        w.c.op
            .clone()
            .close_period(close_with(&p, 2, DeadlineAction::Flag))
            .await
            .must();
    assert_eq!(g.deadline_action, DeadlineAction::Flag as i32);
    assert_eq!(g.confirm_deadline, ymd(day + chrono::Days::new(2)));
    assert_eq!(g.statements, 3);
    let [so, sn, son] = three_ids(&p);

    // Before the deadline: an operator may not confirm; netting waits.
    w.c.op
        .clone()
        .confirm_statement(confirm_req(&so))
        .await
        .code_is(Code::PermissionDenied);
    refused(
        w.c.op
            .clone()
            .net_period(proto::NetPeriodRequest {
                request_id: rid(),
                period: p.clone(),
            })
            .await,
        "statements_pending",
    );
    // On the deadline day nothing is flagged.
    days(&w.ts, 2);
    assert!(timer(&w.ts).await.is_empty());
    assert!(statements(&w.c.op, &p).await.iter().all(|s| !s.overdue));

    // The day after: the timer flags every pending statement; they stay pending.
    days(&w.ts, 1);
    assert_eq!(timer(&w.ts).await, std::slice::from_ref(&p));
    assert!(timer(&w.ts).await.is_empty(), "flagged once");
    let list = statements(&w.c.op, &p).await;
    assert_eq!(list.len(), 3);
    for s in &list {
        assert!(s.overdue && !s.auto_confirmed, "{s:?}");
        assert_eq!(s.status, StatementStatus::Pending as i32);
    }
    assert_eq!(
        period_state(&w.c.op, &p).await,
        (PeriodStatus::Closed as i32, 3, 0)
    );
    let s = refused(
        w.c.op
            .clone()
            .net_period(proto::NetPeriodRequest {
                request_id: rid(),
                period: p.clone(),
            })
            .await,
        "statements_pending",
    );
    assert!(
        s.message().contains("3 of 3") && s.message().contains(&g.confirm_deadline),
        "{}",
        s.message()
    );
    verify_ok(&w.ts).await;

    // The home bureau may still confirm an overdue statement.
    let c1 = confirm(&w.c.wuhai, &so).await;
    assert!(!c1.overdue && !c1.auto_confirmed);
    assert_eq!(c1.due, "1000.00");
    // An operator confirms on the home bureau's behalf; the treatment bureau and a third
    // bureau may not.
    for c in [&w.c.nx, &w.c.beijing, &w.c.hosp] {
        c.clone()
            .confirm_statement(confirm_req(&sn))
            .await
            .code_is(Code::PermissionDenied);
    }
    let c2 = confirm(&w.c.op, &sn).await;
    assert!(!c2.overdue && !c2.auto_confirmed);
    assert_eq!(c2.due, "400.00");
    let s = refused(
        w.c.op
            .clone()
            .net_period(proto::NetPeriodRequest {
                request_id: rid(),
                period: p.clone(),
            })
            .await,
        "statements_pending",
    );
    assert!(s.message().contains("1 of 3"), "{}", s.message());
    // Ordos, the home bureau of the last one, confirms it: the period is confirmed.
    assert_eq!(confirm(&w.c.ordos, &son).await.due, "1600.00");
    assert_eq!(
        period_state(&w.c.op, &p).await,
        (PeriodStatus::Confirmed as i32, 3, 3)
    );
    verify_ok(&w.ts).await;

    // Netting (see three_flows).
    let n = net(&w.c.op, &p).await;
    assert_eq!(
        nets(&n),
        [
            (WUHAI.to_owned(), "-1400.00".to_owned()),
            (ORDOS.to_owned(), "-600.00".to_owned()),
            (SHIZUISHAN.to_owned(), "2000.00".to_owned()),
        ]
    );
    assert_eq!(
        trs(&n),
        [
            t(
                &p,
                1,
                WUHAI,
                SHIZUISHAN,
                ["1400.00", "0.00", "1400.00"],
                false
            ),
            t(
                &p,
                2,
                ORDOS,
                SHIZUISHAN,
                ["600.00", "0.00", "600.00"],
                false
            ),
        ]
    );
    verify_ok(&w.ts).await;
}

// ------------------------------------------------------------------------------ netting

async fn netting_state_machine(b: Backend) {
    let w = world3(b).await;
    let p = w.p.clone();
    let q = next_period(&p);
    let [a, bb, c] = three_flows(&w).await;
    landed(&[&a, &bb, &c], &p);
    let net_req = |period: &str| proto::NetPeriodRequest {
        request_id: rid(),
        period: period.into(),
    };

    // Operators only; a valid period.
    for cl in [&w.c.wuhai, &w.c.nx, &w.c.hosp] {
        cl.clone()
            .net_period(net_req(&p))
            .await
            .code_is(Code::PermissionDenied);
    }
    w.c.op
        .clone()
        .net_period(net_req("2026-11"))
        .await
        .invalid("period");
    // Open (the current month) and an ended month never closed: not closed.
    refused(
        w.c.op.clone().net_period(net_req(&p)).await,
        "period_not_closed",
    );
    refused(
        w.c.op.clone().net_period(net_req(&prev_period(&p))).await,
        "period_not_closed",
    );
    // Nothing netted: an empty netting.
    let empty = netting(&w.c.op, &p).await;
    assert!(empty.positions.is_empty() && empty.instructions.is_empty());
    assert_eq!(
        empty.period.expect("period").status,
        PeriodStatus::Open as i32
    );

    advance_past(&w.ts, &p);
    close(&w.c.op, &p, 0).await;
    refused(
        w.c.op.clone().net_period(net_req(&p)).await,
        "statements_pending",
    );
    // Q: wo[1] at Ordos 625.00 → fund 500.00, due 500.00.
    let d = stay(&w.h, &w.wo[1], "625.00", false).await;
    landed(&[&d], &q);
    let [so, sn, son] = three_ids(&p);
    confirm(&w.c.wuhai, &so).await;
    confirm(&w.c.wuhai, &sn).await;
    refused(
        w.c.op.clone().net_period(net_req(&p)).await,
        "statements_pending",
    );
    confirm(&w.c.ordos, &son).await;
    assert_eq!(
        get_period(&w.c.op, &p).await.status,
        PeriodStatus::Confirmed as i32
    );
    advance_past(&w.ts, &q);
    close(&w.c.op, &q, 0).await;
    confirm(&w.c.wuhai, &st(&q, WUHAI, ORDOS)).await;
    assert_eq!(
        get_period(&w.c.op, &q).await.status,
        PeriodStatus::Confirmed as i32
    );
    // Q may not be netted before P.
    let s = refused(
        w.c.op.clone().net_period(net_req(&q)).await,
        "earlier_period_not_netted",
    );
    assert!(s.message().contains(&p), "{}", s.message());
    verify_ok(&w.ts).await;

    // Net P (see three_flows); nothing prepaid.
    let req = net_req(&p);
    let n = w.c.op.clone().net_period(req.clone()).await.must();
    let gp = n.period.clone().expect("period");
    assert_eq!(gp.status, PeriodStatus::Netted as i32);
    rfc3339_on(&gp.netted_at, biz_today(&w.ts));
    assert_eq!(gp.settled_at, "");
    let zero = ["0.00", "0.00", "0.00", "0.00"];
    assert_eq!(
        n.positions,
        [
            pos(
                WUHAI,
                ["1400.00", "0.00", "-1400.00"],
                ["0.00", "0.00", "0.00", "700.00"],
                true
            ),
            pos(
                ORDOS,
                ["1600.00", "1000.00", "-600.00"],
                ["0.00", "0.00", "0.00", "300.00"],
                true
            ),
            pos(SHIZUISHAN, ["0.00", "2000.00", "2000.00"], zero, false),
        ]
    );
    assert_eq!(
        n.positions.iter().map(|x| fen(&x.net)).sum::<i64>(),
        0,
        "positions sum to 0.00"
    );
    assert_eq!(
        trs(&n),
        [
            t(
                &p,
                1,
                WUHAI,
                SHIZUISHAN,
                ["1400.00", "0.00", "1400.00"],
                false
            ),
            t(
                &p,
                2,
                ORDOS,
                SHIZUISHAN,
                ["600.00", "0.00", "600.00"],
                false
            ),
        ]
    );
    for i in &n.instructions {
        assert_eq!(
            (
                i.period.as_str(),
                i.bank_reference.as_str(),
                i.value_date.as_str(),
                i.recorded_at.as_str()
            ),
            (p.as_str(), "", "", "")
        );
    }
    // Replay, idempotent NetPeriod, ALREADY_EXISTS, GetNetting.
    assert_eq!(w.c.op.clone().net_period(req.clone()).await.must(), n);
    assert_eq!(net(&w.c.op, &p).await, n);
    w.c.op
        .clone()
        .net_period(proto::NetPeriodRequest {
            period: q.clone(),
            ..req.clone()
        })
        .await
        .code_is(Code::AlreadyExists);
    assert_eq!(netting(&w.c.op, &p).await, n);
    // Ledger: P's dues moved into the net accounts; Q's 500.00 is not netted yet.
    assert_eq!(
        balances(&w.op, &CLEARING_ACCOUNTS).await,
        want(&[
            ("due:150300->150600", "500.00"),
            ("due:150300->640200", "0.00"),
            ("due:150600->640200", "0.00"),
            ("advance:150600", "-500.00"),
            ("advance:640200", "0.00"),
            ("net:150300", "1400.00"),
            ("net:150600", "600.00"),
            ("net:640200", "-2000.00"),
            ("prepay:150300", "0.00"),
            ("prepay:150600", "0.00"),
        ])
    );
    verify_ok(&w.ts).await;

    // RecordTransfer: validations.
    let t1 = tr(&p, 1);
    let t2 = tr(&p, 2);
    w.c.wuhai
        .clone()
        .record_transfer(transfer_req(&tr(&p, 9), "1400.00", "BK"))
        .await
        .code_is(Code::NotFound);
    // The receiver, another bureau, an institution: refused.
    for cl in [&w.c.nx, &w.c.ordos, &w.c.beijing, &w.c.hosp] {
        cl.clone()
            .record_transfer(transfer_req(&t1, "1400.00", "BK"))
            .await
            .code_is(Code::PermissionDenied);
    }
    for amount in ["1399.99", "1400.01", "0.00", "-1400.00"] {
        refused(
            w.c.wuhai
                .clone()
                .record_transfer(transfer_req(&t1, amount, "BK"))
                .await,
            "transfer_amount_differs",
        );
    }
    w.c.wuhai
        .clone()
        .record_transfer(transfer_req(&t1, "abc", "BK"))
        .await
        .invalid("amount");
    w.c.wuhai
        .clone()
        .record_transfer(transfer_req(&t1, "1400.00", ""))
        .await
        .invalid("bank_reference");
    w.c.wuhai
        .clone()
        .record_transfer(transfer_req(&t1, "1400.00", &"r".repeat(65)))
        .await
        .invalid("bank_reference");
    w.c.wuhai
        .clone()
        .record_transfer(proto::RecordTransferRequest {
            value_date: "2026-13-01".into(),
            ..transfer_req(&t1, "1400.00", "BK")
        })
        .await
        .invalid("value_date");
    assert_eq!(
        netting(&w.c.op, &p).await,
        n,
        "refused transfers wrote nothing"
    );

    // Wuhai records 001: recorded, the period still NETTED.
    let treq = transfer_req(&t1, "1400.00", "ICBC-20261220-001");
    let r1 = w.c.wuhai.clone().record_transfer(treq.clone()).await.must();
    let i1 = r1.instruction.clone().expect("instruction");
    assert!(i1.recorded);
    assert_eq!(
        (
            i1.bank_reference.as_str(),
            i1.value_date.as_str(),
            i1.bank.as_str()
        ),
        ("ICBC-20261220-001", "2026-12-20", "1400.00")
    );
    rfc3339_on(&i1.recorded_at, biz_today(&w.ts));
    assert_eq!(
        r1.period.clone().expect("period").status,
        PeriodStatus::Netted as i32
    );
    assert_eq!(
        w.c.wuhai.clone().record_transfer(treq.clone()).await.must(),
        r1,
        "replay"
    );
    w.c.wuhai
        .clone()
        .record_transfer(proto::RecordTransferRequest {
            bank_reference: "OTHER".into(),
            ..treq.clone()
        })
        .await
        .code_is(Code::AlreadyExists);
    refused(
        w.c.wuhai
            .clone()
            .record_transfer(transfer_req(&t1, "1400.00", "ICBC-20261220-001"))
            .await,
        "transfer_already_recorded",
    );
    assert_eq!(
        balances(&w.op, &["net:150300", "net:150600", "net:640200"]).await,
        want(&[
            ("net:150300", "0.00"),
            ("net:150600", "600.00"),
            ("net:640200", "-600.00"),
        ])
    );
    verify_ok(&w.ts).await;

    // An operator records 002 for Ordos: every transfer recorded → SETTLED.
    let r2 = record_transfer(&w.c.op, &t2, "600.00", "BOC-77").await;
    let gp2 = r2.period.expect("period");
    assert_eq!(gp2.status, PeriodStatus::Settled as i32);
    rfc3339_on(&gp2.settled_at, biz_today(&w.ts));
    assert_eq!(gp2.netted_at, gp.netted_at);
    refused(
        w.c.ordos
            .clone()
            .record_transfer(transfer_req(&t2, "600.00", "BOC-77"))
            .await,
        "transfer_already_recorded",
    );
    // Netting a settled period answers its stored netting; the first request still replays
    // its first answer.
    let settled = net(&w.c.op, &p).await;
    assert_eq!(settled.period.as_ref().expect("period"), &gp2);
    assert_eq!(settled.positions, n.positions);
    assert!(settled.instructions.iter().all(|i| i.recorded));
    assert_eq!(w.c.op.clone().net_period(req).await.must(), n);
    assert_eq!(
        balances(&w.op, &CLEARING_ACCOUNTS).await,
        want(&[
            ("due:150300->150600", "500.00"),
            ("due:150300->640200", "0.00"),
            ("due:150600->640200", "0.00"),
            ("advance:150600", "-500.00"),
            ("advance:640200", "0.00"),
            ("net:150300", "0.00"),
            ("net:150600", "0.00"),
            ("net:640200", "0.00"),
            ("prepay:150300", "0.00"),
            ("prepay:150600", "0.00"),
        ])
    );
    verify_ok(&w.ts).await;

    // Now Q nets: Wuhai −500.00 → Ordos. Warning line: 50% × (1400.00 + 500.00) / 2 = 475.00.
    let nq = net(&w.c.op, &q).await;
    assert_eq!(
        nq.positions,
        [
            pos(
                WUHAI,
                ["500.00", "0.00", "-500.00"],
                ["0.00", "0.00", "0.00", "475.00"],
                true
            ),
            pos(
                ORDOS,
                ["0.00", "500.00", "500.00"],
                ["0.00", "0.00", "0.00", "150.00"],
                true
            ),
        ],
        "Ordos receives, but its line is 50% × (600.00 + 0.00) / 2 = 150.00 and it holds \
         0.00: top up"
    );
    assert_eq!(
        trs(&nq),
        [t(&q, 1, WUHAI, ORDOS, ["500.00", "0.00", "500.00"], false)]
    );
    record_transfer(&w.c.wuhai, &tr(&q, 1), "500.00", "BK-Q").await;
    assert_eq!(
        get_period(&w.c.op, &q).await.status,
        PeriodStatus::Settled as i32
    );
    assert_eq!(
        balances(&w.op, &CLEARING_ACCOUNTS).await,
        CLEARING_ACCOUNTS
            .iter()
            .map(|a| ((*a).to_owned(), "0.00".to_owned()))
            .collect::<Vec<_>>()
    );
    verify_ok(&w.ts).await;
}

async fn prepayment_draw_down_and_warning(b: Backend) {
    let w = world3(b).await;
    let periods: Vec<String> = std::iter::successors(Some(w.p.clone()), |x| Some(next_period(x)))
        .take(4)
        .collect();
    let [p, q, r3, r4] = [&periods[0], &periods[1], &periods[2], &periods[3]];

    // GetPrepayment before anything: 0.00, no warning line. Own bureau or operators only.
    assert_eq!(
        prepayment(&w.c.wuhai, WUHAI).await,
        proto::Prepayment {
            region: WUHAI.into(),
            balance: "0.00".into(),
            warning_line: "0.00".into(),
            top_up: false,
            deposit_id: String::new(),
        }
    );
    for (cl, region) in [
        (&w.c.ordos, WUHAI),
        (&w.c.beijing, ORDOS),
        (&w.c.hosp, ORDOS),
    ] {
        cl.clone()
            .get_prepayment(proto::GetPrepaymentRequest {
                region: region.into(),
            })
            .await
            .code_is(Code::PermissionDenied);
    }

    // DepositPrepayment validations.
    for cl in [&w.c.ordos, &w.c.nx, &w.c.hosp] {
        cl.clone()
            .deposit_prepayment(deposit_prepay_req(WUHAI, "1000.00", "BK"))
            .await
            .code_is(Code::PermissionDenied);
    }
    for amount in ["0.00", "-5.00", "0", "abc", ""] {
        w.c.wuhai
            .clone()
            .deposit_prepayment(deposit_prepay_req(WUHAI, amount, "BK"))
            .await
            .invalid("amount");
    }
    let long = "r".repeat(65);
    for r in ["", long.as_str()] {
        w.c.wuhai
            .clone()
            .deposit_prepayment(deposit_prepay_req(WUHAI, "1000.00", r))
            .await
            .invalid("bank_reference");
    }
    for d in ["27/11/2026", "2026-02-30", ""] {
        w.c.wuhai
            .clone()
            .deposit_prepayment(proto::DepositPrepaymentRequest {
                value_date: d.into(),
                ..deposit_prepay_req(WUHAI, "1000.00", "BK")
            })
            .await
            .invalid("value_date");
    }
    // Alxa League (152900) is a valid code but not registered here.
    w.c.op
        .clone()
        .deposit_prepayment(deposit_prepay_req("152900", "1000.00", "BK"))
        .await
        .code_is(Code::NotFound);
    w.c.op
        .clone()
        .deposit_prepayment(deposit_prepay_req("15030", "1000.00", "BK"))
        .await
        .invalid("region");
    assert_eq!(prepayment(&w.c.op, WUHAI).await.balance, "0.00");

    // Wuhai deposits 1000.00 itself; replayed once; ALREADY_EXISTS with another amount.
    let dreq = deposit_prepay_req(WUHAI, "1000.00", "ICBC-DEP-1");
    let dep =
        w.c.wuhai
            .clone()
            .deposit_prepayment(dreq.clone())
            .await
            .must();
    assert_eq!(
        (dep.region.as_str(), dep.balance.as_str(), dep.top_up),
        (WUHAI, "1000.00", false)
    );
    assert!(!dep.deposit_id.is_empty());
    assert_eq!(
        w.c.wuhai
            .clone()
            .deposit_prepayment(dreq.clone())
            .await
            .must(),
        dep
    );
    w.c.wuhai
        .clone()
        .deposit_prepayment(proto::DepositPrepaymentRequest {
            amount: "2000.00".into(),
            ..dreq
        })
        .await
        .code_is(Code::AlreadyExists);
    // An operator deposits 800.00 for Ordos.
    let dep_o = deposit_prepay(&w.c.op, ORDOS, "800.00", "BOC-DEP-1").await;
    assert_eq!(dep_o.balance, "800.00");
    assert_ne!(dep_o.deposit_id, dep.deposit_id);
    assert_eq!(
        prepayment(&w.c.op, WUHAI).await,
        proto::Prepayment {
            deposit_id: String::new(),
            ..dep.clone()
        }
    );
    // bank:{region} also paid its insured's opening account balances: Wuhai 5 × 300.00 =
    // 1500.00, Ordos 1 × 300.00.
    assert_eq!(
        balances(
            &w.op,
            &[
                "bank:150300",
                "prepay:150300",
                "bank:150600",
                "prepay:150600"
            ]
        )
        .await,
        want(&[
            ("bank:150300", "-2500.00"),
            ("prepay:150300", "1000.00"),
            ("bank:150600", "-1100.00"),
            ("prepay:150600", "800.00"),
        ])
    );
    verify_ok(&w.ts).await;

    // ---- P: the three flows (Wuhai −1400.00, Ordos −600.00, Shizuishan +2000.00).
    let f = three_flows(&w).await;
    landed(&f.iter().collect::<Vec<_>>(), p);
    advance_past(&w.ts, p);
    close(&w.c.op, p, 0).await;
    let [so, sn, son] = three_ids(p);
    confirm(&w.c.wuhai, &so).await;
    confirm(&w.c.wuhai, &sn).await;
    confirm(&w.c.ordos, &son).await;
    let n = net(&w.c.op, p).await;
    // Wuhai draws min(1400.00, 1000.00) = 1000.00 → 0.00 left; warning line 50% × 1400.00 =
    // 700.00 → top up. Ordos draws min(600.00, 800.00) = 600.00 → 200.00 left; warning
    // 50% × 600.00 = 300.00 → top up. Shizuishan receives: warning 0.00.
    assert_eq!(
        n.positions,
        [
            pos(
                WUHAI,
                ["1400.00", "0.00", "-1400.00"],
                ["1000.00", "1000.00", "0.00", "700.00"],
                true
            ),
            pos(
                ORDOS,
                ["1600.00", "1000.00", "-600.00"],
                ["800.00", "600.00", "200.00", "300.00"],
                true
            ),
            pos(
                SHIZUISHAN,
                ["0.00", "2000.00", "2000.00"],
                ["0.00", "0.00", "0.00", "0.00"],
                false
            ),
        ]
    );
    // 001: 1400.00 = 1000.00 prepaid + 400.00 by bank; 002: 600.00 all prepaid (recorded).
    assert_eq!(
        trs(&n),
        [
            t(
                p,
                1,
                WUHAI,
                SHIZUISHAN,
                ["1400.00", "1000.00", "400.00"],
                false
            ),
            t(p, 2, ORDOS, SHIZUISHAN, ["600.00", "600.00", "0.00"], true),
        ]
    );
    assert_eq!(
        n.period.as_ref().expect("period").status,
        PeriodStatus::Netted as i32
    );
    // Ledger: draw-downs paid Shizuishan 1600.00 from prepayments (bank:{payer} gets the
    // equivalent back: −2500.00 + 1000.00, −1100.00 + 600.00); 400.00 left to transfer.
    assert_eq!(
        balances(
            &w.op,
            &[
                "prepay:150300",
                "prepay:150600",
                "bank:150300",
                "bank:150600",
                "net:150300",
                "net:150600",
                "net:640200"
            ]
        )
        .await,
        want(&[
            ("prepay:150300", "0.00"),
            ("prepay:150600", "200.00"),
            ("bank:150300", "-1500.00"),
            ("bank:150600", "-500.00"),
            ("net:150300", "400.00"),
            ("net:150600", "0.00"),
            ("net:640200", "-400.00"),
        ])
    );
    verify_ok(&w.ts).await;
    // Nothing to transfer on 002; 001's bank part is 400.00.
    refused(
        w.c.ordos
            .clone()
            .record_transfer(transfer_req(&tr(p, 2), "600.00", "X"))
            .await,
        "no_transfer_due",
    );
    refused(
        w.c.wuhai
            .clone()
            .record_transfer(transfer_req(&tr(p, 1), "1400.00", "X"))
            .await,
        "transfer_amount_differs",
    );
    let rec = record_transfer(&w.c.wuhai, &tr(p, 1), "400.00", "ICBC-TR-1").await;
    assert_eq!(
        rec.period.expect("period").status,
        PeriodStatus::Settled as i32
    );
    assert_eq!(
        prepayment(&w.c.wuhai, WUHAI).await,
        proto::Prepayment {
            region: WUHAI.into(),
            balance: "0.00".into(),
            warning_line: "700.00".into(),
            top_up: true,
            deposit_id: String::new(),
        }
    );
    let po = prepayment(&w.c.ordos, ORDOS).await;
    assert_eq!(
        (po.balance.as_str(), po.warning_line.as_str(), po.top_up),
        ("200.00", "300.00", true)
    );
    verify_ok(&w.ts).await;

    // Wuhai tops up 2000.00: over the line.
    let top = deposit_prepay(&w.c.wuhai, WUHAI, "2000.00", "ICBC-DEP-2").await;
    assert_eq!(
        (top.balance.as_str(), top.warning_line.as_str(), top.top_up),
        ("2000.00", "700.00", false)
    );

    // ---- Q: wo[1] at Ordos 250.00 → 200.00 (W→O); on at Shizuishan 125.00 → 100.00 (O→NX).
    // Wuhai −200.00; Ordos 200.00 − 100.00 = +100.00; Shizuishan +100.00. Receivers tie at
    // 100.00: region order, Ordos first. Wuhai draws 200.00 of 2000.00: everything prepaid →
    // SETTLED at once. Warning lines: Wuhai 50% × (1400.00 + 200.00) / 2 = 400.00; Ordos
    // 50% × (600.00 + 0.00) / 2 = 150.00; Shizuishan 0.00.
    let e = stay(&w.h, &w.wo[1], "250.00", false).await;
    let g = stay(&w.nx_h, &w.on, "125.00", false).await;
    assert_eq!(four(&g), ["125.00", "100.00", "0.00", "25.00"]);
    landed(&[&e, &g], q);
    advance_past(&w.ts, q);
    close(&w.c.op, q, 0).await;
    confirm(&w.c.wuhai, &st(q, WUHAI, ORDOS)).await;
    confirm(&w.c.ordos, &st(q, ORDOS, SHIZUISHAN)).await;
    let nq = net(&w.c.op, q).await;
    assert_eq!(
        nq.positions,
        [
            pos(
                WUHAI,
                ["200.00", "0.00", "-200.00"],
                ["2000.00", "200.00", "1800.00", "400.00"],
                false
            ),
            pos(
                ORDOS,
                ["100.00", "200.00", "100.00"],
                ["200.00", "0.00", "200.00", "150.00"],
                false
            ),
            pos(
                SHIZUISHAN,
                ["0.00", "100.00", "100.00"],
                ["0.00", "0.00", "0.00", "0.00"],
                false
            ),
        ]
    );
    assert_eq!(
        trs(&nq),
        [
            t(q, 1, WUHAI, ORDOS, ["100.00", "100.00", "0.00"], true),
            t(q, 2, WUHAI, SHIZUISHAN, ["100.00", "100.00", "0.00"], true),
        ]
    );
    let gq = nq.period.clone().expect("period");
    assert_eq!(gq.status, PeriodStatus::Settled as i32);
    assert!(!gq.netted_at.is_empty() && !gq.settled_at.is_empty());
    for i in 1..=2 {
        refused(
            w.c.wuhai
                .clone()
                .record_transfer(transfer_req(&tr(q, i), "0.00", "X"))
                .await,
            "no_transfer_due",
        );
    }
    let po = prepayment(&w.c.op, ORDOS).await;
    assert_eq!(
        (po.balance.as_str(), po.warning_line.as_str(), po.top_up),
        ("200.00", "150.00", false)
    );
    verify_ok(&w.ts).await;

    // ---- R3: wo[2] at Ordos 1250.00 → 1000.00. Wuhai draws 1000.00 of 1800.00 → 800.00;
    // warning 50% × (1400.00 + 200.00 + 1000.00) / 3 = 433.333… → 433.33; no top-up.
    // Ordos (receiver) 50% × (600.00 + 0.00 + 0.00) / 3 = 100.00.
    let h = stay(&w.h, &w.wo[2], "1250.00", false).await;
    landed(&[&h], r3);
    advance_past(&w.ts, r3);
    close(&w.c.op, r3, 0).await;
    confirm(&w.c.wuhai, &st(r3, WUHAI, ORDOS)).await;
    let n3 = net(&w.c.op, r3).await;
    assert_eq!(
        n3.positions,
        [
            pos(
                WUHAI,
                ["1000.00", "0.00", "-1000.00"],
                ["1800.00", "1000.00", "800.00", "433.33"],
                false
            ),
            pos(
                ORDOS,
                ["0.00", "1000.00", "1000.00"],
                ["200.00", "0.00", "200.00", "100.00"],
                false
            ),
        ]
    );
    assert_eq!(
        trs(&n3),
        [t(r3, 1, WUHAI, ORDOS, ["1000.00", "1000.00", "0.00"], true)]
    );
    assert_eq!(
        n3.period.expect("period").status,
        PeriodStatus::Settled as i32
    );
    verify_ok(&w.ts).await;

    // ---- R4: wo[3] at Ordos 937.50 → 750.00. Wuhai draws 750.00 of 800.00 → 50.00; the
    // warning line looks at the last 3 netted periods only: 50% × (200.00 + 1000.00 + 750.00)
    // / 3 = 325.00 (with P it would be 418.75) → top up. Ordos 50% × 0.00 = 0.00.
    let k = stay(&w.h, &w.wo[3], "937.50", false).await;
    assert_eq!(four(&k), ["937.50", "750.00", "0.00", "187.50"]);
    landed(&[&k], r4);
    advance_past(&w.ts, r4);
    close(&w.c.op, r4, 0).await;
    confirm(&w.c.wuhai, &st(r4, WUHAI, ORDOS)).await;
    let n4 = net(&w.c.op, r4).await;
    assert_eq!(
        n4.positions,
        [
            pos(
                WUHAI,
                ["750.00", "0.00", "-750.00"],
                ["800.00", "750.00", "50.00", "325.00"],
                true
            ),
            pos(
                ORDOS,
                ["0.00", "750.00", "750.00"],
                ["200.00", "0.00", "200.00", "0.00"],
                false
            ),
        ]
    );
    assert_eq!(
        n4.period.expect("period").status,
        PeriodStatus::Settled as i32
    );
    assert_eq!(
        prepayment(&w.c.wuhai, WUHAI).await,
        proto::Prepayment {
            region: WUHAI.into(),
            balance: "50.00".into(),
            warning_line: "325.00".into(),
            top_up: true,
            deposit_id: String::new(),
        }
    );
    let po = prepayment(&w.c.ordos, ORDOS).await;
    assert_eq!(
        (po.balance.as_str(), po.warning_line.as_str(), po.top_up),
        ("200.00", "0.00", false)
    );
    // Every period settled: net accounts at zero; prepay = deposits − draws:
    // Wuhai 1000.00 + 2000.00 − (1000.00 + 200.00 + 1000.00 + 750.00) = 50.00;
    // Ordos 800.00 − 600.00 = 200.00. The bank accounts mirror them (after the opening
    // balances): Wuhai −1500.00 − 50.00, Ordos −300.00 − 200.00.
    assert_eq!(
        balances(&w.op, &CLEARING_ACCOUNTS).await,
        want(&[
            ("due:150300->150600", "0.00"),
            ("due:150300->640200", "0.00"),
            ("due:150600->640200", "0.00"),
            ("advance:150600", "0.00"),
            ("advance:640200", "0.00"),
            ("net:150300", "0.00"),
            ("net:150600", "0.00"),
            ("net:640200", "0.00"),
            ("prepay:150300", "50.00"),
            ("prepay:150600", "200.00"),
        ])
    );
    assert_eq!(
        balances(&w.op, &["bank:150300", "bank:150600"]).await,
        want(&[("bank:150300", "-1550.00"), ("bank:150600", "-500.00")])
    );
    // ListJournal of the accounts no swipe writes (on SQLite through their partial indexes):
    // exactly the transactions of the whole journal with a leg on the account, oldest first,
    // whole and in pages of one and two.
    let all = journal_pages(&w.op, "", 1000).await;
    let mut legs = Vec::new();
    for account in [
        "bank:150300",
        "bank:150600",
        "prepay:150300",
        "prepay:150600",
        "net:150300",
        "net:150600",
        "net:640200",
    ] {
        let expected: Vec<String> = all
            .iter()
            .filter(|t| t.entries.iter().any(|e| e.account == account))
            .map(|t| t.journal_id.clone())
            .collect();
        legs.push((account, expected.len()));
        for page_size in [0, 1, 2] {
            let listed: Vec<String> = journal_pages(&w.op, account, page_size)
                .await
                .into_iter()
                .map(|t| t.journal_id)
                .collect();
            assert_eq!(listed, expected, "{account}, pages of {page_size}");
        }
    }
    // Each kind with an account of several transactions (more than a page of one).
    for prefix in ["bank:", "prepay:", "net:"] {
        assert!(
            legs.iter().any(|(a, n)| a.starts_with(prefix) && *n >= 2),
            "{legs:?}"
        );
    }
    verify_ok(&w.ts).await;
}

// ------------------------------------------------------------------------------ visibility

async fn export_chunks(c: &Clr, period: &str, kind: ExportKind) -> Vec<String> {
    let mut stream = c
        .clone()
        .export_clearing(proto::ExportClearingRequest {
            period: period.into(),
            kind: kind as i32,
        })
        .await
        .must();
    let mut out = Vec::new();
    while let Some(chunk) = stream.message().await.expect("export chunk") {
        out.push(chunk.data);
    }
    out
}

const H_STATEMENTS: &str = "statement_id,period,home_region,treatment_region,clearing_type,status,line_count,medfee_sumamt,fund_pay_sumamt,acct_pay,disputed_count,disputed_due,due,confirmed_at,auto_confirmed,overdue\n";
const H_LINES: &str = "statement_id,setl_id,reverses,medfee_sumamt,fund_pay_sumamt,acct_pay,due,dispute_state,dispute_reason,follows,carried_from,carried_into\n";
const H_POSITIONS: &str = "period,region,payable,receivable,net,prepay_before,prepay_drawn,prepay_after,warning_line,top_up\n";
const H_TRANSFERS: &str = "instruction_id,period,seq,payer,receiver,amount,prepay,bank,recorded,bank_reference,value_date\n";

fn all(rows: &[String]) -> Vec<&String> {
    rows.iter().collect()
}

fn csv(header: &str, rows: &[&String]) -> String {
    let mut s = header.to_owned();
    for r in rows {
        s.push_str(r);
    }
    s
}

async fn netting_visibility_and_export(b: Backend) {
    let w = world3(b).await;
    let p = w.p.clone();
    // The three flows plus wo[1] at Ordos 500.00 with the account (300.00): fund 400.00,
    // account 100.00, cash 0.00, due 500.00 — disputed, so W→O stays at 1000.00.
    let [a, bb, c] = three_flows(&w).await;
    let a2 = stay(&w.h, &w.wo[1], "500.00", true).await;
    assert_eq!(four(&a2), ["500.00", "400.00", "100.00", "0.00"]);
    landed(&[&a, &bb, &c, &a2], &p);
    deposit_prepay(&w.c.wuhai, WUHAI, "1000.00", "ICBC-DEP-1").await;

    // Nothing closed: headers only; bad requests.
    for (kind, header) in [
        (ExportKind::Statements, H_STATEMENTS),
        (ExportKind::Lines, H_LINES),
        (ExportKind::Positions, H_POSITIONS),
        (ExportKind::Transfers, H_TRANSFERS),
    ] {
        assert_eq!(export(&w.c.op, &p, kind).await, header);
    }
    let bad = |period: &str, kind: i32| proto::ExportClearingRequest {
        period: period.into(),
        kind,
    };
    for kind in [ExportKind::Unspecified as i32, 9] {
        w.c.op
            .clone()
            .export_clearing(bad(&p, kind))
            .await
            .invalid("kind");
    }
    for period in ["2026-11", "", "202613"] {
        w.c.op
            .clone()
            .export_clearing(bad(period, ExportKind::Lines as i32))
            .await
            .invalid("period");
        w.c.op
            .clone()
            .get_netting(proto::GetNettingRequest {
                period: period.into(),
            })
            .await
            .invalid("period");
    }
    w.c.hosp
        .clone()
        .export_clearing(bad(&p, ExportKind::Statements as i32))
        .await
        .code_is(Code::PermissionDenied);
    w.c.hosp
        .clone()
        .get_netting(proto::GetNettingRequest { period: p.clone() })
        .await
        .code_is(Code::PermissionDenied);

    advance_past(&w.ts, &p);
    close(&w.c.op, &p, 0).await;
    let [so, sn, son] = three_ids(&p);
    let reason = "not admitted, \"no\" record";
    dispute(&w.c.wuhai, &so, &[(a2.setl_id.as_str(), reason)]).await;
    let co = confirm(&w.c.wuhai, &so).await;
    let cn = confirm(&w.c.wuhai, &sn).await;
    let con = confirm(&w.c.ordos, &son).await;

    // Statement rows.
    let st_rows = [
        format!(
            "{so},{p},150300,150600,21,CONFIRMED,2,1250.00,1000.00,0.00,1,500.00,1000.00,{},false,false\n",
            co.confirmed_at
        ),
        format!(
            "{sn},{p},150300,640200,21,CONFIRMED,1,500.00,400.00,0.00,0,0.00,400.00,{},false,false\n",
            cn.confirmed_at
        ),
        format!(
            "{son},{p},150600,640200,21,CONFIRMED,1,2000.00,1600.00,0.00,0,0.00,1600.00,{},false,false\n",
            con.confirmed_at
        ),
    ];
    // Line rows, by statement then setl_id; the reason is quoted (comma, doubled quotes).
    let mut wo_lines = [
        (
            a.setl_id.clone(),
            format!(
                "{so},{},,1250.00,1000.00,0.00,1000.00,NONE,,,,\n",
                a.setl_id
            ),
        ),
        (
            a2.setl_id.clone(),
            format!(
                "{so},{},,500.00,400.00,100.00,500.00,DISPUTED,\"not admitted, \"\"no\"\" record\",,,\n",
                a2.setl_id
            ),
        ),
    ];
    wo_lines.sort();
    let ln_rows = [
        wo_lines[0].1.clone(),
        wo_lines[1].1.clone(),
        format!("{sn},{},,500.00,400.00,0.00,400.00,NONE,,,,\n", bb.setl_id),
        format!(
            "{son},{},,2000.00,1600.00,0.00,1600.00,NONE,,,,\n",
            c.setl_id
        ),
    ];
    // Confirmed, not netted: statements and lines, no positions or transfers yet.
    assert_eq!(
        export(&w.c.op, &p, ExportKind::Statements).await,
        csv(H_STATEMENTS, &st_rows.iter().collect::<Vec<_>>())
    );
    assert_eq!(
        export(&w.c.op, &p, ExportKind::Positions).await,
        H_POSITIONS
    );
    let before = netting(&w.c.wuhai, &p).await;
    assert!(before.positions.is_empty() && before.instructions.is_empty());
    assert_eq!(
        before.period.expect("period").status,
        PeriodStatus::Confirmed as i32
    );

    // Net: Wuhai draws its 1000.00 (400.00 by bank); Ordos has no prepayment (600.00 by bank).
    // Warning lines 700.00 and 300.00 (50% of what each pays).
    let n = net(&w.c.op, &p).await;
    assert_eq!(
        trs(&n),
        [
            t(
                &p,
                1,
                WUHAI,
                SHIZUISHAN,
                ["1400.00", "1000.00", "400.00"],
                false
            ),
            t(
                &p,
                2,
                ORDOS,
                SHIZUISHAN,
                ["600.00", "0.00", "600.00"],
                false
            ),
        ]
    );
    // Ordos records its transfer.
    record_transfer(&w.c.ordos, &tr(&p, 2), "600.00", "BOC-TR-1").await;
    let n = netting(&w.c.op, &p).await;
    assert_eq!(
        n.period.as_ref().expect("period").status,
        PeriodStatus::Netted as i32
    );
    let pos_rows = [
        format!("{p},150300,1400.00,0.00,-1400.00,1000.00,1000.00,0.00,700.00,true\n"),
        format!("{p},150600,1600.00,1000.00,-600.00,0.00,0.00,0.00,300.00,true\n"),
        format!("{p},640200,0.00,2000.00,2000.00,0.00,0.00,0.00,0.00,false\n"),
    ];
    let tr_rows = [
        format!("TR{p}-001,{p},1,150300,640200,1400.00,1000.00,400.00,false,,\n"),
        format!("TR{p}-002,{p},2,150600,640200,600.00,0.00,600.00,true,BOC-TR-1,2026-12-20\n"),
    ];

    // GetNetting: operators everything; a bureau its own position and its instructions.
    assert_eq!(n.positions.len(), 3);
    assert_eq!(n.instructions.len(), 2);
    let view = |region: &str, instrs: &[usize]| proto::Netting {
        period: n.period.clone(),
        positions: n
            .positions
            .iter()
            .filter(|x| x.region == region)
            .cloned()
            .collect(),
        instructions: instrs.iter().map(|i| n.instructions[*i].clone()).collect(),
    };
    assert_eq!(netting(&w.c.wuhai, &p).await, view(WUHAI, &[0]));
    assert_eq!(netting(&w.c.ordos, &p).await, view(ORDOS, &[1]));
    assert_eq!(netting(&w.c.nx, &p).await, view(SHIZUISHAN, &[0, 1]));
    assert_eq!(netting(&w.c.beijing, &p).await, view(BEIJING, &[]));

    // Exports, operator: everything.
    for (kind, header, rows) in [
        (ExportKind::Statements, H_STATEMENTS, all(&st_rows)),
        (ExportKind::Lines, H_LINES, all(&ln_rows)),
        (ExportKind::Positions, H_POSITIONS, all(&pos_rows)),
        (ExportKind::Transfers, H_TRANSFERS, all(&tr_rows)),
    ] {
        let chunks = export_chunks(&w.c.op, &p, kind).await;
        assert!(chunks[0].starts_with(header), "{kind:?}: {:?}", chunks[0]);
        assert!(chunks.iter().all(|x| x.ends_with('\n')), "rows end chunks");
        assert_eq!(chunks.concat(), csv(header, &rows), "{kind:?}");
    }
    // Bureaus: statements where they are a party, their position, their instructions.
    let pick = |rows: &[String], idx: &[usize]| -> String {
        idx.iter().map(|i| rows[*i].clone()).collect::<String>()
    };
    for (cl, sts, lns, ps, ts) in [
        (&w.c.wuhai, vec![0, 1], vec![0, 1, 2], vec![0], vec![0]),
        (&w.c.ordos, vec![0, 2], vec![0, 1, 3], vec![1], vec![1]),
        (&w.c.nx, vec![1, 2], vec![2, 3], vec![2], vec![0, 1]),
        (&w.c.beijing, vec![], vec![], vec![], vec![]),
    ] {
        assert_eq!(
            export(cl, &p, ExportKind::Statements).await,
            format!("{H_STATEMENTS}{}", pick(&st_rows, &sts))
        );
        assert_eq!(
            export(cl, &p, ExportKind::Lines).await,
            format!("{H_LINES}{}", pick(&ln_rows, &lns))
        );
        assert_eq!(
            export(cl, &p, ExportKind::Positions).await,
            format!("{H_POSITIONS}{}", pick(&pos_rows, &ps))
        );
        assert_eq!(
            export(cl, &p, ExportKind::Transfers).await,
            format!("{H_TRANSFERS}{}", pick(&tr_rows, &ts))
        );
    }
    // Another (never closed) period: headers only.
    assert_eq!(
        export(&w.c.op, &prev_period(&p), ExportKind::Lines).await,
        H_LINES
    );
    verify_ok(&w.ts).await;
}

// ------------------------------------------------------------------------------ bugs

/// The proto: "Reversals and refunds of a disputed settlement follow its dispute (stated, kept
/// out of the figures, resolved with it), so nothing is counted twice." Here the reversal is
/// on the same statement as the settlement the home bureau disputes.
async fn reversal_on_same_statement_follows_dispute(b: Backend) {
    let w = world3(b).await;
    let p = w.p.clone();
    // P at H15060000001: s1 1250.00 → 1000.00, reversed in P (r1 −1000.00); s2 500.00 →
    // 400.00.
    let s1 = stay(&w.h, &w.wo[0], "1250.00", false).await;
    let r1 = reverse(&w.h, &s1).await;
    let s2 = stay(&w.h, &w.wo[1], "500.00", false).await;
    landed(&[&s1, &r1, &s2], &p);
    advance_past(&w.ts, &p);
    close(&w.c.op, &p, 0).await;
    let sp = st(&p, WUHAI, ORDOS);
    // Before the dispute: 1000.00 − 1000.00 + 400.00 = 400.00.
    assert_eq!(statement(&w.c.op, &sp).await.due, "400.00");
    // Wuhai disputes s1: its reversal must leave the figures with it; due stays s2 = 400.00.
    let d = dispute(&w.c.wuhai, &sp, &[(s1.setl_id.as_str(), "never admitted")]).await;
    assert_eq!(
        d.due, "400.00",
        "the reversal of a disputed settlement must not be counted without it"
    );
    // Rejected and netted: Wuhai pays 400.00; nothing of s1/r1 is left owing.
    resolve(&w.c.ordos, &sp, &s1.setl_id, false, "agreed").await;
    confirm(&w.c.wuhai, &sp).await;
    let n = net(&w.c.op, &p).await;
    assert_eq!(
        nets(&n),
        [
            (WUHAI.to_owned(), "-400.00".to_owned()),
            (ORDOS.to_owned(), "400.00".to_owned())
        ]
    );
    assert_eq!(
        balance(&w.op, "due:150300->150600").await.balance,
        "0.00",
        "a reversed settlement leaves nothing owing"
    );
    verify_ok(&w.ts).await;
}

/// The brief: an accepted line joins "the next ClosePeriod of a later month". Closing an
/// earlier month (never closed, nothing settled in it) must not take it.
async fn accepted_line_is_not_carried_into_an_earlier_period(b: Backend) {
    let w = world3(b).await;
    let p = w.p.clone();
    let earlier = prev_period(&p);
    let s1 = stay(&w.h, &w.wo[0], "1250.00", false).await;
    landed(&[&s1], &p);
    advance_past(&w.ts, &p);
    close(&w.c.op, &p, 0).await;
    let sp = st(&p, WUHAI, ORDOS);
    dispute(&w.c.wuhai, &sp, &[(s1.setl_id.as_str(), "not admitted")]).await;
    resolve(&w.c.ordos, &sp, &s1.setl_id, true, "ok").await;
    // The month before P closes: nothing of its own, and s1 (settled in P) is not its business.
    let g = close(&w.c.op, &earlier, 0).await;
    assert_eq!(
        (g.status, g.statements),
        (PeriodStatus::Confirmed as i32, 0),
        "an accepted line of {p} was carried into {earlier}"
    );
    // It joins P+1 instead.
    let q = next_period(&p);
    advance_past(&w.ts, &q);
    close(&w.c.op, &q, 0).await;
    let stq = statement(&w.c.op, &st(&q, WUHAI, ORDOS)).await;
    assert_eq!(stq.due, "1000.00");
    assert_eq!(line_on(&stq, &s1.setl_id).carried_from, sp);
    verify_ok(&w.ts).await;
}

/// A settlement whose reversal was already confirmed on a later month's statement can no longer
/// be disputed: the home bureau was credited the reversal, so taking the settlement out now
/// would count that credit twice. P closes with the flag rule and stays pending (overdue);
/// the reversal lands in P+1, which closes and is confirmed; then the dispute of s1 in P is
/// refused with nothing written.
async fn dispute_refused_once_the_reversal_is_cleared(b: Backend) {
    let w = world3(b).await;
    let p = w.p.clone();
    let s1 = stay(&w.h, &w.wo[0], "1250.00", false).await;
    landed(&[&s1], &p);
    advance_past(&w.ts, &p);
    w.c.op
        .clone()
        .close_period(close_with(&p, 1, DeadlineAction::Flag))
        .await
        .must();
    let r1 = reverse(&w.h, &s1).await;
    let q = next_period(&p);
    landed(&[&r1], &q);
    advance_past(&w.ts, &q);
    close(&w.c.op, &q, 0).await;
    let sq = st(&q, WUHAI, ORDOS);
    confirm(&w.c.wuhai, &sq).await;
    let sp = st(&p, WUHAI, ORDOS);
    timer(&w.ts).await;
    let before = statement(&w.c.op, &sp).await;
    assert!(before.overdue, "P is pending past its deadline");
    let err =
        w.c.wuhai
            .clone()
            .dispute_lines(dispute_req(&sp, &[(s1.setl_id.as_str(), "never admitted")]))
            .await
            .expect_err("the reversal is already cleared");
    assert_rule(&err, "reversal_already_cleared");
    assert!(err.message().contains(&r1.setl_id), "{}", err.message());
    assert_eq!(statement(&w.c.op, &sp).await, before, "nothing written");
    // Confirmed as it stands, the pair nets to nothing owing.
    confirm(&w.c.wuhai, &sp).await;
    verify_ok(&w.ts).await;
}

/// Every statement of `periods` as an operator reads it: figures and all its lines.
async fn snapshot(c: &Clr, periods: &[&str]) -> Vec<(Fig, Vec<proto::StatementLine>)> {
    let mut out = Vec::new();
    for p in periods {
        for s in statements(c, p).await {
            let full = statement(c, &s.statement_id).await;
            out.push((fig(&full), sorted(full.lines)));
        }
    }
    out
}

/// A database written before migration 0007 stored every settlement of a closed month as a
/// statement line. Built here by the real server (a dispute accepted and carried into the next
/// month, a reversal, plain lines), then put back into that older shape (every settlement of a
/// closed month copied as a line, no base figures, the 0007 migration unrecorded); applying
/// the migrations again must give every statement the same figures and lines, store only the
/// exceptions, and pass verify.
async fn upgrade_to_derived_lines_keeps_statements(b: Backend) {
    let w = world3(b).await;
    let p = w.p.clone();
    let q = next_period(&p);
    // P: s1 1250.00 (due 1000.00), s2 500.00 with account (due 500.00), s4 at Shizuishan.
    let s1 = stay(&w.h, &w.wo[0], "1250.00", false).await;
    let s2 = stay(&w.h, &w.wo[1], "500.00", true).await;
    let s4 = stay(&w.nx_h, &w.wn, "200.00", false).await;
    advance_past(&w.ts, &p);
    assert_eq!(close(&w.c.op, &p, 0).await.statements, 2);
    let sp = st(&p, WUHAI, ORDOS);
    dispute(
        &w.c.wuhai,
        &sp,
        &[(s1.setl_id.as_str(), "patient not admitted")],
    )
    .await;
    resolve(&w.c.ordos, &sp, &s1.setl_id, true, "records found").await;
    confirm(&w.c.wuhai, &sp).await;
    // Q: s3, and the reversal of s2 (it lands in Q, pointing at s2); s1 is carried into Q.
    let s3 = stay(&w.h, &w.wo[2], "100.00", false).await;
    let r2 = reverse(&w.h, &s2).await;
    advance_past(&w.ts, &q);
    close(&w.c.op, &q, 0).await;
    verify_ok(&w.ts).await;
    let before = snapshot(&w.c.op, &[&p, &q]).await;
    let sq = st(&q, WUHAI, ORDOS);
    assert_eq!(
        before.iter().map(|(_, l)| l.len()).collect::<Vec<_>>(),
        [2, 1, 3],
        "{sp}: s1 (disputed) + s2; P at Shizuishan: s4 ({}); {sq}: s3 ({}) + r2 ({}) + s1 carried",
        s4.setl_id,
        s3.setl_id,
        r2.setl_id
    );

    // Back to the pre-0007 shape.
    let id = "'ST' || st.clearing_period || '-' || st.home_region || '-' || st.treatment_region || '-' || \
              CAST(CASE st.care_type WHEN 1 THEN 11 WHEN 2 THEN 21 WHEN 3 THEN 41 ELSE 51 END AS TEXT)";
    let copy = format!(
        "INSERT INTO statement_line (statement_id, setl_id, reverses, medfee_fen, fund_fen, acct_fen, disputed, \
         dispute_reason, dispute_state) SELECT {id}, st.setl_id, st.reverses, st.medfee_fen, st.fund_fen, \
         st.acct_fen, false, NULL, 0 FROM settlement st JOIN clearing_period cp ON cp.period = st.clearing_period \
         WHERE NOT EXISTS (SELECT 1 FROM statement_line l WHERE l.setl_id = st.setl_id AND l.carried_from IS NULL)"
    );
    raw_sql(
        &w.ts,
        &[
            &copy,
            "DROP INDEX ix_settlement_reverses",
            "DROP INDEX ix_statement_line_follows",
            "DROP INDEX ix_settlement_period",
            "CREATE INDEX ix_settlement_period ON settlement (clearing_period, home_region, treatment_region, care_type)",
            "ALTER TABLE statement DROP COLUMN b_line_count",
            "ALTER TABLE statement DROP COLUMN b_medfee_fen",
            "ALTER TABLE statement DROP COLUMN b_fund_fen",
            "ALTER TABLE statement DROP COLUMN b_acct_fen",
            "DELETE FROM _sqlx_migrations WHERE version = 7",
        ],
    )
    .await;
    w.ts.db.migrate().await.expect("migrating to derived lines");

    assert_eq!(snapshot(&w.c.op, &[&p, &q]).await, before);
    let mut conn = w.ts.db.begin().await.expect("begin");
    let stored: Vec<(String, String, i64)> = medsettle::on_conn!(&mut conn, x => sqlx::query_as(
        "SELECT statement_id, setl_id, dispute_state FROM statement_line ORDER BY statement_id, setl_id",
    )
    .fetch_all(x)
    .await)
    .expect("stored lines");
    conn.commit().await.expect("commit");
    assert_eq!(
        stored,
        [
            (
                sp.clone(),
                s1.setl_id.clone(),
                DisputeState::Accepted as i64
            ),
            (sq.clone(), s1.setl_id.clone(), 0),
        ],
        "only the disputed line and its carried copy stay stored"
    );
    verify_ok(&w.ts).await;
}

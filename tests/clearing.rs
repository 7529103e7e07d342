//! ClearingService end to end, first part: closing a month into statements (one per home
//! bureau, treatment bureau and clearing type, every settlement and reversal of the period as a
//! line), reading them (operators everything, bureaus where they are a party), and the home
//! bureau's confirmation or dispute of lines.
//!
//! Business time is the server's clock (`ts.app.clock`): settlements are made "now" (they land
//! in the current month, Settlement.clearing_period), then the clock moves to the 2nd of the
//! following month (UTC+8), the first day that month may close. Hand-computed figures. Every
//! test builds its own world over gRPC and runs on SQLite and on PostgreSQL.

#[macro_use]
mod common;

use common::clearing_kit::*;
use common::kit::*;
use common::*;
use medsettle::proto;
use medsettle::service::auth::Grant;
use proto::{
    CareType, ClearingType, DeductibleBasis, FilingType, InsuranceType, LevelScope, PeriodStatus,
    PersonCategory, ProvinceScope, SettlementKind, StatementStatus,
};
use tonic::Code;

both_engines!(
    close_produces_statements,
    close_validation_and_permissions,
    close_boundary_and_empty_period,
    later_settlements_land_in_next_period,
    list_and_get_permissions_and_paging,
    dispute_lines,
    confirm_statements,
    concurrent_close_and_confirm,
    figures_are_deterministic,
    dispute_leaves_figures,
    verify_catches_tampered_statements,
);

/// The Ordos pharmacy.
const PH: &str = "P15060000001";

// ------------------------------------------------------------------------------ the world

fn rule(
    care: CareType,
    level: LevelScope,
    basis: DeductibleBasis,
    ratio: &str,
) -> proto::PolicyRule {
    proto::PolicyRule {
        insurance_type: InsuranceType::Employee as i32,
        category: PersonCategory::Active as i32,
        care_type: care as i32,
        level: level as i32,
        province_scope: ProvinceScope::Any as i32,
        deductible_basis: basis as i32,
        deductible: "0.00".into(),
        repeat_admission_deductible: String::new(),
        ratio: ratio.into(),
        annual_cap: String::new(),
        critical_illness: None,
        assistance: None,
    }
}

/// Wuhai's policy from 2026-01-01, no deductibles, no caps: employees inpatient 0.80,
/// outpatient 0.50, at pharmacies 0.50; unfiled treatment refused; the account may not pay
/// class C.
fn wuhai_policy() -> proto::PolicyBody {
    proto::PolicyBody {
        rules: vec![
            rule(
                CareType::Inpatient,
                LevelScope::Any,
                DeductibleBasis::PerAdmission,
                "0.80",
            ),
            rule(
                CareType::Outpatient,
                LevelScope::Any,
                DeductibleBasis::Annual,
                "0.50",
            ),
            rule(
                CareType::Pharmacy,
                LevelScope::Pharmacy,
                DeductibleBasis::Annual,
                "0.50",
            ),
        ],
        filing_reductions: vec![],
        unfiled_allowed: false,
        unfiled_reduction: None,
        account_pays_class_c: false,
        pharmacy_national: false,
    }
}

/// Opens a visit today (server date), uploads `lines`, settles.
async fn bill(
    h: &Setl,
    national_id: &str,
    care: CareType,
    lines: Vec<proto::FeeLine>,
    use_account: bool,
) -> proto::Settlement {
    let v = open(h, national_id, InsuranceType::Employee, care, "").await;
    upload(h, &v.mdtrt_id, lines).await;
    let s = settle(h, &v.mdtrt_id, use_account).await;
    assert_eq!(s.care_type, care as i32);
    s
}

fn pl(no: &str, code: &str, qty: &str, price: &str) -> proto::PurchaseLine {
    proto::PurchaseLine {
        line_no: no.into(),
        code: code.into(),
        name: format!("{code} as the pharmacy calls it"),
        quantity: qty.into(),
        unit_price: price.into(),
    }
}

async fn swipe(
    ph: &Pharm,
    card_no: &str,
    lines: Vec<proto::PurchaseLine>,
    use_account: bool,
) -> proto::Settlement {
    let p = ph
        .clone()
        .settle_purchase(proto::SettlePurchaseRequest {
            request_id: rid(),
            credential: Some(proto::CardCredential {
                credential: Some(proto::card_credential::Credential::CardNo(card_no.into())),
            }),
            insurance_type: InsuranceType::Employee as i32,
            lines,
            use_account,
            account_only: false,
            expected_total: String::new(),
        })
        .await
        .must();
    let s = p.settlement.expect("settlement");
    assert_identities(&s);
    assert_eq!(s.kind, SettlementKind::Settlement as i32);
    assert_eq!(s.care_type, CareType::Pharmacy as i32);
    s
}

async fn refund_lines(ph: &Pharm, setl_id: &str, lines: &[(&str, &str)]) -> proto::Settlement {
    let p = ph
        .clone()
        .refund_purchase(proto::RefundPurchaseRequest {
            request_id: rid(),
            setl_id: setl_id.into(),
            lines: lines
                .iter()
                .map(|(no, q)| proto::RefundLine {
                    line_no: (*no).into(),
                    quantity: (*q).into(),
                })
                .collect(),
            reason: "returned at the counter".into(),
        })
        .await
        .must();
    let s = p.settlement.expect("settlement");
    assert_identities(&s);
    assert_eq!(s.kind, SettlementKind::Reversal as i32);
    assert_eq!(s.reverses, setl_id);
    s
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

/// The clearing world, every settlement made today (period `p`, the current month):
///
/// H15060000001 (Ordos, level 3), Wuhai employees with long-term filings to Ordos:
///   s1  p1 inpatient, A001 10 × 100.00 + C001 1 × 50.00 (class C), account on (1000.00):
///       medfee 1050.00; in scope 1000.00 × 0.80 = fund 800.00; personal 250.00;
///       account min(250.00 − 50.00, 1000.00) = 200.00; cash 50.00; due 1000.00
///   s2  p2 inpatient, A001 3 × 333.33 = 999.99 + B001 2 × 120.00 = 240.00 (over-limit 40.00,
///       first self-paid 20.00, in scope 180.00), account on (100.00): medfee 1239.99;
///       in scope 1179.99 × 0.80 = 943.992 → fund 943.99; personal 296.00;
///       account min(296.00, 100.00) = 100.00; cash 196.00; due 1043.99
///   r1  the reversal of s1: −1050.00, −800.00, −200.00, −50.00; due −1000.00
/// P15060000001 (Ordos pharmacy), card holder p4 (account 300.00):
///   pp1 A001 2 × 35.50 = 71.00; B001 3 × 120.00 = 360.00 (over-limit 60.00, first self-paid
///       30.00, in scope 270.00); C001 1 × 20.00 (class C); account on: medfee 451.00;
///       in scope 341.00 × 0.50 = fund 170.50; personal 280.50;
///       account min(280.50 − 20.00, 300.00) = 260.50; cash 20.00; due 431.00
/// H64020000001 (Shizuishan), p3 filed there:
///   s4  p3 inpatient, A001 1 × 500.00, account off: fund 400.00; cash 100.00; due 400.00
///
/// Statements of `p`:
///   ST{p}-150300-150600-21  s1, s2, r1: medfee 1050.00 + 1239.99 − 1050.00 = 1239.99;
///                           fund 800.00 + 943.99 − 800.00 = 943.99;
///                           acct 200.00 + 100.00 − 200.00 = 100.00; due 1043.99
///   ST{p}-150300-150600-41  pp1: 451.00, 170.50, 260.50; due 431.00
///   ST{p}-150300-640200-21  s4: 500.00, 400.00, 0.00; due 400.00
struct Scn {
    ts: TestServer,
    c: Clients,
    h: Setl,
    nx_h: Setl,
    ph: Pharm,
    p2: Psn,
    /// The period every settlement landed in.
    p: String,
    s1: proto::Settlement,
    s2: proto::Settlement,
    r1: proto::Settlement,
    pp1: proto::Settlement,
    s4: proto::Settlement,
}

impl Scn {
    fn st_ordos_21(&self) -> String {
        format!("ST{}-150300-150600-21", self.p)
    }
    fn st_ordos_41(&self) -> String {
        format!("ST{}-150300-150600-41", self.p)
    }
    fn st_nx_21(&self) -> String {
        format!("ST{}-150300-640200-21", self.p)
    }
}

async fn scenario(b: Backend) -> Scn {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    create_region(&w.op, BEIJING).await;
    register(&w, HOSP_NX, SHIZUISHAN, 3).await;
    catalogue(&w.nx, SHIZUISHAN, ordos_items()).await;
    w.op.reg()
        .register_institution(pharmacy(PH, ORDOS))
        .await
        .must();
    put_policy(&w.wuhai, WUHAI, JAN1, wuhai_policy()).await;

    let p1 = wuhai_employee(&w, 1, "1000.00").await;
    let p2 = wuhai_employee(&w, 2, "100.00").await;
    let p3 = wuhai_employee(&w, 3, "50.00").await;
    for p in [&p1, &p2] {
        file(&w, &p.psn_no, FilingType::LongTermResident, ORDOS, "", "").await;
    }
    file(
        &w,
        &p3.psn_no,
        FilingType::LongTermResident,
        SHIZUISHAN,
        "",
        "",
    )
    .await;
    let card4 = format!("C{WUHAI}00004");
    enrol(
        &w.wuhai,
        proto::EnrolPersonRequest {
            card_no: card4.clone(),
            ..employee(&national_id("150302", "19800101", 4), WUHAI, "300.00")
        },
    )
    .await;

    let p = period_of(biz_today(&ts));
    let s1 = bill(
        &w.h,
        &p1.national_id,
        CareType::Inpatient,
        vec![
            line("1", "A001", "10", "100.00"),
            line("2", "C001", "1", "50.00"),
        ],
        true,
    )
    .await;
    assert_eq!(four(&s1), ["1050.00", "800.00", "200.00", "50.00"]);
    let s2 = bill(
        &w.h,
        &p2.national_id,
        CareType::Inpatient,
        vec![
            line("1", "A001", "3", "333.33"),
            line("2", "B001", "2", "120.00"),
        ],
        true,
    )
    .await;
    assert_eq!(four(&s2), ["1239.99", "943.99", "100.00", "196.00"]);
    let r1 = reverse(&w.h, &s1).await;
    assert_eq!(four(&r1), ["-1050.00", "-800.00", "-200.00", "-50.00"]);

    let ph = pharm_as(&ts, PH).await;
    let pp1 = swipe(
        &ph,
        &card4,
        vec![
            pl("1", "A001", "2", "35.50"),
            pl("2", "B001", "3", "120.00"),
            pl("3", "C001", "1", "20.00"),
        ],
        true,
    )
    .await;
    assert_eq!(four(&pp1), ["451.00", "170.50", "260.50", "20.00"]);

    let nx_h = hosp(&ts, HOSP_NX).await;
    let s4 = bill(
        &nx_h,
        &p3.national_id,
        CareType::Inpatient,
        vec![line("1", "A001", "1", "500.00")],
        false,
    )
    .await;
    assert_eq!(four(&s4), ["500.00", "400.00", "0.00", "100.00"]);
    assert_eq!(s4.treatment_region, SHIZUISHAN);

    for s in [&s1, &s2, &r1, &pp1, &s4] {
        assert_eq!(s.home_region, WUHAI);
        assert_eq!(
            s.clearing_period, p,
            "{} landed in another period (the build straddled a month end?)",
            s.setl_id
        );
    }
    Scn {
        c: clients(&ts).await,
        h: w.h,
        nx_h,
        ph,
        p2,
        p,
        s1,
        s2,
        r1,
        pp1,
        s4,
        ts,
    }
}

/// The scenario with its period closed (default 10 confirm days).
async fn closed(b: Backend) -> Scn {
    let s = scenario(b).await;
    advance_past(&s.ts, &s.p);
    let got = close(&s.c.op, &s.p, 0).await;
    assert_eq!(got.status, PeriodStatus::Closed as i32);
    assert_eq!(got.statements, 3);
    s
}

// ------------------------------------------------------------------------------ expectations

/// A statement's summary: id, home, treatment, clearing type, status, line_count, medfee,
/// fund, acct, disputed_count, disputed_due, due.
type Sum = (
    String,
    String,
    String,
    i32,
    i32,
    u64,
    String,
    String,
    String,
    u64,
    String,
    String,
);

fn sum_of(s: &proto::Statement) -> Sum {
    (
        s.statement_id.clone(),
        s.home_region.clone(),
        s.treatment_region.clone(),
        s.clearing_type,
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

#[allow(clippy::too_many_arguments)]
fn sum(
    id: &str,
    treatment: &str,
    ct: ClearingType,
    status: StatementStatus,
    lines: u64,
    medfee: &str,
    fund: &str,
    acct: &str,
    disputed: (u64, &str),
    due: &str,
) -> Sum {
    (
        id.into(),
        WUHAI.into(),
        treatment.into(),
        ct as i32,
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

/// The three pending statements of the scenario, in id order.
fn expected_pending(s: &Scn) -> Vec<Sum> {
    use StatementStatus::Pending;
    vec![
        sum(
            &s.st_ordos_21(),
            ORDOS,
            ClearingType::Inpatient,
            Pending,
            3,
            "1239.99",
            "943.99",
            "100.00",
            (0, "0.00"),
            "1043.99",
        ),
        sum(
            &s.st_ordos_41(),
            ORDOS,
            ClearingType::Pharmacy,
            Pending,
            1,
            "451.00",
            "170.50",
            "260.50",
            (0, "0.00"),
            "431.00",
        ),
        sum(
            &s.st_nx_21(),
            SHIZUISHAN,
            ClearingType::Inpatient,
            Pending,
            1,
            "500.00",
            "400.00",
            "0.00",
            (0, "0.00"),
            "400.00",
        ),
    ]
}

/// A line: setl_id, reverses, medfee, fund, acct, due, disputed, reason.
type Ln = (String, String, String, String, String, String, bool, String);

fn ln_of(l: &proto::StatementLine) -> Ln {
    (
        l.setl_id.clone(),
        l.reverses.clone(),
        l.medfee_sumamt.clone(),
        l.fund_pay_sumamt.clone(),
        l.acct_pay.clone(),
        l.due.clone(),
        l.disputed,
        l.dispute_reason.clone(),
    )
}

/// The expected line of settlement `s` with its hand-computed `due`.
fn ln(s: &proto::Settlement, due: &str) -> Ln {
    (
        s.setl_id.clone(),
        s.reverses.clone(),
        s.medfee_sumamt.clone(),
        s.fund_pay_sumamt.clone(),
        s.acct_pay.clone(),
        due.into(),
        false,
        String::new(),
    )
}

fn by_setl_id(mut v: Vec<Ln>) -> Vec<Ln> {
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn lines_of(s: &proto::Statement) -> Vec<Ln> {
    s.lines.iter().map(ln_of).collect()
}

// ------------------------------------------------------------------------------ tests

async fn close_produces_statements(b: Backend) {
    let s = scenario(b).await;
    let p = s.p.clone();

    // Before the month has ended: not closable, still open.
    refused(
        s.c.op.clone().close_period(close_req(&p, 0)).await,
        "period_not_ended",
    );
    let open = get_period(&s.c.op, &p).await;
    assert_eq!(
        open,
        proto::ClearingPeriod {
            period: p.clone(),
            status: PeriodStatus::Open as i32,
            closed_at: String::new(),
            confirm_deadline: String::new(),
            statements: 0,
            confirmed_statements: 0,
            ..Default::default()
        }
    );
    assert!(statements(&s.c.op, &p).await.is_empty());

    advance_past(&s.ts, &p);
    let day = biz_today(&s.ts);
    let got = close(&s.c.op, &p, 0).await;
    assert_eq!(got.period, p);
    assert_eq!(got.status, PeriodStatus::Closed as i32);
    assert_eq!(got.statements, 3);
    assert_eq!(got.confirmed_statements, 0);
    // Default 10 days after the close date (UTC+8).
    assert_eq!(got.confirm_deadline, ymd(day + chrono::Days::new(10)));
    let closed_at = chrono::DateTime::parse_from_rfc3339(&got.closed_at)
        .unwrap_or_else(|e| panic!("closed_at {:?}: {e}", got.closed_at));
    assert_eq!(
        (closed_at.with_timezone(&chrono::Utc) + chrono::Duration::hours(8)).date_naive(),
        day
    );
    assert_eq!(get_period(&s.c.op, &p).await, got);
    assert_eq!(
        get_period(&s.c.wuhai, &p).await,
        got,
        "bureaus read periods"
    );

    // Statements: one per (home, treatment, clearing type), in id order.
    let list = statements(&s.c.op, &p).await;
    assert_eq!(
        list.iter().map(sum_of).collect::<Vec<_>>(),
        expected_pending(&s)
    );
    for st in &list {
        assert_eq!(st.period, p);
        assert_eq!(st.confirmed_at, "");
        assert!(st.lines.is_empty(), "ListStatements carries no lines");
    }

    // Lines: every settlement and reversal, in setl_id order; due = fund + account.
    let ordos21 = statement(&s.c.op, &s.st_ordos_21()).await;
    assert_eq!(sum_of(&ordos21), expected_pending(&s)[0]);
    let want = by_setl_id(vec![
        ln(&s.s1, "1000.00"),
        ln(&s.s2, "1043.99"),
        ln(&s.r1, "-1000.00"),
    ]);
    assert_eq!(lines_of(&ordos21), want);
    let rev = ordos21
        .lines
        .iter()
        .find(|l| l.setl_id == s.r1.setl_id)
        .expect("the reversal is a line");
    assert_eq!(rev.reverses, s.s1.setl_id);
    assert_eq!(
        (
            rev.medfee_sumamt.as_str(),
            rev.fund_pay_sumamt.as_str(),
            rev.acct_pay.as_str()
        ),
        ("-1050.00", "-800.00", "-200.00")
    );
    for l in &ordos21.lines {
        assert_eq!(l.reverses.is_empty(), l.setl_id != s.r1.setl_id);
    }
    let ordos41 = statement(&s.c.op, &s.st_ordos_41()).await;
    assert_eq!(sum_of(&ordos41), expected_pending(&s)[1]);
    assert_eq!(lines_of(&ordos41), vec![ln(&s.pp1, "431.00")]);
    let nx21 = statement(&s.c.op, &s.st_nx_21()).await;
    assert_eq!(sum_of(&nx21), expected_pending(&s)[2]);
    assert_eq!(lines_of(&nx21), vec![ln(&s.s4, "400.00")]);

    // Closing again (new request id, other confirm days): the same period, nothing duplicated.
    let again = close(&s.c.op, &p, 30).await;
    assert_eq!(again, got);
    let again = close(&s.c.op, &p, 0).await;
    assert_eq!(again, got);
    assert_eq!(
        statements(&s.c.op, &p)
            .await
            .iter()
            .map(sum_of)
            .collect::<Vec<_>>(),
        expected_pending(&s)
    );
    assert_eq!(lines_of(&statement(&s.c.op, &s.st_ordos_21()).await), want);
    verify_ok(&s.ts).await;
}

async fn close_validation_and_permissions(b: Backend) {
    let ts = TestServer::start(b).await;
    let op = ts.operator().await;
    for r in [WUHAI, ORDOS] {
        create_region(&op, r).await;
    }
    op.reg()
        .register_institution(hospital(HOSP, ORDOS, 3))
        .await
        .must();
    let op = clr_as(&ts, Grant::Operator).await;
    let wuhai = clr_as(&ts, bureau_grant(WUHAI)).await;
    let hosp = clr_as(&ts, inst_grant(HOSP)).await;
    let ended = prev_period(&period_of(biz_today(&ts)));

    // Operators only.
    wuhai
        .clone()
        .close_period(close_req(&ended, 0))
        .await
        .code_is(Code::PermissionDenied);
    hosp.clone()
        .close_period(close_req(&ended, 0))
        .await
        .code_is(Code::PermissionDenied);
    hosp.clone()
        .get_period(proto::GetPeriodRequest {
            period: ended.clone(),
        })
        .await
        .code_is(Code::PermissionDenied);
    assert_eq!(
        get_period(&op, &ended).await.status,
        PeriodStatus::Open as i32,
        "refused closes changed nothing"
    );

    // The period.
    for bad in ["2026-11", "202613", "", "202600", "20261", "2026110"] {
        op.clone()
            .close_period(close_req(bad, 0))
            .await
            .invalid("period");
        op.clone()
            .get_period(proto::GetPeriodRequest { period: bad.into() })
            .await
            .invalid("period");
        op.clone()
            .list_statements(statements_req(bad, 0, ""))
            .await
            .invalid("period");
    }
    // Confirm days 1..90 (0 = 10).
    for days in [91, 1000, u32::MAX] {
        op.clone()
            .close_period(close_req(&ended, days))
            .await
            .invalid("confirm_days");
    }
    assert_eq!(
        get_period(&op, &ended).await.status,
        PeriodStatus::Open as i32
    );
    // A request id is required.
    op.clone()
        .close_period(proto::ClosePeriodRequest {
            request_id: String::new(),
            ..close_req(&ended, 0)
        })
        .await
        .code_is(Code::InvalidArgument);

    // Not ended: the current month and a future one.
    let current = period_of(biz_today(&ts));
    for p in [current.clone(), next_period(&current), "209912".to_owned()] {
        refused(
            op.clone().close_period(close_req(&p, 0)).await,
            "period_not_ended",
        );
    }

    // 90 days is allowed: the deadline is the close date + 90.
    let day = biz_today(&ts);
    let got = close(&op, &ended, 90).await;
    assert_eq!(got.confirm_deadline, ymd(day + chrono::Days::new(90)));
    // Nothing was settled in it: closed straight to CONFIRMED with no statements.
    assert_eq!(got.status, PeriodStatus::Confirmed as i32);
    assert_eq!((got.statements, got.confirmed_statements), (0, 0));
    assert!(statements(&op, &ended).await.is_empty());
}

async fn close_boundary_and_empty_period(b: Backend) {
    let ts = TestServer::start(b).await;
    let op = clr_as(&ts, Grant::Operator).await;
    let p = period_of(biz_today(&ts));
    let next_first = first_of(&next_period(&p));

    // On the 1st of the following month (UTC+8) it has not ended yet.
    advance_to(&ts, next_first);
    assert_eq!(biz_today(&ts), next_first);
    let s = refused(
        op.clone().close_period(close_req(&p, 0)).await,
        "period_not_ended",
    );
    assert!(
        s.message()
            .contains(&ymd(next_first + chrono::Days::new(1))),
        "{}",
        s.message()
    );

    // From the 2nd on it closes: empty → CONFIRMED, 0 statements, deadline + 1 day.
    ts.app.clock.advance(chrono::Duration::days(1));
    let day = biz_today(&ts);
    assert_eq!(day, next_first + chrono::Days::new(1));
    let got = close(&op, &p, 1).await;
    assert_eq!(got.period, p);
    assert_eq!(got.status, PeriodStatus::Confirmed as i32);
    assert_eq!((got.statements, got.confirmed_statements), (0, 0));
    assert_eq!(got.confirm_deadline, ymd(day + chrono::Days::new(1)));
    assert!(!got.closed_at.is_empty());
    assert_eq!(get_period(&op, &p).await, got);
    // Idempotent with a new request id.
    assert_eq!(close(&op, &p, 0).await, got);
    // The same request id replays the first answer.
    let req = close_req(&prev_period(&p), 0);
    let first = op.clone().close_period(req.clone()).await.must();
    let replay = op.clone().close_period(req).await.must();
    assert_eq!(first, replay);
    assert_eq!(first.confirm_deadline, ymd(day + chrono::Days::new(10)));
}

async fn later_settlements_land_in_next_period(b: Backend) {
    let s = scenario(b).await;
    let p = s.p.clone();
    advance_past(&s.ts, &p);
    let q = period_of(biz_today(&s.ts));
    assert_eq!(q, next_period(&p));

    // After the month ended: an outpatient visit of p2, account off: A001 1 × 80.00,
    // fund 80.00 × 0.50 = 40.00; cash 40.00; due 40.00.
    let s5 = bill(
        &s.h,
        &s.p2.national_id,
        CareType::Outpatient,
        vec![line("1", "A001", "1", "80.00")],
        false,
    )
    .await;
    assert_eq!(four(&s5), ["80.00", "40.00", "0.00", "40.00"]);
    assert_eq!(s5.clearing_period, q);

    let got = close(&s.c.op, &p, 0).await;
    assert_eq!(got.statements, 3);
    assert_eq!(
        statements(&s.c.op, &p)
            .await
            .iter()
            .map(sum_of)
            .collect::<Vec<_>>(),
        expected_pending(&s),
        "the later settlement is not in the closed period"
    );

    // After the close: a refund of 1 × B001 of pp1. Kept: 71.00 + 240.00 (in scope 180.00) +
    // 20.00 = 331.00, in scope 251.00 → fund 125.50; personal 205.50; account
    // min(185.50, 300.00) = 185.50. Refund = kept − before: medfee −120.00, fund −45.00,
    // account −75.00, cash 0.00; due −120.00.
    let rf = refund_lines(&s.ph, &s.pp1.setl_id, &[("2", "1")]).await;
    assert_eq!(four(&rf), ["-120.00", "-45.00", "-75.00", "0.00"]);
    assert_eq!(rf.clearing_period, q);
    // And the reversal of s4: −500.00, −400.00, 0.00; due −400.00.
    let r4 = reverse(&s.nx_h, &s.s4).await;
    assert_eq!(r4.clearing_period, q);

    // The closed period is untouched.
    assert_eq!(
        statements(&s.c.op, &p)
            .await
            .iter()
            .map(sum_of)
            .collect::<Vec<_>>(),
        expected_pending(&s)
    );
    assert_eq!(
        lines_of(&statement(&s.c.op, &s.st_ordos_41()).await),
        vec![ln(&s.pp1, "431.00")]
    );

    // The open period q gets them when it closes.
    assert_eq!(
        get_period(&s.c.op, &q).await.status,
        PeriodStatus::Open as i32
    );
    advance_past(&s.ts, &q);
    let gq = close(&s.c.op, &q, 0).await;
    assert_eq!(gq.status, PeriodStatus::Closed as i32);
    assert_eq!(gq.statements, 3);
    use StatementStatus::Pending;
    let st11 = format!("ST{q}-150300-150600-11");
    let st41 = format!("ST{q}-150300-150600-41");
    let stnx = format!("ST{q}-150300-640200-21");
    assert_eq!(
        statements(&s.c.op, &q)
            .await
            .iter()
            .map(sum_of)
            .collect::<Vec<_>>(),
        vec![
            sum(
                &st11,
                ORDOS,
                ClearingType::Outpatient,
                Pending,
                1,
                "80.00",
                "40.00",
                "0.00",
                (0, "0.00"),
                "40.00"
            ),
            sum(
                &st41,
                ORDOS,
                ClearingType::Pharmacy,
                Pending,
                1,
                "-120.00",
                "-45.00",
                "-75.00",
                (0, "0.00"),
                "-120.00"
            ),
            sum(
                &stnx,
                SHIZUISHAN,
                ClearingType::Inpatient,
                Pending,
                1,
                "-500.00",
                "-400.00",
                "0.00",
                (0, "0.00"),
                "-400.00"
            ),
        ]
    );
    assert_eq!(
        lines_of(&statement(&s.c.op, &st11).await),
        vec![ln(&s5, "40.00")]
    );
    let l41 = statement(&s.c.op, &st41).await;
    assert_eq!(lines_of(&l41), vec![ln(&rf, "-120.00")]);
    assert_eq!(
        l41.lines[0].reverses, s.pp1.setl_id,
        "points at the original"
    );
    let lnx = statement(&s.c.op, &stnx).await;
    assert_eq!(lines_of(&lnx), vec![ln(&r4, "-400.00")]);
    assert_eq!(lnx.lines[0].reverses, s.s4.setl_id);
    // Nothing of q leaked into p.
    assert_eq!(get_period(&s.c.op, &p).await.statements, 3);
    verify_ok(&s.ts).await;
}

async fn list_and_get_permissions_and_paging(b: Backend) {
    let s = closed(b).await;
    let p = s.p.clone();
    let ids = |v: &[proto::Statement]| -> Vec<String> {
        v.iter().map(|x| x.statement_id.clone()).collect()
    };
    let all = [s.st_ordos_21(), s.st_ordos_41(), s.st_nx_21()];

    // Who sees what.
    assert_eq!(ids(&statements(&s.c.op, &p).await), all);
    assert_eq!(ids(&statements(&s.c.wuhai, &p).await), all);
    assert_eq!(
        ids(&statements(&s.c.ordos, &p).await),
        [s.st_ordos_21(), s.st_ordos_41()]
    );
    assert_eq!(ids(&statements(&s.c.nx, &p).await), [s.st_nx_21()]);
    assert!(statements(&s.c.beijing, &p).await.is_empty());
    // A bureau sees the same figures as the operator.
    let nx_view = statements(&s.c.nx, &p).await;
    assert_eq!(sum_of(&nx_view[0]), expected_pending(&s)[2]);
    s.c.hosp
        .clone()
        .list_statements(statements_req(&p, 0, ""))
        .await
        .code_is(Code::PermissionDenied);
    // Another period: nothing.
    assert!(statements(&s.c.op, &prev_period(&p)).await.is_empty());

    // Paging, one per page.
    let mut token = String::new();
    let mut seen = Vec::new();
    for i in 0..3 {
        let page =
            s.c.op
                .clone()
                .list_statements(statements_req(&p, 1, &token))
                .await
                .must();
        assert_eq!(page.statements.len(), 1);
        seen.push(page.statements[0].statement_id.clone());
        assert_eq!(sum_of(&page.statements[0]), expected_pending(&s)[i]);
        token = page.next_page_token;
        if i < 2 {
            assert!(!token.is_empty(), "page {i} has a next token");
        }
    }
    if !token.is_empty() {
        let last =
            s.c.op
                .clone()
                .list_statements(statements_req(&p, 1, &token))
                .await
                .must();
        assert!(last.statements.is_empty());
        assert_eq!(last.next_page_token, "");
    }
    assert_eq!(seen, all);
    // Paging as the Ordos bureau: 2 statements.
    let first =
        s.c.ordos
            .clone()
            .list_statements(statements_req(&p, 1, ""))
            .await
            .must();
    assert_eq!(ids(&first.statements), [s.st_ordos_21()]);
    let second =
        s.c.ordos
            .clone()
            .list_statements(statements_req(&p, 1, &first.next_page_token))
            .await
            .must();
    assert_eq!(ids(&second.statements), [s.st_ordos_41()]);
    s.c.op
        .clone()
        .list_statements(statements_req(&p, 1, "not a token"))
        .await
        .invalid("page_token");

    // GetStatement: the parties and operators.
    let want = statement(&s.c.op, &s.st_ordos_21()).await;
    assert_eq!(statement(&s.c.wuhai, &s.st_ordos_21()).await, want);
    assert_eq!(statement(&s.c.ordos, &s.st_ordos_21()).await, want);
    assert_eq!(
        sum_of(&statement(&s.c.nx, &s.st_nx_21()).await),
        expected_pending(&s)[2]
    );
    for c in [&s.c.nx, &s.c.beijing, &s.c.hosp] {
        c.clone()
            .get_statement(get_req(&s.st_ordos_21(), 0, ""))
            .await
            .code_is(Code::PermissionDenied);
    }
    s.c.ordos
        .clone()
        .get_statement(get_req(&s.st_nx_21(), 0, ""))
        .await
        .code_is(Code::PermissionDenied);
    for unknown in [
        format!("ST{p}-150300-150600-11"),
        format!("ST{p}-150600-150300-21"),
        "nope".to_owned(),
    ] {
        s.c.op
            .clone()
            .get_statement(get_req(&unknown, 0, ""))
            .await
            .code_is(Code::NotFound);
    }

    // Lines paged in setl_id order, one per page.
    let mut token = String::new();
    let mut lines = Vec::new();
    for i in 0..3 {
        let page =
            s.c.wuhai
                .clone()
                .get_statement(get_req(&s.st_ordos_21(), 1, &token))
                .await
                .must();
        assert_eq!(
            sum_of(&page),
            expected_pending(&s)[0],
            "figures on every page"
        );
        assert_eq!(page.lines.len(), 1);
        lines.push(ln_of(&page.lines[0]));
        token = page.next_page_token;
        if i < 2 {
            assert!(!token.is_empty());
        }
    }
    if !token.is_empty() {
        let last =
            s.c.wuhai
                .clone()
                .get_statement(get_req(&s.st_ordos_21(), 1, &token))
                .await
                .must();
        assert!(last.lines.is_empty());
        assert_eq!(last.next_page_token, "");
    }
    assert_eq!(
        lines,
        by_setl_id(vec![
            ln(&s.s1, "1000.00"),
            ln(&s.s2, "1043.99"),
            ln(&s.r1, "-1000.00"),
        ])
    );
    assert_eq!(lines, lines_of(&want));
}

async fn dispute_lines(b: Backend) {
    let s = closed(b).await;
    let id = s.st_ordos_21();
    let before = statement(&s.c.op, &id).await;

    // Only the home bureau.
    for c in [&s.c.ordos, &s.c.op, &s.c.nx] {
        c.clone()
            .dispute_lines(dispute_req(
                &id,
                &[(s.s2.setl_id.as_str(), "duplicate bill")],
            ))
            .await
            .code_is(Code::PermissionDenied);
    }
    s.c.hosp
        .clone()
        .dispute_lines(dispute_req(
            &id,
            &[(s.s2.setl_id.as_str(), "duplicate bill")],
        ))
        .await
        .code_is(Code::PermissionDenied);
    // A reason is required, at most 256 characters.
    s.c.wuhai
        .clone()
        .dispute_lines(dispute_req(&id, &[(s.s2.setl_id.as_str(), "")]))
        .await
        .invalid("lines[0].reason");
    let long = "x".repeat(257);
    s.c.wuhai
        .clone()
        .dispute_lines(dispute_req(
            &id,
            &[
                (s.s2.setl_id.as_str(), "ok"),
                (s.s1.setl_id.as_str(), &long),
            ],
        ))
        .await
        .invalid("lines[1].reason");
    // No control characters in a reason.
    s.c.wuhai
        .clone()
        .dispute_lines(dispute_req(
            &id,
            &[(s.s2.setl_id.as_str(), "bad\u{7}reason")],
        ))
        .await
        .invalid("lines[0].reason");
    // No lines.
    s.c.wuhai
        .clone()
        .dispute_lines(dispute_req(&id, &[]))
        .await
        .code_is(Code::InvalidArgument);
    // An unknown line (or one of another statement) after a good one: NOT_FOUND, nothing kept.
    for other in ["S-unknown", s.s4.setl_id.as_str(), s.pp1.setl_id.as_str()] {
        s.c.wuhai
            .clone()
            .dispute_lines(dispute_req(
                &id,
                &[
                    (s.s2.setl_id.as_str(), "duplicate bill"),
                    (other, "not ours"),
                ],
            ))
            .await
            .code_is(Code::NotFound);
    }
    s.c.wuhai
        .clone()
        .dispute_lines(dispute_req(
            "ST000000-150300-150600-21",
            &[(s.s2.setl_id.as_str(), "x")],
        ))
        .await
        .code_is(Code::NotFound);
    assert_eq!(
        statement(&s.c.op, &id).await,
        before,
        "refused disputes changed nothing"
    );

    // Dispute s2 (due 1043.99): it moves from due to disputed_due. Undisputed: s1 + r1 =
    // 1000.00 − 1000.00 = 0.00.
    let req = dispute_req(&id, &[(s.s2.setl_id.as_str(), "patient was not admitted")]);
    let got = s.c.wuhai.clone().dispute_lines(req.clone()).await.must();
    assert_eq!(got.statement_id, id);
    assert_eq!(got.status, StatementStatus::Pending as i32);
    assert_eq!(got.line_count, 3, "every line stays on the statement");
    assert_eq!(got.disputed_count, 1);
    assert_eq!(got.disputed_due, "1043.99");
    assert_eq!(got.due, "0.00");
    assert_eq!(got.confirmed_at, "");
    // Replay: the same answer; a different payload under the same id: ALREADY_EXISTS.
    let replay = s.c.wuhai.clone().dispute_lines(req.clone()).await.must();
    assert_eq!(replay, got);
    s.c.wuhai
        .clone()
        .dispute_lines(proto::DisputeLinesRequest {
            lines: vec![proto::DisputedLine {
                setl_id: s.s1.setl_id.clone(),
                reason: "other".into(),
            }],
            ..req
        })
        .await
        .code_is(Code::AlreadyExists);

    let after = statement(&s.c.ordos, &id).await;
    assert_eq!(
        (
            after.line_count,
            after.disputed_count,
            after.disputed_due.as_str(),
            after.due.as_str()
        ),
        (3, 1, "1043.99", "0.00")
    );
    let mut want = by_setl_id(vec![
        ln(&s.s1, "1000.00"),
        ln(&s.s2, "1043.99"),
        ln(&s.r1, "-1000.00"),
    ]);
    for l in &mut want {
        if l.0 == s.s2.setl_id {
            l.6 = true;
            l.7 = "patient was not admitted".into();
        }
    }
    assert_eq!(lines_of(&after), want);

    // A second dispute adds the reversal: disputed 1043.99 − 1000.00 = 43.99; due s1 = 1000.00.
    let got =
        s.c.wuhai
            .clone()
            .dispute_lines(dispute_req(
                &id,
                &[(s.r1.setl_id.as_str(), "reversal not agreed")],
            ))
            .await
            .must();
    assert_eq!(
        (
            got.line_count,
            got.disputed_count,
            got.disputed_due.as_str(),
            got.due.as_str()
        ),
        (3, 2, "43.99", "1000.00")
    );
    // The other statements are untouched.
    assert_eq!(
        sum_of(&statement(&s.c.op, &s.st_ordos_41()).await),
        expected_pending(&s)[1]
    );
    assert_eq!(
        sum_of(&statement(&s.c.op, &s.st_nx_21()).await),
        expected_pending(&s)[2]
    );
}

/// The proto: disputed lines are "left out of this period's figures"; the statement's medfee,
/// fund and account sums are those of the undisputed lines, like `due`.
async fn dispute_leaves_figures(b: Backend) {
    let s = closed(b).await;
    let id = s.st_ordos_21();
    // Dispute s2 (1239.99 / 943.99 / 100.00): left are s1 + r1 = 0.00 each.
    let got =
        s.c.wuhai
            .clone()
            .dispute_lines(dispute_req(
                &id,
                &[(s.s2.setl_id.as_str(), "patient was not admitted")],
            ))
            .await
            .must();
    assert_eq!(
        (
            got.due.as_str(),
            got.disputed_due.as_str(),
            got.disputed_count
        ),
        ("0.00", "1043.99", 1)
    );
    assert_eq!(
        (
            got.medfee_sumamt.as_str(),
            got.fund_pay_sumamt.as_str(),
            got.acct_pay.as_str()
        ),
        ("0.00", "0.00", "0.00"),
        "medfee/fund/acct must leave the disputed line out, as due does"
    );
    // due = fund + acct of the figures.
    assert_eq!(
        fen(&got.due),
        fen(&got.fund_pay_sumamt) + fen(&got.acct_pay)
    );
}

async fn confirm_statements(b: Backend) {
    let s = closed(b).await;
    let p = s.p.clone();
    let id = s.st_ordos_21();

    // Only the home bureau.
    for c in [&s.c.ordos, &s.c.op, &s.c.nx, &s.c.beijing, &s.c.hosp] {
        c.clone()
            .confirm_statement(confirm_req(&id))
            .await
            .code_is(Code::PermissionDenied);
    }
    s.c.wuhai
        .clone()
        .confirm_statement(confirm_req(&format!("ST{p}-150300-150600-11")))
        .await
        .code_is(Code::NotFound);
    assert_eq!(
        statement(&s.c.op, &id).await.status,
        StatementStatus::Pending as i32
    );

    // Dispute s2 first; confirm: disputed lines stay out of the confirmed figures.
    let dreq = dispute_req(&id, &[(s.s2.setl_id.as_str(), "patient was not admitted")]);
    let disputed = s.c.wuhai.clone().dispute_lines(dreq.clone()).await.must();
    assert_eq!(disputed.status, StatementStatus::Pending as i32);
    let req = confirm_req(&id);
    let got =
        s.c.wuhai
            .clone()
            .confirm_statement(req.clone())
            .await
            .must();
    assert_eq!(got.status, StatementStatus::Confirmed as i32);
    assert_eq!(
        (
            got.line_count,
            got.disputed_count,
            got.disputed_due.as_str(),
            got.due.as_str()
        ),
        (3, 1, "1043.99", "0.00")
    );
    let at = chrono::DateTime::parse_from_rfc3339(&got.confirmed_at)
        .unwrap_or_else(|e| panic!("confirmed_at {:?}: {e}", got.confirmed_at));
    assert_eq!(
        (at.with_timezone(&chrono::Utc) + chrono::Duration::hours(8)).date_naive(),
        biz_today(&s.ts)
    );
    // Replay: the same answer.
    assert_eq!(s.c.wuhai.clone().confirm_statement(req).await.must(), got);
    // Stored as answered.
    let stored = statement(&s.c.op, &id).await;
    assert_eq!(sum_of(&stored), sum_of(&got));
    assert_eq!(stored.confirmed_at, got.confirmed_at);
    // Twice (a new request id): not pending; disputing after: not pending.
    refused(
        s.c.wuhai.clone().confirm_statement(confirm_req(&id)).await,
        "statement_not_pending",
    );
    refused(
        s.c.wuhai
            .clone()
            .dispute_lines(dispute_req(&id, &[(s.s1.setl_id.as_str(), "too late")]))
            .await,
        "statement_not_pending",
    );
    assert_eq!(statement(&s.c.op, &id).await, stored);
    // Replaying the dispute made before the confirmation still answers its first answer.
    let replayed = s.c.wuhai.clone().dispute_lines(dreq).await.must();
    assert_eq!(replayed, disputed);

    let gp = get_period(&s.c.op, &p).await;
    assert_eq!(gp.status, PeriodStatus::Closed as i32);
    assert_eq!((gp.statements, gp.confirmed_statements), (3, 1));

    // The other two: the period is confirmed once every statement is.
    let c41 =
        s.c.wuhai
            .clone()
            .confirm_statement(confirm_req(&s.st_ordos_41()))
            .await
            .must();
    assert_eq!(c41.status, StatementStatus::Confirmed as i32);
    assert_eq!(c41.due, "431.00");
    assert_eq!(get_period(&s.c.op, &p).await.confirmed_statements, 2);
    assert_eq!(
        get_period(&s.c.op, &p).await.status,
        PeriodStatus::Closed as i32
    );
    let cnx =
        s.c.wuhai
            .clone()
            .confirm_statement(confirm_req(&s.st_nx_21()))
            .await
            .must();
    assert_eq!(cnx.due, "400.00");
    let gp2 = get_period(&s.c.nx, &p).await;
    assert_eq!(gp2.status, PeriodStatus::Confirmed as i32);
    assert_eq!((gp2.statements, gp2.confirmed_statements), (3, 3));
    assert_eq!(
        (gp2.closed_at.as_str(), gp2.confirm_deadline.as_str()),
        (gp.closed_at.as_str(), gp.confirm_deadline.as_str())
    );
    // Closing again answers the confirmed period.
    assert_eq!(close(&s.c.op, &p, 0).await, gp2);
    let list = statements(&s.c.op, &p).await;
    assert!(
        list.iter()
            .all(|x| x.status == StatementStatus::Confirmed as i32 && !x.confirmed_at.is_empty())
    );
}

async fn concurrent_close_and_confirm(b: Backend) {
    let s = scenario(b).await;
    let p = s.p.clone();
    advance_past(&s.ts, &p);

    // Four operators close at once (distinct request ids): one period, no duplicates.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let c = clr_as(&s.ts, Grant::Operator).await;
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            c.clone().close_period(close_req(&p, 0)).await.must()
        }));
    }
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.expect("close task"));
    }
    for g in &got {
        assert_eq!(g, &got[0]);
    }
    assert_eq!(got[0].status, PeriodStatus::Closed as i32);
    assert_eq!(got[0].statements, 3);
    assert_eq!(
        statements(&s.c.op, &p)
            .await
            .iter()
            .map(sum_of)
            .collect::<Vec<_>>(),
        expected_pending(&s)
    );

    // The home bureau confirms all three at once: the period ends CONFIRMED.
    let mut tasks = Vec::new();
    for id in [s.st_ordos_21(), s.st_ordos_41(), s.st_nx_21()] {
        let c = s.c.wuhai.clone();
        tasks.push(tokio::spawn(async move {
            c.clone().confirm_statement(confirm_req(&id)).await.must()
        }));
    }
    for t in tasks {
        let st = t.await.expect("confirm task");
        assert_eq!(st.status, StatementStatus::Confirmed as i32);
    }
    let gp = get_period(&s.c.op, &p).await;
    assert_eq!(gp.status, PeriodStatus::Confirmed as i32, "{gp:?}");
    assert_eq!((gp.statements, gp.confirmed_statements), (3, 3));
}

async fn figures_are_deterministic(b: Backend) {
    let one = closed(b).await;
    let two = closed(b).await;
    assert_eq!(one.p, two.p);
    let a: Vec<Sum> = statements(&one.c.op, &one.p)
        .await
        .iter()
        .map(sum_of)
        .collect();
    let b: Vec<Sum> = statements(&two.c.op, &two.p)
        .await
        .iter()
        .map(sum_of)
        .collect();
    assert_eq!(a, b);
    assert_eq!(a, expected_pending(&one));
    // Line figures (ids differ between worlds), in the same order of kinds.
    let figures = |st: &proto::Statement| -> Vec<(String, String, String, String)> {
        let mut v: Vec<_> = st
            .lines
            .iter()
            .map(|l| {
                (
                    l.medfee_sumamt.clone(),
                    l.fund_pay_sumamt.clone(),
                    l.acct_pay.clone(),
                    l.due.clone(),
                )
            })
            .collect();
        v.sort();
        v
    };
    for id in [one.st_ordos_21(), one.st_ordos_41(), one.st_nx_21()] {
        assert_eq!(
            figures(&statement(&one.c.op, &id).await),
            figures(&statement(&two.c.op, &id).await)
        );
    }
}

/// Changes one row straight on the database, as a tamperer would.
async fn tamper(ts: &TestServer, sql: &str) {
    assert_eq!(raw_sql(ts, &[sql]).await, [1], "{sql} must change one row");
}

/// The checks of LedgerService/Verify that fail: (name, detail).
async fn broken(ts: &TestServer) -> Vec<(String, String)> {
    let v = ts
        .operator()
        .await
        .led()
        .verify(proto::VerifyRequest {})
        .await
        .must();
    v.checks
        .into_iter()
        .filter(|c| !c.ok)
        .map(|c| (c.name, c.detail))
        .collect()
}

/// Statement lines are derived from settlements (only disputes, followers and carried copies
/// are stored): verify recomputes each statement's base figures from the settlements of its
/// month and parties, and checks stored lines against their settlements. Tampering with
/// either is named; undoing it makes verify clean again.
async fn verify_catches_tampered_statements(b: Backend) {
    let s = closed(b).await;
    verify_ok(&s.ts).await;
    let id = s.st_ordos_21();
    // The statement's fund sum (943.99) moved by one fen.
    tamper(
        &s.ts,
        &format!("UPDATE statement SET b_fund_fen = b_fund_fen + 1 WHERE statement_id = '{id}'"),
    )
    .await;
    let got = broken(&s.ts).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "statement_totals_match_settlements");
    assert!(got[0].1.contains(&id), "{got:?}");
    tamper(
        &s.ts,
        &format!("UPDATE statement SET b_fund_fen = b_fund_fen - 1 WHERE statement_id = '{id}'"),
    )
    .await;
    verify_ok(&s.ts).await;
    // A settlement moved into the closed month under other parties: its statement's count no
    // longer matches, and the new parties have settlements but no statement.
    tamper(
        &s.ts,
        &format!(
            "UPDATE settlement SET treatment_region = '152900' WHERE setl_id = '{}'",
            s.s4.setl_id
        ),
    )
    .await;
    let got = broken(&s.ts).await;
    let base = got
        .iter()
        .find(|c| c.0 == "statement_totals_match_settlements")
        .expect("base check");
    assert!(base.1.contains(&s.st_nx_21()), "{got:?}");
    assert!(
        base.1.contains(&format!("ST{}-150300-152900-21", s.p)),
        "{got:?}"
    );
    tamper(
        &s.ts,
        &format!(
            "UPDATE settlement SET treatment_region = '640200' WHERE setl_id = '{}'",
            s.s4.setl_id
        ),
    )
    .await;
    verify_ok(&s.ts).await;
    // A disputed line is stored: its amounts must stay those of its settlement.
    s.c.wuhai
        .clone()
        .dispute_lines(dispute_req(&id, &[(s.s2.setl_id.as_str(), "not admitted")]))
        .await
        .must();
    verify_ok(&s.ts).await;
    tamper(
        &s.ts,
        &format!(
            "UPDATE statement_line SET fund_fen = fund_fen - 100 WHERE statement_id = '{id}' AND setl_id = '{}'",
            s.s2.setl_id
        ),
    )
    .await;
    let got = broken(&s.ts).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "statement_lines_match_settlements");
    assert!(got[0].1.contains(&s.s2.setl_id), "{got:?}");
}

//! ReconciliationService end to end: institution reconciliation (对账) of the settlements made
//! over SettlementService and PharmacyService.
//!
//! - NHSA 3201, ReconcileTotals: the institution's totals per (insurance type, clearing type) for
//!   a business-date range, compared with ours (reversals and refunds count −1 with their
//!   negative amounts), every group either side has, zero-filled on the side that lacks it.
//! - NHSA 3202, ReconcileDetail: the institution streams a header then its rows; we stream every
//!   difference (MISSING_OURS, MISSING_THEIRS, AMOUNT_MISMATCH), 100,000 rows included.
//!
//! Hand-computed figures. Every test builds its own world over gRPC and runs on SQLite and on
//! PostgreSQL, each on a fresh database, and ends by proving that reconciliation wrote nothing:
//! Verify ok, the audit log and the journal exactly as they were before the first
//! reconciliation call.

#[macro_use]
mod common;

use common::kit::*;
use common::*;
use medsettle::domain::ids::{InstitutionCode, RegionCode};
use medsettle::proto;
use medsettle::proto::pharmacy_service_client::PharmacyServiceClient;
use medsettle::proto::reconciliation_service_client::ReconciliationServiceClient;
use medsettle::service::auth::Grant;
use proto::detail_message::Message;
use proto::{
    CareType, ClearingType, DeductibleBasis, DifferenceKind, FilingType, InsuranceType, LevelScope,
    PersonCategory, ProvinceScope, SettlementKind,
};
use std::time::Instant;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

both_engines!(
    totals_balanced,
    totals_differences,
    totals_date_ranges,
    totals_validation,
    totals_permissions,
    detail_exact_match,
    detail_differences,
    detail_pharmacy_differences,
    detail_out_of_range,
    detail_rows_as_recorded,
    detail_validation,
    detail_permissions,
    detail_scale,
    detail_far_apart_faults,
    detail_concurrent_streams,
    chongzheng,
);

/// The Ordos pharmacy.
const PH: &str = "P15060000001";

// ------------------------------------------------------------------------------ clients

/// Adds `authorization: Bearer <token>` to every request (nothing for `None`).
#[derive(Clone)]
struct Auth(Option<MetadataValue<Ascii>>);

impl Interceptor for Auth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

type Recon = ReconciliationServiceClient<InterceptedService<Channel, Auth>>;
type Pharm = PharmacyServiceClient<InterceptedService<Channel, Auth>>;

async fn auth(ts: &TestServer, grant: Grant) -> Auth {
    let token = ts.token(grant).await;
    Auth(Some(
        format!("Bearer {token}").parse().expect("ASCII token"),
    ))
}

fn inst(code: &str) -> Grant {
    Grant::Institution(InstitutionCode::parse("code", code).expect("institution code"))
}

fn bureau_grant(region: &str) -> Grant {
    Grant::Bureau(RegionCode::parse("region", region).expect("region code"))
}

/// ReconciliationService as `grant`.
async fn recon_as(ts: &TestServer, grant: Grant) -> Recon {
    ReconciliationServiceClient::with_interceptor(ts.channel.clone(), auth(ts, grant).await)
}

/// ReconciliationService without any authorization.
fn recon_anonymous(ts: &TestServer) -> Recon {
    ReconciliationServiceClient::with_interceptor(ts.channel.clone(), Auth(None))
}

async fn pharm_as(ts: &TestServer, code: &str) -> Pharm {
    PharmacyServiceClient::with_interceptor(ts.channel.clone(), auth(ts, inst(code)).await)
}

// ------------------------------------------------------------------------------ the world

fn rule(
    ins: InsuranceType,
    category: PersonCategory,
    care: CareType,
    level: LevelScope,
    basis: DeductibleBasis,
    ratio: &str,
) -> proto::PolicyRule {
    proto::PolicyRule {
        insurance_type: ins as i32,
        category: category as i32,
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
/// outpatient 0.50, at pharmacies 0.50; residents inpatient 0.70; maternity insurance,
/// maternity care 0.90. Unfiled treatment is refused (everyone treated in Ordos holds a
/// long-term filing: the full ratio); the account may not pay class C; pharmacies inside
/// province 15.
fn wuhai_policy() -> proto::PolicyBody {
    use DeductibleBasis::{Annual, PerAdmission};
    use InsuranceType::{Employee, Maternity, Resident};
    use PersonCategory::Active;
    proto::PolicyBody {
        rules: vec![
            rule(
                Employee,
                Active,
                CareType::Inpatient,
                LevelScope::Any,
                PerAdmission,
                "0.80",
            ),
            rule(
                Employee,
                Active,
                CareType::Outpatient,
                LevelScope::Any,
                Annual,
                "0.50",
            ),
            rule(
                Employee,
                Active,
                CareType::Pharmacy,
                LevelScope::Pharmacy,
                Annual,
                "0.50",
            ),
            rule(
                Resident,
                PersonCategory::Resident,
                CareType::Inpatient,
                LevelScope::Any,
                PerAdmission,
                "0.70",
            ),
            rule(
                Maternity,
                Active,
                CareType::Maternity,
                LevelScope::Any,
                PerAdmission,
                "0.90",
            ),
        ],
        filing_reductions: vec![],
        unfiled_allowed: false,
        unfiled_reduction: None,
        account_pays_class_c: false,
        pharmacy_national: false,
    }
}

/// Enrols `req` with the Wuhai bureau and files a long-term filing to Ordos from today.
async fn filed(w: &World, req: proto::EnrolPersonRequest) -> Psn {
    let p = enrol(&w.wuhai, req).await;
    file(w, &p.psn_no, FilingType::LongTermResident, ORDOS, "", "").await;
    p
}

/// A Wuhai employee with a social-security card and `opening` in the account; returns the card
/// number.
async fn card_holder(w: &World, seq: u32, opening: &str) -> String {
    let card_no = format!("C{WUHAI}{seq:05}");
    enrol(
        &w.wuhai,
        proto::EnrolPersonRequest {
            card_no: card_no.clone(),
            ..employee(&national_id("150302", "19800101", seq), WUHAI, opening)
        },
    )
    .await;
    card_no
}

/// Opens a visit today, uploads `lines`, settles.
async fn bill(
    h: &Setl,
    national_id: &str,
    ins: InsuranceType,
    care: CareType,
    lines: Vec<proto::FeeLine>,
    use_account: bool,
) -> proto::Settlement {
    let v = open(h, national_id, ins, care, "").await;
    upload(h, &v.mdtrt_id, lines).await;
    let s = settle(h, &v.mdtrt_id, use_account).await;
    assert_eq!((s.insurance_type, s.care_type), (ins as i32, care as i32));
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

/// A card swipe under the employee insurance.
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

/// Refunds chosen lines of a purchase.
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

/// The four reconciled amounts of a settlement: medfee_sumamt, fund_pay_sumamt, acct_pay,
/// psn_cash_pay.
fn four(s: &proto::Settlement) -> [&str; 4] {
    [
        &s.medfee_sumamt,
        &s.fund_pay_sumamt,
        &s.acct_pay,
        &s.psn_cash_pay,
    ]
}

fn date(s: &str) -> chrono::NaiveDate {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_else(|e| panic!("date {s:?}: {e}"))
}

fn shift(d: &str, days: i64) -> String {
    ymd(date(d) + chrono::Duration::days(days))
}

/// What reconciliation must never change.
#[derive(Debug, PartialEq, Eq)]
struct Books {
    /// (audit_id, rpc, principal, outcome) of every audit record, newest first.
    audit: Vec<(String, String, String, String)>,
    /// journal_id of every journal transaction, oldest first.
    journal: Vec<String>,
}

async fn books(ts: &TestServer) -> Books {
    let op = ts.operator().await;
    let mut audit = Vec::new();
    let mut token = String::new();
    loop {
        let page = op
            .led()
            .list_audit(proto::ListAuditRequest {
                principal: String::new(),
                page_size: 1000,
                page_token: token,
            })
            .await
            .must();
        audit.extend(
            page.records
                .into_iter()
                .map(|r| (r.audit_id, r.rpc, r.principal, r.outcome)),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let journal = journal_pages(&op, "", 1000)
        .await
        .into_iter()
        .map(|t| t.journal_id)
        .collect();
    Books { audit, journal }
}

/// The reconciliation world:
///
/// H15060000001 (Ordos, level 3), all today:
///   s1    p1 employee inpatient, A001 10 × 100.00 + C001 1 × 50.00 (class C), account on:
///         medfee 1050.00; in scope 1000.00 × 0.80 = fund 800.00; personal 250.00;
///         account min(250.00 − 50.00, 1000.00) = 200.00; cash 50.00
///   s2    p2 employee inpatient, A001 3 × 333.33 = 999.99 + B001 2 × 120.00 = 240.00
///         (over-limit 40.00, first self-paid 20.00, in scope 180.00), account on:
///         medfee 1239.99; in scope 1179.99 × 0.80 = 943.992 → fund 943.99; personal 296.00;
///         account min(296.00, 100.00) = 100.00; cash 196.00
///   r1    the reversal of s1: −1050.00, −800.00, −200.00, −50.00
///   s3    p1 employee outpatient, A001 1 × 80.00, account on: fund 80.00 × 0.50 = 40.00;
///         account 40.00; cash 0.00
///   sres  r resident inpatient, A001 2 × 100.00: fund 200.00 × 0.70 = 140.00; cash 60.00
///   smat  mother, maternity insurance, maternity care, A001 1 × 100.00: fund 90.00; cash 10.00
/// P15060000001 (Ordos pharmacy):
///   p1    p4 (account 300.00): A001 2 × 35.50 = 71.00; B001 3 × 120.00 = 360.00 (over-limit
///         60.00, first self-paid 30.00, in scope 270.00); C001 1 × 20.00 (class C); account
///         on: medfee 451.00; in scope 341.00 × 0.50 = fund 170.50; personal 280.50; account
///         min(280.50 − 20.00, 300.00) = 260.50; cash 20.00
///   p2    p5: A001 1 × 10.01, account off: fund 10.01 × 0.50 = 5.005 → 5.01; cash 5.00
///   rf1   refund of 1 × B001 of p1. Kept: 71.00 + 240.00 (in scope 180.00) + 20.00 = 331.00,
///         in scope 251.00 → fund 125.50; personal 205.50; account min(185.50, 300.00) =
///         185.50; cash 20.00. Refund = kept − before: medfee −120.00, fund −45.00,
///         account −75.00, cash 0.00
/// H15060000002 (another Ordos hospital):
///   other p3 employee inpatient, A001 1 × 500.00, account off: fund 400.00; cash 100.00
struct Scn {
    ts: TestServer,
    w: World,
    /// PharmacyService as P15060000001.
    pharm: Pharm,
    /// ReconciliationService as H15060000001, P15060000001, H15060000002.
    h: Recon,
    ph: Recon,
    h2: Recon,
    s1: proto::Settlement,
    r1: proto::Settlement,
    s2: proto::Settlement,
    s3: proto::Settlement,
    sres: proto::Settlement,
    smat: proto::Settlement,
    p1: proto::Settlement,
    p2: proto::Settlement,
    rf1: proto::Settlement,
    other: proto::Settlement,
    /// The business dates of the settlements (one date unless the build straddled midnight).
    from: String,
    to: String,
    before: Books,
}

async fn scenario(b: Backend) -> Scn {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    register(&w, HOSP2, ORDOS, 2).await;
    w.op.reg()
        .register_institution(pharmacy(PH, ORDOS))
        .await
        .must();
    put_policy(&w.wuhai, WUHAI, JAN1, wuhai_policy()).await;
    let first_day = today();

    let p1 = filed(
        &w,
        employee(&national_id("150302", "19800101", 1), WUHAI, "1000.00"),
    )
    .await;
    let p2 = filed(
        &w,
        employee(&national_id("150302", "19800101", 2), WUHAI, "100.00"),
    )
    .await;
    let p3 = filed(
        &w,
        employee(&national_id("150302", "19800101", 3), WUHAI, "50.00"),
    )
    .await;
    let r = filed(&w, resident(&national_id("150302", "19900101", 4), WUHAI)).await;
    let mother = filed(
        &w,
        proto::EnrolPersonRequest {
            insurances: vec![
                ins(InsuranceType::Employee, PersonCategory::Active),
                ins(InsuranceType::Maternity, PersonCategory::Active),
            ],
            ..employee(&national_id("150302", "19950505", 5), WUHAI, "0.00")
        },
    )
    .await;
    let card4 = card_holder(&w, 6, "300.00").await;
    let card5 = card_holder(&w, 7, "20.00").await;

    // ---- H15060000001.
    use CareType::{Inpatient, Maternity, Outpatient};
    use InsuranceType::Employee;
    let s1 = bill(
        &w.h,
        &p1.national_id,
        Employee,
        Inpatient,
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
        Employee,
        Inpatient,
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
    let s3 = bill(
        &w.h,
        &p1.national_id,
        Employee,
        Outpatient,
        vec![line("1", "A001", "1", "80.00")],
        true,
    )
    .await;
    assert_eq!(four(&s3), ["80.00", "40.00", "40.00", "0.00"]);
    let sres = bill(
        &w.h,
        &r.national_id,
        InsuranceType::Resident,
        Inpatient,
        vec![line("1", "A001", "2", "100.00")],
        false,
    )
    .await;
    assert_eq!(four(&sres), ["200.00", "140.00", "0.00", "60.00"]);
    let smat = bill(
        &w.h,
        &mother.national_id,
        InsuranceType::Maternity,
        Maternity,
        vec![line("1", "A001", "1", "100.00")],
        false,
    )
    .await;
    assert_eq!(four(&smat), ["100.00", "90.00", "0.00", "10.00"]);

    // ---- H15060000002.
    let h2 = hosp(&ts, HOSP2).await;
    let other = bill(
        &h2,
        &p3.national_id,
        Employee,
        Inpatient,
        vec![line("1", "A001", "1", "500.00")],
        false,
    )
    .await;
    assert_eq!(other.institution, HOSP2);
    assert_eq!(four(&other), ["500.00", "400.00", "0.00", "100.00"]);

    // ---- P15060000001.
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
    let pp2 = swipe(&ph, &card5, vec![pl("1", "A001", "1", "10.01")], false).await;
    assert_eq!(four(&pp2), ["10.01", "5.01", "0.00", "5.00"]);
    let rf1 = refund_lines(&ph, &pp1.setl_id, &[("2", "1")]).await;
    assert_eq!(four(&rf1), ["-120.00", "-45.00", "-75.00", "0.00"]);

    let all = [&s1, &r1, &s2, &s3, &sres, &smat, &pp1, &pp2, &rf1, &other];
    let last_day = today();
    for s in all {
        let d = date(&s.business_date);
        assert!(
            first_day <= d && d <= last_day,
            "business date {} outside {first_day}..={last_day}",
            s.business_date
        );
    }
    let from = all.iter().map(|s| s.business_date.clone()).min().unwrap();
    let to = all.iter().map(|s| s.business_date.clone()).max().unwrap();
    verify_ok(&ts).await;
    let before = books(&ts).await;
    Scn {
        w,
        pharm: ph,
        h: recon_as(&ts, inst(HOSP)).await,
        ph: recon_as(&ts, inst(PH)).await,
        h2: recon_as(&ts, inst(HOSP2)).await,
        s1,
        r1,
        s2,
        s3,
        sres,
        smat,
        p1: pp1,
        p2: pp2,
        rf1,
        other,
        from,
        to,
        before,
        ts,
    }
}

impl Scn {
    /// Every settlement of H15060000001, as a row.
    fn hosp_rows(&self) -> Vec<proto::DetailRow> {
        [
            &self.s1, &self.r1, &self.s2, &self.s3, &self.sres, &self.smat,
        ]
        .into_iter()
        .map(row_of)
        .collect()
    }

    /// Every settlement of P15060000001, as a row.
    fn pharmacy_rows(&self) -> Vec<proto::DetailRow> {
        [&self.p1, &self.p2, &self.rf1]
            .into_iter()
            .map(row_of)
            .collect()
    }

    /// Verify ok; the audit log and the journal exactly as before the first reconciliation
    /// call (in particular no record of any ReconciliationService call).
    async fn assert_nothing_written(self) {
        verify_ok(&self.ts).await;
        let now = books(&self.ts).await;
        let recon: Vec<_> = now
            .audit
            .iter()
            .filter(|r| r.1.contains("Reconciliation"))
            .collect();
        assert!(
            recon.is_empty(),
            "reconciliation wrote audit records: {recon:?}"
        );
        let new: Vec<_> = now
            .audit
            .iter()
            .filter(|r| !self.before.audit.contains(r))
            .collect();
        assert!(new.is_empty(), "new audit records: {new:?}");
        assert_eq!(now, self.before, "the audit log or the journal changed");
    }
}

// ------------------------------------------------------------------------------ totals helpers

fn g(ins: InsuranceType, clr: ClearingType, count: i64, a: [&str; 4]) -> proto::TotalsGroup {
    proto::TotalsGroup {
        insurance_type: ins as i32,
        clearing_type: clr as i32,
        count,
        medfee_sumamt: a[0].into(),
        fund_pay_sumamt: a[1].into(),
        acct_pay: a[2].into(),
        psn_cash_pay: a[3].into(),
    }
}

/// A zero-filled group: count 0, "0.00" amounts.
fn zero(ins: InsuranceType, clr: ClearingType) -> proto::TotalsGroup {
    g(ins, clr, 0, ["0.00"; 4])
}

/// H15060000001's totals for the scenario's dates, ordered by insurance type then clearing type.
fn hosp_totals() -> Vec<proto::TotalsGroup> {
    use ClearingType::{Inpatient, Maternity, Outpatient};
    use InsuranceType::{Employee, Resident};
    vec![
        // 310/11: s3.
        g(Employee, Outpatient, 1, ["80.00", "40.00", "40.00", "0.00"]),
        // 310/21: s1 + s2 + r1, count 2 − 1 = 1;
        //   medfee 1050.00 + 1239.99 − 1050.00 = 1239.99; fund 800.00 + 943.99 − 800.00 = 943.99;
        //   acct 200.00 + 100.00 − 200.00 = 100.00; cash 50.00 + 196.00 − 50.00 = 196.00.
        g(
            Employee,
            Inpatient,
            1,
            ["1239.99", "943.99", "100.00", "196.00"],
        ),
        // 390/21: sres.
        g(
            Resident,
            Inpatient,
            1,
            ["200.00", "140.00", "0.00", "60.00"],
        ),
        // 510/51: smat.
        g(
            InsuranceType::Maternity,
            Maternity,
            1,
            ["100.00", "90.00", "0.00", "10.00"],
        ),
    ]
}

/// P15060000001's totals: 310/41: p1 + p2 + rf1, count 2 − 1 = 1;
///   medfee 451.00 + 10.01 − 120.00 = 341.01; fund 170.50 + 5.01 − 45.00 = 130.51;
///   acct 260.50 + 0.00 − 75.00 = 185.50; cash 20.00 + 5.00 + 0.00 = 25.00.
fn pharmacy_totals() -> Vec<proto::TotalsGroup> {
    vec![g(
        InsuranceType::Employee,
        ClearingType::Pharmacy,
        1,
        ["341.01", "130.51", "185.50", "25.00"],
    )]
}

/// H15060000002's totals: 310/21: other.
fn hosp2_totals() -> Vec<proto::TotalsGroup> {
    vec![g(
        InsuranceType::Employee,
        ClearingType::Inpatient,
        1,
        ["500.00", "400.00", "0.00", "100.00"],
    )]
}

async fn totals(
    c: &Recon,
    from: &str,
    to: &str,
    groups: Vec<proto::TotalsGroup>,
) -> Result<tonic::Response<proto::ReconcileTotalsResponse>, Status> {
    c.clone()
        .reconcile_totals(proto::ReconcileTotalsRequest {
            from_date: from.into(),
            to_date: to.into(),
            groups,
        })
        .await
}

/// One expected comparison: ours exactly as the service formats amounts (zero-filled: count 0,
/// "0.00"); theirs as sent, compared as decimals, or `None` when they sent none (then exactly
/// zero-filled).
struct Want {
    ours: proto::TotalsGroup,
    theirs: Option<proto::TotalsGroup>,
    matches: bool,
}

fn want(ours: proto::TotalsGroup, theirs: Option<proto::TotalsGroup>, matches: bool) -> Want {
    Want {
        ours,
        theirs,
        matches,
    }
}

/// Every sent group matches ours exactly.
fn all_match(ours: &[proto::TotalsGroup], theirs: &[proto::TotalsGroup]) -> Vec<Want> {
    assert_eq!(ours.len(), theirs.len());
    ours.iter()
        .zip(theirs)
        .map(|(o, t)| want(o.clone(), Some(t.clone()), true))
        .collect()
}

/// A group with its amounts as canonical decimals ("100.50" → "100.5").
fn decimal_view(t: &proto::TotalsGroup) -> (i32, i32, i64, [String; 4]) {
    (
        t.insurance_type,
        t.clearing_type,
        t.count,
        [
            canon(&t.medfee_sumamt),
            canon(&t.fund_pay_sumamt),
            canon(&t.acct_pay),
            canon(&t.psn_cash_pay),
        ],
    )
}

#[track_caller]
fn assert_totals(got: &proto::ReconcileTotalsResponse, balanced: bool, wants: &[Want]) {
    let got_keys: Vec<(i32, i32)> = got
        .groups
        .iter()
        .map(|c| (c.insurance_type, c.clearing_type))
        .collect();
    let want_keys: Vec<(i32, i32)> = wants
        .iter()
        .map(|w| (w.ours.insurance_type, w.ours.clearing_type))
        .collect();
    assert_eq!(got_keys, want_keys, "groups and their order in {got:#?}");
    for (c, w) in got.groups.iter().zip(wants) {
        let key = (c.insurance_type, c.clearing_type);
        assert_eq!(
            c.ours.as_ref(),
            Some(&w.ours),
            "ours of group {key:?} in {got:#?}"
        );
        let theirs = c
            .theirs
            .as_ref()
            .unwrap_or_else(|| panic!("no theirs in group {key:?} of {got:#?}"));
        match &w.theirs {
            None => {
                // Zero-filled: the group's keys, count 0, "0.00" amounts.
                let z = proto::TotalsGroup {
                    count: 0,
                    medfee_sumamt: "0.00".into(),
                    fund_pay_sumamt: "0.00".into(),
                    acct_pay: "0.00".into(),
                    psn_cash_pay: "0.00".into(),
                    ..w.ours.clone()
                };
                assert_eq!(
                    theirs, &z,
                    "theirs zero-filled in group {key:?} of {got:#?}"
                );
            }
            Some(t) => assert_eq!(
                decimal_view(theirs),
                decimal_view(t),
                "theirs (as sent) in group {key:?} of {got:#?}"
            ),
        }
        assert_eq!(c.matches, w.matches, "matches of group {key:?} in {got:#?}");
    }
    assert_eq!(got.balanced, balanced, "balanced of {got:#?}");
}

// ------------------------------------------------------------------------------ detail helpers

fn header(from: &str, to: &str) -> proto::DetailMessage {
    proto::DetailMessage {
        message: Some(Message::Header(proto::DetailHeader {
            from_date: from.into(),
            to_date: to.into(),
        })),
    }
}

fn row(r: proto::DetailRow) -> proto::DetailMessage {
    proto::DetailMessage {
        message: Some(Message::Row(r)),
    }
}

/// A settlement as the institution (and we) have it.
fn row_of(s: &proto::Settlement) -> proto::DetailRow {
    proto::DetailRow {
        setl_id: s.setl_id.clone(),
        request_id: s.request_id.clone(),
        medfee_sumamt: s.medfee_sumamt.clone(),
        fund_pay_sumamt: s.fund_pay_sumamt.clone(),
        acct_pay: s.acct_pay.clone(),
        psn_cash_pay: s.psn_cash_pay.clone(),
        refund: s.kind == SettlementKind::Reversal as i32,
    }
}

/// A row the institution made up.
fn fake_row(setl_id: &str) -> proto::DetailRow {
    proto::DetailRow {
        setl_id: setl_id.into(),
        request_id: format!("msg-{setl_id}"),
        medfee_sumamt: "10.00".into(),
        fund_pay_sumamt: "5.00".into(),
        acct_pay: "0.00".into(),
        psn_cash_pay: "5.00".into(),
        refund: false,
    }
}

/// Header then rows.
fn msgs(from: &str, to: &str, rows: Vec<proto::DetailRow>) -> Vec<proto::DetailMessage> {
    std::iter::once(header(from, to))
        .chain(rows.into_iter().map(row))
        .collect()
}

/// Streams `messages`, reads every difference; the status may come with the call or while
/// reading.
async fn detail_stream<S>(c: &Recon, messages: S) -> Result<Vec<proto::DetailDifference>, Status>
where
    S: futures::Stream<Item = proto::DetailMessage> + Send + 'static,
{
    let mut stream = c.clone().reconcile_detail(messages).await?.into_inner();
    let mut out = Vec::new();
    while let Some(d) = stream.message().await? {
        out.push(d);
    }
    Ok(out)
}

async fn detail(
    c: &Recon,
    messages: Vec<proto::DetailMessage>,
) -> Result<Vec<proto::DetailDifference>, Status> {
    detail_stream(c, futures::stream::iter(messages)).await
}

#[track_caller]
fn ok_diffs(r: Result<Vec<proto::DetailDifference>, Status>) -> Vec<proto::DetailDifference> {
    r.unwrap_or_else(|s| {
        panic!(
            "expected the differences, got {:?}: {} (fields {:?})",
            s.code(),
            s.message(),
            violated_fields(&s)
        )
    })
}

#[track_caller]
fn stream_code(r: Result<Vec<proto::DetailDifference>, Status>, code: Code) -> Status {
    match r {
        Ok(d) => panic!(
            "expected {code:?}, got OK with {} differences: {d:?}",
            d.len()
        ),
        Err(s) => {
            assert_eq!(
                s.code(),
                code,
                "expected {code:?}, got {:?}: {} (fields {:?})",
                s.code(),
                s.message(),
                violated_fields(&s)
            );
            s
        }
    }
}

/// INVALID_ARGUMENT with a BadRequest violation on one of `fields`.
#[track_caller]
fn stream_invalid(r: Result<Vec<proto::DetailDifference>, Status>, fields: &[&str]) -> Status {
    let s = stream_code(r, Code::InvalidArgument);
    let got = violated_fields(&s);
    assert!(
        got.iter().any(|f| fields.contains(&f.as_str())),
        "expected a BadRequest violation on one of {fields:?}, got fields {got:?} ({})",
        s.message()
    );
    s
}

/// A row compared: setl_id, the four amounts, the refund flag (request_id is informational).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct RowV {
    setl_id: String,
    amounts: [String; 4],
    refund: bool,
}

/// Our row: amounts exactly as the service formats them.
fn ours_v(r: &proto::DetailRow) -> RowV {
    RowV {
        setl_id: r.setl_id.clone(),
        amounts: [
            r.medfee_sumamt.clone(),
            r.fund_pay_sumamt.clone(),
            r.acct_pay.clone(),
            r.psn_cash_pay.clone(),
        ],
        refund: r.refund,
    }
}

/// Their row: amounts compared as decimals.
fn theirs_v(r: &proto::DetailRow) -> RowV {
    RowV {
        setl_id: r.setl_id.clone(),
        amounts: [
            canon(&r.medfee_sumamt),
            canon(&r.fund_pay_sumamt),
            canon(&r.acct_pay),
            canon(&r.psn_cash_pay),
        ],
        refund: r.refund,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Diff {
    setl_id: String,
    kind: i32,
    ours: Option<RowV>,
    theirs: Option<RowV>,
}

/// The differences received, sorted (their order is free).
fn diffs(got: &[proto::DetailDifference]) -> Vec<Diff> {
    let mut v: Vec<Diff> = got
        .iter()
        .map(|d| Diff {
            setl_id: d.setl_id.clone(),
            kind: d.kind,
            ours: d.ours.as_ref().map(ours_v),
            theirs: d.theirs.as_ref().map(theirs_v),
        })
        .collect();
    v.sort();
    v
}

fn sorted(mut v: Vec<Diff>) -> Vec<Diff> {
    v.sort();
    v
}

fn missing_ours(theirs: &proto::DetailRow) -> Diff {
    Diff {
        setl_id: theirs.setl_id.clone(),
        kind: DifferenceKind::MissingOurs as i32,
        ours: None,
        theirs: Some(theirs_v(theirs)),
    }
}

fn missing_theirs(ours: &proto::Settlement) -> Diff {
    Diff {
        setl_id: ours.setl_id.clone(),
        kind: DifferenceKind::MissingTheirs as i32,
        ours: Some(ours_v(&row_of(ours))),
        theirs: None,
    }
}

fn mismatch(ours: &proto::Settlement, theirs: &proto::DetailRow) -> Diff {
    assert_eq!(ours.setl_id, theirs.setl_id);
    Diff {
        setl_id: ours.setl_id.clone(),
        kind: DifferenceKind::AmountMismatch as i32,
        ours: Some(ours_v(&row_of(ours))),
        theirs: Some(theirs_v(theirs)),
    }
}

// ------------------------------------------------------------------------------ totals tests

/// Exactly matching totals balance, on each institution; amounts are compared as decimals
/// ("80" = "80.00", "40.0" = "40.00"); the order the groups are sent in does not matter; another
/// institution's settlements never count.
async fn totals_balanced(b: Backend) {
    let scn = scenario(b).await;
    let (from, to) = (scn.from.clone(), scn.to.clone());

    // The hospital: four groups, sent in reverse order, some amounts with fewer decimals.
    let mut theirs = hosp_totals();
    theirs[0].medfee_sumamt = "80".into();
    theirs[0].fund_pay_sumamt = "40.0".into();
    theirs[0].psn_cash_pay = "0".into();
    theirs[1].acct_pay = "100.0".into();
    theirs[3].psn_cash_pay = "10".into();
    let got = totals(&scn.h, &from, &to, theirs.iter().rev().cloned().collect())
        .await
        .must();
    assert_totals(&got, true, &all_match(&hosp_totals(), &theirs));

    // The pharmacy: its purchases and refund only (none of the hospitals' settlements).
    let got = totals(&scn.ph, &from, &to, pharmacy_totals()).await.must();
    assert_totals(
        &got,
        true,
        &all_match(&pharmacy_totals(), &pharmacy_totals()),
    );

    // The other hospital: its one settlement only; and H15060000001's figures do not include it.
    let got = totals(&scn.h2, &from, &to, hosp2_totals()).await.must();
    assert_totals(&got, true, &all_match(&hosp2_totals(), &hosp2_totals()));

    // The pharmacy again, with "185.5" and "25" for 185.50 and 25.00.
    let mut t = pharmacy_totals();
    t[0].acct_pay = "185.5".into();
    t[0].psn_cash_pay = "25".into();
    let got = totals(&scn.ph, &from, &to, t.clone()).await.must();
    assert_totals(&got, true, &all_match(&pharmacy_totals(), &t));
    scn.assert_nothing_written().await;
}

/// A wrong figure in one group, an omitted group, a group we do not have.
async fn totals_differences(b: Backend) {
    use ClearingType::{Inpatient, Maternity, Outpatient};
    use InsuranceType::{Employee, Resident};
    let scn = scenario(b).await;
    let (from, to) = (scn.from.clone(), scn.to.clone());
    let ours = hosp_totals();

    // ---- Wrong medfee in 310/21 (1239.98 instead of 1239.99): only that group differs, both
    // figures shown.
    let mut theirs = ours.clone();
    theirs[1].medfee_sumamt = "1239.98".into();
    let got = totals(&scn.h, &from, &to, theirs.clone()).await.must();
    assert_totals(
        &got,
        false,
        &[
            want(ours[0].clone(), Some(theirs[0].clone()), true),
            want(ours[1].clone(), Some(theirs[1].clone()), false),
            want(ours[2].clone(), Some(theirs[2].clone()), true),
            want(ours[3].clone(), Some(theirs[3].clone()), true),
        ],
    );
    assert_eq!(
        got.groups[1].ours.as_ref().unwrap().medfee_sumamt,
        "1239.99"
    );
    assert_eq!(
        canon(&got.groups[1].theirs.as_ref().unwrap().medfee_sumamt),
        "1239.98"
    );

    // ---- Each other figure of 310/21 wrong on its own: the count (2: the reversal forgotten),
    // fund, account, cash.
    for what in ["count", "fund", "acct", "cash"] {
        let mut theirs = ours.clone();
        let t = &mut theirs[1];
        match what {
            "count" => t.count = 2,
            "fund" => t.fund_pay_sumamt = "943.98".into(),
            "acct" => t.acct_pay = "100.01".into(),
            _ => t.psn_cash_pay = "-196.00".into(),
        }
        let got = totals(&scn.h, &from, &to, theirs.clone()).await.must();
        let matches: Vec<bool> = got.groups.iter().map(|c| c.matches).collect();
        assert_eq!(matches, [true, false, true, true], "{what}: {got:#?}");
        assert!(!got.balanced, "{what}: {got:#?}");
        assert_totals(
            &got,
            false,
            &[
                want(ours[0].clone(), Some(theirs[0].clone()), true),
                want(ours[1].clone(), Some(theirs[1].clone()), false),
                want(ours[2].clone(), Some(theirs[2].clone()), true),
                want(ours[3].clone(), Some(theirs[3].clone()), true),
            ],
        );
    }

    // ---- 310/11 omitted (theirs zero-filled), 390/11 added (ours zero-filled): ordered by
    // insurance type then clearing type, 390/11 between 310/21 and 390/21.
    let extra = g(Resident, Outpatient, 2, ["30.00", "15.00", "0.00", "15.00"]);
    let theirs = vec![
        ours[3].clone(),
        extra.clone(),
        ours[1].clone(),
        ours[2].clone(),
    ];
    let got = totals(&scn.h, &from, &to, theirs).await.must();
    assert_totals(
        &got,
        false,
        &[
            want(ours[0].clone(), None, false),
            want(ours[1].clone(), Some(ours[1].clone()), true),
            want(zero(Resident, Outpatient), Some(extra.clone()), false),
            want(ours[2].clone(), Some(ours[2].clone()), true),
            want(ours[3].clone(), Some(ours[3].clone()), true),
        ],
    );

    // ---- Nothing sent: every group of ours with theirs zero-filled.
    let got = totals(&scn.h, &from, &to, vec![]).await.must();
    let wants: Vec<Want> = ours.iter().map(|o| want(o.clone(), None, false)).collect();
    assert_totals(&got, false, &wants);

    // ---- The pharmacy forgot its refund: count 2, medfee 451.00 + 10.01 = 461.01,
    // fund 170.50 + 5.01 = 175.51, acct 260.50, cash 25.00; plus a maternity group (510/51) it
    // cannot have.
    let forgot = g(
        Employee,
        ClearingType::Pharmacy,
        2,
        ["461.01", "175.51", "260.50", "25.00"],
    );
    let mat = g(
        InsuranceType::Maternity,
        Maternity,
        1,
        ["100.00", "90.00", "0.00", "10.00"],
    );
    let got = totals(&scn.ph, &from, &to, vec![mat.clone(), forgot.clone()])
        .await
        .must();
    assert_totals(
        &got,
        false,
        &[
            want(pharmacy_totals()[0].clone(), Some(forgot), false),
            want(zero(InsuranceType::Maternity, Maternity), Some(mat), false),
        ],
    );

    // ---- The other hospital sending H15060000001's figures: its own 310/21 differs, the rest
    // are ours zero-filled.
    let got = totals(&scn.h2, &from, &to, hosp_totals()).await.must();
    assert_totals(
        &got,
        false,
        &[
            want(zero(Employee, Outpatient), Some(ours[0].clone()), false),
            want(hosp2_totals()[0].clone(), Some(ours[1].clone()), false),
            want(zero(Resident, Inpatient), Some(ours[2].clone()), false),
            want(
                zero(InsuranceType::Maternity, Maternity),
                Some(ours[3].clone()),
                false,
            ),
        ],
    );
    scn.assert_nothing_written().await;
}

/// Date ranges: one excluding today (past or future) has nothing of ours; 366 days ending today
/// is the same as today alone.
async fn totals_date_ranges(b: Backend) {
    let scn = scenario(b).await;
    let (from, to) = (scn.from.clone(), scn.to.clone());
    let (past_from, past_to) = (shift(&from, -30), shift(&from, -1));
    let (future_from, future_to) = (shift(&to, 1), shift(&to, 7));

    for (a, z) in [(&past_from, &past_to), (&future_from, &future_to)] {
        // Nothing on either side: balanced, no groups.
        let got = totals(&scn.h, a, z, vec![]).await.must();
        assert_totals(&got, true, &[]);
        // The hospital's real figures: ours zero-filled everywhere.
        let got = totals(&scn.h, a, z, hosp_totals()).await.must();
        let wants: Vec<Want> = hosp_totals()
            .into_iter()
            .map(|t| {
                let none = proto::TotalsGroup {
                    count: 0,
                    medfee_sumamt: "0.00".into(),
                    fund_pay_sumamt: "0.00".into(),
                    acct_pay: "0.00".into(),
                    psn_cash_pay: "0.00".into(),
                    ..t.clone()
                };
                want(none, Some(t), false)
            })
            .collect();
        assert_totals(&got, false, &wants);
        let got = totals(&scn.ph, a, z, vec![]).await.must();
        assert_totals(&got, true, &[]);
    }

    // 366 days (inclusive) ending on the last business date: the same totals.
    let long_from = shift(&to, -365);
    let got = totals(&scn.h, &long_from, &to, hosp_totals()).await.must();
    assert_totals(&got, true, &all_match(&hosp_totals(), &hosp_totals()));
    let got = totals(&scn.ph, &long_from, &to, pharmacy_totals())
        .await
        .must();
    assert_totals(
        &got,
        true,
        &all_match(&pharmacy_totals(), &pharmacy_totals()),
    );
    scn.assert_nothing_written().await;
}

/// Bad requests: dates, ranges, duplicate groups, unspecified enums, amounts that do not parse.
async fn totals_validation(b: Backend) {
    use ClearingType::{Inpatient, Outpatient, Pharmacy};
    use InsuranceType::Employee;
    let scn = scenario(b).await;
    let (from, to) = (scn.from.clone(), scn.to.clone());
    let ok = hosp_totals;

    // ---- Dates.
    for bad in [
        "",
        "2026-13-01",
        "2026-02-30",
        "20260801",
        "2026/08/01",
        "2026-8-1",
    ] {
        totals(&scn.h, bad, &to, ok()).await.invalid("from_date");
        totals(&scn.h, &from, bad, ok()).await.invalid("to_date");
    }
    // to_date before from_date.
    totals(&scn.h, &to, &shift(&to, -1), ok())
        .await
        .code_is(Code::InvalidArgument);
    // At most 366 days: 2024-01-01..=2024-12-31 (a leap year, 366 days) is fine;
    // 2025-01-01..=2026-01-02 is 367 days; two years is far too long.
    totals(&scn.h, "2024-01-01", "2024-12-31", vec![])
        .await
        .must();
    totals(&scn.h, "2025-01-01", "2026-01-01", vec![])
        .await
        .must();
    totals(&scn.h, "2025-01-01", "2026-01-02", vec![])
        .await
        .code_is(Code::InvalidArgument);
    totals(&scn.h, &shift(&to, -366), &to, ok())
        .await
        .code_is(Code::InvalidArgument);
    totals(&scn.h, &shift(&to, -730), &to, ok())
        .await
        .code_is(Code::InvalidArgument);

    // ---- Duplicate groups: the second occurrence is named.
    let a = g(Employee, Inpatient, 1, ["1.00", "1.00", "0.00", "0.00"]);
    totals(&scn.h, &from, &to, vec![a.clone(), a.clone()])
        .await
        .invalid("groups[1]");
    let c = g(Employee, Outpatient, 1, ["1.00", "1.00", "0.00", "0.00"]);
    let mut a2 = a.clone();
    a2.count = 7;
    a2.medfee_sumamt = "9.00".into();
    totals(&scn.h, &from, &to, vec![a.clone(), c.clone(), a2])
        .await
        .invalid("groups[2]");

    // ---- Unknown enum values (not in the contract's enums) are refused like unspecified ones.
    let mut u = a.clone();
    u.insurance_type = 999;
    totals(&scn.h, &from, &to, vec![u])
        .await
        .code_is(Code::InvalidArgument);
    let mut u = a.clone();
    u.clearing_type = 12;
    totals(&scn.h, &from, &to, vec![u])
        .await
        .code_is(Code::InvalidArgument);

    // ---- Unspecified enums.
    let mut u = a.clone();
    u.insurance_type = InsuranceType::Unspecified as i32;
    totals(&scn.h, &from, &to, vec![c.clone(), u])
        .await
        .code_is(Code::InvalidArgument);
    let mut u = a.clone();
    u.clearing_type = ClearingType::Unspecified as i32;
    totals(&scn.h, &from, &to, vec![u])
        .await
        .code_is(Code::InvalidArgument);

    // ---- Amounts that do not parse, named by group index and field.
    let p = g(Employee, Pharmacy, 1, ["1.00", "1.00", "0.00", "0.00"]);
    let cases: Vec<(usize, &str, &str)> = vec![
        (0, "medfee_sumamt", "abc"),
        (1, "medfee_sumamt", "12,00"),
        (1, "fund_pay_sumamt", "1e3"),
        (0, "acct_pay", "NaN"),
        (2, "psn_cash_pay", "+5.00"),
        (2, "acct_pay", "1.234"),
        (0, "fund_pay_sumamt", "--1.00"),
        (1, "psn_cash_pay", "1.2.3"),
    ];
    for (i, field, bad) in cases {
        let mut gs = vec![a.clone(), c.clone(), p.clone()];
        let t = &mut gs[i];
        match field {
            "medfee_sumamt" => t.medfee_sumamt = bad.into(),
            "fund_pay_sumamt" => t.fund_pay_sumamt = bad.into(),
            "acct_pay" => t.acct_pay = bad.into(),
            "psn_cash_pay" => t.psn_cash_pay = bad.into(),
            _ => unreachable!(),
        }
        totals(&scn.h, &from, &to, gs)
            .await
            .invalid(&format!("groups[{i}].{field}"));
    }

    // ---- Negative figures and counts are figures like any other (a day of refunds only).
    let neg = g(
        Employee,
        Pharmacy,
        -1,
        ["-120.00", "-45.00", "-75.00", "0.00"],
    );
    let got = totals(&scn.ph, &from, &to, vec![neg.clone()]).await.must();
    assert_totals(
        &got,
        false,
        &[want(pharmacy_totals()[0].clone(), Some(neg), false)],
    );
    scn.assert_nothing_written().await;
}

/// Institutions only: bureaus and operators are refused, anonymous callers unauthenticated.
async fn totals_permissions(b: Backend) {
    let scn = scenario(b).await;
    let (from, to) = (scn.from.clone(), scn.to.clone());
    for grant in [bureau_grant(ORDOS), bureau_grant(WUHAI), Grant::Operator] {
        let c = recon_as(&scn.ts, grant).await;
        totals(&c, &from, &to, hosp_totals())
            .await
            .code_is(Code::PermissionDenied);
        totals(&c, &from, &to, vec![])
            .await
            .code_is(Code::PermissionDenied);
    }
    totals(&recon_anonymous(&scn.ts), &from, &to, vec![])
        .await
        .code_is(Code::Unauthenticated);
    // The institution itself still balances.
    let got = totals(&scn.h, &from, &to, hosp_totals()).await.must();
    assert!(got.balanced, "{got:#?}");
    scn.assert_nothing_written().await;
}

// ------------------------------------------------------------------------------ detail tests

/// Every row exactly as we have it (in any order, amounts as decimals): no difference at all.
async fn detail_exact_match(b: Backend) {
    let scn = scenario(b).await;
    let (from, to) = (scn.from.clone(), scn.to.clone());

    let mut rows = scn.hosp_rows();
    rows.reverse();
    // Same decimals, other spellings: "80.0", "0", "-1050", "100".
    for r in rows.iter_mut() {
        if r.setl_id == scn.s3.setl_id {
            r.medfee_sumamt = "80.0".into();
            r.psn_cash_pay = "0".into();
        }
        if r.setl_id == scn.r1.setl_id {
            r.medfee_sumamt = "-1050".into();
        }
        if r.setl_id == scn.smat.setl_id {
            r.medfee_sumamt = "100".into();
            r.request_id = "the institution's own msgid".into();
        }
    }
    let got = ok_diffs(detail(&scn.h, msgs(&from, &to, rows)).await);
    assert!(got.is_empty(), "no differences expected: {got:#?}");

    let got = ok_diffs(detail(&scn.ph, msgs(&from, &to, scn.pharmacy_rows())).await);
    assert!(got.is_empty(), "no differences expected: {got:#?}");

    let got = ok_diffs(detail(&scn.h2, msgs(&from, &to, vec![row_of(&scn.other)])).await);
    assert!(got.is_empty(), "no differences expected: {got:#?}");

    // A range of 366 days ending on the last business date: the same.
    let got = ok_diffs(detail(&scn.h, msgs(&shift(&to, -365), &to, scn.hosp_rows())).await);
    assert!(got.is_empty(), "no differences expected: {got:#?}");
    scn.assert_nothing_written().await;
}

/// The hospital's rows with one of each difference.
async fn detail_differences(b: Backend) {
    let scn = scenario(b).await;
    let (from, to) = (scn.from.clone(), scn.to.clone());

    // s1: cash 50.01 instead of 50.00.
    let s1 = proto::DetailRow {
        psn_cash_pay: "50.01".into(),
        ..row_of(&scn.s1)
    };
    // r1: not flagged as a reversal (same amounts).
    let r1 = proto::DetailRow {
        refund: false,
        ..row_of(&scn.r1)
    };
    // s2: not sent.
    // s3: medfee 80.10 instead of 80.00.
    let s3 = proto::DetailRow {
        medfee_sumamt: "80.10".into(),
        ..row_of(&scn.s3)
    };
    // sres: account 0.01 instead of 0.00.
    let sres = proto::DetailRow {
        acct_pay: "0.01".into(),
        ..row_of(&scn.sres)
    };
    // smat: exactly ours, spelt "100" and "90.0".
    let smat = proto::DetailRow {
        medfee_sumamt: "100".into(),
        fund_pay_sumamt: "90.0".into(),
        ..row_of(&scn.smat)
    };
    // Another hospital's settlement, a pharmacy's, a refund flag on it, garbage ids.
    let other = row_of(&scn.other);
    let p1 = row_of(&scn.p1);
    let rf1 = row_of(&scn.rf1);
    let garbage = fake_row("NOPE-0001");
    let garbage2 = fake_row("'; DROP TABLE settlements; --");
    // Near misses of s2's id: another case, a LIKE pattern. s2 itself is not sent.
    let lower = fake_row(&scn.s2.setl_id.to_lowercase());
    let pattern = fake_row(&format!("{}%", &scn.s2.setl_id[..scn.s2.setl_id.len() - 2]));
    assert_ne!(lower.setl_id, scn.s2.setl_id);
    let rows = vec![
        garbage.clone(),
        s1.clone(),
        other.clone(),
        r1.clone(),
        s3.clone(),
        p1.clone(),
        sres.clone(),
        smat,
        rf1.clone(),
        garbage2.clone(),
        lower.clone(),
        pattern.clone(),
    ];
    let got = ok_diffs(detail(&scn.h, msgs(&from, &to, rows)).await);
    let expected = sorted(vec![
        mismatch(&scn.s1, &s1),
        mismatch(&scn.r1, &r1),
        missing_theirs(&scn.s2),
        mismatch(&scn.s3, &s3),
        mismatch(&scn.sres, &sres),
        missing_ours(&other),
        missing_ours(&p1),
        missing_ours(&rf1),
        missing_ours(&garbage),
        missing_ours(&garbage2),
        missing_ours(&lower),
        missing_ours(&pattern),
    ]);
    assert_eq!(diffs(&got), expected, "{got:#?}");
    // The reversal as we have it: flagged, negative.
    let r = got
        .iter()
        .find(|d| d.setl_id == scn.r1.setl_id)
        .expect("r1 differs");
    let ours = r.ours.as_ref().expect("ours");
    assert!(ours.refund);
    assert_eq!(ours.medfee_sumamt, "-1050.00");
    assert!(!r.theirs.as_ref().expect("theirs").refund);

    // Nothing sent at all: every one of ours is missing on their side.
    let got = ok_diffs(detail(&scn.h, msgs(&from, &to, vec![])).await);
    let expected = sorted(
        [&scn.s1, &scn.r1, &scn.s2, &scn.s3, &scn.sres, &scn.smat]
            .into_iter()
            .map(missing_theirs)
            .collect(),
    );
    assert_eq!(diffs(&got), expected, "{got:#?}");
    scn.assert_nothing_written().await;
}

/// The pharmacy: a refund not sent, a wrong fund figure, a hospital's settlement.
async fn detail_pharmacy_differences(b: Backend) {
    let scn = scenario(b).await;
    let (from, to) = (scn.from.clone(), scn.to.clone());
    // p1: fund 170.00 instead of 170.50.
    let p1 = proto::DetailRow {
        fund_pay_sumamt: "170.00".into(),
        ..row_of(&scn.p1)
    };
    // p2: exact. rf1: not sent. s2: the hospital's.
    let s2 = row_of(&scn.s2);
    let rows = vec![s2.clone(), row_of(&scn.p2), p1.clone()];
    let got = ok_diffs(detail(&scn.ph, msgs(&from, &to, rows)).await);
    assert_eq!(
        diffs(&got),
        sorted(vec![
            mismatch(&scn.p1, &p1),
            missing_theirs(&scn.rf1),
            missing_ours(&s2),
        ]),
        "{got:#?}"
    );
    let rf = got
        .iter()
        .find(|d| d.setl_id == scn.rf1.setl_id)
        .expect("rf1 differs");
    assert_eq!(rf.kind, DifferenceKind::MissingTheirs as i32);
    assert!(rf.theirs.is_none());
    let ours = rf.ours.as_ref().expect("ours");
    assert!(ours.refund, "a refund is flagged: {rf:?}");
    assert_eq!(
        [
            ours.medfee_sumamt.as_str(),
            ours.fund_pay_sumamt.as_str(),
            ours.acct_pay.as_str(),
            ours.psn_cash_pay.as_str()
        ],
        ["-120.00", "-45.00", "-75.00", "0.00"]
    );

    // The refund flagged as a purchase (amounts right) is a mismatch too.
    let rf1 = proto::DetailRow {
        refund: false,
        ..row_of(&scn.rf1)
    };
    let rows = vec![row_of(&scn.p1), row_of(&scn.p2), rf1.clone()];
    let got = ok_diffs(detail(&scn.ph, msgs(&from, &to, rows)).await);
    assert_eq!(diffs(&got), vec![mismatch(&scn.rf1, &rf1)], "{got:#?}");
    scn.assert_nothing_written().await;
}

/// A range that excludes the settlements' dates: every row sent is missing on our side, none of
/// ours is missing on theirs.
async fn detail_out_of_range(b: Backend) {
    let scn = scenario(b).await;
    let (from, to) = (scn.from.clone(), scn.to.clone());
    for (a, z) in [
        (shift(&from, -30), shift(&from, -1)),
        (shift(&to, 1), shift(&to, 1)),
    ] {
        let rows = scn.hosp_rows();
        let got = ok_diffs(detail(&scn.h, msgs(&a, &z, rows.clone())).await);
        assert_eq!(
            diffs(&got),
            sorted(rows.iter().map(missing_ours).collect()),
            "{a}..={z}: {got:#?}"
        );
        let got = ok_diffs(detail(&scn.h, msgs(&a, &z, vec![])).await);
        assert!(got.is_empty(), "{a}..={z}: {got:#?}");
    }
    scn.assert_nothing_written().await;
}

/// The rows in the differences are complete: ours carries the request id of the call that made
/// the settlement (the reversal's own), theirs is the row as sent.
async fn detail_rows_as_recorded(b: Backend) {
    let scn = scenario(b).await;
    let (from, to) = (scn.from.clone(), scn.to.clone());
    // Header only: every one of ours, complete.
    let got = ok_diffs(detail(&scn.h, msgs(&scn.from, &scn.to, vec![])).await);
    let mut ours: Vec<proto::DetailRow> = got
        .iter()
        .map(|d| {
            assert_eq!(d.kind, DifferenceKind::MissingTheirs as i32, "{d:?}");
            assert!(d.theirs.is_none(), "{d:?}");
            let o = d.ours.clone().expect("ours");
            assert_eq!(o.setl_id, d.setl_id);
            o
        })
        .collect();
    ours.sort_by(|a, b| a.setl_id.cmp(&b.setl_id));
    let mut expected = scn.hosp_rows();
    expected.sort_by(|a, b| a.setl_id.cmp(&b.setl_id));
    assert!(expected.iter().all(|r| !r.request_id.is_empty()));
    assert_eq!(ours, expected);

    // Their rows come back as sent.
    let s2 = proto::DetailRow {
        request_id: "HIS-20260801-0001".into(),
        acct_pay: "100.10".into(),
        ..row_of(&scn.s2)
    };
    let fake = fake_row("HIS-ONLY-1");
    let rows = vec![
        row_of(&scn.s1),
        row_of(&scn.r1),
        s2.clone(),
        row_of(&scn.s3),
        row_of(&scn.sres),
        row_of(&scn.smat),
        fake.clone(),
    ];
    let mut got = ok_diffs(detail(&scn.h, msgs(&from, &to, rows)).await);
    got.sort_by(|a, b| a.setl_id.cmp(&b.setl_id));
    let mut want = vec![
        proto::DetailDifference {
            kind: DifferenceKind::AmountMismatch as i32,
            setl_id: s2.setl_id.clone(),
            ours: Some(row_of(&scn.s2)),
            theirs: Some(s2),
        },
        proto::DetailDifference {
            kind: DifferenceKind::MissingOurs as i32,
            setl_id: fake.setl_id.clone(),
            ours: None,
            theirs: Some(fake),
        },
    ];
    want.sort_by(|a, b| a.setl_id.cmp(&b.setl_id));
    assert_eq!(got, want);
    scn.assert_nothing_written().await;
}

/// Bad streams: no header first, bad header dates or range, a row with a bad amount (named by
/// its index among the rows), a duplicate setl_id.
async fn detail_validation(b: Backend) {
    let scn = scenario(b).await;
    let (from, to) = (scn.from.clone(), scn.to.clone());
    let h = &scn.h;

    // ---- The header must come first.
    stream_invalid(detail(h, vec![]).await, &["header"]);
    stream_invalid(
        detail(h, vec![row(row_of(&scn.s2)), header(&from, &to)]).await,
        &["header"],
    );
    stream_invalid(
        detail(
            h,
            vec![proto::DetailMessage { message: None }, header(&from, &to)],
        )
        .await,
        &["header"],
    );
    stream_invalid(detail(h, vec![row(fake_row("X1"))]).await, &["header"]);

    // ---- Header dates.
    for bad in ["", "2026-13-01", "2026-02-30", "20260801"] {
        stream_invalid(
            detail(h, msgs(bad, &to, scn.hosp_rows())).await,
            &["from_date", "header.from_date"],
        );
        stream_invalid(
            detail(h, msgs(&from, bad, scn.hosp_rows())).await,
            &["to_date", "header.to_date"],
        );
    }
    stream_code(
        detail(h, msgs(&to, &shift(&to, -1), scn.hosp_rows())).await,
        Code::InvalidArgument,
    );
    stream_code(
        detail(h, msgs(&shift(&to, -366), &to, scn.hosp_rows())).await,
        Code::InvalidArgument,
    );
    stream_code(
        detail(h, msgs("2025-01-01", "2026-01-02", vec![])).await,
        Code::InvalidArgument,
    );

    // ---- A bad amount in rows[3] (the header is not a row), after good rows of every kind.
    let good = || {
        vec![
            row_of(&scn.s1),
            fake_row("X0"),
            proto::DetailRow {
                medfee_sumamt: "1.00".into(),
                ..row_of(&scn.s2)
            },
        ]
    };
    for (field, bad) in [
        ("medfee_sumamt", "abc"),
        ("fund_pay_sumamt", "1e3"),
        ("acct_pay", "NaN"),
        ("psn_cash_pay", "+5.00"),
        ("medfee_sumamt", "1.2.3"),
        ("acct_pay", "1.234"),
    ] {
        let mut r = row_of(&scn.s3);
        match field {
            "medfee_sumamt" => r.medfee_sumamt = bad.into(),
            "fund_pay_sumamt" => r.fund_pay_sumamt = bad.into(),
            "acct_pay" => r.acct_pay = bad.into(),
            "psn_cash_pay" => r.psn_cash_pay = bad.into(),
            _ => unreachable!(),
        }
        let mut rows = good();
        rows.push(r);
        rows.push(row_of(&scn.sres));
        let named = format!("rows[3].{field}");
        stream_invalid(detail(h, msgs(&from, &to, rows)).await, &[named.as_str()]);
    }
    // At rows[0].
    let r = proto::DetailRow {
        psn_cash_pay: "twelve".into(),
        ..fake_row("X9")
    };
    stream_invalid(
        detail(h, msgs(&from, &to, vec![r])).await,
        &["rows[0].psn_cash_pay"],
    );

    // ---- A setl_id twice: one of ours, or one of their own.
    let s = stream_code(
        detail(
            h,
            msgs(
                &from,
                &to,
                vec![row_of(&scn.s2), fake_row("X1"), row_of(&scn.s2)],
            ),
        )
        .await,
        Code::InvalidArgument,
    );
    println!(
        "duplicate of ours: {} {:?}",
        s.message(),
        violated_fields(&s)
    );
    let s = stream_code(
        detail(
            h,
            msgs(
                &from,
                &to,
                vec![
                    fake_row("X1"),
                    fake_row("X2"),
                    row_of(&scn.s3),
                    fake_row("X1"),
                ],
            ),
        )
        .await,
        Code::InvalidArgument,
    );
    println!(
        "duplicate of theirs: {} {:?}",
        s.message(),
        violated_fields(&s)
    );

    // The same stream without the faults is fine.
    let got = ok_diffs(detail(h, msgs(&from, &to, scn.hosp_rows())).await);
    assert!(got.is_empty(), "{got:#?}");
    scn.assert_nothing_written().await;
}

/// Institutions only.
async fn detail_permissions(b: Backend) {
    let scn = scenario(b).await;
    let (from, to) = (scn.from.clone(), scn.to.clone());
    for grant in [bureau_grant(ORDOS), bureau_grant(WUHAI), Grant::Operator] {
        let c = recon_as(&scn.ts, grant).await;
        stream_code(
            detail(&c, msgs(&from, &to, scn.hosp_rows())).await,
            Code::PermissionDenied,
        );
        stream_code(
            detail(&c, msgs(&from, &to, vec![])).await,
            Code::PermissionDenied,
        );
    }
    stream_code(
        detail(&recon_anonymous(&scn.ts), msgs(&from, &to, vec![])).await,
        Code::Unauthenticated,
    );
    scn.assert_nothing_written().await;
}

/// 100,000 rows of the institution's own (ids "X0" … "X99999") around the real ones: exactly
/// 100,000 MISSING_OURS, each id once, received as a stream.
async fn detail_scale(b: Backend) {
    const N: usize = 100_000;
    let scn = scenario(b).await;
    let (from, to) = (scn.from.clone(), scn.to.clone());
    let real = scn.hosp_rows();
    // Generated lazily as the client sends: X0..X49999, the real rows, X50000..X99999.
    let fake = |i: usize| {
        row(proto::DetailRow {
            setl_id: format!("X{i}"),
            request_id: format!("HIS-{i}"),
            medfee_sumamt: format!("{}.{:02}", i % 1000, i % 100),
            fund_pay_sumamt: "0.00".into(),
            acct_pay: "0.00".into(),
            psn_cash_pay: format!("{}.{:02}", i % 1000, i % 100),
            refund: i.is_multiple_of(7),
        })
    };
    let messages = std::iter::once(header(&from, &to))
        .chain((0..N / 2).map(fake))
        .chain(real.into_iter().map(row))
        .chain((N / 2..N).map(fake));

    let started = Instant::now();
    let mut stream = scn
        .h
        .clone()
        .reconcile_detail(futures::stream::iter(messages))
        .await
        .unwrap_or_else(|s| panic!("ReconcileDetail: {:?} {}", s.code(), s.message()))
        .into_inner();
    let mut seen = vec![false; N];
    let mut count = 0usize;
    let mut first_after = None;
    let mut unexpected = Vec::new();
    loop {
        let d = match stream.message().await {
            Ok(Some(d)) => d,
            Ok(None) => break,
            Err(s) => panic!(
                "the stream failed after {count} differences: {:?} {}",
                s.code(),
                s.message()
            ),
        };
        first_after.get_or_insert(started.elapsed());
        let i = d
            .setl_id
            .strip_prefix('X')
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&i| i < N);
        match i {
            Some(i)
                if d.kind == DifferenceKind::MissingOurs as i32
                    && d.ours.is_none()
                    && d.theirs.as_ref().is_some_and(|t| t.setl_id == d.setl_id) =>
            {
                assert!(!seen[i], "X{i} reported twice");
                seen[i] = true;
                count += 1;
            }
            _ => {
                if unexpected.len() < 20 {
                    unexpected.push(d);
                }
            }
        }
    }
    let elapsed = started.elapsed();
    println!(
        "{b:?}: {count} differences in {elapsed:?} (first after {:?})",
        first_after.unwrap_or_default()
    );
    assert!(
        unexpected.is_empty(),
        "unexpected differences: {unexpected:#?}"
    );
    assert_eq!(count, N, "MISSING_OURS differences");
    assert!(seen.iter().all(|&s| s));
    scn.assert_nothing_written().await;
}

/// Faults far from where they started, in a long stream: a bad amount at rows[30000], a
/// setl_id repeated 30,000 rows later (ours or theirs). Differences may already have been
/// streamed; the stream must still end with INVALID_ARGUMENT.
async fn detail_far_apart_faults(b: Backend) {
    const N: usize = 30_000;
    let scn = scenario(b).await;
    let (from, to) = (scn.from.clone(), scn.to.clone());
    let fakes = |prefix: &'static str| (0..N).map(move |i| row(fake_row(&format!("{prefix}{i}"))));
    let hdr = header(&from, &to);

    // rows[0..30000) are fakes, rows[30000] has a bad account amount.
    let bad = proto::DetailRow {
        acct_pay: "1.001".into(),
        ..row_of(&scn.s2)
    };
    let m = std::iter::once(hdr.clone())
        .chain(fakes("A"))
        .chain([row(bad), row(row_of(&scn.s3))]);
    stream_invalid(
        detail_stream(&scn.h, futures::stream::iter(m)).await,
        &["rows[30000].acct_pay"],
    );

    // s2 first and again after 30,000 rows.
    let m = std::iter::once(hdr.clone())
        .chain([row(row_of(&scn.s2))])
        .chain(fakes("B"))
        .chain([row(row_of(&scn.s2))]);
    let s = stream_code(
        detail_stream(&scn.h, futures::stream::iter(m)).await,
        Code::InvalidArgument,
    );
    println!(
        "far duplicate of ours: {} {:?}",
        s.message(),
        violated_fields(&s)
    );

    // C7 again after 30,000 rows.
    let m = std::iter::once(hdr.clone())
        .chain(fakes("C"))
        .chain([row(fake_row("C7"))]);
    let s = stream_code(
        detail_stream(&scn.h, futures::stream::iter(m)).await,
        Code::InvalidArgument,
    );
    println!(
        "far duplicate of theirs: {} {:?}",
        s.message(),
        violated_fields(&s)
    );
    scn.assert_nothing_written().await;
}

/// Four streams at once (two of them for the same hospital), each with 20,000 rows of its own
/// plus its institution's real rows: each gets exactly its own differences.
async fn detail_concurrent_streams(b: Backend) {
    const N: usize = 20_000;
    let scn = scenario(b).await;
    let (from, to) = (scn.from.clone(), scn.to.clone());
    let jobs = [
        ("H1-", scn.h.clone(), scn.hosp_rows()),
        ("H2-", scn.h.clone(), scn.hosp_rows()),
        ("PH-", scn.ph.clone(), scn.pharmacy_rows()),
        ("OT-", scn.h2.clone(), vec![row_of(&scn.other)]),
    ];
    let handles: Vec<_> = jobs
        .into_iter()
        .map(|(prefix, c, real)| {
            let m: Vec<proto::DetailMessage> = std::iter::once(header(&from, &to))
                .chain(real.into_iter().map(row))
                .chain((0..N).map(|i| row(fake_row(&format!("{prefix}{i}")))))
                .collect();
            tokio::spawn(async move {
                let got = detail(&c, m).await;
                (prefix, got)
            })
        })
        .collect();
    for h in handles {
        let (prefix, got) = h.await.expect("task");
        let got = ok_diffs(got);
        assert_eq!(got.len(), N, "{prefix}: {} differences", got.len());
        let mut ids: Vec<&str> = got
            .iter()
            .map(|d| {
                assert_eq!(
                    d.kind,
                    DifferenceKind::MissingOurs as i32,
                    "{prefix}: {d:?}"
                );
                assert!(d.setl_id.starts_with(prefix), "{prefix}: {d:?}");
                d.setl_id.as_str()
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), N, "{prefix}: distinct ids");
    }
    scn.assert_nothing_written().await;
}

/// 冲正 (NHSA 2601) is a reversal like any other: the pharmacy's of a real purchase and the
/// hospital's of a real settlement count −1 with negative amounts; closing a request id that
/// never landed (found = false) makes no settlement and counts nothing.
async fn chongzheng(b: Backend) {
    let mut scn = scenario(b).await;
    let (from, to) = (scn.from.clone(), scn.to.clone());

    // ---- Pharmacy: p3 A001 1 × 2.00, account off: fund 1.00, cash 1.00; then 冲正 of its
    // request id: −2.00, −1.00, 0.00, −1.00.
    let card = card_holder(&scn.w, 8, "0.00").await;
    let p3 = swipe(&scn.pharm, &card, vec![pl("1", "A001", "1", "2.00")], false).await;
    assert_eq!(four(&p3), ["2.00", "1.00", "0.00", "1.00"]);
    let c = scn
        .pharm
        .clone()
        .reverse_purchase_by_request_id(proto::ReverseByRequestIdRequest {
            request_id: rid(),
            original_request_id: p3.request_id.clone(),
        })
        .await
        .must();
    assert!(c.found, "{c:?}");
    let p3r = c.reversal.expect("reversal");
    assert_eq!(p3r.kind, SettlementKind::Reversal as i32);
    assert_eq!(four(&p3r), ["-2.00", "-1.00", "0.00", "-1.00"]);
    let c = scn
        .pharm
        .clone()
        .reverse_purchase_by_request_id(proto::ReverseByRequestIdRequest {
            request_id: rid(),
            original_request_id: "never-landed-at-the-pharmacy".into(),
        })
        .await
        .must();
    assert!(!c.found && c.reversal.is_none(), "{c:?}");

    // ---- Hospital: s4 p1 outpatient A001 1 × 20.00, account off: fund 10.00, cash 10.00;
    // then 冲正 of its request id.
    let p1 = national_id("150302", "19800101", 1);
    let s4 = bill(
        &scn.w.h,
        &p1,
        InsuranceType::Employee,
        CareType::Outpatient,
        vec![line("1", "A001", "1", "20.00")],
        false,
    )
    .await;
    assert_eq!(four(&s4), ["20.00", "10.00", "0.00", "10.00"]);
    let c = scn
        .w
        .h
        .clone()
        .reverse_by_request_id(proto::ReverseByRequestIdRequest {
            request_id: rid(),
            original_request_id: s4.request_id.clone(),
        })
        .await
        .must();
    assert!(c.found, "{c:?}");
    let s4r = c.reversal.expect("reversal");
    assert_eq!(four(&s4r), ["-20.00", "-10.00", "0.00", "-10.00"]);
    let c = scn
        .w
        .h
        .clone()
        .reverse_by_request_id(proto::ReverseByRequestIdRequest {
            request_id: rid(),
            original_request_id: "never-landed-at-the-hospital".into(),
        })
        .await
        .must();
    assert!(!c.found && c.reversal.is_none(), "{c:?}");
    for s in [&p3, &p3r, &s4, &s4r] {
        assert!(
            from <= s.business_date && s.business_date <= ymd(today()),
            "{s:?}"
        );
    }
    let to = ymd(today()).max(to);
    verify_ok(&scn.ts).await;
    scn.before = books(&scn.ts).await;

    // ---- Totals: the counts net out (pharmacy 3 − 2 = 1; hospital 310/11: 2 − 1 = 1), the
    // amounts are unchanged.
    let got = totals(&scn.ph, &from, &to, pharmacy_totals()).await.must();
    assert_totals(
        &got,
        true,
        &all_match(&pharmacy_totals(), &pharmacy_totals()),
    );
    let got = totals(&scn.h, &from, &to, hosp_totals()).await.must();
    assert_totals(&got, true, &all_match(&hosp_totals(), &hosp_totals()));

    // ---- Detail: every row, the 冲正 flagged as refunds; nothing for the closed request ids.
    let mut rows = scn.pharmacy_rows();
    rows.extend([row_of(&p3), row_of(&p3r)]);
    assert!(rows.last().unwrap().refund);
    let got = ok_diffs(detail(&scn.ph, msgs(&from, &to, rows)).await);
    assert!(got.is_empty(), "{got:#?}");
    let mut rows = scn.hosp_rows();
    rows.extend([row_of(&s4), row_of(&s4r)]);
    let got = ok_diffs(detail(&scn.h, msgs(&from, &to, rows)).await);
    assert!(got.is_empty(), "{got:#?}");
    // Header only: exactly our settlements.
    let got = ok_diffs(detail(&scn.ph, msgs(&from, &to, vec![])).await);
    assert_eq!(
        diffs(&got),
        sorted(
            [&scn.p1, &scn.p2, &scn.rf1, &p3, &p3r]
                .into_iter()
                .map(missing_theirs)
                .collect()
        ),
        "{got:#?}"
    );
    let got = ok_diffs(detail(&scn.h, msgs(&from, &to, vec![])).await);
    assert_eq!(
        diffs(&got),
        sorted(
            [
                &scn.s1, &scn.r1, &scn.s2, &scn.s3, &scn.sres, &scn.smat, &s4, &s4r
            ]
            .into_iter()
            .map(missing_theirs)
            .collect()
        ),
        "{got:#?}"
    );
    scn.assert_nothing_written().await;
}

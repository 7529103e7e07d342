//! Helpers of the settlement end-to-end tests: a SettlementService client with the bearer
//! interceptor, the small world (regions, hospitals, persons, catalogue, policies, filings), the
//! flow steps and the money assertions shared by settlement_flow, settlement_rules and
//! settlement_concurrency.
#![allow(dead_code)]

use super::*;
use medsettle::domain::ids::{InstitutionCode, RegionCode};
use medsettle::proto;
use medsettle::proto::settlement_service_client::SettlementServiceClient;
use medsettle::service::auth::Grant;
use proto::{CareType, CatalogueClass, CatalogueKind, FilingType, InsuranceType, SettlementKind};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};
use tonic_types::StatusExt;

/// Home region of the insured (乌海市).
pub const WUHAI: &str = "150300";
/// Treatment region, same province 15 (鄂尔多斯市).
pub const ORDOS: &str = "150600";
/// Another province (石嘴山市, Ningxia 64).
pub const SHIZUISHAN: &str = "640200";
/// The level-3 cross-region hospital in Ordos that runs the flows.
pub const HOSP: &str = "H15060000001";
/// A second Ordos hospital (level 2), registered by tests that need it.
pub const HOSP2: &str = "H15060000002";
/// A level-3 cross-region hospital in Shizuishan, registered by tests that need it.
pub const HOSP_NX: &str = "H64020000001";
/// A Wuhai hospital that refers patients (named by referral filings).
pub const REFERRER: &str = "H15030000001";
/// The catalogue's effective date and the reference policy's.
pub const JAN1: &str = "2026-01-01";

/// Beijing (no institutions in the kit world; a bureau that is party to nothing by default).
pub const BEIJING: &str = "110000";

// -------------------------------------------------------------- SettlementService clients

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Clone)]
pub struct Token(MetadataValue<Ascii>);

impl Interceptor for Token {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

pub type Setl = SettlementServiceClient<InterceptedService<Channel, Token>>;

pub async fn setl_as(ts: &TestServer, grant: Grant) -> Setl {
    let token = ts.token(grant).await;
    let v = format!("Bearer {token}").parse().expect("ASCII token");
    SettlementServiceClient::with_interceptor(ts.channel.clone(), Token(v))
}

/// SettlementService as the institution `code`.
pub async fn hosp(ts: &TestServer, code: &str) -> Setl {
    let c = InstitutionCode::parse("code", code).expect("institution code");
    setl_as(ts, Grant::Institution(c)).await
}

/// SettlementService as the bureau of `region`.
pub async fn bureau_setl(ts: &TestServer, region: &str) -> Setl {
    let r = RegionCode::parse("region", region).expect("region code");
    setl_as(ts, Grant::Bureau(r)).await
}

// -------------------------------------------------------------- the world

pub struct World {
    pub op: Caller,
    pub wuhai: Caller,
    pub ordos: Caller,
    pub nx: Caller,
    /// SettlementService as H15060000001.
    pub h: Setl,
}

/// Regions 150300 / 150600 / 640200; H15060000001 (level 3, cross-region, Ordos); a referring
/// hospital in Wuhai; the Ordos catalogue of [`ordos_items`] effective 2026-01-01. No policy:
/// each test writes its own.
pub async fn world(ts: &TestServer) -> World {
    let op = ts.operator().await;
    for r in [WUHAI, ORDOS, SHIZUISHAN] {
        create_region(&op, r).await;
    }
    let reg = hospital(HOSP, ORDOS, 3);
    assert!(reg.cross_region_enabled);
    op.reg().register_institution(reg).await.must();
    op.reg()
        .register_institution(hospital(REFERRER, WUHAI, 3))
        .await
        .must();
    let ordos = ts.bureau(ORDOS).await;
    catalogue(&ordos, ORDOS, ordos_items()).await;
    World {
        wuhai: ts.bureau(WUHAI).await,
        nx: ts.bureau(SHIZUISHAN).await,
        ordos,
        op,
        h: hosp(ts, HOSP).await,
    }
}

pub fn item(
    code: &str,
    kind: CatalogueKind,
    class: CatalogueClass,
    b_ratio: &str,
    cap: &str,
) -> proto::CatalogueItem {
    proto::CatalogueItem {
        region: String::new(),
        code: code.into(),
        name: format!("item {code}"),
        kind: kind as i32,
        class: class as i32,
        b_self_pay_ratio: b_ratio.into(),
        price_cap: cap.into(),
        effective_from: JAN1.into(),
        version: 0,
    }
}

/// A001 class A (no cap); B001 class B, first self-paid 0.10, cap 100.00; C001 class C;
/// D001 class B 0.20 (no cap); E001 class A, cap 50.00.
pub fn ordos_items() -> Vec<proto::CatalogueItem> {
    use CatalogueClass::{A, B, C};
    vec![
        item("A001", CatalogueKind::Service, A, "", ""),
        item("B001", CatalogueKind::Drug, B, "0.10", "100.00"),
        item("C001", CatalogueKind::Drug, C, "", ""),
        item("D001", CatalogueKind::Material, B, "0.20", ""),
        item("E001", CatalogueKind::Drug, A, "", "50.00"),
    ]
}

pub async fn catalogue(bureau: &Caller, region: &str, items: Vec<proto::CatalogueItem>) {
    bureau
        .reg()
        .upsert_catalogue(proto::UpsertCatalogueRequest {
            request_id: rid(),
            region: region.into(),
            items,
        })
        .await
        .must();
}

/// Registers a hospital as an operator.
pub async fn register(w: &World, code: &str, region: &str, level: u32) {
    w.op.reg()
        .register_institution(hospital(code, region, level))
        .await
        .must();
}

pub async fn put_policy(
    bureau: &Caller,
    region: &str,
    effective_from: &str,
    body: proto::PolicyBody,
) -> proto::PolicyVersion {
    bureau
        .reg()
        .put_policy(proto::PutPolicyRequest {
            request_id: rid(),
            region: region.into(),
            effective_from: effective_from.into(),
            body: Some(body),
        })
        .await
        .must()
}

/// Employees (active), inpatient at any level and province: `ratio`, no deductible, no cap;
/// treatment needs a filing; the account may not pay class C.
pub fn inpatient_policy(ratio: &str) -> proto::PolicyBody {
    proto::PolicyBody {
        rules: vec![proto::PolicyRule {
            insurance_type: InsuranceType::Employee as i32,
            category: proto::PersonCategory::Active as i32,
            care_type: CareType::Inpatient as i32,
            level: proto::LevelScope::Any as i32,
            province_scope: proto::ProvinceScope::Any as i32,
            deductible_basis: proto::DeductibleBasis::PerAdmission as i32,
            deductible: "0.00".into(),
            repeat_admission_deductible: String::new(),
            ratio: ratio.into(),
            annual_cap: String::new(),
            critical_illness: None,
            assistance: None,
        }],
        filing_reductions: vec![],
        unfiled_allowed: false,
        unfiled_reduction: None,
        account_pays_class_c: false,
        pharmacy_national: false,
    }
}

pub fn minus_points(p: &str) -> Option<proto::Reduction> {
    Some(proto::Reduction {
        kind: Some(proto::reduction::Kind::MinusPoints(p.into())),
    })
}

pub fn factor(f: &str) -> Option<proto::Reduction> {
    Some(proto::Reduction {
        kind: Some(proto::reduction::Kind::Factor(f.into())),
    })
}

// -------------------------------------------------------------- persons and filings

#[derive(Debug, Clone)]
pub struct Psn {
    pub psn_no: String,
    pub national_id: String,
}

pub async fn enrol(bureau: &Caller, req: proto::EnrolPersonRequest) -> Psn {
    let national_id = req.national_id.clone();
    let p = bureau.reg().enrol_person(req).await.must();
    Psn {
        psn_no: p.psn_no,
        national_id,
    }
}

/// An active employee (310) of Wuhai with `opening` in the personal account.
pub async fn wuhai_employee(w: &World, seq: u32, opening: &str) -> Psn {
    enrol(
        &w.wuhai,
        employee(&national_id("150302", "19800101", seq), WUHAI, opening),
    )
    .await
}

pub async fn file(
    w: &World,
    psn_no: &str,
    t: FilingType,
    destination: &str,
    from: &str,
    until: &str,
) -> proto::Filing {
    w.wuhai
        .fil()
        .file_filing(proto::FileFilingRequest {
            request_id: rid(),
            psn_no: psn_no.into(),
            filing_type: t as i32,
            destination: destination.into(),
            valid_from: from.into(),
            valid_until: until.into(),
            referring_institution: if t == FilingType::Referral {
                REFERRER.into()
            } else {
                String::new()
            },
        })
        .await
        .must()
}

// -------------------------------------------------------------- the hospital flow

/// Today's business date (UTC+8) as YYYY-MM-DD.
pub fn today_s() -> String {
    ymd(today())
}

pub fn cred(national_id: &str) -> Option<proto::PatientCredential> {
    Some(proto::PatientCredential {
        credential: Some(proto::patient_credential::Credential::NationalId(
            national_id.into(),
        )),
    })
}

pub async fn eligibility(
    h: &Setl,
    national_id: &str,
    ins: InsuranceType,
    care: CareType,
    date: &str,
) -> proto::Eligibility {
    h.clone()
        .check_eligibility(proto::CheckEligibilityRequest {
            credential: cred(national_id),
            insurance_type: ins as i32,
            care_type: care as i32,
            service_date: date.into(),
        })
        .await
        .must()
}

pub fn open_req(
    national_id: &str,
    ins: InsuranceType,
    care: CareType,
    begin: &str,
) -> proto::OpenVisitRequest {
    proto::OpenVisitRequest {
        request_id: rid(),
        credential: cred(national_id),
        visit_no: format!("V{}", rid()),
        insurance_type: ins as i32,
        care_type: care as i32,
        diagnoses: vec!["I21.9".into(), "E11.9".into()],
        begin_date: begin.into(),
    }
}

pub async fn try_open(
    h: &Setl,
    national_id: &str,
    ins: InsuranceType,
    care: CareType,
    begin: &str,
) -> Result<Response<proto::Visit>, Status> {
    h.clone()
        .open_visit(open_req(national_id, ins, care, begin))
        .await
}

pub async fn open(
    h: &Setl,
    national_id: &str,
    ins: InsuranceType,
    care: CareType,
    begin: &str,
) -> proto::Visit {
    let v = try_open(h, national_id, ins, care, begin).await.must();
    assert_eq!(v.status, proto::VisitStatus::Open as i32);
    v
}

/// An employee's inpatient admission today.
pub async fn admit(h: &Setl, p: &Psn) -> proto::Visit {
    open(
        h,
        &p.national_id,
        InsuranceType::Employee,
        CareType::Inpatient,
        &today_s(),
    )
    .await
}

pub fn line(no: &str, code: &str, qty: &str, price: &str) -> proto::FeeLine {
    proto::FeeLine {
        line_no: no.into(),
        code: code.into(),
        name: format!("{code} as the hospital calls it"),
        quantity: qty.into(),
        unit_price: price.into(),
        fee_date: String::new(),
        refund_of: String::new(),
    }
}

pub fn refund(no: &str, of: &str, code: &str, qty: &str, price: &str) -> proto::FeeLine {
    proto::FeeLine {
        refund_of: of.into(),
        ..line(no, code, qty, price)
    }
}

pub fn upload_req(mdtrt_id: &str, lines: Vec<proto::FeeLine>) -> proto::UploadFeeLinesRequest {
    proto::UploadFeeLinesRequest {
        request_id: rid(),
        mdtrt_id: mdtrt_id.into(),
        lines,
    }
}

pub async fn upload(
    h: &Setl,
    mdtrt_id: &str,
    lines: Vec<proto::FeeLine>,
) -> proto::UploadFeeLinesResponse {
    h.clone()
        .upload_fee_lines(upload_req(mdtrt_id, lines))
        .await
        .must()
}

pub async fn pre_settle(h: &Setl, mdtrt_id: &str, use_account: bool) -> proto::Settlement {
    let s = h
        .clone()
        .pre_settle(proto::PreSettleRequest {
            mdtrt_id: mdtrt_id.into(),
            use_account,
        })
        .await
        .must();
    assert_identities(&s);
    assert_eq!(s.setl_id, "", "a pre-settlement has no setl_id");
    assert_eq!(s.journal_id, "", "a pre-settlement books nothing");
    s
}

pub fn settle_req(request_id: &str, mdtrt_id: &str, use_account: bool) -> proto::SettleRequest {
    proto::SettleRequest {
        request_id: request_id.into(),
        mdtrt_id: mdtrt_id.into(),
        use_account,
        expected_total: String::new(),
    }
}

pub async fn try_settle(
    h: &Setl,
    mdtrt_id: &str,
    use_account: bool,
) -> Result<Response<proto::Settlement>, Status> {
    h.clone()
        .settle(settle_req(&rid(), mdtrt_id, use_account))
        .await
}

/// Settles; checks the identities and the kind.
pub async fn settle(h: &Setl, mdtrt_id: &str, use_account: bool) -> proto::Settlement {
    let s = try_settle(h, mdtrt_id, use_account).await.must();
    assert_settlement(&s);
    s
}

pub fn assert_settlement(s: &proto::Settlement) {
    assert_identities(s);
    assert!(!s.setl_id.is_empty());
    assert_eq!(s.kind, SettlementKind::Settlement as i32);
    assert_eq!(s.reverses, "");
}

pub async fn try_reverse(h: &Setl, setl_id: &str) -> Result<Response<proto::Settlement>, Status> {
    h.clone()
        .reverse_settlement(proto::ReverseSettlementRequest {
            request_id: rid(),
            setl_id: setl_id.into(),
            reason: "patient asked to settle again".into(),
        })
        .await
}

/// Reverses `orig`; checks the reversal negates it exactly.
pub async fn reverse(h: &Setl, orig: &proto::Settlement) -> proto::Settlement {
    let r = try_reverse(h, &orig.setl_id).await.must();
    assert_reverses(&r, orig);
    r
}

pub async fn get_visit(h: &Setl, mdtrt_id: &str) -> proto::Visit {
    h.clone()
        .get_visit(proto::GetVisitRequest {
            mdtrt_id: mdtrt_id.into(),
        })
        .await
        .must()
}

pub async fn get_settlement(h: &Setl, setl_id: &str) -> proto::Settlement {
    h.clone()
        .get_settlement(proto::GetSettlementRequest {
            key: Some(proto::get_settlement_request::Key::SetlId(setl_id.into())),
        })
        .await
        .must()
}

pub fn list_req(f: proto::list_settlements_request::Filter) -> proto::ListSettlementsRequest {
    proto::ListSettlementsRequest {
        filter: Some(f),
        page_size: 1000,
        page_token: String::new(),
    }
}

pub async fn by_visit(h: &Setl, mdtrt_id: &str) -> Vec<proto::Settlement> {
    h.clone()
        .list_settlements(list_req(proto::list_settlements_request::Filter::MdtrtId(
            mdtrt_id.into(),
        )))
        .await
        .must()
        .settlements
}

/// Every settlement and reversal of a person, as their home bureau (Wuhai) sees it.
pub async fn by_person(ts: &TestServer, psn_no: &str) -> Vec<proto::Settlement> {
    bureau_setl(ts, WUHAI)
        .await
        .list_settlements(list_req(proto::list_settlements_request::Filter::PsnNo(
            psn_no.into(),
        )))
        .await
        .must()
        .settlements
}

/// The journal balance of `pacct:<psn_no>` and the maintained balance on the person; they
/// must agree.
pub async fn pacct(w: &World, psn_no: &str) -> String {
    let journal = balance(&w.op, &format!("pacct:{psn_no}")).await.balance;
    let person = get_person(&w.op, psn_no).await.account_balance;
    assert_eq!(
        journal, person,
        "pacct:{psn_no} journal vs maintained balance"
    );
    journal
}

/// `s` with settled_at truncated to whole microseconds (what PostgreSQL stores): the answer
/// of Settle carries nanoseconds, the stored settlement microseconds on PostgreSQL (reported
/// as a bug; see `settle_answer_equals_stored` in settlement_flow.rs).
pub fn micros(s: &proto::Settlement) -> proto::Settlement {
    let t = chrono::DateTime::parse_from_rfc3339(&s.settled_at)
        .unwrap_or_else(|e| panic!("settled_at {:?}: {e}", s.settled_at));
    proto::Settlement {
        settled_at: t.timestamp_micros().to_string(),
        ..s.clone()
    }
}

// -------------------------------------------------------------- money assertions

/// The money fields of a settlement, in NHSA order (balc = balance_after).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct M<'a> {
    pub medfee: &'a str,
    pub fulamt: &'a str,
    pub overlmt: &'a str,
    pub preself: &'a str,
    pub inscp: &'a str,
    pub dedc: &'a str,
    pub hifp: &'a str,
    pub hifmi: &'a str,
    pub maf: &'a str,
    pub fund: &'a str,
    pub psn: &'a str,
    pub acct: &'a str,
    pub cash: &'a str,
    pub balc: &'a str,
}

pub fn m(s: &proto::Settlement) -> M<'_> {
    M {
        medfee: &s.medfee_sumamt,
        fulamt: &s.fulamt_ownpay_amt,
        overlmt: &s.overlmt_selfpay,
        preself: &s.preselfpay_amt,
        inscp: &s.inscp_scp_amt,
        dedc: &s.act_pay_dedc,
        hifp: &s.hifp_pay,
        hifmi: &s.hifmi_pay,
        maf: &s.maf_pay,
        fund: &s.fund_pay_sumamt,
        psn: &s.psn_part_amt,
        acct: &s.acct_pay,
        cash: &s.psn_cash_pay,
        balc: &s.balance_after,
    }
}

/// The money fields without balance_after (to compare settlements made at other balances).
pub fn m13(s: &proto::Settlement) -> M<'_> {
    M { balc: "", ..m(s) }
}

/// DESIGN §3 identities, to the fen, and the fund payments list agreeing with the fields.
#[track_caller]
pub fn assert_identities(s: &proto::Settlement) {
    let f = |x: &str| fen(x);
    let (medfee, fund, psn) = (
        f(&s.medfee_sumamt),
        f(&s.fund_pay_sumamt),
        f(&s.psn_part_amt),
    );
    assert_eq!(
        medfee,
        f(&s.fulamt_ownpay_amt)
            + f(&s.overlmt_selfpay)
            + f(&s.preselfpay_amt)
            + f(&s.inscp_scp_amt),
        "medfee = fulamt + overlmt + preself + inscp: {s:?}"
    );
    assert_eq!(
        fund,
        f(&s.hifp_pay) + f(&s.hifmi_pay) + f(&s.maf_pay),
        "fund = hifp + hifmi + maf: {s:?}"
    );
    assert_eq!(medfee, fund + psn, "medfee = fund + psn_part: {s:?}");
    assert_eq!(
        psn,
        f(&s.acct_pay) + f(&s.psn_cash_pay),
        "psn_part = acct + cash: {s:?}"
    );
    let listed: i64 = s.funds.iter().map(|x| f(&x.amount)).sum();
    assert_eq!(
        listed,
        fund + f(&s.acct_pay),
        "funds list = fund layers + account: {s:?}"
    );
    if !s.balance_after.is_empty() {
        f(&s.balance_after);
    }
}

/// "12.30" → "-12.30"; "0.00" stays.
pub fn neg(s: &str) -> String {
    match s.strip_prefix('-') {
        Some(p) => p.to_owned(),
        None if fen(s) == 0 => s.to_owned(),
        None => format!("-{s}"),
    }
}

/// `r` is the reversal of `o`: every amount negated, pointing at it, its own id.
#[track_caller]
pub fn assert_reverses(r: &proto::Settlement, o: &proto::Settlement) {
    assert_identities(r);
    assert_eq!(r.kind, SettlementKind::Reversal as i32);
    assert_eq!(r.reverses, o.setl_id);
    assert!(!r.setl_id.is_empty() && r.setl_id != o.setl_id);
    for (name, rv, ov) in [
        ("medfee_sumamt", &r.medfee_sumamt, &o.medfee_sumamt),
        (
            "fulamt_ownpay_amt",
            &r.fulamt_ownpay_amt,
            &o.fulamt_ownpay_amt,
        ),
        ("overlmt_selfpay", &r.overlmt_selfpay, &o.overlmt_selfpay),
        ("preselfpay_amt", &r.preselfpay_amt, &o.preselfpay_amt),
        ("inscp_scp_amt", &r.inscp_scp_amt, &o.inscp_scp_amt),
        ("act_pay_dedc", &r.act_pay_dedc, &o.act_pay_dedc),
        ("hifp_pay", &r.hifp_pay, &o.hifp_pay),
        ("hifmi_pay", &r.hifmi_pay, &o.hifmi_pay),
        ("maf_pay", &r.maf_pay, &o.maf_pay),
        ("fund_pay_sumamt", &r.fund_pay_sumamt, &o.fund_pay_sumamt),
        ("psn_part_amt", &r.psn_part_amt, &o.psn_part_amt),
        ("acct_pay", &r.acct_pay, &o.acct_pay),
        ("psn_cash_pay", &r.psn_cash_pay, &o.psn_cash_pay),
    ] {
        assert_eq!(*rv, neg(ov), "reversal {name}");
    }
    for (name, rv, ov) in [
        ("mdtrt_id", &r.mdtrt_id, &o.mdtrt_id),
        ("psn_no", &r.psn_no, &o.psn_no),
        ("home_region", &r.home_region, &o.home_region),
        ("treatment_region", &r.treatment_region, &o.treatment_region),
        ("institution", &r.institution, &o.institution),
    ] {
        assert_eq!(rv, ov, "reversal {name}");
    }
    assert_eq!(r.insurance_type, o.insurance_type);
    assert_eq!(r.care_type, o.care_type);
    assert_eq!(r.line_count, o.line_count);
}

/// FAILED_PRECONDITION naming `rule` in the PreconditionFailure details and the message.
#[track_caller]
pub fn assert_rule(s: &Status, rule: &str) {
    assert_eq!(
        s.code(),
        Code::FailedPrecondition,
        "expected FAILED_PRECONDITION {rule}, got {:?}: {}",
        s.code(),
        s.message()
    );
    let pf = s
        .get_details_precondition_failure()
        .unwrap_or_else(|| panic!("no PreconditionFailure details on {s:?}"));
    let subjects: Vec<&str> = pf.violations.iter().map(|v| v.subject.as_str()).collect();
    assert_eq!(subjects, [rule], "rule named in {}", s.message());
    assert!(
        s.message().starts_with(&format!("{rule}: ")),
        "message {:?} does not start with {rule}",
        s.message()
    );
}

/// The call failed with FAILED_PRECONDITION naming `rule`.
#[track_caller]
pub fn refused<T: std::fmt::Debug>(r: Result<Response<T>, Status>, rule: &str) -> Status {
    let s = r.code_is(Code::FailedPrecondition);
    assert_rule(&s, rule);
    s
}

/// Sum of an amount field over settlements, in fen.
pub fn sum(ss: &[proto::Settlement], f: impl Fn(&proto::Settlement) -> &str) -> i64 {
    ss.iter().map(|s| fen(f(s))).sum()
}

pub fn yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", fen.abs() / 100, fen.abs() % 100)
}

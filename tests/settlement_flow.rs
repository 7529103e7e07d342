//! SettlementService end to end, the hospital flow (NHSA 2001 eligibility → 2401 admission →
//! 2301 fee lines → 2303 pre-settle → 2304 settle → 2305 reverse / 2601 冲正, queries) with
//! hand-computed figures, and the fee-line and visit rules. Every test builds its own world over
//! gRPC and runs on SQLite and on PostgreSQL, each on a fresh database.

#[macro_use]
mod common;

use common::kit::*;
use common::*;
use medsettle::proto;
use proto::list_settlements_request::Filter;
use proto::{
    CareType, CatalogueClass, DeductibleBasis, FilingType, InsuranceType, LevelScope,
    PersonCategory, ProvinceScope, SettlementKind, VisitStatus,
};
use tonic::Code;

both_engines!(full_flow, fee_lines, visits_and_permissions);

/// Wuhai's policy from 2026-01-01: employees (active), inpatient, any level, any province:
/// deductible 800.00 per admission (400.00 for a repeat admission), pooled ratio 0.85, annual
/// cap 150000.00. Referral filings lose 10 percentage points; unfiled treatment is refused; the
/// personal account may not pay class C.
fn reference_policy() -> proto::PolicyBody {
    proto::PolicyBody {
        rules: vec![proto::PolicyRule {
            insurance_type: InsuranceType::Employee as i32,
            category: PersonCategory::Active as i32,
            care_type: CareType::Inpatient as i32,
            level: LevelScope::Any as i32,
            province_scope: ProvinceScope::Any as i32,
            deductible_basis: DeductibleBasis::PerAdmission as i32,
            deductible: "800.00".into(),
            repeat_admission_deductible: "400.00".into(),
            ratio: "0.85".into(),
            annual_cap: "150000.00".into(),
            critical_illness: None,
            assistance: None,
        }],
        filing_reductions: vec![proto::FilingReduction {
            filing_type: FilingType::Referral as i32,
            reduction: minus_points("0.10"),
        }],
        unfiled_allowed: false,
        unfiled_reduction: None,
        account_pays_class_c: false,
        pharmacy_national: false,
    }
}

/// The reference bill:
///   1 A001 class A           10 × 1000.00 = 10000.00 in scope
///   2 B001 class B 0.10 cap 100.00, 3 × 120.00 = 360.00: over-limit (120 − 100) × 3 = 60.00,
///                            first self-paid 100 × 3 × 0.10 = 30.00, in scope 270.00
///   3 C001 class C            1 × 500.00 = 500.00 fully self-paid
///   4 ZZZ (not listed)        2 × 0.335 = 0.67 fully self-paid
fn reference_lines() -> Vec<proto::FeeLine> {
    vec![
        line("1", "A001", "10", "1000.00"),
        line("2", "B001", "3", "120.00"),
        line("3", "C001", "1", "500.00"),
        line("4", "ZZZ", "2", "0.335"),
    ]
}

/// The reference settlement (employee, first admission, referral 0.85 − 0.10 = 0.75, opening
/// balance 1000.00, use_account):
///   total 10000.00 + 360.00 + 500.00 + 0.67 = 10860.67
///   fully self-paid 500.00 + 0.67 = 500.67; over-limit 60.00; first self-paid 30.00
///   in scope 10000.00 + 270.00 = 10270.00; deductible min(10270.00, 800.00) = 800.00
///   pooled (10270.00 − 800.00) × 0.75 = 7102.50 (cap 150000.00 not reached); no other layer
///   fund 7102.50; personal part 10860.67 − 7102.50 = 3758.17
///   account min(3758.17 − 500.67 (class C / unlisted), 1000.00) = 1000.00; cash 2758.17;
///   balance after 1000.00 − 1000.00 = 0.00
const REFERENCE: M<'static> = M {
    medfee: "10860.67",
    fulamt: "500.67",
    overlmt: "60.00",
    preself: "30.00",
    inscp: "10270.00",
    dedc: "800.00",
    hifp: "7102.50",
    hifmi: "0.00",
    maf: "0.00",
    fund: "7102.50",
    psn: "3758.17",
    acct: "1000.00",
    cash: "2758.17",
    balc: "0.00",
};

/// Its reversal: every amount negated, the balance back at 1000.00.
const REFERENCE_REVERSED: M<'static> = M {
    medfee: "-10860.67",
    fulamt: "-500.67",
    overlmt: "-60.00",
    preself: "-30.00",
    inscp: "-10270.00",
    dedc: "-800.00",
    hifp: "-7102.50",
    hifmi: "0.00",
    maf: "0.00",
    fund: "-7102.50",
    psn: "-3758.17",
    acct: "-1000.00",
    cash: "-2758.17",
    balc: "1000.00",
};

fn ids(ss: &[proto::Settlement]) -> Vec<String> {
    let mut v: Vec<String> = ss.iter().map(|s| s.setl_id.clone()).collect();
    v.sort();
    v
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

async fn reverse_by_request(h: &Setl, original: &str) -> proto::ReverseByRequestIdResponse {
    h.clone()
        .reverse_by_request_id(proto::ReverseByRequestIdRequest {
            request_id: rid(),
            original_request_id: original.into(),
        })
        .await
        .must()
}

async fn full_flow(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    let policy = put_policy(&w.wuhai, WUHAI, JAN1, reference_policy()).await;
    assert_eq!(policy.version, 1);
    let p = wuhai_employee(&w, 1, "1000.00").await;
    let filing = file(&w, &p.psn_no, FilingType::Referral, ORDOS, "", "").await;
    let today = today_s();
    assert_eq!(pacct(&w, &p.psn_no).await, "1000.00");
    verify_ok(&ts).await;

    // ---- 2001: eligibility for an inpatient stay today.
    let e = eligibility(
        &w.h,
        &p.national_id,
        InsuranceType::Employee,
        CareType::Inpatient,
        "",
    )
    .await;
    assert!(e.allowed, "{e:?}");
    assert_eq!(
        (e.refusal_rule.as_str(), e.refusal_detail.as_str()),
        ("", "")
    );
    assert_eq!(e.psn_no, p.psn_no);
    assert_eq!(e.home_region, WUHAI);
    let masked = format!("{}********{}", &p.national_id[..6], &p.national_id[14..]);
    assert_eq!(e.national_id_masked, masked);
    assert_eq!(e.name_masked, "张*");
    let ef = e.filing.as_ref().expect("the referral filing is shown");
    assert_eq!(ef.filing_id, filing.filing_id);
    assert_eq!(ef.filing_type, FilingType::Referral as i32);
    assert_eq!(ef.destination, ORDOS);
    assert_eq!(ef.valid_from, today);
    assert_eq!(ef.valid_until, filing.valid_until);
    // 0.85 − 0.10 (referral) = 0.75; first admission: the full 800.00; nothing paid yet.
    assert_eq!(e.effective_ratio, "0.75");
    assert_eq!(e.deductible_outstanding, "800.00");
    assert_eq!(e.annual_cap_remaining, "150000.00");
    assert_eq!(e.account_balance, "1000.00");
    assert_eq!(e.policy_version, 1);
    assert_eq!(e.insurances.len(), 1);
    assert_eq!(
        e.insurances[0].insurance_type,
        InsuranceType::Employee as i32
    );

    // ---- 2401: admission.
    let v = admit(&w.h, &p).await;
    assert!(!v.mdtrt_id.is_empty());
    assert_eq!(v.psn_no, p.psn_no);
    assert_eq!(v.institution, HOSP);
    assert_eq!(v.begin_date, today);
    assert_eq!(v.end_date, "");
    assert_eq!(v.filing_id, filing.filing_id);
    assert_eq!(v.setl_id, "");
    assert_eq!(v.insurance_type, InsuranceType::Employee as i32);
    assert_eq!(v.care_type, CareType::Inpatient as i32);
    assert_eq!(v.diagnoses, ["I21.9", "E11.9"]);

    // ---- 2301: fee lines with their splits.
    let up = upload(&w.h, &v.mdtrt_id, reference_lines()).await;
    assert_eq!(up.unsettled_total, "10860.67");
    let got: Vec<_> = up
        .lines
        .iter()
        .map(|l| {
            (
                l.line_no.as_str(),
                l.code.as_str(),
                l.amount.as_str(),
                l.class,
                canon(&l.price_cap),
                canon(&l.b_self_pay_ratio),
                [
                    l.fulamt_ownpay_amt.as_str(),
                    l.overlmt_selfpay.as_str(),
                    l.preselfpay_amt.as_str(),
                    l.inscp_scp_amt.as_str(),
                ],
                l.setl_id.as_str(),
            )
        })
        .collect();
    let (a, bb, c, u) = (
        CatalogueClass::A as i32,
        CatalogueClass::B as i32,
        CatalogueClass::C as i32,
        CatalogueClass::Unspecified as i32,
    );
    let zero = || String::new();
    assert_eq!(
        got,
        vec![
            (
                "1",
                "A001",
                "10000.00",
                a,
                zero(),
                zero(),
                ["0.00", "0.00", "0.00", "10000.00"],
                ""
            ),
            (
                "2",
                "B001",
                "360.00",
                bb,
                "100".into(),
                "0.1".into(),
                ["0.00", "60.00", "30.00", "270.00"],
                ""
            ),
            (
                "3",
                "C001",
                "500.00",
                c,
                zero(),
                zero(),
                ["500.00", "0.00", "0.00", "0.00"],
                ""
            ),
            (
                "4",
                "ZZZ",
                "0.67",
                u,
                zero(),
                zero(),
                ["0.67", "0.00", "0.00", "0.00"],
                ""
            ),
        ]
    );
    assert!(up.lines[..3].iter().all(|l| l.catalogue_version >= 1));
    assert_eq!(
        up.lines[3].catalogue_version, 0,
        "ZZZ is not in the catalogue"
    );

    // ---- 2303: pre-settlement: the full breakdown, nothing booked.
    let pre = pre_settle(&w.h, &v.mdtrt_id, true).await;
    assert_eq!(m(&pre), REFERENCE);
    assert_eq!(pre.kind, SettlementKind::Settlement as i32);
    assert_eq!(pre.line_count, 4);
    let x = pre.explanation.clone().expect("explanation");
    assert_eq!(x.policy_region, WUHAI);
    assert_eq!(x.policy_version, 1);
    assert_eq!(x.base_ratio, "0.85");
    assert_eq!(x.effective_ratio, "0.75");
    assert!(
        x.reduction.contains("minus_points") && x.reduction.contains("0.1"),
        "{}",
        x.reduction
    );
    assert_eq!(x.deductible_basis, DeductibleBasis::PerAdmission as i32);
    assert_eq!(x.deductible_outstanding, "800.00");
    assert_eq!(x.annual_cap_remaining, "150000.00");
    assert!(!x.repeat_admission);
    assert_eq!(x.level, LevelScope::Level3 as i32);
    assert_eq!(x.province, ProvinceScope::InProvince as i32);
    assert_eq!(
        x.filing.as_ref().map(|f| f.filing_id.as_str()),
        Some(filing.filing_id.as_str())
    );
    let before = x.before.clone().expect("accumulators before");
    assert_eq!(
        (before.year, before.admissions),
        (today[..4].parse().unwrap(), 0)
    );
    assert_eq!(before.pooled_fund, "0.00");
    assert!(!x.catalogue_versions.is_empty());
    // Nothing was written.
    assert_eq!(pacct(&w, &p.psn_no).await, "1000.00");
    assert!(by_visit(&w.h, &v.mdtrt_id).await.is_empty());
    assert!(by_person(&ts, &p.psn_no).await.is_empty());
    assert_eq!(
        get_visit(&w.h, &v.mdtrt_id).await.status,
        VisitStatus::Open as i32
    );
    verify_ok(&ts).await;

    // ---- 2304: settlement: the same breakdown, booked.
    let s1_rid = rid();
    let s1 =
        w.h.clone()
            .settle(settle_req(&s1_rid, &v.mdtrt_id, true))
            .await
            .must();
    assert_settlement(&s1);
    assert_eq!(m(&s1), REFERENCE);
    assert_eq!(m(&s1), m(&pre), "pre-settlement = settlement");
    assert_eq!(s1.explanation, pre.explanation);
    assert_eq!(s1.request_id, s1_rid);
    assert!(!s1.journal_id.is_empty());
    assert_eq!(s1.reversed_by, "");
    assert_eq!(s1.mdtrt_id, v.mdtrt_id);
    assert_eq!(s1.psn_no, p.psn_no);
    assert_eq!(
        (
            s1.home_region.as_str(),
            s1.treatment_region.as_str(),
            s1.institution.as_str()
        ),
        (WUHAI, ORDOS, HOSP)
    );
    assert_eq!(s1.insurance_type, InsuranceType::Employee as i32);
    assert_eq!(s1.care_type, CareType::Inpatient as i32);
    assert_eq!(s1.business_date, today);
    assert_eq!(s1.clearing_period, today[..7].replace('-', ""));
    assert_eq!(s1.line_count, 4);
    let funds: Vec<_> = s1
        .funds
        .iter()
        .map(|f| (f.fund_pay_type.as_str(), f.amount.as_str()))
        .collect();
    assert_eq!(funds, [("310100", "7102.50"), ("310200", "1000.00")]);
    assert_eq!(pacct(&w, &p.psn_no).await, "0.00", "= balance_after");
    verify_ok(&ts).await;

    // A replay under the same request id answers the same, booked once.
    let replay =
        w.h.clone()
            .settle(settle_req(&s1_rid, &v.mdtrt_id, true))
            .await
            .must();
    assert_eq!(replay, s1);
    // The same request id with another payload is ALREADY_EXISTS.
    w.h.clone()
        .settle(settle_req(&s1_rid, &v.mdtrt_id, false))
        .await
        .code_is(Code::AlreadyExists);
    // A new request on the settled visit is refused.
    refused(
        try_settle(&w.h, &v.mdtrt_id, true).await,
        "visit_already_settled",
    );
    assert_eq!(
        ids(&by_visit(&w.h, &v.mdtrt_id).await),
        vec![s1.setl_id.clone()]
    );
    assert_eq!(pacct(&w, &p.psn_no).await, "0.00");
    verify_ok(&ts).await;

    // ---- Queries.
    assert_eq!(
        micros(&get_settlement(&w.h, &s1.setl_id).await),
        micros(&s1)
    );
    let by_rid =
        w.h.clone()
            .get_settlement(proto::GetSettlementRequest {
                key: Some(proto::get_settlement_request::Key::RequestId(
                    s1_rid.clone(),
                )),
            })
            .await
            .must();
    assert_eq!(micros(&by_rid), micros(&s1));
    let listed = by_visit(&w.h, &v.mdtrt_id).await;
    assert_eq!(listed.iter().map(micros).collect::<Vec<_>>(), [micros(&s1)]);
    let listed = by_person(&ts, &p.psn_no).await;
    assert_eq!(listed.iter().map(micros).collect::<Vec<_>>(), [micros(&s1)]);
    let day =
        w.h.clone()
            .list_settlements(list_req(Filter::InstitutionDay(proto::InstitutionDay {
                institution: HOSP.into(),
                date: s1.business_date.clone(),
            })))
            .await
            .must()
            .settlements;
    assert_eq!(day.iter().map(micros).collect::<Vec<_>>(), [micros(&s1)]);
    let visit = get_visit(&w.h, &v.mdtrt_id).await;
    assert_eq!(visit.status, VisitStatus::Settled as i32);
    assert_eq!(visit.setl_id, s1.setl_id);
    // Eligibility now: a second admission this year would be a repeat (400.00); the cap is
    // 150000.00 − 7102.50 = 142897.50; the account is empty.
    let e = eligibility(
        &w.h,
        &p.national_id,
        InsuranceType::Employee,
        CareType::Inpatient,
        &today,
    )
    .await;
    assert!(e.allowed);
    assert_eq!(
        (
            e.deductible_outstanding.as_str(),
            e.annual_cap_remaining.as_str(),
            e.account_balance.as_str()
        ),
        ("400.00", "142897.50", "0.00")
    );

    // ---- 2305: reversal: every amount negated, the account refunded.
    let r1 = reverse(&w.h, &s1).await;
    assert_eq!(m(&r1), REFERENCE_REVERSED);
    assert!(!r1.journal_id.is_empty() && r1.journal_id != s1.journal_id);
    assert_eq!(pacct(&w, &p.psn_no).await, "1000.00", "= balance_after");
    verify_ok(&ts).await;
    assert_eq!(
        get_settlement(&w.h, &s1.setl_id).await.reversed_by,
        r1.setl_id
    );
    let visit = get_visit(&w.h, &v.mdtrt_id).await;
    assert_eq!(visit.status, VisitStatus::Open as i32);
    assert_eq!(visit.setl_id, "");
    // Never twice; a reversal is not reversed.
    refused(try_reverse(&w.h, &s1.setl_id).await, "already_reversed");
    refused(
        try_reverse(&w.h, &r1.setl_id).await,
        "cannot_reverse_reversal",
    );
    assert_eq!(pacct(&w, &p.psn_no).await, "1000.00");
    // The accumulators are back: first admission again, full cap.
    let e = eligibility(
        &w.h,
        &p.national_id,
        InsuranceType::Employee,
        CareType::Inpatient,
        &today,
    )
    .await;
    assert_eq!(
        (
            e.deductible_outstanding.as_str(),
            e.annual_cap_remaining.as_str(),
            e.account_balance.as_str()
        ),
        ("800.00", "150000.00", "1000.00")
    );

    // ---- The lines are unsettled again (an identical re-upload shows them without setl_id),
    // and a new settlement gives the same figures.
    let again = upload(&w.h, &v.mdtrt_id, reference_lines()).await;
    assert_eq!(again.unsettled_total, "10860.67");
    assert!(again.lines.iter().all(|l| l.setl_id.is_empty()));
    assert_eq!(m(&pre_settle(&w.h, &v.mdtrt_id, true).await), REFERENCE);
    let s2_rid = rid();
    let s2 =
        w.h.clone()
            .settle(settle_req(&s2_rid, &v.mdtrt_id, true))
            .await
            .must();
    assert_settlement(&s2);
    assert_eq!(m(&s2), REFERENCE);
    assert_ne!(s2.setl_id, s1.setl_id);
    assert_eq!(pacct(&w, &p.psn_no).await, "0.00");
    verify_ok(&ts).await;

    // ---- 2601 冲正 of the Settle request id: reverses what it made.
    let rr = reverse_by_request(&w.h, &s2_rid).await;
    assert!(rr.found);
    let r2 = rr.reversal.expect("the reversal");
    assert_reverses(&r2, &s2);
    assert_eq!(m(&r2), REFERENCE_REVERSED);
    assert_eq!(pacct(&w, &p.psn_no).await, "1000.00");
    assert_eq!(
        get_visit(&w.h, &v.mdtrt_id).await.status,
        VisitStatus::Open as i32
    );
    verify_ok(&ts).await;

    // ---- 冲正 of a request id never seen: found = false, and the id is closed for good.
    let ghost = rid();
    let rr = reverse_by_request(&w.h, &ghost).await;
    assert!(!rr.found);
    assert!(rr.reversal.is_none());
    w.h.clone()
        .settle(settle_req(&ghost, &v.mdtrt_id, true))
        .await
        .code_is(Code::AlreadyExists);
    let all = by_visit(&w.h, &v.mdtrt_id).await;
    assert_eq!(
        ids(&all),
        sorted(vec![
            s1.setl_id.clone(),
            r1.setl_id.clone(),
            s2.setl_id.clone(),
            r2.setl_id.clone()
        ])
    );
    assert_eq!(pacct(&w, &p.psn_no).await, "1000.00");
    verify_ok(&ts).await;

    // ---- Settled for good.
    let s3 = settle(&w.h, &v.mdtrt_id, true).await;
    assert_eq!(m(&s3), REFERENCE);
    let all = by_person(&ts, &p.psn_no).await;
    assert_eq!(all.len(), 5);
    for s in &all {
        assert_identities(s);
    }
    // Σ acct_pay = 1000.00 − 1000.00 + 1000.00 − 1000.00 + 1000.00 = 1000.00; balance
    // 1000.00 − 1000.00 = 0.00.
    assert_eq!(sum(&all, |s| &s.acct_pay), 100_000);
    assert_eq!(pacct(&w, &p.psn_no).await, "0.00");
    assert_eq!(get_visit(&w.h, &v.mdtrt_id).await.setl_id, s3.setl_id);
    verify_ok(&ts).await;
}

async fn delete(
    h: &Setl,
    mdtrt_id: &str,
    line_nos: &[&str],
) -> Result<tonic::Response<proto::DeleteFeeLinesResponse>, tonic::Status> {
    h.clone()
        .delete_fee_lines(proto::DeleteFeeLinesRequest {
            request_id: rid(),
            mdtrt_id: mdtrt_id.into(),
            line_nos: line_nos.iter().map(|s| (*s).to_owned()).collect(),
        })
        .await
}

async fn fee_lines(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    put_policy(&w.wuhai, WUHAI, JAN1, reference_policy()).await;
    let p = wuhai_employee(&w, 2, "").await;
    file(&w, &p.psn_no, FilingType::Referral, ORDOS, "", "").await;
    let v = admit(&w.h, &p).await;
    let mdtrt = v.mdtrt_id.as_str();

    // An identical line uploaded again is accepted and not duplicated.
    let up = upload(&w.h, mdtrt, vec![line("1", "A001", "10", "1000.00")]).await;
    assert_eq!(up.unsettled_total, "10000.00");
    let up = upload(
        &w.h,
        mdtrt,
        vec![
            line("1", "A001", "10", "1000.00"),
            line("2", "B001", "1", "80.00"),
        ],
    )
    .await;
    assert_eq!(up.lines.len(), 2);
    // 10000.00 + 80.00 (B001 under its cap: 8.00 first self-paid, 72.00 in scope).
    assert_eq!(up.unsettled_total, "10080.00");
    assert_eq!(
        (
            up.lines[1].preselfpay_amt.as_str(),
            up.lines[1].inscp_scp_amt.as_str()
        ),
        ("8.00", "72.00")
    );
    // A different line under the same line_no.
    w.h.clone()
        .upload_fee_lines(upload_req(mdtrt, vec![line("1", "A001", "9", "1000.00")]))
        .await
        .code_is(Code::AlreadyExists);
    w.h.clone()
        .upload_fee_lines(upload_req(mdtrt, vec![line("2", "B001", "1", "81.00")]))
        .await
        .code_is(Code::AlreadyExists);
    // More than 1000 lines in one call.
    let many: Vec<_> = (0..1001)
        .map(|i| line(&format!("L{i}"), "E001", "1", "0.01"))
        .collect();
    w.h.clone()
        .upload_fee_lines(upload_req(mdtrt, many))
        .await
        .invalid("lines");
    w.h.clone()
        .upload_fee_lines(upload_req(mdtrt, vec![]))
        .await
        .invalid("lines");
    // Strict numbers, naming the line and the field; a line's number and code: printable,
    // bounded, codes of letters, digits, '.', '-', '_'.
    let long_no = "9".repeat(31);
    let bad_lines: [(Vec<proto::FeeLine>, &str); 8] = [
        (
            vec![line("9", "A001", "1.23456", "1.00")],
            "lines[0].quantity",
        ),
        (vec![line("9", "A001", "1", "-1")], "lines[0].unit_price"),
        (
            vec![
                line("8", "A001", "1", "1.00"),
                line("9", "A001", "0", "1.00"),
            ],
            "lines[1].quantity",
        ),
        (
            vec![line("9", "A001", "1", "1.0000001")],
            "lines[0].unit_price",
        ),
        (vec![line("9", "A001", "1e2", "1.00")], "lines[0].quantity"),
        (
            vec![
                line("8", "A001", "1", "1.00"),
                line("9", "A 001", "1", "1.00"),
            ],
            "lines[1].code",
        ),
        (vec![line("", "A001", "1", "1.00")], "lines[0].line_no"),
        (
            vec![line(&long_no, "A001", "1", "1.00")],
            "lines[0].line_no",
        ),
    ];
    for (lines, field) in bad_lines {
        w.h.clone()
            .upload_fee_lines(upload_req(mdtrt, lines))
            .await
            .invalid(field);
    }
    // Nothing of the refused calls was stored (line 8 of the mixed call neither).
    let up = upload(&w.h, mdtrt, vec![line("2", "B001", "1", "80.00")]).await;
    assert_eq!(up.unsettled_total, "10080.00");

    // A refund line nets out: −3 × 1000.00 = −3000.00, in scope −3000.00.
    let up = upload(&w.h, mdtrt, vec![refund("3", "1", "A001", "-3", "1000.00")]).await;
    assert_eq!(
        (
            up.lines[0].amount.as_str(),
            up.lines[0].inscp_scp_amt.as_str()
        ),
        ("-3000.00", "-3000.00")
    );
    assert_eq!(up.unsettled_total, "7080.00");
    // Refunds beyond the original quantity: 3 + 8 > 10.
    w.h.clone()
        .upload_fee_lines(upload_req(
            mdtrt,
            vec![refund("4", "1", "A001", "-8", "1000.00")],
        ))
        .await
        .invalid("lines");
    // A negative quantity must name its original, at the same code and unit price.
    w.h.clone()
        .upload_fee_lines(upload_req(mdtrt, vec![line("4", "A001", "-1", "1000.00")]))
        .await
        .invalid("lines[0].refund_of");
    w.h.clone()
        .upload_fee_lines(upload_req(
            mdtrt,
            vec![refund("4", "1", "A001", "-1", "900.00")],
        ))
        .await
        .invalid("lines[0].refund_of");
    w.h.clone()
        .upload_fee_lines(upload_req(
            mdtrt,
            vec![refund("4", "77", "A001", "-1", "1000.00")],
        ))
        .await
        .invalid("lines[0].refund_of");

    // Delete one line while unsettled; an original with refunds goes only with them.
    assert_eq!(delete(&w.h, mdtrt, &["2"]).await.must().deleted, 1);
    refused(delete(&w.h, mdtrt, &["1"]).await, "line_has_refunds");
    delete(&w.h, mdtrt, &["2"]).await.code_is(Code::NotFound);

    // Settle lines 1 and 3 (use_account, balance 0.00):
    //   total 10000.00 − 3000.00 = 7000.00, all in scope; deductible 800.00;
    //   pooled (7000.00 − 800.00) × 0.75 = 4650.00; personal 7000.00 − 4650.00 = 2350.00;
    //   account min(2350.00, 0.00) = 0.00; cash 2350.00; balance after 0.00.
    // The institution may state the total it expects: a mismatch books nothing.
    refused(
        w.h.clone()
            .settle(proto::SettleRequest {
                expected_total: "7000.01".into(),
                ..settle_req(&rid(), mdtrt, true)
            })
            .await,
        "total_mismatch",
    );
    assert!(by_visit(&w.h, mdtrt).await.is_empty());
    let s =
        w.h.clone()
            .settle(proto::SettleRequest {
                expected_total: "7000.00".into(),
                ..settle_req(&rid(), mdtrt, true)
            })
            .await
            .must();
    assert_settlement(&s);
    assert_eq!(
        m(&s),
        M {
            medfee: "7000.00",
            fulamt: "0.00",
            overlmt: "0.00",
            preself: "0.00",
            inscp: "7000.00",
            dedc: "800.00",
            hifp: "4650.00",
            hifmi: "0.00",
            maf: "0.00",
            fund: "4650.00",
            psn: "2350.00",
            acct: "0.00",
            cash: "2350.00",
            balc: "0.00",
        }
    );
    assert_eq!(s.line_count, 2);
    verify_ok(&ts).await;

    // After settlement the lines and the visit are frozen.
    refused(
        w.h.clone()
            .upload_fee_lines(upload_req(mdtrt, vec![line("5", "A001", "1", "1.00")]))
            .await,
        "visit_settled",
    );
    refused(delete(&w.h, mdtrt, &["3"]).await, "visit_settled");
    refused(delete(&w.h, mdtrt, &[]).await, "visit_settled");
    refused(
        w.h.clone()
            .cancel_visit(proto::CancelVisitRequest {
                request_id: rid(),
                mdtrt_id: mdtrt.into(),
            })
            .await,
        "visit_settled",
    );
    assert_eq!(
        get_visit(&w.h, mdtrt).await.status,
        VisitStatus::Settled as i32
    );

    // A second visit: exactly 1000 lines are accepted; delete all of them while unsettled.
    let v2 = admit(&w.h, &p).await;
    let thousand: Vec<_> = (0..1000)
        .map(|i| line(&format!("L{i}"), "E001", "1", "0.01"))
        .collect();
    let up = upload(&w.h, &v2.mdtrt_id, thousand).await;
    assert_eq!(up.lines.len(), 1000);
    assert_eq!(up.unsettled_total, "10.00");
    upload(&w.h, &v2.mdtrt_id, vec![line("X", "C001", "1", "5.00")]).await;
    assert_eq!(delete(&w.h, &v2.mdtrt_id, &[]).await.must().deleted, 1001);
    refused(
        w.h.clone()
            .pre_settle(proto::PreSettleRequest {
                mdtrt_id: v2.mdtrt_id.clone(),
                use_account: false,
            })
            .await,
        "no_fee_lines",
    );
    refused(try_settle(&w.h, &v2.mdtrt_id, false).await, "no_fee_lines");
    assert_eq!(by_person(&ts, &p.psn_no).await.len(), 1);
    verify_ok(&ts).await;
}

async fn visits_and_permissions(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    put_policy(&w.wuhai, WUHAI, JAN1, reference_policy()).await;
    register(&w, HOSP2, ORDOS, 2).await;
    let other = hosp(&ts, HOSP2).await;
    let p = wuhai_employee(&w, 3, "500.00").await;
    file(&w, &p.psn_no, FilingType::Referral, ORDOS, "", "").await;
    let today = today();
    let v = admit(&w.h, &p).await;
    let mdtrt = v.mdtrt_id.clone();
    upload(&w.h, &mdtrt, vec![line("1", "A001", "1", "2000.00")]).await;

    // Another institution may not touch the visit.
    let denied = Code::PermissionDenied;
    other
        .clone()
        .get_visit(proto::GetVisitRequest {
            mdtrt_id: mdtrt.clone(),
        })
        .await
        .code_is(denied);
    other
        .clone()
        .upload_fee_lines(upload_req(&mdtrt, vec![line("2", "A001", "1", "1.00")]))
        .await
        .code_is(denied);
    other
        .clone()
        .delete_fee_lines(proto::DeleteFeeLinesRequest {
            request_id: rid(),
            mdtrt_id: mdtrt.clone(),
            line_nos: vec![],
        })
        .await
        .code_is(denied);
    other
        .clone()
        .pre_settle(proto::PreSettleRequest {
            mdtrt_id: mdtrt.clone(),
            use_account: true,
        })
        .await
        .code_is(denied);
    try_settle(&other, &mdtrt, true).await.code_is(denied);
    other
        .clone()
        .update_visit(proto::UpdateVisitRequest {
            request_id: rid(),
            mdtrt_id: mdtrt.clone(),
            diagnoses: vec!["J18.9".into()],
        })
        .await
        .code_is(denied);
    other
        .clone()
        .discharge_visit(proto::DischargeVisitRequest {
            request_id: rid(),
            mdtrt_id: mdtrt.clone(),
            end_date: String::new(),
            diagnoses: vec![],
        })
        .await
        .code_is(denied);
    other
        .clone()
        .cancel_visit(proto::CancelVisitRequest {
            request_id: rid(),
            mdtrt_id: mdtrt.clone(),
        })
        .await
        .code_is(denied);
    other
        .clone()
        .list_settlements(list_req(Filter::MdtrtId(mdtrt.clone())))
        .await
        .code_is(denied);
    // Bureaus (home or treatment) and operators do not settle.
    for region in [WUHAI, ORDOS] {
        try_settle(&bureau_setl(&ts, region).await, &mdtrt, true)
            .await
            .code_is(denied);
    }
    let op_setl = setl_as(&ts, medsettle::service::auth::Grant::Operator).await;
    try_settle(&op_setl, &mdtrt, true).await.code_is(denied);
    // Nothing was written by any of them.
    let visit = get_visit(&w.h, &mdtrt).await;
    assert_eq!(visit.status, VisitStatus::Open as i32);
    assert_eq!(visit.diagnoses, ["I21.9", "E11.9"]);
    assert!(by_visit(&w.h, &mdtrt).await.is_empty());
    assert_eq!(pacct(&w, &p.psn_no).await, "500.00");
    verify_ok(&ts).await;

    // 2403: diagnoses updated by the hospital itself.
    let u =
        w.h.clone()
            .update_visit(proto::UpdateVisitRequest {
                request_id: rid(),
                mdtrt_id: mdtrt.clone(),
                diagnoses: vec!["j18.9".into()],
            })
            .await
            .must();
    assert_eq!(u.diagnoses, ["J18.9"]);

    // 2402: discharge sets end_date (not before the admission).
    let discharge = |end: String| proto::DischargeVisitRequest {
        request_id: rid(),
        mdtrt_id: mdtrt.clone(),
        end_date: end,
        diagnoses: vec![],
    };
    let yesterday = today.pred_opt().unwrap();
    w.h.clone()
        .discharge_visit(discharge(ymd(yesterday)))
        .await
        .invalid("end_date");
    let d =
        w.h.clone()
            .discharge_visit(discharge(ymd(today)))
            .await
            .must();
    assert_eq!(d.end_date, ymd(today));
    assert_eq!(d.status, VisitStatus::Discharged as i32);
    assert_eq!(get_visit(&w.h, &mdtrt).await.end_date, ymd(today));
    refused(
        w.h.clone().discharge_visit(discharge(ymd(today))).await,
        "visit_not_open",
    );
    // Lines of a discharged visit: still accepted, but not dated after the discharge.
    let tomorrow = today.succ_opt().unwrap();
    w.h.clone()
        .upload_fee_lines(upload_req(
            &mdtrt,
            vec![proto::FeeLine {
                fee_date: ymd(tomorrow),
                ..line("2", "A001", "1", "1.00")
            }],
        ))
        .await
        .invalid("lines[0].fee_date");

    // Settle the discharged stay (referral 0.75, balance 500.00, use_account):
    //   A001 1 × 2000.00 in scope; deductible 800.00; pooled (2000.00 − 800.00) × 0.75 = 900.00;
    //   personal 2000.00 − 900.00 = 1100.00; account min(1100.00, 500.00) = 500.00;
    //   cash 600.00; balance after 0.00.
    let s = settle(&w.h, &mdtrt, true).await;
    assert_eq!(
        m(&s),
        M {
            medfee: "2000.00",
            fulamt: "0.00",
            overlmt: "0.00",
            preself: "0.00",
            inscp: "2000.00",
            dedc: "800.00",
            hifp: "900.00",
            hifmi: "0.00",
            maf: "0.00",
            fund: "900.00",
            psn: "1100.00",
            acct: "500.00",
            cash: "600.00",
            balc: "0.00",
        }
    );
    assert_eq!(pacct(&w, &p.psn_no).await, "0.00");
    assert_eq!(
        get_visit(&w.h, &mdtrt).await.status,
        VisitStatus::Settled as i32
    );
    // Only the settling institution reverses or reads it; bureaus of its home and treatment
    // regions read it, a third region's bureau does not.
    try_reverse(&other, &s.setl_id).await.code_is(denied);
    try_reverse(&bureau_setl(&ts, WUHAI).await, &s.setl_id)
        .await
        .code_is(denied);
    other
        .clone()
        .get_settlement(proto::GetSettlementRequest {
            key: Some(proto::get_settlement_request::Key::SetlId(
                s.setl_id.clone(),
            )),
        })
        .await
        .code_is(denied);
    other
        .clone()
        .list_settlements(list_req(Filter::InstitutionDay(proto::InstitutionDay {
            institution: HOSP.into(),
            date: s.business_date.clone(),
        })))
        .await
        .code_is(denied);
    for region in [WUHAI, ORDOS] {
        let got = get_settlement(&bureau_setl(&ts, region).await, &s.setl_id).await;
        assert_eq!(micros(&got), micros(&s));
    }
    bureau_setl(&ts, SHIZUISHAN)
        .await
        .get_settlement(proto::GetSettlementRequest {
            key: Some(proto::get_settlement_request::Key::SetlId(
                s.setl_id.clone(),
            )),
        })
        .await
        .code_is(denied);
    // The treatment bureau lists the hospital's day.
    let day = bureau_setl(&ts, ORDOS)
        .await
        .list_settlements(list_req(Filter::InstitutionDay(proto::InstitutionDay {
            institution: HOSP.into(),
            date: s.business_date.clone(),
        })))
        .await
        .must()
        .settlements;
    assert_eq!(day.iter().map(micros).collect::<Vec<_>>(), [micros(&s)]);

    // A settled visit cannot be cancelled; after the reversal it is discharged again and can.
    let cancel = || proto::CancelVisitRequest {
        request_id: rid(),
        mdtrt_id: mdtrt.clone(),
    };
    refused(w.h.clone().cancel_visit(cancel()).await, "visit_settled");
    let r = reverse(&w.h, &s).await;
    assert_eq!(r.balance_after, "500.00");
    assert_eq!(pacct(&w, &p.psn_no).await, "500.00");
    let visit = get_visit(&w.h, &mdtrt).await;
    assert_eq!(visit.status, VisitStatus::Discharged as i32);
    assert_eq!(
        (visit.end_date.as_str(), visit.setl_id.as_str()),
        (ymd(today).as_str(), "")
    );
    let c = w.h.clone().cancel_visit(cancel()).await.must();
    assert_eq!(c.status, VisitStatus::Cancelled as i32);
    refused(w.h.clone().cancel_visit(cancel()).await, "visit_cancelled");
    refused(
        w.h.clone()
            .upload_fee_lines(upload_req(&mdtrt, vec![line("3", "A001", "1", "1.00")]))
            .await,
        "visit_cancelled",
    );
    refused(try_settle(&w.h, &mdtrt, true).await, "visit_cancelled");
    refused(
        w.h.clone()
            .pre_settle(proto::PreSettleRequest {
                mdtrt_id: mdtrt.clone(),
                use_account: true,
            })
            .await,
        "visit_cancelled",
    );

    // An unsettled visit is cancelled with its lines.
    let v2 = admit(&w.h, &p).await;
    upload(&w.h, &v2.mdtrt_id, vec![line("1", "A001", "1", "10.00")]).await;
    let c =
        w.h.clone()
            .cancel_visit(proto::CancelVisitRequest {
                request_id: rid(),
                mdtrt_id: v2.mdtrt_id.clone(),
            })
            .await
            .must();
    assert_eq!(c.status, VisitStatus::Cancelled as i32);
    assert_eq!(
        get_visit(&w.h, &v2.mdtrt_id).await.status,
        VisitStatus::Cancelled as i32
    );

    // An admission dated after today (UTC+8) is refused, naming the field (two days ahead: the
    // test's "today" and the server's cannot straddle a midnight apart).
    let later = today + chrono::Days::new(2);
    let s = try_open(
        &w.h,
        &p.national_id,
        InsuranceType::Employee,
        CareType::Inpatient,
        &ymd(later),
    )
    .await
    .code_is(Code::InvalidArgument);
    assert_eq!(violated_fields(&s), ["begin_date"]);
    // This policy has no outpatient rule: an outpatient registration is refused at the door.
    refused(
        try_open(
            &w.h,
            &p.national_id,
            InsuranceType::Employee,
            CareType::Outpatient,
            "",
        )
        .await,
        "policy_missing",
    );
    // Unknown visits.
    w.h.clone()
        .get_visit(proto::GetVisitRequest {
            mdtrt_id: "M-nope".into(),
        })
        .await
        .code_is(Code::NotFound);
    try_settle(&w.h, "M-nope", true)
        .await
        .code_is(Code::NotFound);
    assert_eq!(pacct(&w, &p.psn_no).await, "500.00");
    verify_ok(&ts).await;
}

/// Settle's answer and the stored settlement (GetSettlement, the answer to a timed-out call)
/// must be the same message, settled_at included.
async fn settle_answer_equals_stored(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    put_policy(&w.wuhai, WUHAI, JAN1, reference_policy()).await;
    let p = wuhai_employee(&w, 4, "1000.00").await;
    file(&w, &p.psn_no, FilingType::Referral, ORDOS, "", "").await;
    let v = admit(&w.h, &p).await;
    upload(&w.h, &v.mdtrt_id, reference_lines()).await;
    let s = settle(&w.h, &v.mdtrt_id, true).await;
    assert_eq!(m(&s), REFERENCE);
    let stored = get_settlement(&w.h, &s.setl_id).await;
    assert_eq!(
        stored.settled_at, s.settled_at,
        "settled_at of Settle vs GetSettlement"
    );
    assert_eq!(stored, s);
    let r = reverse(&w.h, &s).await;
    let stored = get_settlement(&w.h, &r.setl_id).await;
    assert_eq!(
        stored.settled_at, r.settled_at,
        "settled_at of ReverseSettlement vs GetSettlement"
    );
    assert_eq!(stored, r);
}

mod settle_answer_equals_stored {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::settle_answer_equals_stored(crate::common::Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        if crate::common::skip(crate::common::Backend::Postgres) {
            return;
        }
        super::settle_answer_equals_stored(crate::common::Backend::Postgres).await;
    }
}

/// Amounts that do not fit the books (fen in a signed 64-bit integer) are refused, not clamped.
async fn amount_overflow(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    put_policy(&w.wuhai, WUHAI, JAN1, reference_policy()).await;
    let p = wuhai_employee(&w, 5, "100.00").await;
    file(&w, &p.psn_no, FilingType::Referral, ORDOS, "", "").await;
    let v = admit(&w.h, &p).await;
    // 99999999.9999 × 999999999999.999999 ≈ 1.0e20 yuan: both inputs are within their limits
    // (8 and 12 integer digits) but the product is not an amount.
    w.h.clone()
        .upload_fee_lines(upload_req(
            &v.mdtrt_id,
            vec![line("1", "A001", "99999999.9999", "999999999999.999999")],
        ))
        .await
        .invalid("lines[0]");
    // Two lines of 50000 × 999999999999.99 = 49999999999999500.00 each fit alone, not together:
    // refused at upload or at settlement, never booked clamped.
    let two = vec![
        line("2", "A001", "50000", "999999999999.99"),
        line("3", "A001", "50000", "999999999999.99"),
    ];
    if let Ok(up) =
        w.h.clone()
            .upload_fee_lines(upload_req(&v.mdtrt_id, two))
            .await
    {
        let up = up.into_inner();
        assert_ne!(
            up.unsettled_total, "92233720368547758.07",
            "a clamped total"
        );
        let r = try_settle(&w.h, &v.mdtrt_id, true).await;
        assert!(r.is_err(), "a settlement beyond the books' range: {r:?}");
    }
    assert!(by_visit(&w.h, &v.mdtrt_id).await.is_empty());
    assert_eq!(pacct(&w, &p.psn_no).await, "100.00");
    verify_ok(&ts).await;
}

mod amount_overflow {

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::amount_overflow(crate::common::Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        if crate::common::skip(crate::common::Backend::Postgres) {
            return;
        }
        super::amount_overflow(crate::common::Backend::Postgres).await;
    }
}

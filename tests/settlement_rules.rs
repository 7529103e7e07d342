//! SettlementService end to end, the money rules of DESIGN §3, each with its own hand-computed
//! figures: repeat admissions, annual deductibles, annual caps, ratios by hospital level and
//! province, policy versions by admission date, filing reductions and unfiled treatment,
//! critical-illness bands, medical assistance, maternity, and the refusals (FAILED_PRECONDITION
//! naming the rule, nothing written). Every settlement and reversal returned is checked against
//! the identities to the fen. Every test builds its own world over gRPC and runs on SQLite and on
//! PostgreSQL, each on a fresh database.

#[macro_use]
mod common;

use common::kit::*;
use common::*;
use medsettle::proto;
use proto::{
    CardStatus, CareType, DeductibleBasis, FilingType, InstitutionStatus, InsuranceType,
    LevelScope, PersonCategory, PersonStatus, ProvinceScope,
};

both_engines!(
    repeat_admission_deductible,
    annual_deductible,
    annual_cap_across_visits,
    ratio_by_level_and_province,
    policy_version_on_admission_date,
    filing_reductions,
    unfiled_allowed_reduction,
    critical_illness_bands,
    medical_assistance,
    maternity,
    refusals_person_and_policy,
    refusals_institution,
    rounding_class_c_and_no_account,
);

/// An employee (active) rule row.
#[allow(clippy::too_many_arguments)]
fn employee_rule(
    care: CareType,
    level: LevelScope,
    province: ProvinceScope,
    basis: DeductibleBasis,
    deductible: &str,
    repeat: &str,
    ratio: &str,
    cap: &str,
) -> proto::PolicyRule {
    proto::PolicyRule {
        insurance_type: InsuranceType::Employee as i32,
        category: PersonCategory::Active as i32,
        care_type: care as i32,
        level: level as i32,
        province_scope: province as i32,
        deductible_basis: basis as i32,
        deductible: deductible.into(),
        repeat_admission_deductible: repeat.into(),
        ratio: ratio.into(),
        annual_cap: cap.into(),
        critical_illness: None,
        assistance: None,
    }
}

/// A policy body of `rules`, no filing reductions, unfiled refused, account not for class C.
fn body(rules: Vec<proto::PolicyRule>) -> proto::PolicyBody {
    proto::PolicyBody {
        rules,
        filing_reductions: vec![],
        unfiled_allowed: false,
        unfiled_reduction: None,
        account_pays_class_c: false,
        pharmacy_national: false,
    }
}

/// A Wuhai employee with a long-term filing (full ratio) to `destination` from today.
async fn filed_employee(w: &World, seq: u32, opening: &str, destination: &str) -> Psn {
    let p = wuhai_employee(w, seq, opening).await;
    file(
        w,
        &p.psn_no,
        FilingType::LongTermResident,
        destination,
        "",
        "",
    )
    .await;
    p
}

/// Opens a visit of `care` today at `h`, uploads `lines`, settles without the account.
async fn bill(
    h: &Setl,
    p: &Psn,
    ins: InsuranceType,
    care: CareType,
    lines: Vec<proto::FeeLine>,
) -> proto::Settlement {
    let v = open(h, &p.national_id, ins, care, "").await;
    upload(h, &v.mdtrt_id, lines).await;
    settle(h, &v.mdtrt_id, false).await
}

async fn inpatient(h: &Setl, p: &Psn, lines: Vec<proto::FeeLine>) -> proto::Settlement {
    bill(h, p, InsuranceType::Employee, CareType::Inpatient, lines).await
}

async fn outpatient(h: &Setl, p: &Psn, lines: Vec<proto::FeeLine>) -> proto::Settlement {
    bill(h, p, InsuranceType::Employee, CareType::Outpatient, lines).await
}

fn a001(qty: &str, price: &str) -> Vec<proto::FeeLine> {
    vec![line("1", "A001", qty, price)]
}

/// Eligibility (deductible outstanding, annual cap remaining) of an employee today.
async fn outstanding(h: &Setl, p: &Psn, care: CareType) -> (String, String) {
    let e = eligibility(h, &p.national_id, InsuranceType::Employee, care, "").await;
    assert!(e.allowed, "{e:?}");
    (e.deductible_outstanding, e.annual_cap_remaining)
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_owned(), b.to_owned())
}

/// Cash-only settlement figures of a person whose account holds 0.00: no critical-illness or
/// assistance layer; acct 0.00, cash = personal part.
#[allow(clippy::too_many_arguments)]
fn cash_only<'a>(
    medfee: &'a str,
    fulamt: &'a str,
    preself: &'a str,
    inscp: &'a str,
    dedc: &'a str,
    hifp: &'a str,
    psn: &'a str,
    balc: &'a str,
) -> M<'a> {
    M {
        medfee,
        fulamt,
        overlmt: "0.00",
        preself,
        inscp,
        dedc,
        hifp,
        hifmi: "0.00",
        maf: "0.00",
        fund: hifp,
        psn,
        acct: "0.00",
        cash: psn,
        balc,
    }
}

/// The whole year of a person as the home bureau sees it: every settlement and reversal obeys
/// the identities.
async fn all_identities(ts: &TestServer, psn_no: &str) -> Vec<proto::Settlement> {
    let all = by_person(ts, psn_no).await;
    for s in &all {
        assert_identities(s);
    }
    all
}

async fn repeat_admission_deductible(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    // Inpatient, per admission: 800.00, repeat admission 400.00; ratio 0.90; no annual cap.
    put_policy(
        &w.wuhai,
        WUHAI,
        JAN1,
        body(vec![employee_rule(
            CareType::Inpatient,
            LevelScope::Any,
            ProvinceScope::Any,
            DeductibleBasis::PerAdmission,
            "800.00",
            "400.00",
            "0.90",
            "",
        )]),
    )
    .await;
    let p = filed_employee(&w, 10, "", ORDOS).await;
    assert_eq!(
        outstanding(&w.h, &p, CareType::Inpatient).await,
        pair("800.00", "")
    );

    // First admission: A001 2 × 1000.00 = 2000.00 in scope; deductible 800.00;
    // pooled (2000.00 − 800.00) × 0.90 = 1080.00; personal 920.00 (cash).
    let s1 = inpatient(&w.h, &p, a001("2", "1000.00")).await;
    assert_eq!(
        m(&s1),
        cash_only(
            "2000.00", "0.00", "0.00", "2000.00", "800.00", "1080.00", "920.00", "0.00"
        )
    );
    let x = s1.explanation.clone().unwrap();
    assert!(!x.repeat_admission);
    assert_eq!(x.deductible_outstanding, "800.00");
    assert_eq!(x.annual_cap_remaining, "", "no cap");
    assert_eq!(
        outstanding(&w.h, &p, CareType::Inpatient).await,
        pair("400.00", "")
    );

    // Second admission the same year: deductible 400.00;
    // pooled (2000.00 − 400.00) × 0.90 = 1440.00; personal 560.00.
    let s2 = inpatient(&w.h, &p, a001("2", "1000.00")).await;
    assert_eq!(
        m(&s2),
        cash_only(
            "2000.00", "0.00", "0.00", "2000.00", "400.00", "1440.00", "560.00", "0.00"
        )
    );
    let x = s2.explanation.clone().unwrap();
    assert!(x.repeat_admission);
    assert_eq!(x.deductible_outstanding, "400.00");
    assert_eq!(x.before.unwrap().admissions, 1);

    // Reversing the first leaves one unreversed admission: still a repeat (400.00). Reversing
    // the second too makes the next one the first again (800.00).
    reverse(&w.h, &s1).await;
    assert_eq!(
        outstanding(&w.h, &p, CareType::Inpatient).await,
        pair("400.00", "")
    );
    reverse(&w.h, &s2).await;
    assert_eq!(
        outstanding(&w.h, &p, CareType::Inpatient).await,
        pair("800.00", "")
    );
    // A small bill: deductible min(300.00, 800.00) = 300.00; pooled 0.00; personal 300.00.
    let s3 = inpatient(&w.h, &p, a001("1", "300.00")).await;
    assert_eq!(
        m(&s3),
        cash_only(
            "300.00", "0.00", "0.00", "300.00", "300.00", "0.00", "300.00", "0.00"
        )
    );
    assert!(!s3.explanation.clone().unwrap().repeat_admission);
    assert_eq!(all_identities(&ts, &p.psn_no).await.len(), 5);
    verify_ok(&ts).await;
}

async fn annual_deductible(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    // Outpatient pooling, annual deductible 200.00, ratio 0.60, no cap.
    put_policy(
        &w.wuhai,
        WUHAI,
        JAN1,
        body(vec![employee_rule(
            CareType::Outpatient,
            LevelScope::Any,
            ProvinceScope::Any,
            DeductibleBasis::Annual,
            "200.00",
            "",
            "0.60",
            "",
        )]),
    )
    .await;
    let p = filed_employee(&w, 11, "", ORDOS).await;
    assert_eq!(
        outstanding(&w.h, &p, CareType::Outpatient).await,
        pair("200.00", "")
    );

    // Visit 1: in scope 150.00 → deductible min(150.00, 200.00) = 150.00; pooled 0.00.
    let s1 = outpatient(&w.h, &p, a001("1", "150.00")).await;
    assert_eq!(
        m(&s1),
        cash_only(
            "150.00", "0.00", "0.00", "150.00", "150.00", "0.00", "150.00", "0.00"
        )
    );
    let x = s1.explanation.clone().unwrap();
    assert_eq!(x.deductible_basis, DeductibleBasis::Annual as i32);
    assert_eq!(x.deductible_outstanding, "200.00");
    assert_eq!(
        outstanding(&w.h, &p, CareType::Outpatient).await,
        pair("50.00", "")
    );

    // Visit 2: in scope 300.00 → deductible 200.00 − 150.00 = 50.00;
    // pooled (300.00 − 50.00) × 0.60 = 150.00; personal 150.00.
    let s2 = outpatient(&w.h, &p, a001("2", "150.00")).await;
    assert_eq!(
        m(&s2),
        cash_only(
            "300.00", "0.00", "0.00", "300.00", "50.00", "150.00", "150.00", "0.00"
        )
    );
    let x = s2.explanation.clone().unwrap();
    assert_eq!(x.deductible_outstanding, "50.00");
    assert_eq!(x.before.unwrap().annual_deductible, "150.00");
    assert_eq!(
        outstanding(&w.h, &p, CareType::Outpatient).await,
        pair("0.00", "")
    );

    // Visit 3: in scope 100.00, deductible met → 0.00; pooled 100.00 × 0.60 = 60.00.
    let s3 = outpatient(&w.h, &p, a001("1", "100.00")).await;
    assert_eq!(
        m(&s3),
        cash_only(
            "100.00", "0.00", "0.00", "100.00", "0.00", "60.00", "40.00", "0.00"
        )
    );

    // Reversing visit 2 gives its 50.00 back to the year's outstanding deductible.
    reverse(&w.h, &s2).await;
    assert_eq!(
        outstanding(&w.h, &p, CareType::Outpatient).await,
        pair("50.00", "")
    );
    // An outpatient visit is not discharged.
    let v = open(
        &w.h,
        &p.national_id,
        InsuranceType::Employee,
        CareType::Outpatient,
        "",
    )
    .await;
    refused(
        w.h.clone()
            .discharge_visit(proto::DischargeVisitRequest {
                request_id: rid(),
                mdtrt_id: v.mdtrt_id,
                end_date: String::new(),
                diagnoses: vec![],
            })
            .await,
        "not_an_admission",
    );
    assert_eq!(all_identities(&ts, &p.psn_no).await.len(), 4);
    verify_ok(&ts).await;
}

async fn annual_cap_across_visits(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    // Inpatient, no deductible, ratio 0.90, annual cap 10000.00.
    put_policy(
        &w.wuhai,
        WUHAI,
        JAN1,
        body(vec![employee_rule(
            CareType::Inpatient,
            LevelScope::Any,
            ProvinceScope::Any,
            DeductibleBasis::PerAdmission,
            "0.00",
            "",
            "0.90",
            "10000.00",
        )]),
    )
    .await;
    let p = filed_employee(&w, 12, "", ORDOS).await;
    assert_eq!(
        outstanding(&w.h, &p, CareType::Inpatient).await,
        pair("0.00", "10000.00")
    );

    // Visit 1: 10 × 1000.00 = 10000.00 in scope → pooled 10000.00 × 0.90 = 9000.00 (≤ 10000.00).
    let s1 = inpatient(&w.h, &p, a001("10", "1000.00")).await;
    assert_eq!(
        m(&s1),
        cash_only(
            "10000.00", "0.00", "0.00", "10000.00", "0.00", "9000.00", "1000.00", "0.00"
        )
    );
    assert_eq!(
        s1.explanation.clone().unwrap().annual_cap_remaining,
        "10000.00"
    );
    assert_eq!(
        outstanding(&w.h, &p, CareType::Inpatient).await,
        pair("0.00", "1000.00")
    );

    // Visit 2: 5 × 1000.00 = 5000.00 → 4500.00 capped at 10000.00 − 9000.00 = 1000.00;
    // personal 5000.00 − 1000.00 = 4000.00.
    let s2 = inpatient(&w.h, &p, a001("5", "1000.00")).await;
    assert_eq!(
        m(&s2),
        cash_only(
            "5000.00", "0.00", "0.00", "5000.00", "0.00", "1000.00", "4000.00", "0.00"
        )
    );
    assert_eq!(
        s2.explanation.clone().unwrap().annual_cap_remaining,
        "1000.00"
    );
    assert_eq!(
        outstanding(&w.h, &p, CareType::Inpatient).await,
        pair("0.00", "0.00")
    );

    // Visit 3: the cap is used up: pooled 0.00, all 100.00 personal.
    let s3 = inpatient(&w.h, &p, a001("1", "100.00")).await;
    assert_eq!(
        m(&s3),
        cash_only(
            "100.00", "0.00", "0.00", "100.00", "0.00", "0.00", "100.00", "0.00"
        )
    );
    // Reversing visit 2 frees its 1000.00 again.
    reverse(&w.h, &s2).await;
    assert_eq!(
        outstanding(&w.h, &p, CareType::Inpatient).await,
        pair("0.00", "1000.00")
    );
    let all = all_identities(&ts, &p.psn_no).await;
    // Σ hifp_pay = 9000.00 + 1000.00 + 0.00 − 1000.00 = 9000.00.
    assert_eq!(sum(&all, |s| &s.hifp_pay), 900_000);
    verify_ok(&ts).await;
}

async fn ratio_by_level_and_province(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    const NX_L1: &str = "H64020000002";
    const ORDOS_L1: &str = "H15060000003";
    register(&w, HOSP2, ORDOS, 2).await;
    register(&w, ORDOS_L1, ORDOS, 1).await;
    register(&w, HOSP_NX, SHIZUISHAN, 3).await;
    register(&w, NX_L1, SHIZUISHAN, 1).await;
    catalogue(&w.nx, SHIZUISHAN, ordos_items()).await;
    // Outpatient, no deductible, no cap; the most specific row applies (exact level +2, exact
    // province scope +1).
    let row = |level, province, ratio| {
        employee_rule(
            CareType::Outpatient,
            level,
            province,
            DeductibleBasis::Annual,
            "0.00",
            "",
            ratio,
            "",
        )
    };
    put_policy(
        &w.wuhai,
        WUHAI,
        JAN1,
        body(vec![
            row(LevelScope::Any, ProvinceScope::Any, "0.50"),
            row(LevelScope::Any, ProvinceScope::OutOfProvince, "0.55"),
            row(LevelScope::Level2, ProvinceScope::Any, "0.65"),
            row(LevelScope::Level3, ProvinceScope::InProvince, "0.70"),
            row(LevelScope::Level3, ProvinceScope::OutOfProvince, "0.60"),
        ]),
    )
    .await;
    // Long-term filings to the whole of Inner Mongolia and to Shizuishan: the full ratio.
    let p = filed_employee(&w, 13, "", "15").await;
    file(
        &w,
        &p.psn_no,
        FilingType::LongTermResident,
        SHIZUISHAN,
        "",
        "",
    )
    .await;

    // A001 1 × 1000.00 in scope, no deductible: pooled = 1000.00 × ratio.
    for (code, level, province, ratio, hifp, psn) in [
        (
            HOSP,
            LevelScope::Level3,
            ProvinceScope::InProvince,
            "0.7",
            "700.00",
            "300.00",
        ),
        (
            HOSP2,
            LevelScope::Level2,
            ProvinceScope::InProvince,
            "0.65",
            "650.00",
            "350.00",
        ),
        (
            ORDOS_L1,
            LevelScope::Level1,
            ProvinceScope::InProvince,
            "0.5",
            "500.00",
            "500.00",
        ),
        (
            HOSP_NX,
            LevelScope::Level3,
            ProvinceScope::OutOfProvince,
            "0.6",
            "600.00",
            "400.00",
        ),
        (
            NX_L1,
            LevelScope::Level1,
            ProvinceScope::OutOfProvince,
            "0.55",
            "550.00",
            "450.00",
        ),
    ] {
        let h = hosp(&ts, code).await;
        let e = eligibility(
            &h,
            &p.national_id,
            InsuranceType::Employee,
            CareType::Outpatient,
            "",
        )
        .await;
        assert!(e.allowed, "{code}: {e:?}");
        assert_eq!(e.effective_ratio, ratio, "{code}");
        let s = outpatient(&h, &p, a001("1", "1000.00")).await;
        assert_eq!(
            m(&s),
            cash_only(
                "1000.00", "0.00", "0.00", "1000.00", "0.00", hifp, psn, "0.00"
            ),
            "{code}"
        );
        let x = s.explanation.clone().unwrap();
        assert_eq!(
            (x.level, x.province),
            (level as i32, province as i32),
            "{code}"
        );
        assert_eq!(
            (x.base_ratio.as_str(), x.effective_ratio.as_str()),
            (ratio, ratio)
        );
        let treatment = &code[1..3];
        assert_eq!(&s.treatment_region[..2], treatment);
    }
    assert_eq!(all_identities(&ts, &p.psn_no).await.len(), 5);
    verify_ok(&ts).await;
}

async fn policy_version_on_admission_date(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    // Version 1 from 2026-01-01: inpatient deductible 100.00 (repeat 100.00), ratio 0.80.
    let v1 = put_policy(
        &w.wuhai,
        WUHAI,
        JAN1,
        body(vec![employee_rule(
            CareType::Inpatient,
            LevelScope::Any,
            ProvinceScope::Any,
            DeductibleBasis::PerAdmission,
            "100.00",
            "100.00",
            "0.80",
            "",
        )]),
    )
    .await;
    // Version 2 from 2026-07-01: deductible 200.00 (repeat 200.00), ratio 0.90.
    let v2 = put_policy(
        &w.wuhai,
        WUHAI,
        "2026-07-01",
        body(vec![employee_rule(
            CareType::Inpatient,
            LevelScope::Any,
            ProvinceScope::Any,
            DeductibleBasis::PerAdmission,
            "200.00",
            "200.00",
            "0.90",
            "",
        )]),
    )
    .await;
    assert_eq!((v1.version, v2.version), (1, 2));
    let p = wuhai_employee(&w, 14, "").await;
    // An emergency filing may start in the past: from 2026-06-01 to today.
    file(
        &w,
        &p.psn_no,
        FilingType::Emergency,
        ORDOS,
        "2026-06-01",
        &today_s(),
    )
    .await;
    for (date, ratio, version) in [("2026-06-30", "0.8", 1), ("2026-07-01", "0.9", 2)] {
        let e = eligibility(
            &w.h,
            &p.national_id,
            InsuranceType::Employee,
            CareType::Inpatient,
            date,
        )
        .await;
        assert!(e.allowed, "{date}: {e:?}");
        assert_eq!(
            (e.effective_ratio.as_str(), e.policy_version),
            (ratio, version),
            "{date}"
        );
    }

    // Admitted on 2026-06-15 (version 1): A001 1 × 1000.00; deductible 100.00;
    // pooled (1000.00 − 100.00) × 0.80 = 720.00; personal 280.00.
    let va = open(
        &w.h,
        &p.national_id,
        InsuranceType::Employee,
        CareType::Inpatient,
        "2026-06-15",
    )
    .await;
    upload(&w.h, &va.mdtrt_id, a001("1", "1000.00")).await;
    let sa = settle(&w.h, &va.mdtrt_id, false).await;
    assert_eq!(
        m(&sa),
        cash_only(
            "1000.00", "0.00", "0.00", "1000.00", "100.00", "720.00", "280.00", "0.00"
        )
    );
    assert_eq!(sa.explanation.as_ref().unwrap().policy_version, 1);
    // Admitted today (version 2): A001 1 × 2000.00; repeat deductible 200.00;
    // pooled (2000.00 − 200.00) × 0.90 = 1620.00; personal 380.00.
    let sb = inpatient(&w.h, &p, a001("1", "2000.00")).await;
    assert_eq!(
        m(&sb),
        cash_only(
            "2000.00", "0.00", "0.00", "2000.00", "200.00", "1620.00", "380.00", "0.00"
        )
    );
    let x = sb.explanation.clone().unwrap();
    assert_eq!((x.policy_version, x.base_ratio.as_str()), (2, "0.9"));
    assert!(x.repeat_admission);
    // Reversing the June stay and settling it again still uses version 1.
    reverse(&w.h, &sa).await;
    let again = settle(&w.h, &va.mdtrt_id, false).await;
    // Now the June stay is the second unreversed admission: repeat deductible 100.00, the same
    // figures as before.
    assert_eq!(m(&again), m(&sa));
    assert_eq!(again.explanation.unwrap().policy_version, 1);
    assert_eq!(all_identities(&ts, &p.psn_no).await.len(), 4);
    verify_ok(&ts).await;
}

/// Inpatient 0.85, deductible 800.00 (repeat 800.00), no cap; referral −10 points, other
/// temporary × 0.80.
fn reductions_policy(unfiled_allowed: bool) -> proto::PolicyBody {
    proto::PolicyBody {
        rules: vec![employee_rule(
            CareType::Inpatient,
            LevelScope::Any,
            ProvinceScope::Any,
            DeductibleBasis::PerAdmission,
            "800.00",
            "800.00",
            "0.85",
            "",
        )],
        filing_reductions: vec![
            proto::FilingReduction {
                filing_type: FilingType::Referral as i32,
                reduction: minus_points("0.10"),
            },
            proto::FilingReduction {
                filing_type: FilingType::OtherTemporary as i32,
                reduction: factor("0.80"),
            },
        ],
        unfiled_allowed,
        unfiled_reduction: if unfiled_allowed {
            factor("0.60")
        } else {
            None
        },
        account_pays_class_c: false,
        pharmacy_national: false,
    }
}

async fn filing_reductions(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    put_policy(&w.wuhai, WUHAI, JAN1, reductions_policy(false)).await;
    // A001 2 × 1000.00 = 2000.00 in scope; deductible 800.00; pooled 1200.00 × ratio.
    for (seq, filing, dest, ratio, reduction, hifp, psn) in [
        // 0.85 − 0.10 = 0.75 → 900.00
        (
            20,
            Some(FilingType::Referral),
            ORDOS,
            "0.75",
            "minus_points",
            "900.00",
            "1100.00",
        ),
        // 0.85 × 0.80 = 0.68 → 816.00
        (
            21,
            Some(FilingType::OtherTemporary),
            ORDOS,
            "0.68",
            "factor",
            "816.00",
            "1184.00",
        ),
        // emergency and long-term keep 0.85 → 1020.00
        (
            22,
            Some(FilingType::Emergency),
            ORDOS,
            "0.85",
            "none",
            "1020.00",
            "980.00",
        ),
        (
            23,
            Some(FilingType::LongTermResident),
            "15",
            "0.85",
            "none",
            "1020.00",
            "980.00",
        ),
        (
            24,
            Some(FilingType::RelocatedRetiree),
            ORDOS,
            "0.85",
            "none",
            "1020.00",
            "980.00",
        ),
        (
            25,
            Some(FilingType::PostedWorker),
            ORDOS,
            "0.85",
            "none",
            "1020.00",
            "980.00",
        ),
    ] {
        let p = wuhai_employee(&w, seq, "").await;
        let f = file(&w, &p.psn_no, filing.unwrap(), dest, "", "").await;
        let e = eligibility(
            &w.h,
            &p.national_id,
            InsuranceType::Employee,
            CareType::Inpatient,
            "",
        )
        .await;
        assert_eq!(e.effective_ratio, ratio, "{filing:?}");
        assert_eq!(e.filing.as_ref().unwrap().filing_id, f.filing_id);
        let s = inpatient(&w.h, &p, a001("2", "1000.00")).await;
        assert_eq!(
            m(&s),
            cash_only(
                "2000.00", "0.00", "0.00", "2000.00", "800.00", hifp, psn, "0.00"
            ),
            "{filing:?}"
        );
        let x = s.explanation.clone().unwrap();
        assert_eq!(
            (x.base_ratio.as_str(), x.effective_ratio.as_str()),
            ("0.85", ratio)
        );
        assert!(
            x.reduction.contains(reduction),
            "{filing:?}: {}",
            x.reduction
        );
        assert_eq!(x.filing.unwrap().filing_id, f.filing_id);
        all_identities(&ts, &p.psn_no).await;
    }

    // No filing, and the home policy does not allow unfiled treatment.
    let p = wuhai_employee(&w, 26, "100.00").await;
    let e = eligibility(
        &w.h,
        &p.national_id,
        InsuranceType::Employee,
        CareType::Inpatient,
        "",
    )
    .await;
    assert!(!e.allowed);
    assert_eq!(e.refusal_rule, "filing_required");
    assert!(e.filing.is_none());
    refused(
        try_open(
            &w.h,
            &p.national_id,
            InsuranceType::Employee,
            CareType::Inpatient,
            "",
        )
        .await,
        "filing_required",
    );
    // A filing for another destination does not help.
    file(&w, &p.psn_no, FilingType::Referral, SHIZUISHAN, "", "").await;
    refused(
        try_open(
            &w.h,
            &p.national_id,
            InsuranceType::Employee,
            CareType::Inpatient,
            "",
        )
        .await,
        "filing_required",
    );
    assert!(by_person(&ts, &p.psn_no).await.is_empty());
    assert_eq!(pacct(&w, &p.psn_no).await, "100.00");
    verify_ok(&ts).await;
}

async fn unfiled_allowed_reduction(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    put_policy(&w.wuhai, WUHAI, JAN1, reductions_policy(true)).await;
    // Unfiled, allowed with × 0.60: 0.85 × 0.60 = 0.51; A001 2 × 1000.00: deductible 800.00;
    // pooled (2000.00 − 800.00) × 0.51 = 612.00; personal 1388.00.
    let p = wuhai_employee(&w, 27, "").await;
    let e = eligibility(
        &w.h,
        &p.national_id,
        InsuranceType::Employee,
        CareType::Inpatient,
        "",
    )
    .await;
    assert!(e.allowed, "{e:?}");
    assert!(e.filing.is_none());
    assert_eq!(e.effective_ratio, "0.51");
    let s = inpatient(&w.h, &p, a001("2", "1000.00")).await;
    assert_eq!(
        m(&s),
        cash_only(
            "2000.00", "0.00", "0.00", "2000.00", "800.00", "612.00", "1388.00", "0.00"
        )
    );
    let x = s.explanation.clone().unwrap();
    assert!(x.filing.is_none());
    assert_eq!(x.effective_ratio, "0.51");
    assert!(
        x.reduction.contains("unfiled") && x.reduction.contains("factor"),
        "{}",
        x.reduction
    );
    // A filed referral still gets its own reduction (0.75 → 900.00).
    let q = wuhai_employee(&w, 28, "").await;
    file(&w, &q.psn_no, FilingType::Referral, ORDOS, "", "").await;
    let s = inpatient(&w.h, &q, a001("2", "1000.00")).await;
    assert_eq!(
        m(&s),
        cash_only(
            "2000.00", "0.00", "0.00", "2000.00", "800.00", "900.00", "1100.00", "0.00"
        )
    );
    verify_ok(&ts).await;
}

async fn critical_illness_bands(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    // Inpatient, no deductible, ratio 0.50, no cap; critical illness on the year's in-scope
    // personal burden (in scope − pooled): threshold 1000.00; 1000.00–3000.00 at 0.50, above
    // 3000.00 at 0.70; annual cap of the layer 2000.00.
    put_policy(
        &w.wuhai,
        WUHAI,
        JAN1,
        body(vec![proto::PolicyRule {
            critical_illness: Some(proto::CriticalIllnessLayer {
                threshold: "1000.00".into(),
                bands: vec![
                    proto::CriticalIllnessBand {
                        from: "1000.00".into(),
                        to: "3000.00".into(),
                        ratio: "0.50".into(),
                    },
                    proto::CriticalIllnessBand {
                        from: "3000.00".into(),
                        to: String::new(),
                        ratio: "0.70".into(),
                    },
                ],
                annual_cap: "2000.00".into(),
            }),
            ..employee_rule(
                CareType::Inpatient,
                LevelScope::Any,
                ProvinceScope::Any,
                DeductibleBasis::PerAdmission,
                "0.00",
                "",
                "0.50",
                "",
            )
        }]),
    )
    .await;
    let p = filed_employee(&w, 30, "", ORDOS).await;
    let ci = |hifp: &'static str,
              hifmi: &'static str,
              fund: &'static str,
              psn: &'static str,
              medfee: &'static str| M {
        medfee,
        fulamt: "0.00",
        overlmt: "0.00",
        preself: "0.00",
        inscp: medfee,
        dedc: "0.00",
        hifp,
        hifmi,
        maf: "0.00",
        fund,
        psn,
        acct: "0.00",
        cash: psn,
        balc: "0.00",
    };

    // S1: in scope 1600.00; pooled 800.00; burden 0.00 → 800.00, below the threshold: 0.00.
    let s1 = inpatient(&w.h, &p, a001("1", "1600.00")).await;
    assert_eq!(m(&s1), ci("800.00", "0.00", "800.00", "800.00", "1600.00"));
    // S2: in scope 4000.00; pooled 2000.00; burden 800.00 → 2800.00:
    //   (2800.00 − 1000.00) × 0.50 = 900.00; fund 2900.00; personal 1100.00.
    let s2 = inpatient(&w.h, &p, a001("1", "4000.00")).await;
    assert_eq!(
        m(&s2),
        ci("2000.00", "900.00", "2900.00", "1100.00", "4000.00")
    );
    let before = s2.explanation.clone().unwrap().before.unwrap();
    assert_eq!(
        (
            before.in_scope_burden.as_str(),
            before.critical_illness.as_str()
        ),
        ("800.00", "0.00")
    );
    let funds: Vec<_> = s2
        .funds
        .iter()
        .map(|f| (f.fund_pay_type.as_str(), f.amount.as_str()))
        .collect();
    assert_eq!(funds, [("310100", "2000.00"), ("330100", "900.00")]);
    // S3: in scope 4000.00; pooled 2000.00; burden 2800.00 → 4800.00:
    //   (3000.00 − 2800.00) × 0.50 + (4800.00 − 3000.00) × 0.70 = 100.00 + 1260.00 = 1360.00,
    //   capped at 2000.00 − 900.00 = 1100.00; fund 3100.00; personal 900.00.
    let s3 = inpatient(&w.h, &p, a001("1", "4000.00")).await;
    assert_eq!(
        m(&s3),
        ci("2000.00", "1100.00", "3100.00", "900.00", "4000.00")
    );
    let before = s3.explanation.clone().unwrap().before.unwrap();
    assert_eq!(
        (
            before.in_scope_burden.as_str(),
            before.critical_illness.as_str()
        ),
        ("2800.00", "900.00")
    );
    // Reversing S2 takes back its burden (2000.00) and its layer (900.00): burden 2800.00,
    // layer paid 1100.00. S4: in scope 400.00; pooled 200.00; burden 2800.00 → 3000.00:
    //   (3000.00 − 2800.00) × 0.50 = 100.00 (cap left 900.00); fund 300.00; personal 100.00.
    reverse(&w.h, &s2).await;
    let s4 = inpatient(&w.h, &p, a001("1", "400.00")).await;
    assert_eq!(m(&s4), ci("200.00", "100.00", "300.00", "100.00", "400.00"));
    let before = s4.explanation.clone().unwrap().before.unwrap();
    assert_eq!(
        (
            before.in_scope_burden.as_str(),
            before.critical_illness.as_str()
        ),
        ("2800.00", "1100.00")
    );
    let all = all_identities(&ts, &p.psn_no).await;
    // Σ hifmi = 0.00 + 900.00 + 1100.00 − 900.00 + 100.00 = 1200.00.
    assert_eq!(sum(&all, |s| &s.hifmi_pay), 120_000);
    verify_ok(&ts).await;
}

async fn medical_assistance(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    // Inpatient, deductible 500.00 (repeat 500.00), ratio 0.80, no cap; medical assistance for
    // recipients: 0.50 of what remains of the personal part within the catalogue (fully
    // self-paid items stay with the patient), annual cap 800.00.
    put_policy(
        &w.wuhai,
        WUHAI,
        JAN1,
        body(vec![proto::PolicyRule {
            assistance: Some(proto::AssistanceLayer {
                ratio: "0.50".into(),
                annual_cap: "800.00".into(),
            }),
            ..employee_rule(
                CareType::Inpatient,
                LevelScope::Any,
                ProvinceScope::Any,
                DeductibleBasis::PerAdmission,
                "500.00",
                "500.00",
                "0.80",
                "",
            )
        }]),
    )
    .await;
    let recipient = enrol(
        &w.wuhai,
        proto::EnrolPersonRequest {
            assistance_recipient: true,
            ..employee(&national_id("150302", "19700707", 31), WUHAI, "")
        },
    )
    .await;
    file(
        &w,
        &recipient.psn_no,
        FilingType::LongTermResident,
        ORDOS,
        "",
        "",
    )
    .await;
    let other = filed_employee(&w, 32, "", ORDOS).await;
    // A001 1 × 3000.00 (in scope) + C001 1 × 200.00 (fully self-paid): total 3200.00;
    // deductible 500.00; pooled (3000.00 − 500.00) × 0.80 = 2000.00; no critical illness;
    // remaining personal part within the catalogue 3200.00 − 2000.00 − 200.00 = 1000.00;
    // assistance 1000.00 × 0.50 = 500.00, up to the cap left.
    let lines = || {
        vec![
            line("1", "A001", "1", "3000.00"),
            line("2", "C001", "1", "200.00"),
        ]
    };
    let ma = |maf: &'static str, fund: &'static str, psn: &'static str| M {
        medfee: "3200.00",
        fulamt: "200.00",
        overlmt: "0.00",
        preself: "0.00",
        inscp: "3000.00",
        dedc: "500.00",
        hifp: "2000.00",
        hifmi: "0.00",
        maf,
        fund,
        psn,
        acct: "0.00",
        cash: psn,
        balc: "0.00",
    };
    // S1: 500.00 (cap left 800.00); fund 2500.00; personal 700.00.
    let s1 = inpatient(&w.h, &recipient, lines()).await;
    assert_eq!(m(&s1), ma("500.00", "2500.00", "700.00"));
    let funds: Vec<_> = s1
        .funds
        .iter()
        .map(|f| (f.fund_pay_type.as_str(), f.amount.as_str()))
        .collect();
    assert_eq!(funds, [("310100", "2000.00"), ("610100", "500.00")]);
    // S2: min(500.00, 800.00 − 500.00) = 300.00; fund 2300.00; personal 900.00.
    let s2 = inpatient(&w.h, &recipient, lines()).await;
    assert_eq!(m(&s2), ma("300.00", "2300.00", "900.00"));
    assert_eq!(
        s2.explanation.clone().unwrap().before.unwrap().assistance,
        "500.00"
    );
    // S3: the cap is used up: 0.00; fund 2000.00; personal 1200.00.
    let s3 = inpatient(&w.h, &recipient, lines()).await;
    assert_eq!(m(&s3), ma("0.00", "2000.00", "1200.00"));
    // Reversing S2 gives 300.00 of the cap back.
    reverse(&w.h, &s2).await;
    let s4 = inpatient(&w.h, &recipient, lines()).await;
    assert_eq!(m(&s4), ma("300.00", "2300.00", "900.00"));
    // A non-recipient gets no assistance.
    let n = inpatient(&w.h, &other, lines()).await;
    assert_eq!(m(&n), ma("0.00", "2000.00", "1200.00"));
    let all = all_identities(&ts, &recipient.psn_no).await;
    // Σ maf = 500.00 + 300.00 + 0.00 − 300.00 + 300.00 = 800.00 = the cap.
    assert_eq!(sum(&all, |s| &s.maf_pay), 80_000);
    verify_ok(&ts).await;
}

async fn maternity(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    // Employees: inpatient 800.00 (repeat 400.00) at 0.85, cap 150000.00; maternity insurance
    // (510) has its own row: care MATERNITY, no deductible, ratio 0.90, no cap.
    put_policy(
        &w.wuhai,
        WUHAI,
        JAN1,
        body(vec![
            employee_rule(
                CareType::Inpatient,
                LevelScope::Any,
                ProvinceScope::Any,
                DeductibleBasis::PerAdmission,
                "800.00",
                "400.00",
                "0.85",
                "150000.00",
            ),
            proto::PolicyRule {
                insurance_type: InsuranceType::Maternity as i32,
                category: PersonCategory::Active as i32,
                care_type: CareType::Maternity as i32,
                level: LevelScope::Any as i32,
                province_scope: ProvinceScope::Any as i32,
                deductible_basis: DeductibleBasis::PerAdmission as i32,
                deductible: "0.00".into(),
                repeat_admission_deductible: String::new(),
                ratio: "0.90".into(),
                annual_cap: String::new(),
                critical_illness: None,
                assistance: None,
            },
        ]),
    )
    .await;
    let mother = enrol(
        &w.wuhai,
        proto::EnrolPersonRequest {
            insurances: vec![
                ins(InsuranceType::Employee, PersonCategory::Active),
                ins(InsuranceType::Maternity, PersonCategory::Active),
            ],
            ..employee(&national_id("150302", "19950505", 40), WUHAI, "300.00")
        },
    )
    .await;
    file(
        &w,
        &mother.psn_no,
        FilingType::LongTermResident,
        ORDOS,
        "",
        "",
    )
    .await;
    let e = eligibility(
        &w.h,
        &mother.national_id,
        InsuranceType::Maternity,
        CareType::Maternity,
        "",
    )
    .await;
    assert!(e.allowed, "{e:?}");
    assert_eq!(
        (
            e.effective_ratio.as_str(),
            e.deductible_outstanding.as_str(),
            e.annual_cap_remaining.as_str()
        ),
        ("0.9", "0.00", "")
    );
    // Maternity care under the employee insurance, or inpatient care under maternity insurance:
    // no such rule.
    refused(
        try_open(
            &w.h,
            &mother.national_id,
            InsuranceType::Employee,
            CareType::Maternity,
            "",
        )
        .await,
        "policy_missing",
    );
    refused(
        try_open(
            &w.h,
            &mother.national_id,
            InsuranceType::Maternity,
            CareType::Inpatient,
            "",
        )
        .await,
        "policy_missing",
    );

    // A001 1 × 3000.00 + B001 1 × 100.00 (at its cap: first self-paid 10.00, in scope 90.00):
    // total 3100.00; in scope 3090.00; no deductible; pooled 3090.00 × 0.90 = 2781.00;
    // personal 319.00 in cash; balance unchanged 300.00.
    let v = open(
        &w.h,
        &mother.national_id,
        InsuranceType::Maternity,
        CareType::Maternity,
        "",
    )
    .await;
    upload(
        &w.h,
        &v.mdtrt_id,
        vec![
            line("1", "A001", "1", "3000.00"),
            line("2", "B001", "1", "100.00"),
        ],
    )
    .await;
    let d =
        w.h.clone()
            .discharge_visit(proto::DischargeVisitRequest {
                request_id: rid(),
                mdtrt_id: v.mdtrt_id.clone(),
                end_date: String::new(),
                diagnoses: vec!["O80".into()],
            })
            .await
            .must();
    assert_eq!(d.end_date, today_s());
    let s = settle(&w.h, &v.mdtrt_id, false).await;
    assert_eq!(
        m(&s),
        M {
            medfee: "3100.00",
            fulamt: "0.00",
            overlmt: "0.00",
            preself: "10.00",
            inscp: "3090.00",
            dedc: "0.00",
            hifp: "2781.00",
            hifmi: "0.00",
            maf: "0.00",
            fund: "2781.00",
            psn: "319.00",
            acct: "0.00",
            cash: "319.00",
            balc: "300.00",
        }
    );
    assert_eq!(
        (s.insurance_type, s.care_type),
        (InsuranceType::Maternity as i32, CareType::Maternity as i32)
    );
    let funds: Vec<_> = s
        .funds
        .iter()
        .map(|f| (f.fund_pay_type.as_str(), f.amount.as_str()))
        .collect();
    assert_eq!(funds, [("510100", "2781.00")]);
    let x = s.explanation.clone().unwrap();
    assert_eq!(
        (x.base_ratio.as_str(), x.effective_ratio.as_str()),
        ("0.9", "0.9")
    );
    // The employee accumulators are untouched: the next inpatient stay is a first admission with
    // the full cap.
    let e = eligibility(
        &w.h,
        &mother.national_id,
        InsuranceType::Employee,
        CareType::Inpatient,
        "",
    )
    .await;
    assert_eq!(
        (
            e.deductible_outstanding.as_str(),
            e.annual_cap_remaining.as_str()
        ),
        ("800.00", "150000.00")
    );
    assert_eq!(pacct(&w, &mother.psn_no).await, "300.00");
    all_identities(&ts, &mother.psn_no).await;
    verify_ok(&ts).await;
}

/// Employees, inpatient, 800.00 per admission (repeat 800.00), 0.85, no cap; no outpatient,
/// resident or maternity rows; referral −10 points.
fn inpatient_only_policy() -> proto::PolicyBody {
    proto::PolicyBody {
        rules: vec![employee_rule(
            CareType::Inpatient,
            LevelScope::Any,
            ProvinceScope::Any,
            DeductibleBasis::PerAdmission,
            "800.00",
            "800.00",
            "0.85",
            "",
        )],
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

/// An admitted visit with A001 1 × 1000.00 uploaded.
async fn admitted_with_lines(w: &World, p: &Psn) -> proto::Visit {
    let v = admit(&w.h, p).await;
    upload(&w.h, &v.mdtrt_id, a001("1", "1000.00")).await;
    v
}

/// Every way the hospital may try: eligibility (allowed = false naming the rule), a new visit,
/// pre-settle and settle of an open visit: each refused with `rule`.
async fn refused_everywhere(w: &World, p: &Psn, v: &proto::Visit, rule: &str) {
    let e = eligibility(
        &w.h,
        &p.national_id,
        InsuranceType::Employee,
        CareType::Inpatient,
        "",
    )
    .await;
    assert!(!e.allowed, "{rule}: {e:?}");
    assert_eq!(e.refusal_rule, rule);
    assert!(!e.refusal_detail.is_empty());
    refused(
        try_open(
            &w.h,
            &p.national_id,
            InsuranceType::Employee,
            CareType::Inpatient,
            "",
        )
        .await,
        rule,
    );
    refused(
        w.h.clone()
            .pre_settle(proto::PreSettleRequest {
                mdtrt_id: v.mdtrt_id.clone(),
                use_account: true,
            })
            .await,
        rule,
    );
    refused(try_settle(&w.h, &v.mdtrt_id, true).await, rule);
}

/// Nothing was written for `p`: no settlement, the balance as it was, the visit open, the
/// books verified.
async fn nothing_written(ts: &TestServer, w: &World, p: &Psn, v: &proto::Visit, balance: &str) {
    assert!(by_person(ts, &p.psn_no).await.is_empty());
    assert_eq!(pacct(w, &p.psn_no).await, balance);
    let visit = get_visit(&w.h, &v.mdtrt_id).await;
    assert_eq!(
        (visit.status, visit.setl_id.as_str()),
        (proto::VisitStatus::Open as i32, "")
    );
    verify_ok(ts).await;
}

/// A001 1 × 1000.00 under the full 0.85: deductible 800.00; pooled (1000.00 − 800.00) × 0.85 =
/// 170.00; personal 830.00; with use_account and 100.00 in the account: account 100.00, cash
/// 730.00, balance after 0.00.
const SMALL: M<'static> = M {
    medfee: "1000.00",
    fulamt: "0.00",
    overlmt: "0.00",
    preself: "0.00",
    inscp: "1000.00",
    dedc: "800.00",
    hifp: "170.00",
    hifmi: "0.00",
    maf: "0.00",
    fund: "170.00",
    psn: "830.00",
    acct: "100.00",
    cash: "730.00",
    balc: "0.00",
};

async fn refusals_person_and_policy(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    put_policy(&w.wuhai, WUHAI, JAN1, inpatient_only_policy()).await;
    let set_status =
        |p: &Psn, status: PersonStatus, t: InsuranceType| proto::SetPersonStatusRequest {
            request_id: rid(),
            psn_no: p.psn_no.clone(),
            status: status as i32,
            insurance_type: t as i32,
            reason: "test".into(),
        };

    // person_not_active: suspended after admission; reinstated, the same visit settles.
    let p = filed_employee(&w, 50, "100.00", ORDOS).await;
    let v = admitted_with_lines(&w, &p).await;
    w.wuhai
        .reg()
        .set_person_status(set_status(
            &p,
            PersonStatus::Suspended,
            InsuranceType::Unspecified,
        ))
        .await
        .must();
    refused_everywhere(&w, &p, &v, "person_not_active").await;
    nothing_written(&ts, &w, &p, &v, "100.00").await;
    w.wuhai
        .reg()
        .set_person_status(set_status(
            &p,
            PersonStatus::Active,
            InsuranceType::Unspecified,
        ))
        .await
        .must();
    assert_eq!(m(&settle(&w.h, &v.mdtrt_id, true).await), SMALL);

    // insurance_not_active: only the employee insurance suspended.
    let p = filed_employee(&w, 51, "100.00", ORDOS).await;
    let v = admitted_with_lines(&w, &p).await;
    w.wuhai
        .reg()
        .set_person_status(set_status(
            &p,
            PersonStatus::Suspended,
            InsuranceType::Employee,
        ))
        .await
        .must();
    refused_everywhere(&w, &p, &v, "insurance_not_active").await;
    nothing_written(&ts, &w, &p, &v, "100.00").await;

    // card_lost and card_frozen.
    for (seq, status, rule) in [
        (52, CardStatus::Lost, "card_lost"),
        (53, CardStatus::Frozen, "card_frozen"),
    ] {
        let card = format!("CARD1503000000{seq}");
        let p = enrol(
            &w.wuhai,
            proto::EnrolPersonRequest {
                card_no: card.clone(),
                ..employee(&national_id("150302", "19800101", seq), WUHAI, "100.00")
            },
        )
        .await;
        file(&w, &p.psn_no, FilingType::LongTermResident, ORDOS, "", "").await;
        let v = admitted_with_lines(&w, &p).await;
        w.wuhai
            .reg()
            .set_card_status(proto::SetCardStatusRequest {
                request_id: rid(),
                psn_no: p.psn_no.clone(),
                card_status: status as i32,
                new_card_no: String::new(),
            })
            .await
            .must();
        refused_everywhere(&w, &p, &v, rule).await;
        // Presenting the card itself.
        refused(
            w.h.clone()
                .open_visit(proto::OpenVisitRequest {
                    credential: Some(proto::PatientCredential {
                        credential: Some(proto::patient_credential::Credential::CardNo(card)),
                    }),
                    ..open_req(
                        &p.national_id,
                        InsuranceType::Employee,
                        CareType::Inpatient,
                        "",
                    )
                })
                .await,
            rule,
        );
        nothing_written(&ts, &w, &p, &v, "100.00").await;
    }

    // filing_required: the filing is revoked after admission.
    let p = wuhai_employee(&w, 54, "100.00").await;
    let f = file(&w, &p.psn_no, FilingType::Referral, ORDOS, "", "").await;
    let v = admitted_with_lines(&w, &p).await;
    w.wuhai
        .fil()
        .revoke_filing(proto::RevokeFilingRequest {
            request_id: rid(),
            filing_id: f.filing_id,
            reason: "moved back".into(),
        })
        .await
        .must();
    refused_everywhere(&w, &p, &v, "filing_required").await;
    nothing_written(&ts, &w, &p, &v, "100.00").await;

    // policy_missing: no rule for this care type (outpatient), and no rule for residents.
    let p = filed_employee(&w, 55, "100.00", ORDOS).await;
    let e = eligibility(
        &w.h,
        &p.national_id,
        InsuranceType::Employee,
        CareType::Outpatient,
        "",
    )
    .await;
    assert_eq!(
        (e.allowed, e.refusal_rule.as_str()),
        (false, "policy_missing")
    );
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
    let r = enrol(
        &w.wuhai,
        resident(&national_id("150302", "19900101", 56), WUHAI),
    )
    .await;
    file(&w, &r.psn_no, FilingType::LongTermResident, ORDOS, "", "").await;
    refused(
        try_open(
            &w.h,
            &r.national_id,
            InsuranceType::Resident,
            CareType::Inpatient,
            "",
        )
        .await,
        "policy_missing",
    );
    // insurance_not_held: the resident as an employee; the employee under maternity insurance.
    refused(
        try_open(
            &w.h,
            &r.national_id,
            InsuranceType::Employee,
            CareType::Inpatient,
            "",
        )
        .await,
        "insurance_not_held",
    );
    let e = eligibility(
        &w.h,
        &r.national_id,
        InsuranceType::Employee,
        CareType::Inpatient,
        "",
    )
    .await;
    assert_eq!(
        (e.allowed, e.refusal_rule.as_str()),
        (false, "insurance_not_held")
    );
    assert_eq!(e.account_balance, "", "a resident has no personal account");
    refused(
        try_open(
            &w.h,
            &p.national_id,
            InsuranceType::Maternity,
            CareType::Maternity,
            "",
        )
        .await,
        "insurance_not_held",
    );
    assert!(by_person(&ts, &p.psn_no).await.is_empty());
    assert!(by_person(&ts, &r.psn_no).await.is_empty());

    // policy_missing: the home region (Shizuishan) has no policy at all.
    let nx = enrol(
        &w.nx,
        employee(&national_id("640202", "19800101", 57), SHIZUISHAN, ""),
    )
    .await;
    w.nx.fil()
        .file_filing(proto::FileFilingRequest {
            request_id: rid(),
            psn_no: nx.psn_no.clone(),
            filing_type: FilingType::LongTermResident as i32,
            destination: ORDOS.into(),
            valid_from: String::new(),
            valid_until: String::new(),
            referring_institution: String::new(),
        })
        .await
        .must();
    let e = eligibility(
        &w.h,
        &nx.national_id,
        InsuranceType::Employee,
        CareType::Inpatient,
        "",
    )
    .await;
    assert_eq!(
        (e.allowed, e.refusal_rule.as_str()),
        (false, "policy_missing")
    );
    refused(
        try_open(
            &w.h,
            &nx.national_id,
            InsuranceType::Employee,
            CareType::Inpatient,
            "",
        )
        .await,
        "policy_missing",
    );

    // not_cross_region: an Ordos insured at an Ordos hospital.
    let local = enrol(
        &w.ordos,
        employee(&national_id("150602", "19800101", 58), ORDOS, ""),
    )
    .await;
    let e = eligibility(
        &w.h,
        &local.national_id,
        InsuranceType::Employee,
        CareType::Inpatient,
        "",
    )
    .await;
    assert_eq!(
        (e.allowed, e.refusal_rule.as_str()),
        (false, "not_cross_region")
    );
    refused(
        try_open(
            &w.h,
            &local.national_id,
            InsuranceType::Employee,
            CareType::Inpatient,
            "",
        )
        .await,
        "not_cross_region",
    );
    // Only the reinstated person's settlement was booked.
    verify_ok(&ts).await;
}

async fn refusals_institution(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    put_policy(&w.wuhai, WUHAI, JAN1, inpatient_only_policy()).await;
    let p = filed_employee(&w, 60, "100.00", ORDOS).await;
    let v = admitted_with_lines(&w, &p).await;
    let update = |status: Option<InstitutionStatus>, cross: Option<bool>, until: Option<String>| {
        proto::UpdateInstitutionRequest {
            request_id: rid(),
            code: HOSP.into(),
            name: None,
            status: status.map(|s| s as i32),
            cross_region_enabled: cross,
            valid_until: until,
        }
    };

    // institution_suspended (by the treatment region's bureau), then reactivated.
    w.ordos
        .reg()
        .update_institution(update(Some(InstitutionStatus::Suspended), None, None))
        .await
        .must();
    refused_everywhere(&w, &p, &v, "institution_suspended").await;
    nothing_written(&ts, &w, &p, &v, "100.00").await;
    w.ordos
        .reg()
        .update_institution(update(Some(InstitutionStatus::Active), None, None))
        .await
        .must();

    // institution_not_cross_region, then reopened.
    w.ordos
        .reg()
        .update_institution(update(None, Some(false), None))
        .await
        .must();
    refused_everywhere(&w, &p, &v, "institution_not_cross_region").await;
    nothing_written(&ts, &w, &p, &v, "100.00").await;
    w.ordos
        .reg()
        .update_institution(update(None, Some(true), None))
        .await
        .must();

    // institution_not_designated: designation ended yesterday.
    let yesterday = ymd(today().pred_opt().unwrap());
    w.ordos
        .reg()
        .update_institution(update(None, None, Some(yesterday)))
        .await
        .must();
    refused_everywhere(&w, &p, &v, "institution_not_designated").await;
    nothing_written(&ts, &w, &p, &v, "100.00").await;
    w.ordos
        .reg()
        .update_institution(update(None, None, Some(String::new())))
        .await
        .must();

    // A hospital registered without cross-region settlement.
    const CLOSED: &str = "H15060000004";
    w.op.reg()
        .register_institution(proto::RegisterInstitutionRequest {
            cross_region_enabled: false,
            ..hospital(CLOSED, ORDOS, 3)
        })
        .await
        .must();
    refused(
        try_open(
            &hosp(&ts, CLOSED).await,
            &p.national_id,
            InsuranceType::Employee,
            CareType::Inpatient,
            "",
        )
        .await,
        "institution_not_cross_region",
    );
    // An institution that is not registered at all.
    refused(
        try_open(
            &hosp(&ts, "H15060000009").await,
            &p.national_id,
            InsuranceType::Employee,
            CareType::Inpatient,
            "",
        )
        .await,
        "institution_not_registered",
    );
    nothing_written(&ts, &w, &p, &v, "100.00").await;

    // All restored: the visit settles with the expected figures.
    let s = settle(&w.h, &v.mdtrt_id, true).await;
    assert_eq!(m(&s), SMALL);
    assert_eq!(pacct(&w, &p.psn_no).await, "0.00");
    let r = reverse(&w.h, &s).await;
    assert_eq!(r.balance_after, "100.00");
    all_identities(&ts, &p.psn_no).await;
    verify_ok(&ts).await;
}

async fn rounding_class_c_and_no_account(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    // Employees: inpatient 0.85, outpatient 0.50, no deductibles; residents: inpatient 600.00
    // per admission, 0.70. This region lets the personal account pay class C.
    put_policy(
        &w.wuhai,
        WUHAI,
        JAN1,
        proto::PolicyBody {
            rules: vec![
                employee_rule(
                    CareType::Inpatient,
                    LevelScope::Any,
                    ProvinceScope::Any,
                    DeductibleBasis::PerAdmission,
                    "0.00",
                    "",
                    "0.85",
                    "",
                ),
                employee_rule(
                    CareType::Outpatient,
                    LevelScope::Any,
                    ProvinceScope::Any,
                    DeductibleBasis::Annual,
                    "0.00",
                    "",
                    "0.50",
                    "",
                ),
                proto::PolicyRule {
                    insurance_type: InsuranceType::Resident as i32,
                    category: PersonCategory::Resident as i32,
                    care_type: CareType::Inpatient as i32,
                    level: LevelScope::Any as i32,
                    province_scope: ProvinceScope::Any as i32,
                    deductible_basis: DeductibleBasis::PerAdmission as i32,
                    deductible: "600.00".into(),
                    repeat_admission_deductible: String::new(),
                    ratio: "0.70".into(),
                    annual_cap: String::new(),
                    critical_illness: None,
                    assistance: None,
                },
            ],
            filing_reductions: vec![],
            unfiled_allowed: false,
            unfiled_reduction: None,
            account_pays_class_c: true,
            pharmacy_national: false,
        },
    )
    .await;

    // Rounding, half-up, per line:
    //   1 ZZZ  3 × 0.335 = 1.005 → 1.01 fully self-paid
    //   2 D001 (B 0.20) 1 × 0.125 = 0.125 → 0.13; first self-paid 0.125 × 0.20 = 0.025 → 0.03;
    //          in scope 0.10
    //   3 E001 (A, cap 50.00) 1.5 × 50.005 = 75.0075 → 75.01; over-limit 0.005 × 1.5 = 0.0075 →
    //          0.01; in scope 75.00
    //   4 A001 0.3333 × 1.00 = 0.3333 → 0.33 in scope
    //   5 B001 (B 0.10, cap 100.00) 2 × 100.005 = 200.01; over-limit 0.01; first self-paid
    //          100.00 × 2 × 0.10 = 20.00; in scope 180.00
    //   6 ZZZ  refund of line 1, −1 × 0.335 = −0.335 → −0.34 (symmetric)
    // total 1.01 + 0.13 + 75.01 + 0.33 + 200.01 − 0.34 = 276.15; fully self-paid 0.67;
    // over-limit 0.02; first self-paid 20.03; in scope 0.10 + 75.00 + 0.33 + 180.00 = 255.43;
    // pooled 255.43 × 0.85 = 217.1155 → 217.12; personal 59.03, all from the account (class C
    // allowed here): balance 1000.00 → 940.97.
    let e1 = filed_employee(&w, 100, "1000.00", ORDOS).await;
    let v = admit(&w.h, &e1).await;
    let up = upload(
        &w.h,
        &v.mdtrt_id,
        vec![
            line("1", "ZZZ", "3", "0.335"),
            line("2", "D001", "1", "0.125"),
            line("3", "E001", "1.5", "50.005"),
            line("4", "A001", "0.3333", "1.00"),
            line("5", "B001", "2", "100.005"),
            refund("6", "1", "ZZZ", "-1", "0.335"),
        ],
    )
    .await;
    let got: Vec<[&str; 5]> = up
        .lines
        .iter()
        .map(|l| {
            [
                l.amount.as_str(),
                l.fulamt_ownpay_amt.as_str(),
                l.overlmt_selfpay.as_str(),
                l.preselfpay_amt.as_str(),
                l.inscp_scp_amt.as_str(),
            ]
        })
        .collect();
    assert_eq!(
        got,
        [
            ["1.01", "1.01", "0.00", "0.00", "0.00"],
            ["0.13", "0.00", "0.00", "0.03", "0.10"],
            ["75.01", "0.00", "0.01", "0.00", "75.00"],
            ["0.33", "0.00", "0.00", "0.00", "0.33"],
            ["200.01", "0.00", "0.01", "20.00", "180.00"],
            ["-0.34", "-0.34", "0.00", "0.00", "0.00"],
        ]
    );
    assert_eq!(up.unsettled_total, "276.15");
    let s = settle(&w.h, &v.mdtrt_id, true).await;
    assert_eq!(
        m(&s),
        M {
            medfee: "276.15",
            fulamt: "0.67",
            overlmt: "0.02",
            preself: "20.03",
            inscp: "255.43",
            dedc: "0.00",
            hifp: "217.12",
            hifmi: "0.00",
            maf: "0.00",
            fund: "217.12",
            psn: "59.03",
            acct: "59.03",
            cash: "0.00",
            balc: "940.97",
        }
    );
    // Exactly half a fen rounds up: outpatient 2.01 × 0.50 = 1.005 → 1.01; personal 1.00 from
    // the account: 940.97 → 939.97.
    let v = open(
        &w.h,
        &e1.national_id,
        InsuranceType::Employee,
        CareType::Outpatient,
        "",
    )
    .await;
    upload(&w.h, &v.mdtrt_id, a001("1", "2.01")).await;
    let s = settle(&w.h, &v.mdtrt_id, true).await;
    assert_eq!(
        m(&s),
        M {
            medfee: "2.01",
            fulamt: "0.00",
            overlmt: "0.00",
            preself: "0.00",
            inscp: "2.01",
            dedc: "0.00",
            hifp: "1.01",
            hifmi: "0.00",
            maf: "0.00",
            fund: "1.01",
            psn: "1.00",
            acct: "1.00",
            cash: "0.00",
            balc: "939.97",
        }
    );
    assert_eq!(pacct(&w, &e1.psn_no).await, "939.97");

    // The account pays class C here: C001 500.00 + A001 100.00; pooled 100.00 × 0.85 = 85.00;
    // personal 515.00, all from the account (600.00 → 85.00).
    let e2 = filed_employee(&w, 101, "600.00", ORDOS).await;
    let v = admit(&w.h, &e2).await;
    upload(
        &w.h,
        &v.mdtrt_id,
        vec![
            line("1", "C001", "1", "500.00"),
            line("2", "A001", "1", "100.00"),
        ],
    )
    .await;
    let s = settle(&w.h, &v.mdtrt_id, true).await;
    assert_eq!(
        m(&s),
        M {
            medfee: "600.00",
            fulamt: "500.00",
            overlmt: "0.00",
            preself: "0.00",
            inscp: "100.00",
            dedc: "0.00",
            hifp: "85.00",
            hifmi: "0.00",
            maf: "0.00",
            fund: "85.00",
            psn: "515.00",
            acct: "515.00",
            cash: "0.00",
            balc: "85.00",
        }
    );

    // A resident has no personal account: use_account pays nothing, balance_after is "".
    // The reference bill: in scope 10270.00; deductible 600.00; pooled (10270.00 − 600.00) ×
    // 0.70 = 6769.00; personal 10860.67 − 6769.00 = 4091.67, all cash.
    let r = enrol(
        &w.wuhai,
        resident(&national_id("150302", "19900101", 102), WUHAI),
    )
    .await;
    file(&w, &r.psn_no, FilingType::LongTermResident, ORDOS, "", "").await;
    let e = eligibility(
        &w.h,
        &r.national_id,
        InsuranceType::Resident,
        CareType::Inpatient,
        "",
    )
    .await;
    assert!(e.allowed, "{e:?}");
    assert_eq!(
        (e.account_balance.as_str(), e.effective_ratio.as_str()),
        ("", "0.7")
    );
    let v = open(
        &w.h,
        &r.national_id,
        InsuranceType::Resident,
        CareType::Inpatient,
        "",
    )
    .await;
    upload(
        &w.h,
        &v.mdtrt_id,
        vec![
            line("1", "A001", "10", "1000.00"),
            line("2", "B001", "3", "120.00"),
            line("3", "C001", "1", "500.00"),
            line("4", "ZZZ", "2", "0.335"),
        ],
    )
    .await;
    let s = settle(&w.h, &v.mdtrt_id, true).await;
    assert_eq!(
        m(&s),
        M {
            medfee: "10860.67",
            fulamt: "500.67",
            overlmt: "60.00",
            preself: "30.00",
            inscp: "10270.00",
            dedc: "600.00",
            hifp: "6769.00",
            hifmi: "0.00",
            maf: "0.00",
            fund: "6769.00",
            psn: "4091.67",
            acct: "0.00",
            cash: "4091.67",
            balc: "",
        }
    );
    let funds: Vec<_> = s.funds.iter().map(|f| f.fund_pay_type.as_str()).collect();
    assert_eq!(funds, ["390100"]);
    let rev = reverse(&w.h, &s).await;
    assert_eq!(rev.balance_after, "");
    for p in [&e1, &e2, &r] {
        all_identities(&ts, &p.psn_no).await;
    }
    verify_ok(&ts).await;
}

//! PharmacyService end to end: the card swipe (LookupCard → PreSettlePurchase → SettlePurchase),
//! refunds of the whole purchase or chosen lines, 冲正 by request id, with hand-computed figures
//! asserted to the fen; the province scope of pharmacy swipes, the pooled-fund layer where the
//! home policy has a pharmacy rule, the personal-account options, the refusals and the bad inputs.
//! Every test builds its own world over gRPC and runs on SQLite and on PostgreSQL, each on a
//! fresh database.

#[macro_use]
mod common;

use common::*;
use kit::*;
use medsettle::proto;
use medsettle::proto::pharmacy_service_server::PharmacyService;
use proto::{
    CardStatus, CareType, CatalogueClass, DeductibleBasis, InstitutionStatus, InsuranceType,
    LevelScope, PersonStatus, ProvinceScope, SettlementKind,
};
use tonic::Code;

both_engines!(
    swipe_refund_flow,
    province_scope,
    pooled_fund_at_pharmacies,
    account_options,
    class_c_from_the_account,
    refusals,
    bad_inputs,
    partial_refunds,
    refund_permissions_and_reversals,
    idempotency,
    answers_equal_stored,
    settlements_by_person_across_merges,
    institution_reads_across_merges,
    upgrade_to_request_ids_once,
    person_changes_reach_the_next_swipe,
    request_ids_across_merges,
    personal_journal_through_settlements,
);

// ------------------------------------------------------------------------------ reference

/// The reference purchase at P15060000001 (Ordos catalogue):
///   1 A001 class A                       2 × 35.50 =  71.00 in scope
///   2 B001 class B 0.10, cap 100.00      3 × 120.00 = 360.00: over-limit (120 − 100) × 3 = 60.00,
///                                        first self-paid 100 × 3 × 0.10 = 30.00, in scope 270.00
///   3 C001 class C                       1 × 20.00 =  20.00 fully self-paid
fn reference_lines() -> Vec<proto::PurchaseLine> {
    vec![
        pl("1", "A001", "2", "35.50"),
        pl("2", "B001", "3", "120.00"),
        pl("3", "C001", "1", "20.00"),
    ]
}

/// A Wuhai employee with 300.00, under Wuhai's policy (no pharmacy rule: the pooled fund pays
/// nothing; the account may not pay class C):
///   total 71.00 + 360.00 + 20.00 = 451.00; fully self-paid 20.00; over-limit 60.00;
///   first self-paid 30.00; in scope 71.00 + 270.00 = 341.00; deductible 0.00; fund 0.00;
///   personal part 451.00; account min(451.00 − 20.00, 300.00) = 300.00; cash 151.00;
///   balance after 300.00 − 300.00 = 0.00.
const REFERENCE: M<'static> = M {
    medfee: "451.00",
    fulamt: "20.00",
    overlmt: "60.00",
    preself: "30.00",
    inscp: "341.00",
    dedc: "0.00",
    hifp: "0.00",
    hifmi: "0.00",
    maf: "0.00",
    fund: "0.00",
    psn: "451.00",
    acct: "300.00",
    cash: "151.00",
    balc: "0.00",
};

/// Refund of 1 × B001 (line 2) of the reference purchase. Kept: 2 × A001 71.00; 2 × B001 240.00
/// (over-limit 40.00, first self-paid 20.00, in scope 180.00); C001 20.00: total 331.00, in scope
/// 251.00, account min(331.00 − 20.00, 300.00) = 300.00, cash 31.00. The refund is kept − before:
///   medfee 331.00 − 451.00 = −120.00; over-limit 40 − 60 = −20.00; first self-paid 20 − 30 =
///   −10.00; in scope 251 − 341 = −90.00; account 300 − 300 = 0.00; cash 31 − 151 = −120.00;
///   balance stays 0.00.
const REFUND_ONE_B: M<'static> = M {
    medfee: "-120.00",
    fulamt: "0.00",
    overlmt: "-20.00",
    preself: "-10.00",
    inscp: "-90.00",
    dedc: "0.00",
    hifp: "0.00",
    hifmi: "0.00",
    maf: "0.00",
    fund: "0.00",
    psn: "-120.00",
    acct: "0.00",
    cash: "-120.00",
    balc: "0.00",
};

/// Then everything left (331.00 kept → nothing kept): every kept amount negated; the account gets
/// its 300.00 back, cash −31.00; balance 0.00 + 300.00 = 300.00.
const REFUND_REST: M<'static> = M {
    medfee: "-331.00",
    fulamt: "-20.00",
    overlmt: "-40.00",
    preself: "-20.00",
    inscp: "-251.00",
    dedc: "0.00",
    hifp: "0.00",
    hifmi: "0.00",
    maf: "0.00",
    fund: "0.00",
    psn: "-331.00",
    acct: "-300.00",
    cash: "-31.00",
    balc: "300.00",
};

/// The reference purchase's lines as answered.
fn reference_line_results() -> Vec<L> {
    let (a, b, c) = (
        CatalogueClass::A as i32,
        CatalogueClass::B as i32,
        CatalogueClass::C as i32,
    );
    vec![
        L::new("1", "A001", "2", "35.50", "71.00", a)
            .split("0.00", "0.00", "0.00", "71.00")
            .refunded("0"),
        L::new("2", "B001", "3", "120.00", "360.00", b)
            .split("0.00", "60.00", "30.00", "270.00")
            .refunded("0"),
        L::new("3", "C001", "1", "20.00", "20.00", c)
            .split("20.00", "0.00", "0.00", "0.00")
            .refunded("0"),
    ]
}

// ------------------------------------------------------------------------------ tests

async fn swipe_refund_flow(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    let p = person(&w, WUHAI, 1, "300.00").await;
    assert_eq!(pacct(&w, &p.psn_no).await, "300.00");

    // ---- LookupCard: masked holder, balance, allowed inside the province.
    let h = lookup(&w.ph, card(&p)).await.must();
    assert_eq!(h.psn_no, p.psn_no);
    let masked = format!("{}********{}", &p.national_id[..6], &p.national_id[14..]);
    assert_eq!(h.national_id_masked, masked);
    assert_eq!(h.name_masked, "张*");
    assert_eq!(h.home_region, WUHAI);
    assert_eq!(h.account_balance, "300.00");
    assert!(h.allowed, "{h:?}");
    assert_eq!(h.refusal_rule, "");
    let held: Vec<_> = h
        .insurances
        .iter()
        .map(|i| (i.insurance_type, i.category, i.status))
        .collect();
    assert_eq!(
        held,
        [(
            InsuranceType::Employee as i32,
            proto::PersonCategory::Active as i32,
            PersonStatus::Active as i32
        )]
    );
    // By e-voucher: the same holder.
    assert_eq!(lookup(&w.ph, ev(&p)).await.must(), h);

    // ---- PreSettlePurchase: the reference figures, nothing written.
    let before = snapshot(&ts, &w, &p).await;
    let pre = pre_settle(&w.ph, card(&p), reference_lines(), true).await;
    assert_eq!(m(&pre), REFERENCE);
    assert_eq!(pre.kind, SettlementKind::Settlement as i32);
    assert_eq!(pre.care_type, CareType::Pharmacy as i32);
    assert_eq!(pre.line_count, 3);
    assert_eq!(
        (
            pre.psn_no.as_str(),
            pre.home_region.as_str(),
            pre.treatment_region.as_str(),
            pre.institution.as_str(),
            pre.mdtrt_id.as_str()
        ),
        (p.psn_no.as_str(), WUHAI, ORDOS, PH, "")
    );
    let x = pre.explanation.clone().expect("explanation");
    assert_eq!(x.policy_region, WUHAI);
    assert_eq!(x.policy_version, 1);
    assert_eq!(canon(&x.base_ratio), "0");
    assert_eq!(canon(&x.effective_ratio), "0");
    assert!(x.filing.is_none(), "a pharmacy purchase needs no filing");
    assert_eq!(x.level, LevelScope::Pharmacy as i32);
    assert_eq!(x.province, ProvinceScope::InProvince as i32);
    assert_eq!(
        snapshot(&ts, &w, &p).await,
        before,
        "pre-settle wrote something"
    );
    // By e-voucher: the same figures.
    let pre_ev = pre_settle(&w.ph, ev(&p), reference_lines(), true).await;
    assert_eq!(m(&pre_ev), REFERENCE);
    verify_ok(&ts).await;

    // ---- SettlePurchase by card number: the same figures, booked.
    let s_rid = rid();
    let purchase = swipe(&w.ph, swipe_req(&s_rid, card(&p), reference_lines(), true)).await;
    let s = purchase.settlement.clone().unwrap();
    assert_eq!(m(&s), REFERENCE);
    assert_eq!(m(&s), m(&pre), "pre-settlement = settlement");
    assert_eq!(s.explanation, pre.explanation);
    assert_eq!(s.request_id, s_rid);
    assert!(!s.journal_id.is_empty());
    assert_eq!((s.reverses.as_str(), s.reversed_by.as_str()), ("", ""));
    assert_eq!(
        (
            s.psn_no.as_str(),
            s.home_region.as_str(),
            s.treatment_region.as_str(),
            s.institution.as_str(),
            s.mdtrt_id.as_str()
        ),
        (p.psn_no.as_str(), WUHAI, ORDOS, PH, "")
    );
    assert_eq!(s.insurance_type, InsuranceType::Employee as i32);
    assert_eq!(s.care_type, CareType::Pharmacy as i32);
    assert_eq!(s.business_date, ymd(today()));
    assert_eq!(s.clearing_period, ymd(today())[..7].replace('-', ""));
    assert_eq!(s.line_count, 3);
    assert_eq!(funds(&s), [("310200".to_owned(), "300.00".to_owned())]);
    assert_eq!(lines_of(&purchase), reference_line_results());
    assert_eq!(pacct(&w, &p.psn_no).await, "0.00", "= balance_after");
    // GetPurchase answers the same purchase.
    let got = get_purchase(&w.ph, &s.setl_id).await.must();
    assert_eq!(micros_p(&got), micros_p(&purchase));
    // The holder's balance as the counter sees it now.
    assert_eq!(lookup(&w.ph, card(&p)).await.must().account_balance, "0.00");
    verify_ok(&ts).await;

    // ---- Refund 1 × B001.
    let r1 = refund(&w.ph, &s.setl_id, &[("2", "1")]).await;
    let r1s = r1.settlement.clone().unwrap();
    assert_eq!(m(&r1s), REFUND_ONE_B);
    assert_eq!(r1s.line_count, 1);
    assert_eq!(
        lines_of(&r1),
        [L::new(
            "2",
            "B001",
            "-1",
            "120.00",
            "-120.00",
            CatalogueClass::B as i32
        )
        .split("0.00", "-20.00", "-10.00", "-90.00")
        .refunded("0")]
    );
    assert_eq!(pacct(&w, &p.psn_no).await, "0.00");
    let got = get_purchase(&w.ph, &s.setl_id).await.must();
    assert_eq!(refunded(&got), [("1", "0"), ("2", "1"), ("3", "0")]);
    assert_eq!(got.settlement.as_ref().unwrap().reversed_by, "");
    // The refund itself can be read back with its lines.
    let got_r1 = get_purchase(&w.ph, &r1s.setl_id).await.must();
    assert_eq!(lines_of(&got_r1), lines_of(&r1));
    assert_eq!(m(got_r1.settlement.as_ref().unwrap()), REFUND_ONE_B);
    verify_ok(&ts).await;

    // ---- Refund everything left.
    let r2 = refund(&w.ph, &s.setl_id, &[]).await;
    let r2s = r2.settlement.clone().unwrap();
    assert_eq!(m(&r2s), REFUND_REST);
    let r2_lines: Vec<_> = r2
        .lines
        .iter()
        .map(|l| (l.line_no.as_str(), l.quantity.as_str(), l.amount.as_str()))
        .collect();
    assert_eq!(
        r2_lines,
        [
            ("1", "-2", "-71.00"),
            ("2", "-2", "-240.00"),
            ("3", "-1", "-20.00")
        ]
    );
    assert_eq!(pacct(&w, &p.psn_no).await, "300.00");
    let got = get_purchase(&w.ph, &s.setl_id).await.must();
    assert_eq!(refunded(&got), [("1", "2"), ("2", "3"), ("3", "1")]);
    assert_eq!(got.settlement.as_ref().unwrap().reversed_by, r2s.setl_id);

    // Purchase + refunds = the adjudication of what is kept (nothing): every sum is 0.00.
    let all = [s.clone(), r1s.clone(), r2s.clone()];
    assert_eq!(sums(&all), M13::zero());

    // ---- A third refund: nothing is left.
    refused(try_refund(&w.ph, &s.setl_id, &[]).await, "already_refunded");
    refused(
        try_refund(&w.ph, &s.setl_id, &[("1", "1")]).await,
        "already_refunded",
    );
    assert_eq!(pacct(&w, &p.psn_no).await, "300.00");
    verify_ok(&ts).await;

    // ---- SettlePurchase by e-voucher: the reference figures again (balance back at 300.00).
    let ev_rid = rid();
    let pe = swipe(&w.ph, swipe_req(&ev_rid, ev(&p), reference_lines(), true)).await;
    let pes = pe.settlement.clone().unwrap();
    assert_eq!(m(&pes), REFERENCE);
    assert_eq!(pes.psn_no, p.psn_no);
    assert_eq!(lines_of(&pe), reference_line_results());
    assert_eq!(pacct(&w, &p.psn_no).await, "0.00");

    // ---- 冲正 of that swipe's request id: refunded in full.
    let rev = reverse_by_request(&w.ph, &ev_rid).await.must();
    assert!(rev.found);
    let revs = rev.reversal.expect("the refund");
    assert_eq!(revs.kind, SettlementKind::Reversal as i32);
    assert_eq!(revs.reverses, pes.setl_id);
    assert_eq!(
        m13(&revs),
        negated(&m13(&pes)),
        "a full refund negates the purchase"
    );
    assert_eq!(revs.balance_after, "300.00");
    assert_eq!(pacct(&w, &p.psn_no).await, "300.00");
    let got = get_purchase(&w.ph, &pes.setl_id).await.must();
    assert_eq!(refunded(&got), [("1", "2"), ("2", "3"), ("3", "1")]);
    assert_eq!(got.settlement.unwrap().reversed_by, revs.setl_id);

    // The ledger agrees with balance_after throughout; the books verify.
    assert_eq!(
        balance(&w.op, &format!("pacct:{}", p.psn_no)).await.balance,
        revs.balance_after
    );
    // What the pharmacy is owed: every purchase's fund + account, net of refunds: 0.00.
    assert_eq!(balance(&w.op, &format!("inst:{PH}")).await.balance, "0.00");
    verify_ok(&ts).await;
}

async fn province_scope(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    // A Wuhai employee (pharmacy_national = false) at the Shizuishan pharmacy (province 64).
    let p = person(&w, WUHAI, 1, "300.00").await;
    let before = snapshot(&ts, &w, &p).await;
    let s = refused(
        w.ph_nx
            .clone()
            .settle_purchase(swipe_req(&rid(), card(&p), nx_lines(), true))
            .await,
        "pharmacy_out_of_province",
    );
    assert!(s.message().contains("15"), "{}", s.message());
    refused(
        w.ph_nx
            .clone()
            .settle_purchase(swipe_req(&rid(), ev(&p), nx_lines(), false))
            .await,
        "pharmacy_out_of_province",
    );
    refused(
        w.ph_nx
            .clone()
            .pre_settle_purchase(pre_req(card(&p), nx_lines(), true))
            .await,
        "pharmacy_out_of_province",
    );
    let h = lookup(&w.ph_nx, card(&p)).await.must();
    assert!(!h.allowed, "{h:?}");
    assert_eq!(h.refusal_rule, "pharmacy_out_of_province");
    assert_eq!(h.psn_no, p.psn_no);
    assert_eq!(h.account_balance, "300.00");
    assert_eq!(
        snapshot(&ts, &w, &p).await,
        before,
        "a refusal wrote something"
    );
    // Inside the home province the same person may swipe.
    let h = lookup(&w.ph, card(&p)).await.must();
    assert!(h.allowed && h.refusal_rule.is_empty(), "{h:?}");

    // A Baotou employee (pharmacy_national = true): allowed at both pharmacies.
    let q = person(&w, BAOTOU, 2, "100.00").await;
    for ph in [&w.ph, &w.ph_nx] {
        let h = lookup(ph, card(&q)).await.must();
        assert!(h.allowed && h.refusal_rule.is_empty(), "{h:?}");
        assert_eq!(h.home_region, BAOTOU);
    }
    // 1 × C001 at 5.00 in Shizuishan: fully self-paid, no fund, the account may not pay class C:
    // cash 5.00, the account untouched.
    let got = swipe(
        &w.ph_nx,
        swipe_req(&rid(), card(&q), vec![pl("1", "C001", "1", "5.00")], true),
    )
    .await
    .settlement
    .unwrap();
    assert_eq!(
        m(&got),
        M {
            medfee: "5.00",
            fulamt: "5.00",
            overlmt: "0.00",
            preself: "0.00",
            inscp: "0.00",
            dedc: "0.00",
            hifp: "0.00",
            hifmi: "0.00",
            maf: "0.00",
            fund: "0.00",
            psn: "5.00",
            acct: "0.00",
            cash: "5.00",
            balc: "100.00",
        }
    );
    assert_eq!(got.treatment_region, SHIZUISHAN);
    let x = got.explanation.unwrap();
    assert_eq!(x.province, ProvinceScope::OutOfProvince as i32);
    assert_eq!(x.policy_region, BAOTOU);
    verify_ok(&ts).await;
}

async fn pooled_fund_at_pharmacies(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    // A Baotou employee with 500.00. Baotou's pharmacy rule: annual deductible 100.00, ratio
    // 0.50, no cap; pharmacies anywhere in the country.
    let p = person(&w, BAOTOU, 1, "500.00").await;
    let year = ymd(today())[..4].parse::<u32>().unwrap();

    // ---- P1 at Ordos (in province): 2 × A001 35.50 = 71.00 in scope.
    //   deductible min(71.00, 100.00) = 71.00; pooled (71.00 − 71.00) × 0.50 = 0.00;
    //   personal 71.00; account min(71.00, 500.00) = 71.00; cash 0.00; balance 429.00.
    let p1 = swipe(
        &w.ph,
        swipe_req(&rid(), card(&p), vec![pl("1", "A001", "2", "35.50")], true),
    )
    .await
    .settlement
    .unwrap();
    assert_eq!(
        m(&p1),
        M {
            medfee: "71.00",
            fulamt: "0.00",
            overlmt: "0.00",
            preself: "0.00",
            inscp: "71.00",
            dedc: "71.00",
            hifp: "0.00",
            hifmi: "0.00",
            maf: "0.00",
            fund: "0.00",
            psn: "71.00",
            acct: "71.00",
            cash: "0.00",
            balc: "429.00",
        }
    );
    let x = p1.explanation.clone().unwrap();
    assert_eq!(x.policy_region, BAOTOU);
    assert_eq!(canon(&x.base_ratio), "0.5");
    assert_eq!(canon(&x.effective_ratio), "0.5");
    assert_eq!(x.deductible_basis, DeductibleBasis::Annual as i32);
    assert_eq!(x.deductible_outstanding, "100.00");
    assert_eq!(x.annual_cap_remaining, "");
    assert_eq!(x.level, LevelScope::Pharmacy as i32);
    assert_eq!(x.province, ProvinceScope::InProvince as i32);
    assert!(x.filing.is_none());

    // ---- P2 at Shizuishan (out of province; Shizuishan catalogue):
    //   1 A001 class A                  3 × 25.01 =  75.03 in scope
    //   2 B001 class B 0.20, cap 50.00  2 × 60.00 = 120.00: over-limit (60 − 50) × 2 = 20.00,
    //                                   first self-paid 50 × 2 × 0.20 = 20.00, in scope 80.00
    //   3 C001 class C                  1 × 9.99  =   9.99 fully self-paid
    //   total 205.02; in scope 155.03; deductible outstanding 100.00 − 71.00 = 29.00 → 29.00;
    //   pooled (155.03 − 29.00) × 0.50 = 63.015 → 63.02 (half-up); personal 205.02 − 63.02 =
    //   142.00; account min(142.00 − 9.99, 429.00) = 132.01; cash 9.99; balance 296.99.
    let p2 = swipe(&w.ph_nx, swipe_req(&rid(), card(&p), nx_lines(), true)).await;
    let p2s = p2.settlement.clone().unwrap();
    assert_eq!(
        m(&p2s),
        M {
            medfee: "205.02",
            fulamt: "9.99",
            overlmt: "20.00",
            preself: "20.00",
            inscp: "155.03",
            dedc: "29.00",
            hifp: "63.02",
            hifmi: "0.00",
            maf: "0.00",
            fund: "63.02",
            psn: "142.00",
            acct: "132.01",
            cash: "9.99",
            balc: "296.99",
        }
    );
    assert_eq!(
        funds(&p2s),
        [
            ("310100".to_owned(), "63.02".to_owned()),
            ("310200".to_owned(), "132.01".to_owned())
        ]
    );
    let x = p2s.explanation.clone().unwrap();
    assert_eq!(x.deductible_outstanding, "29.00");
    assert_eq!(x.province, ProvinceScope::OutOfProvince as i32);
    let acc = x.before.unwrap();
    assert_eq!(acc.year, year);
    assert_eq!(acc.annual_deductible, "71.00");
    assert_eq!(acc.pooled_fund, "0.00");
    assert_eq!(pacct(&w, &p.psn_no).await, "296.99");

    // ---- Refund 1 × A001 of P2. Kept: 2 × 25.01 = 50.02; B 120.00 (in scope 80.00); C 9.99:
    //   total 180.01; in scope 130.02; deductible 29.00 (the purchase's snapshot);
    //   pooled (130.02 − 29.00) × 0.50 = 50.51; personal 180.01 − 50.51 = 129.50;
    //   account min(129.50 − 9.99, 429.00) = 119.51; cash 9.99.
    //   Refund = kept − before: medfee −25.01, in scope −25.01, deductible 0.00,
    //   pooled 50.51 − 63.02 = −12.51, personal 129.50 − 142.00 = −12.50,
    //   account 119.51 − 132.01 = −12.50, cash 0.00; balance 296.99 + 12.50 = 309.49.
    let r1 = refund(&w.ph_nx, &p2s.setl_id, &[("1", "1")]).await;
    let r1s = r1.settlement.clone().unwrap();
    assert_eq!(
        m(&r1s),
        M {
            medfee: "-25.01",
            fulamt: "0.00",
            overlmt: "0.00",
            preself: "0.00",
            inscp: "-25.01",
            dedc: "0.00",
            hifp: "-12.51",
            hifmi: "0.00",
            maf: "0.00",
            fund: "-12.51",
            psn: "-12.50",
            acct: "-12.50",
            cash: "0.00",
            balc: "309.49",
        }
    );

    // ---- P4 at Ordos: the deductible is used up (71.00 + 29.00 = 100.00).
    //   1 × A001 35.50 in scope; deductible 0.00; pooled 35.50 × 0.50 = 17.75; personal 17.75;
    //   account 17.75; balance 309.49 − 17.75 = 291.74.
    let p4 = swipe(
        &w.ph,
        swipe_req(&rid(), ev(&p), vec![pl("1", "A001", "1", "35.50")], true),
    )
    .await
    .settlement
    .unwrap();
    assert_eq!(
        m(&p4),
        M {
            medfee: "35.50",
            fulamt: "0.00",
            overlmt: "0.00",
            preself: "0.00",
            inscp: "35.50",
            dedc: "0.00",
            hifp: "17.75",
            hifmi: "0.00",
            maf: "0.00",
            fund: "17.75",
            psn: "17.75",
            acct: "17.75",
            cash: "0.00",
            balc: "291.74",
        }
    );
    let x = p4.explanation.clone().unwrap();
    assert_eq!(x.deductible_outstanding, "0.00");
    let acc = x.before.unwrap();
    assert_eq!(acc.annual_deductible, "100.00");
    assert_eq!(acc.pooled_fund, "50.51", "63.02 − 12.51");

    // ---- Refund the rest of P2: every kept amount negated.
    //   medfee −180.01, fully self-paid −9.99, over-limit −20.00, first self-paid −20.00,
    //   in scope −130.02, deductible −29.00, pooled −50.51, personal −129.50, account −119.51,
    //   cash −9.99; balance 291.74 + 119.51 = 411.25.
    let r2 = refund(&w.ph_nx, &p2s.setl_id, &[]).await;
    let r2s = r2.settlement.clone().unwrap();
    assert_eq!(
        m(&r2s),
        M {
            medfee: "-180.01",
            fulamt: "-9.99",
            overlmt: "-20.00",
            preself: "-20.00",
            inscp: "-130.02",
            dedc: "-29.00",
            hifp: "-50.51",
            hifmi: "0.00",
            maf: "0.00",
            fund: "-50.51",
            psn: "-129.50",
            acct: "-119.51",
            cash: "-9.99",
            balc: "411.25",
        }
    );
    // P2 + its refunds = nothing kept.
    assert_eq!(sums(&[p2s.clone(), r1s.clone(), r2s.clone()]), M13::zero());
    // 500.00 − 71.00 − 132.01 + 12.50 − 17.75 + 119.51 = 411.25.
    assert_eq!(pacct(&w, &p.psn_no).await, "411.25");

    // ---- The deductible paid is back at 71.00: a pre-settlement of 2 × A001 25.01 = 50.02 in
    //   scope at Shizuishan pays deductible 29.00 again; pooled (50.02 − 29.00) × 0.50 = 10.51;
    //   personal 39.51, all from the account.
    let pre = pre_settle(
        &w.ph_nx,
        card(&p),
        vec![pl("1", "A001", "2", "25.01")],
        true,
    )
    .await;
    assert_eq!(
        m(&pre),
        M {
            medfee: "50.02",
            fulamt: "0.00",
            overlmt: "0.00",
            preself: "0.00",
            inscp: "50.02",
            dedc: "29.00",
            hifp: "10.51",
            hifmi: "0.00",
            maf: "0.00",
            fund: "10.51",
            psn: "39.51",
            acct: "39.51",
            cash: "0.00",
            balc: "371.74",
        }
    );
    let acc = pre.explanation.unwrap().before.unwrap();
    assert_eq!(acc.annual_deductible, "71.00");
    assert_eq!(
        acc.pooled_fund, "17.75",
        "0.00 + 63.02 − 12.51 + 17.75 − 50.51"
    );

    // The ledger: Baotou's pooled fund paid 17.75 net (P4 only); Shizuishan is owed nothing net.
    assert_eq!(
        balance(&w.op, &format!("fund:{BAOTOU}")).await.balance,
        "-17.75"
    );
    assert_eq!(
        balance(&w.op, &format!("due:{BAOTOU}->{SHIZUISHAN}"))
            .await
            .balance,
        "0.00"
    );
    // Ordos is owed P1 (71.00 account) + P4 (17.75 fund + 17.75 account) = 106.50.
    assert_eq!(
        balance(&w.op, &format!("due:{BAOTOU}->{ORDOS}"))
            .await
            .balance,
        "106.50"
    );
    verify_ok(&ts).await;
}

async fn account_options(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;

    // ---- account_only with a short balance (300.00 < 431.00 the account could pay).
    let p = person(&w, WUHAI, 1, "300.00").await;
    let before = snapshot(&ts, &w, &p).await;
    let req = proto::SettlePurchaseRequest {
        account_only: true,
        ..swipe_req(&rid(), card(&p), reference_lines(), true)
    };
    refused(
        w.ph.clone().settle_purchase(req.clone()).await,
        "insufficient_balance",
    );
    // Class C can never come from this account: 1 × C001 refused under account_only too.
    refused(
        w.ph.clone()
            .settle_purchase(proto::SettlePurchaseRequest {
                account_only: true,
                ..swipe_req(&rid(), card(&p), vec![pl("1", "C001", "1", "1.00")], true)
            })
            .await,
        "insufficient_balance",
    );
    assert_eq!(
        snapshot(&ts, &w, &p).await,
        before,
        "a refusal wrote something"
    );

    // ---- account_only with enough: 2 × A001 + 1 × B001 at 90.00 (under the cap):
    //   71.00 + 90.00 = 161.00; first self-paid 90.00 × 0.10 = 9.00; in scope 152.00;
    //   personal 161.00 = account; cash 0.00; balance 300.00 − 161.00 = 139.00.
    let ok = swipe(
        &w.ph,
        proto::SettlePurchaseRequest {
            account_only: true,
            // account_only implies paying from the account, even without use_account.
            ..swipe_req(
                &rid(),
                card(&p),
                vec![pl("1", "A001", "2", "35.50"), pl("2", "B001", "1", "90.00")],
                false,
            )
        },
    )
    .await
    .settlement
    .unwrap();
    assert_eq!(
        m(&ok),
        M {
            medfee: "161.00",
            fulamt: "0.00",
            overlmt: "0.00",
            preself: "9.00",
            inscp: "152.00",
            dedc: "0.00",
            hifp: "0.00",
            hifmi: "0.00",
            maf: "0.00",
            fund: "0.00",
            psn: "161.00",
            acct: "161.00",
            cash: "0.00",
            balc: "139.00",
        }
    );
    assert_eq!(ok.acct_pay, ok.psn_part_amt);
    assert_eq!(pacct(&w, &p.psn_no).await, "139.00");

    // ---- expected_total: a mismatch is refused and writes nothing; the right total passes.
    let before = snapshot(&ts, &w, &p).await;
    refused(
        w.ph.clone()
            .settle_purchase(proto::SettlePurchaseRequest {
                expected_total: "451.01".into(),
                ..swipe_req(&rid(), card(&p), reference_lines(), true)
            })
            .await,
        "total_mismatch",
    );
    assert_eq!(snapshot(&ts, &w, &p).await, before);

    // ---- use_account = false: no account, all cash; balance unchanged.
    let cash = swipe(
        &w.ph,
        proto::SettlePurchaseRequest {
            expected_total: "451.00".into(),
            ..swipe_req(&rid(), card(&p), reference_lines(), false)
        },
    )
    .await
    .settlement
    .unwrap();
    assert_eq!(
        m(&cash),
        M {
            acct: "0.00",
            cash: "451.00",
            balc: "139.00",
            ..REFERENCE
        }
    );
    assert!(cash.funds.is_empty(), "{:?}", cash.funds);
    // The pre-settlement without the account agrees.
    let pre = pre_settle(&w.ph, ev(&p), reference_lines(), false).await;
    assert_eq!(m(&pre), m(&cash));
    // With the account: min(431.00, 139.00) = 139.00; cash 312.00; balance 0.00.
    let part = swipe(&w.ph, swipe_req(&rid(), ev(&p), reference_lines(), true))
        .await
        .settlement
        .unwrap();
    assert_eq!(
        m(&part),
        M {
            acct: "139.00",
            cash: "312.00",
            ..REFERENCE
        }
    );
    assert_eq!(pacct(&w, &p.psn_no).await, "0.00");

    // ---- A resident (390) has no personal account: use_account pays nothing, balance_after
    // is "" (no account); account_only is refused.
    let r = resident_with_card(&w, 7).await;
    let h = lookup(&w.ph, card(&r)).await.must();
    assert_eq!(h.account_balance, "");
    assert!(h.allowed, "{h:?}");
    let one_a = || vec![pl("1", "A001", "1", "35.50")];
    let s = swipe(
        &w.ph,
        proto::SettlePurchaseRequest {
            insurance_type: InsuranceType::Resident as i32,
            ..swipe_req(&rid(), card(&r), one_a(), true)
        },
    )
    .await
    .settlement
    .unwrap();
    assert_eq!(
        (
            s.psn_part_amt.as_str(),
            s.acct_pay.as_str(),
            s.psn_cash_pay.as_str(),
            s.balance_after.as_str()
        ),
        ("35.50", "0.00", "35.50", "")
    );
    assert_eq!(s.insurance_type, InsuranceType::Resident as i32);
    refused(
        w.ph.clone()
            .settle_purchase(proto::SettlePurchaseRequest {
                insurance_type: InsuranceType::Resident as i32,
                account_only: true,
                ..swipe_req(&rid(), card(&r), one_a(), true)
            })
            .await,
        "insufficient_balance",
    );
    verify_ok(&ts).await;
}

async fn class_c_from_the_account(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    // A Hohhot employee with 1000.00: Hohhot lets the account pay class C (no pharmacy rule).
    //   The reference purchase: personal 451.00; account min(451.00, 1000.00) = 451.00 (class C
    //   included); cash 0.00; balance 549.00.
    let p = person(&w, HOHHOT, 1, "1000.00").await;
    let s = swipe(&w.ph, swipe_req(&rid(), card(&p), reference_lines(), true))
        .await
        .settlement
        .unwrap();
    assert_eq!(
        m(&s),
        M {
            acct: "451.00",
            cash: "0.00",
            balc: "549.00",
            ..REFERENCE
        }
    );
    // Class C alone, account only: 1 × C001 20.00 from the account; balance 529.00.
    let c = swipe(
        &w.ph,
        proto::SettlePurchaseRequest {
            account_only: true,
            ..swipe_req(&rid(), ev(&p), vec![pl("9", "C001", "1", "20.00")], true)
        },
    )
    .await
    .settlement
    .unwrap();
    assert_eq!(
        (
            c.fulamt_ownpay_amt.as_str(),
            c.acct_pay.as_str(),
            c.psn_cash_pay.as_str(),
            c.balance_after.as_str()
        ),
        ("20.00", "20.00", "0.00", "529.00")
    );

    // The same C001 for a Wuhai employee (the account may not pay class C): all cash.
    let q = person(&w, WUHAI, 2, "1000.00").await;
    let c = swipe(
        &w.ph,
        swipe_req(&rid(), card(&q), vec![pl("9", "C001", "1", "20.00")], true),
    )
    .await
    .settlement
    .unwrap();
    assert_eq!(
        (
            c.acct_pay.as_str(),
            c.psn_cash_pay.as_str(),
            c.balance_after.as_str()
        ),
        ("0.00", "20.00", "1000.00")
    );
    assert_eq!(pacct(&w, &p.psn_no).await, "529.00");
    assert_eq!(pacct(&w, &q.psn_no).await, "1000.00");
    verify_ok(&ts).await;
}

async fn refusals(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    let p = person(&w, WUHAI, 1, "300.00").await;
    let one = || vec![pl("1", "A001", "1", "35.50")];
    let before = snapshot(&ts, &w, &p).await;

    // ---- Lost card: refused at the swipe, the pre-settlement and the lookup; nothing written.
    set_card(&w, &p, CardStatus::Lost).await;
    let lost_rid = rid();
    refused(
        w.ph.clone()
            .settle_purchase(swipe_req(&lost_rid, card(&p), one(), true))
            .await,
        "card_lost",
    );
    refused(
        w.ph.clone()
            .pre_settle_purchase(pre_req(card(&p), one(), true))
            .await,
        "card_lost",
    );
    refused(lookup(&w.ph, card(&p)).await, "card_lost");
    refused(
        w.ph.clone()
            .settle_purchase(swipe_req(&rid(), ev(&p), one(), true))
            .await,
        "card_lost",
    );
    assert_eq!(snapshot(&ts, &w, &p).await, before);

    // ---- Frozen card.
    set_card(&w, &p, CardStatus::Frozen).await;
    refused(
        w.ph.clone()
            .settle_purchase(swipe_req(&rid(), card(&p), one(), true))
            .await,
        "card_frozen",
    );
    refused(lookup(&w.ph, card(&p)).await, "card_frozen");
    assert_eq!(snapshot(&ts, &w, &p).await, before);

    // The refused request id was not used up: once the card is active again, the same request
    // (same id, same payload) goes through.
    set_card(&w, &p, CardStatus::Active).await;
    let ok = swipe(&w.ph, swipe_req(&lost_rid, card(&p), one(), true)).await;
    assert_eq!(ok.settlement.as_ref().unwrap().balance_after, "264.50");
    let before = snapshot(&ts, &w, &p).await;

    // ---- Suspended person.
    w.wuhai
        .reg()
        .set_person_status(proto::SetPersonStatusRequest {
            request_id: rid(),
            psn_no: p.psn_no.clone(),
            status: PersonStatus::Suspended as i32,
            insurance_type: 0,
            reason: "e2e".into(),
        })
        .await
        .must();
    refused(
        w.ph.clone()
            .settle_purchase(swipe_req(&rid(), card(&p), one(), true))
            .await,
        "person_not_active",
    );
    let h = lookup(&w.ph, card(&p)).await.must();
    assert!(!h.allowed);
    assert_eq!(h.refusal_rule, "person_not_active");
    w.wuhai
        .reg()
        .set_person_status(proto::SetPersonStatusRequest {
            request_id: rid(),
            psn_no: p.psn_no.clone(),
            status: PersonStatus::Active as i32,
            insurance_type: 0,
            reason: "e2e".into(),
        })
        .await
        .must();
    assert_eq!(snapshot(&ts, &w, &p).await, before);

    // ---- Suspended pharmacy.
    update_pharmacy(&w, PH, Some(InstitutionStatus::Suspended), None).await;
    refused(
        w.ph.clone()
            .settle_purchase(swipe_req(&rid(), card(&p), one(), true))
            .await,
        "institution_suspended",
    );
    refused(
        w.ph.clone()
            .pre_settle_purchase(pre_req(card(&p), one(), true))
            .await,
        "institution_suspended",
    );
    update_pharmacy(&w, PH, Some(InstitutionStatus::Active), None).await;

    // ---- Pharmacy not open for cross-region settlement.
    update_pharmacy(&w, PH, None, Some(false)).await;
    refused(
        w.ph.clone()
            .settle_purchase(swipe_req(&rid(), card(&p), one(), true))
            .await,
        "institution_not_cross_region",
    );
    let h = lookup(&w.ph, card(&p)).await.must();
    assert!(!h.allowed);
    assert_eq!(h.refusal_rule, "institution_not_cross_region");
    update_pharmacy(&w, PH, None, Some(true)).await;
    assert_eq!(snapshot(&ts, &w, &p).await, before);

    // ---- A hospital is not a pharmacy.
    let hosp = pharm(&ts, HOSP).await;
    refused(
        hosp.clone()
            .settle_purchase(swipe_req(&rid(), card(&p), one(), true))
            .await,
        "care_type_not_offered",
    );
    refused(
        hosp.clone()
            .pre_settle_purchase(pre_req(card(&p), one(), true))
            .await,
        "care_type_not_offered",
    );

    // ---- An insurance type the person does not hold.
    refused(
        w.ph.clone()
            .settle_purchase(proto::SettlePurchaseRequest {
                insurance_type: InsuranceType::Resident as i32,
                ..swipe_req(&rid(), card(&p), one(), true)
            })
            .await,
        "insurance_not_held",
    );
    assert_eq!(snapshot(&ts, &w, &p).await, before);

    // ---- A bureau or an operator is not an institution.
    pharm_as(&ts, medsettle::service::auth::Grant::Operator)
        .await
        .settle_purchase(swipe_req(&rid(), card(&p), one(), true))
        .await
        .code_is(Code::PermissionDenied);

    // ---- A local person (home Ordos) at the Ordos pharmacy.
    let local = person(&w, ORDOS, 2, "100.00").await;
    let local_before = snapshot(&ts, &w, &local).await;
    refused(
        w.ph.clone()
            .settle_purchase(swipe_req(&rid(), card(&local), one(), true))
            .await,
        "not_cross_region",
    );
    let h = lookup(&w.ph, card(&local)).await.must();
    assert!(!h.allowed);
    assert_eq!(h.refusal_rule, "not_cross_region");
    assert_eq!(snapshot(&ts, &w, &local).await, local_before);

    // ---- Unknown card / e-voucher: NOT_FOUND.
    let nobody = Some(proto::CardCredential {
        credential: Some(proto::card_credential::Credential::CardNo(
            "NOSUCHCARD0001".into(),
        )),
    });
    w.ph.clone()
        .settle_purchase(swipe_req(&rid(), nobody.clone(), one(), true))
        .await
        .code_is(Code::NotFound);
    lookup(&w.ph, nobody).await.code_is(Code::NotFound);
    let nobody = Some(proto::CardCredential {
        credential: Some(proto::card_credential::Credential::EvoucherToken(
            "no-such-evoucher-token".into(),
        )),
    });
    w.ph.clone()
        .settle_purchase(swipe_req(&rid(), nobody, one(), true))
        .await
        .code_is(Code::NotFound);

    assert_eq!(snapshot(&ts, &w, &p).await, before);
    verify_ok(&ts).await;
}

async fn bad_inputs(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    let p = person(&w, WUHAI, 1, "300.00").await;
    let before = snapshot(&ts, &w, &p).await;
    let swipe_with = |lines: Vec<proto::PurchaseLine>| swipe_req(&rid(), card(&p), lines, true);

    for q in ["0", "-1", "1.23456", "", "1e2", "abc", "+1"] {
        w.ph.clone()
            .settle_purchase(swipe_with(vec![pl("1", "A001", q, "35.50")]))
            .await
            .invalid("lines[0].quantity");
        w.ph.clone()
            .pre_settle_purchase(pre_req(card(&p), vec![pl("1", "A001", q, "35.50")], true))
            .await
            .invalid("lines[0].quantity");
    }
    // The second line named: its quantity; its quantity × unit price past any amount (≈ 1.0e20
    // yuan, both inputs within their limits).
    for (qty, price, field) in [
        ("-2", "35.50", "lines[1].quantity"),
        ("99999999.9999", "999999999999.999999", "lines[1]"),
    ] {
        w.ph.clone()
            .settle_purchase(swipe_with(vec![
                pl("1", "A001", "1", "35.50"),
                pl("2", "A001", qty, price),
            ]))
            .await
            .invalid(field);
    }
    // Unit prices: more than 6 decimals, negative.
    for price in ["1.1234567", "-1.00", ""] {
        w.ph.clone()
            .settle_purchase(swipe_with(vec![pl("1", "A001", "1", price)]))
            .await
            .invalid("lines[0].unit_price");
    }
    // Duplicate line number.
    w.ph.clone()
        .settle_purchase(swipe_with(vec![
            pl("1", "A001", "1", "35.50"),
            pl("1", "B001", "1", "90.00"),
        ]))
        .await
        .invalid("lines[1].line_no");
    // Empty line number, empty code.
    w.ph.clone()
        .settle_purchase(swipe_with(vec![pl("", "A001", "1", "35.50")]))
        .await
        .invalid("lines[0].line_no");
    w.ph.clone()
        .settle_purchase(swipe_with(vec![pl("1", "", "1", "35.50")]))
        .await
        .invalid("lines[0].code");
    // No credential.
    w.ph.clone()
        .settle_purchase(swipe_req(
            &rid(),
            None,
            vec![pl("1", "A001", "1", "35.50")],
            true,
        ))
        .await
        .invalid("credential");
    w.ph.clone()
        .settle_purchase(swipe_req(
            &rid(),
            Some(proto::CardCredential { credential: None }),
            vec![pl("1", "A001", "1", "35.50")],
            true,
        ))
        .await
        .invalid("credential");
    w.ph.clone()
        .pre_settle_purchase(pre_req(None, vec![pl("1", "A001", "1", "35.50")], true))
        .await
        .invalid("credential");
    lookup(&w.ph, None).await.invalid("credential");
    // Unspecified insurance type.
    w.ph.clone()
        .settle_purchase(proto::SettlePurchaseRequest {
            insurance_type: InsuranceType::Unspecified as i32,
            ..swipe_with(vec![pl("1", "A001", "1", "35.50")])
        })
        .await
        .invalid("insurance_type");
    w.ph.clone()
        .pre_settle_purchase(proto::PreSettlePurchaseRequest {
            insurance_type: InsuranceType::Unspecified as i32,
            ..pre_req(card(&p), vec![pl("1", "A001", "1", "35.50")], true)
        })
        .await
        .invalid("insurance_type");
    // No lines; 201 lines.
    w.ph.clone()
        .settle_purchase(swipe_with(vec![]))
        .await
        .invalid("lines");
    let many: Vec<_> = (0..201)
        .map(|i| pl(&format!("{i}"), "A001", "1", "0.01"))
        .collect();
    w.ph.clone()
        .settle_purchase(swipe_with(many.clone()))
        .await
        .invalid("lines");
    w.ph.clone()
        .pre_settle_purchase(pre_req(card(&p), many.clone(), true))
        .await
        .invalid("lines");
    // A missing request id.
    w.ph.clone()
        .settle_purchase(swipe_req("", card(&p), reference_lines(), true))
        .await
        .invalid("request_id");
    // A malformed expected total.
    w.ph.clone()
        .settle_purchase(proto::SettlePurchaseRequest {
            expected_total: "451.001".into(),
            ..swipe_with(reference_lines())
        })
        .await
        .invalid("expected_total");
    assert_eq!(
        snapshot(&ts, &w, &p).await,
        before,
        "bad input wrote something"
    );

    // 200 lines are fine: 200 × 0.01 class A = 2.00, all from the account.
    let s = swipe(&w.ph, swipe_with(many[..200].to_vec()))
        .await
        .settlement
        .unwrap();
    assert_eq!(
        (
            s.medfee_sumamt.as_str(),
            s.acct_pay.as_str(),
            s.balance_after.as_str(),
            s.line_count
        ),
        ("2.00", "2.00", "298.00", 200)
    );
    verify_ok(&ts).await;
}

// `both_engines!` cannot carry `#[ignore]`: the same two variants, written out.
mod bad_inputs_before_state {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::bad_inputs_before_state(crate::common::Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        if crate::common::skip(crate::common::Backend::Postgres) {
            return;
        }
        super::bad_inputs_before_state(crate::common::Backend::Postgres).await;
    }
}

/// Arguments that are wrong whatever the state (gRPC: INVALID_ARGUMENT "regardless of the
/// state of the system") are named as such even when the card is unknown or the person may not
/// swipe here: nothing about the card changes what is wrong with the lines.
async fn bad_inputs_before_state(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    let local = person(&w, ORDOS, 1, "100.00").await;
    let unknown = Some(proto::CardCredential {
        credential: Some(proto::card_credential::Credential::CardNo(
            "NOSUCHCARD0001".into(),
        )),
    });
    let many: Vec<_> = (0..201)
        .map(|i| pl(&format!("{i}"), "A001", "1", "0.01"))
        .collect();
    let cases: Vec<(&str, Vec<proto::PurchaseLine>, &str)> = vec![
        (
            "negative quantity",
            vec![pl("1", "A001", "-1", "35.50")],
            "lines[0].quantity",
        ),
        (
            "duplicate line_no",
            vec![pl("1", "A001", "1", "35.50"), pl("1", "A001", "1", "35.50")],
            "lines[1].line_no",
        ),
        ("201 lines", many, "lines"),
        ("no lines", vec![], "lines"),
    ];
    // Every outcome first, then one assertion that lists all that differ.
    let mut wrong = Vec::new();
    for (who, cred) in [("unknown card", unknown), ("local person", card(&local))] {
        for (what, lines, field) in &cases {
            let got =
                w.ph.clone()
                    .settle_purchase(swipe_req(&rid(), cred.clone(), lines.clone(), true))
                    .await;
            match got {
                Err(s)
                    if s.code() == Code::InvalidArgument
                        && violated_fields(&s).iter().any(|f| f == field) => {}
                Err(s) => wrong.push(format!(
                    "{who}, {what}: expected INVALID_ARGUMENT {field}, got {:?}: {}",
                    s.code(),
                    s.message()
                )),
                Ok(r) => wrong.push(format!(
                    "{who}, {what}: expected INVALID_ARGUMENT, got OK {r:?}"
                )),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

async fn partial_refunds(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    let p = person(&w, WUHAI, 1, "300.00").await;
    let purchase = swipe(&w.ph, swipe_req(&rid(), card(&p), reference_lines(), true)).await;
    let s = purchase.settlement.clone().unwrap();
    assert_eq!(m(&s), REFERENCE);
    let id = s.setl_id.clone();

    // ---- Bad refunds change nothing.
    let before = snapshot(&ts, &w, &p).await;
    try_refund(&w.ph, &id, &[("2", "4")])
        .await
        .invalid("lines[0].quantity");
    try_refund(&w.ph, &id, &[("2", "0")])
        .await
        .invalid("lines[0].quantity");
    try_refund(&w.ph, &id, &[("2", "-1")])
        .await
        .invalid("lines[0].quantity");
    try_refund(&w.ph, &id, &[("2", "0.00001")])
        .await
        .invalid("lines[0].quantity");
    try_refund(&w.ph, &id, &[("9", "1")])
        .await
        .invalid("lines[0].line_no");
    try_refund(&w.ph, &id, &[("1", "1"), ("4", "1")])
        .await
        .invalid("lines[1].line_no");
    // Twice the same line, together more than is left (2 + 2 > 3).
    try_refund(&w.ph, &id, &[("2", "2"), ("2", "2")])
        .await
        .invalid("lines[1].quantity");
    w.ph.clone()
        .refund_purchase(proto::RefundPurchaseRequest {
            request_id: rid(),
            setl_id: id.clone(),
            lines: vec![],
            reason: "x".repeat(257),
        })
        .await
        .invalid("reason");
    try_refund(&w.ph, "S-no-such-purchase", &[])
        .await
        .code_is(Code::NotFound);
    assert_eq!(snapshot(&ts, &w, &p).await, before);
    let got = get_purchase(&w.ph, &id).await.must();
    assert_eq!(refunded(&got), [("1", "0"), ("2", "0"), ("3", "0")]);

    // ---- Refund #1: 1 × B001 (see REFUND_ONE_B).
    let r1 = refund(&w.ph, &id, &[("2", "1")]).await;
    let r1s = r1.settlement.clone().unwrap();
    assert_eq!(m(&r1s), REFUND_ONE_B);

    // ---- Refund #2: 1 × A001 and 1 × B001. Kept: A 1 × 35.50; B 1 × 120.00 (over-limit 20.00,
    //   first self-paid 10.00, in scope 90.00); C 20.00: total 175.50, in scope 125.50, account
    //   min(175.50 − 20.00, 300.00) = 155.50, cash 20.00. Before (kept 331.00): account 300.00,
    //   cash 31.00. Refund: medfee −155.50, over-limit −20.00, first self-paid −10.00, in scope
    //   −35.50 − 90.00 = −125.50, account −144.50, cash −11.00; balance 0.00 + 144.50 = 144.50.
    let r2 = refund(&w.ph, &id, &[("1", "1"), ("2", "1")]).await;
    let r2s = r2.settlement.clone().unwrap();
    assert_eq!(
        m(&r2s),
        M {
            medfee: "-155.50",
            fulamt: "0.00",
            overlmt: "-20.00",
            preself: "-10.00",
            inscp: "-125.50",
            dedc: "0.00",
            hifp: "0.00",
            hifmi: "0.00",
            maf: "0.00",
            fund: "0.00",
            psn: "-155.50",
            acct: "-144.50",
            cash: "-11.00",
            balc: "144.50",
        }
    );
    assert_eq!(r2s.line_count, 2);
    let (a, bb) = (CatalogueClass::A as i32, CatalogueClass::B as i32);
    assert_eq!(
        lines_of(&r2),
        [
            L::new("1", "A001", "-1", "35.50", "-35.50", a)
                .split("0.00", "0.00", "0.00", "-35.50")
                .refunded("0"),
            L::new("2", "B001", "-1", "120.00", "-120.00", bb)
                .split("0.00", "-20.00", "-10.00", "-90.00")
                .refunded("0"),
        ]
    );
    let got = get_purchase(&w.ph, &id).await.must();
    assert_eq!(refunded(&got), [("1", "1"), ("2", "2"), ("3", "0")]);
    // What is kept now: purchase + refunds = the adjudication of 1 × A001, 1 × B001, 1 × C001
    // under the purchase's terms (balance 300.00): total 175.50, account 155.50, cash 20.00.
    let kept = sums(&[s.clone(), r1s.clone(), r2s.clone()]);
    assert_eq!(
        kept,
        M13 {
            medfee: 17550,
            fulamt: 2000,
            overlmt: 2000,
            preself: 1000,
            inscp: 12550,
            dedc: 0,
            hifp: 0,
            hifmi: 0,
            maf: 0,
            fund: 0,
            psn: 17550,
            acct: 15550,
            cash: 2000,
        }
    );
    // The same lines pre-settled without the account agree on everything but the account.
    let pre = pre_settle(
        &w.ph,
        card(&p),
        vec![
            pl("1", "A001", "1", "35.50"),
            pl("2", "B001", "1", "120.00"),
            pl("3", "C001", "1", "20.00"),
        ],
        false,
    )
    .await;
    assert_eq!(
        M13::of(&pre),
        M13 {
            acct: 0,
            cash: 17550,
            ..kept
        }
    );
    // Now only 1 × B001 is left of line 2.
    try_refund(&w.ph, &id, &[("2", "2")])
        .await
        .invalid("lines[0].quantity");
    assert_eq!(pacct(&w, &p.psn_no).await, "144.50");

    // ---- Refund #3: 1 × C001. Kept: 35.50 + 120.00 = 155.50, account min(155.50, 300.00) =
    //   155.50, cash 0.00. Refund: medfee −20.00 fully self-paid, account 0.00, cash −20.00.
    let r3 = refund(&w.ph, &id, &[("3", "1")]).await;
    let r3s = r3.settlement.clone().unwrap();
    assert_eq!(
        m(&r3s),
        M {
            medfee: "-20.00",
            fulamt: "-20.00",
            overlmt: "0.00",
            preself: "0.00",
            inscp: "0.00",
            dedc: "0.00",
            hifp: "0.00",
            hifmi: "0.00",
            maf: "0.00",
            fund: "0.00",
            psn: "-20.00",
            acct: "0.00",
            cash: "-20.00",
            balc: "144.50",
        }
    );
    assert_eq!(
        get_purchase(&w.ph, &id)
            .await
            .must()
            .settlement
            .unwrap()
            .reversed_by,
        "",
        "not fully refunded yet"
    );

    // ---- Refund #4: the rest (empty list) — 1 × A001, 1 × B001: −155.50, account −155.50.
    let r4 = refund(&w.ph, &id, &[]).await;
    let r4s = r4.settlement.clone().unwrap();
    assert_eq!(
        m(&r4s),
        M {
            medfee: "-155.50",
            fulamt: "0.00",
            overlmt: "-20.00",
            preself: "-10.00",
            inscp: "-125.50",
            dedc: "0.00",
            hifp: "0.00",
            hifmi: "0.00",
            maf: "0.00",
            fund: "0.00",
            psn: "-155.50",
            acct: "-155.50",
            cash: "0.00",
            balc: "300.00",
        }
    );
    let got = get_purchase(&w.ph, &id).await.must();
    assert_eq!(refunded(&got), [("1", "2"), ("2", "3"), ("3", "1")]);
    assert_eq!(got.settlement.unwrap().reversed_by, r4s.setl_id);
    // Purchase + all refunds: nothing kept, every sum 0.00.
    let all = [s, r1s, r2s, r3s, r4s.clone()];
    assert_eq!(sums(&all), M13::zero());
    // Each refund's lines carry negative quantities summing to minus the purchase's.
    let mut per_line = std::collections::BTreeMap::<String, i64>::new();
    for r in [&r1, &r2, &r3, &r4] {
        for l in &r.lines {
            assert!(l.quantity.starts_with('-'), "{l:?}");
            *per_line.entry(l.line_no.clone()).or_default() += l.quantity.parse::<i64>().unwrap();
        }
    }
    assert_eq!(
        per_line.into_iter().collect::<Vec<_>>(),
        [("1".into(), -2), ("2".into(), -3), ("3".into(), -1)]
    );
    refused(try_refund(&w.ph, &id, &[]).await, "already_refunded");
    // A refund is not refundable.
    refused(
        try_refund(&w.ph, &r4s.setl_id, &[]).await,
        "cannot_refund_refund",
    );
    assert_eq!(pacct(&w, &p.psn_no).await, "300.00");
    assert_eq!(
        balance(&w.op, &format!("pacct:{}", p.psn_no)).await.balance,
        r4s.balance_after
    );
    verify_ok(&ts).await;
}

async fn refund_permissions_and_reversals(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    let p = person(&w, WUHAI, 1, "300.00").await;
    let q = person(&w, BAOTOU, 2, "300.00").await;
    let s_rid = rid();
    let first = swipe(&w.ph, swipe_req(&s_rid, card(&p), reference_lines(), true)).await;
    let s = first.settlement.clone().unwrap();

    // ---- Another pharmacy may neither refund nor read it.
    let before = snapshot(&ts, &w, &p).await;
    try_refund(&w.ph_nx, &s.setl_id, &[])
        .await
        .code_is(Code::PermissionDenied);
    try_refund(&w.ph_nx, &s.setl_id, &[("1", "1")])
        .await
        .code_is(Code::PermissionDenied);
    get_purchase(&w.ph_nx, &s.setl_id)
        .await
        .code_is(Code::PermissionDenied);
    // Its 冲正 of our request id finds nothing of its own (request ids are per caller).
    let other = reverse_by_request(&w.ph_nx, &s_rid).await.must();
    assert!(!other.found && other.reversal.is_none());
    assert_eq!(snapshot(&ts, &w, &p).await, before);

    // ---- SettlementService.ReverseSettlement on a purchase: use the refund.
    let setl = setl_as(&ts, institution_grant(PH)).await;
    refused(
        setl.clone()
            .reverse_settlement(proto::ReverseSettlementRequest {
                request_id: rid(),
                setl_id: s.setl_id.clone(),
                reason: "wrong service".into(),
            })
            .await,
        "use_refund",
    );
    refused(
        setl.clone()
            .reverse_by_request_id(proto::ReverseByRequestIdRequest {
                request_id: rid(),
                original_request_id: s_rid.clone(),
            })
            .await,
        "use_refund",
    );
    assert_eq!(snapshot(&ts, &w, &p).await, before);

    // ---- 冲正 by the swipe's request id refunds it in full.
    let rev_rid = rid();
    let rev =
        w.ph.clone()
            .reverse_purchase_by_request_id(proto::ReverseByRequestIdRequest {
                request_id: rev_rid.clone(),
                original_request_id: s_rid.clone(),
            })
            .await
            .must();
    assert!(rev.found);
    let r = rev.reversal.clone().unwrap();
    assert_eq!(r.reverses, s.setl_id);
    assert_eq!(r.kind, SettlementKind::Reversal as i32);
    assert_eq!(r.request_id, rev_rid);
    assert_eq!(
        m13(&r),
        negated(&m13(&s)),
        "a full refund negates the purchase"
    );
    assert_eq!(r.balance_after, "300.00");
    assert_eq!(pacct(&w, &p.psn_no).await, "300.00");
    // Replayed under the same id: the same answer, booked once.
    let again =
        w.ph.clone()
            .reverse_purchase_by_request_id(proto::ReverseByRequestIdRequest {
                request_id: rev_rid.clone(),
                original_request_id: s_rid.clone(),
            })
            .await
            .must();
    assert_eq!(again, rev);
    // A second 冲正 under a new id: nothing left to refund.
    refused(reverse_by_request(&w.ph, &s_rid).await, "already_refunded");
    // 冲正 of the refund's own request id is not a purchase.
    refused(reverse_by_request(&w.ph, &rev_rid).await, "not_a_purchase");
    // The original request id now replays its purchase: the first answer exactly, as booked
    // (refunded in full since, which GetPurchase shows and the replay does not).
    let replay =
        w.ph.clone()
            .settle_purchase(swipe_req(&s_rid, card(&p), reference_lines(), true))
            .await
            .must();
    assert_eq!(replay, first);
    let now = get_purchase(&w.ph, &s.setl_id).await.must();
    assert_ne!(now.lines, first.lines, "GetPurchase shows the refunds");
    assert_eq!(pacct(&w, &p.psn_no).await, "300.00");

    // ---- 冲正 after a partial refund refunds the rest: the reference purchase again, 1 × B001
    // refunded (REFUND_ONE_B), then 冲正 refunds what is left (REFUND_REST); balance 300.00.
    let s2_rid = rid();
    let s2 = swipe(&w.ph, swipe_req(&s2_rid, ev(&p), reference_lines(), true))
        .await
        .settlement
        .unwrap();
    assert_eq!(m(&s2), REFERENCE);
    let r1 = refund(&w.ph, &s2.setl_id, &[("2", "1")])
        .await
        .settlement
        .unwrap();
    assert_eq!(m(&r1), REFUND_ONE_B);
    let rest = reverse_by_request(&w.ph, &s2_rid).await.must();
    assert!(rest.found);
    let rest = rest.reversal.unwrap();
    assert_eq!(rest.reverses, s2.setl_id);
    assert_eq!(m(&rest), REFUND_REST);
    assert_eq!(sums(&[s2, r1, rest]), M13::zero());
    assert_eq!(pacct(&w, &p.psn_no).await, "300.00");

    // ---- 冲正 of a request id never sent: found = false; a late arrival is refused.
    let lost = rid();
    let none = reverse_by_request(&w.ph, &lost).await.must();
    assert!(!none.found && none.reversal.is_none(), "{none:?}");
    let before = snapshot(&ts, &w, &q).await;
    w.ph.clone()
        .settle_purchase(swipe_req(&lost, card(&q), reference_lines(), true))
        .await
        .code_is(Code::AlreadyExists);
    assert_eq!(snapshot(&ts, &w, &q).await, before);
    // The original request id must differ from the call's own.
    let same = rid();
    w.ph.clone()
        .reverse_purchase_by_request_id(proto::ReverseByRequestIdRequest {
            request_id: same.clone(),
            original_request_id: same,
        })
        .await
        .invalid("original_request_id");
    w.ph.clone()
        .reverse_purchase_by_request_id(proto::ReverseByRequestIdRequest {
            request_id: rid(),
            original_request_id: String::new(),
        })
        .await
        .invalid("original_request_id");
    verify_ok(&ts).await;
}

async fn idempotency(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    let p = person(&w, WUHAI, 1, "300.00").await;
    let id = rid();
    let first = swipe(&w.ph, swipe_req(&id, card(&p), reference_lines(), true)).await;
    assert_eq!(m(first.settlement.as_ref().unwrap()), REFERENCE);
    assert_eq!(pacct(&w, &p.psn_no).await, "0.00");
    let after_first = snapshot(&ts, &w, &p).await;
    assert_eq!(after_first.settlements, 1);

    // ---- The same request replayed: the identical answer, booked once.
    for _ in 0..3 {
        let again =
            w.ph.clone()
                .settle_purchase(swipe_req(&id, card(&p), reference_lines(), true))
                .await
                .must();
        assert_eq!(again, first);
    }
    // Concurrent twins replay too.
    let twins = futures_join(
        (0..8)
            .map(|_| {
                let ph = w.ph.clone();
                let req = swipe_req(&id, card(&p), reference_lines(), true);
                async move { ph.clone().settle_purchase(req).await.must() }
            })
            .collect(),
    )
    .await;
    assert!(twins.iter().all(|t| *t == first));
    assert_eq!(snapshot(&ts, &w, &p).await, after_first, "booked once");
    // The service called in process, without the transport in between: the same purchase.
    let mut direct = tonic::Request::new(swipe_req(&id, card(&p), reference_lines(), true));
    let token = ts.token(institution_grant(PH)).await;
    direct.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("a bearer header"),
    );
    // What the server's request layer adds: the replay is matched on the method too.
    direct.extensions_mut().insert(medsettle::grpc::RpcPath(
        medsettle::service::settlement::pharmacy::SETTLE_PURCHASE_RPC.into(),
    ));
    let ctx = medsettle::grpc::Ctx {
        app: ts.app.clone(),
    };
    let in_process = <medsettle::grpc::Ctx as PharmacyService>::settle_purchase(&ctx, direct)
        .await
        .must();
    assert_eq!(in_process, first);
    assert_eq!(snapshot(&ts, &w, &p).await, after_first, "booked once");

    // ---- The same id with another payload: ALREADY_EXISTS, nothing written.
    let mut other = reference_lines();
    other[0].quantity = "1".into();
    w.ph.clone()
        .settle_purchase(swipe_req(&id, card(&p), other, true))
        .await
        .code_is(Code::AlreadyExists);
    w.ph.clone()
        .settle_purchase(swipe_req(&id, card(&p), reference_lines(), false))
        .await
        .code_is(Code::AlreadyExists);
    w.ph.clone()
        .settle_purchase(swipe_req(&id, ev(&p), reference_lines(), true))
        .await
        .code_is(Code::AlreadyExists);
    // Used for a refund: ALREADY_EXISTS as well.
    w.ph.clone()
        .refund_purchase(proto::RefundPurchaseRequest {
            request_id: id.clone(),
            setl_id: first.settlement.as_ref().unwrap().setl_id.clone(),
            lines: vec![],
            reason: String::new(),
        })
        .await
        .code_is(Code::AlreadyExists);
    assert_eq!(snapshot(&ts, &w, &p).await, after_first);

    // ---- Refunds are idempotent too.
    let setl_id = first.settlement.as_ref().unwrap().setl_id.clone();
    let r_id = rid();
    let req = proto::RefundPurchaseRequest {
        request_id: r_id.clone(),
        setl_id: setl_id.clone(),
        lines: vec![proto::RefundLine {
            line_no: "2".into(),
            quantity: "1".into(),
        }],
        reason: "returned".into(),
    };
    let r = w.ph.clone().refund_purchase(req.clone()).await.must();
    assert_eq!(m(r.settlement.as_ref().unwrap()), REFUND_ONE_B);
    let r_again = w.ph.clone().refund_purchase(req.clone()).await.must();
    assert_eq!(r_again, r);
    let got = get_purchase(&w.ph, &setl_id).await.must();
    assert_eq!(refunded(&got), [("1", "0"), ("2", "1"), ("3", "0")]);
    // The swipe replayed after its refund: still its first answer (nothing refunded).
    let replayed =
        w.ph.clone()
            .settle_purchase(swipe_req(&id, card(&p), reference_lines(), true))
            .await
            .must();
    assert_eq!(replayed, first);
    w.ph.clone()
        .refund_purchase(proto::RefundPurchaseRequest {
            lines: vec![proto::RefundLine {
                line_no: "2".into(),
                quantity: "2".into(),
            }],
            ..req
        })
        .await
        .code_is(Code::AlreadyExists);
    // Request ids are per caller: another pharmacy may use the same id for its own swipe
    // (a Baotou employee with 50.00 at Shizuishan: 1 × A001 25.01, all within Baotou's
    // deductible, all from the account: balance 24.99).
    let q = person(&w, BAOTOU, 2, "50.00").await;
    let other = swipe(
        &w.ph_nx,
        swipe_req(&id, card(&q), vec![pl("1", "A001", "1", "25.01")], true),
    )
    .await;
    let os = other.settlement.unwrap();
    assert_eq!(
        (
            os.act_pay_dedc.as_str(),
            os.acct_pay.as_str(),
            os.balance_after.as_str()
        ),
        ("25.01", "25.01", "24.99")
    );
    assert_eq!(
        balance(&w.op, &format!("pacct:{}", p.psn_no)).await.balance,
        "0.00"
    );
    verify_ok(&ts).await;

    // ---- A swipe's first answer stored encoded (as earlier versions stored them; now the
    // row names the settlement and a replay reads it) is replayed as stored, byte for byte.
    let mut stored = first.clone();
    stored.settlement.as_mut().unwrap().psn_no = "as stored".into();
    let hex = hex::encode(prost::Message::encode_to_vec(&stored));
    let blob = match b {
        Backend::Sqlite => format!("X'{hex}'"),
        Backend::Postgres => format!("'\\x{hex}'::bytea"),
    };
    let changed = raw_sql(
        &ts,
        &[&format!(
            "UPDATE idempotency SET response = {blob} \
             WHERE request_id = '{id}' AND setl_id = '{setl_id}'"
        )],
    )
    .await;
    assert_eq!(changed, [1]);
    let replayed =
        w.ph.clone()
            .settle_purchase(swipe_req(&id, card(&p), reference_lines(), true))
            .await
            .must();
    assert_eq!(replayed, stored);
}

/// The answers of SettlePurchase, RefundPurchase and ReversePurchaseByRequestId are the stored
/// purchases (GetPurchase, the answer to a timed-out call), settled_at included.
async fn answers_equal_stored(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    let p = person(&w, WUHAI, 1, "300.00").await;
    let id = rid();
    let purchase = swipe(&w.ph, swipe_req(&id, card(&p), reference_lines(), true)).await;
    let setl_id = purchase.settlement.as_ref().unwrap().setl_id.clone();
    let stored = get_purchase(&w.ph, &setl_id).await.must();
    assert_eq!(stored, purchase, "SettlePurchase vs GetPurchase");
    let r = refund(&w.ph, &setl_id, &[("2", "1")]).await;
    let stored = get_purchase(&w.ph, &r.settlement.as_ref().unwrap().setl_id)
        .await
        .must();
    assert_eq!(stored, r, "RefundPurchase vs GetPurchase");
    let rev = reverse_by_request(&w.ph, &id).await.must();
    let rs = rev.reversal.unwrap();
    let stored = get_purchase(&w.ph, &rs.setl_id).await.must();
    assert_eq!(
        stored.settlement.unwrap(),
        rs,
        "ReversePurchaseByRequestId vs GetPurchase"
    );
    // An operator may read any purchase.
    let op = pharm_as(&ts, medsettle::service::auth::Grant::Operator).await;
    let seen = get_purchase(&op, &setl_id).await.must();
    assert_eq!(seen.settlement.unwrap().setl_id, setl_id);
}

/// A person's settlements and personal-account entries read the same whether they sit in
/// SQLite's batch-maintained tables (the settlements' index, the accounts' totals), in the tails
/// not yet merged, or both (on PostgreSQL the views are the tables and nothing merges): each
/// settlement once, in setl_id order, paged; the account's journal balance and entry count equal
/// to the maintained balance and the swipes.
async fn settlements_by_person_across_merges(b: Backend) {
    use medsettle::store::derived;
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    let a = person(&w, WUHAI, 1, "300.00").await;
    let other = person(&w, WUHAI, 2, "300.00").await;
    let lines = || vec![pl("1", "A001", "1", "35.50")];
    let id_of = |p: proto::Purchase| p.settlement.map(|s| s.setl_id).unwrap_or_default();
    let setl = setl_as(&ts, bureau_grant(WUHAI)).await;
    let list = |psn: String, size: u32, token: String| {
        let mut setl = setl.clone();
        async move {
            let r = setl
                .list_settlements(proto::ListSettlementsRequest {
                    filter: Some(proto::list_settlements_request::Filter::PsnNo(psn)),
                    page_size: size,
                    page_token: token,
                })
                .await
                .must();
            let ids: Vec<String> = r.settlements.into_iter().map(|s| s.setl_id).collect();
            (ids, r.next_page_token)
        }
    };
    let merge = |min_rows: i64| {
        let db = ts.db.clone();
        async move {
            let mut c = db.begin().await.expect("begin");
            let n = derived::merge(&mut c, min_rows).await.expect("merge");
            c.commit().await.expect("commit");
            n
        }
    };
    // Rows of `psn` in SQLite's index table of settlements, and the entries its personal
    // account's total holds (the rest are in the tails); None on PostgreSQL.
    let indexed = |psn: String| {
        let db = ts.db.clone();
        async move {
            let mut c = db.read().await.expect("read");
            c.with_sqlite(move |x| {
                let count =
                    |sql: &str, key: String| x.query_row(sql, [key], |r| r.get::<_, i64>(0));
                Ok((
                    count(
                        "SELECT COUNT(*) FROM settlement_person_ix WHERE psn_no = ?1",
                        psn.clone(),
                    )?,
                    count(
                        "SELECT COALESCE(SUM(entries), 0) FROM account_total WHERE account = ?1",
                        format!("pacct:{psn}"),
                    )?,
                ))
            })
            .await
            .expect("count")
        }
    };
    // The journal's entries on the person's account (pacct() checks the balance against the
    // maintained one).
    let entries = |psn: String| {
        let w = &w;
        async move {
            pacct(w, &psn).await;
            balance(&w.op, &format!("pacct:{psn}")).await.entries
        }
    };
    let sqlite = b == Backend::Sqlite;
    let pending = || {
        let db = ts.db.clone();
        async move {
            let mut c = db.read().await.expect("read");
            derived::pending(&mut c).await.expect("pending")
        }
    };

    let mut mine = Vec::new();
    for _ in 0..2 {
        mine.push(id_of(
            swipe(&w.ph, swipe_req(&rid(), card(&a), lines(), true)).await,
        ));
    }
    let theirs = id_of(swipe(&w.ph, swipe_req(&rid(), card(&other), lines(), true)).await);
    // In the tail (unless the writer found a second without swipes and merged meanwhile).
    assert_eq!(list(a.psn_no.clone(), 100, String::new()).await.0, mine);
    // The opening deposit and two payments.
    assert_eq!(entries(a.psn_no.clone()).await, 3);
    // Merged: the same answer, each once. A second merge finds nothing left.
    let merged = merge(1).await;
    assert!(sqlite || merged == 0, "merged {merged} on PostgreSQL");
    assert_eq!(merge(1).await, 0);
    assert_eq!(merge(derived::MERGE_ROWS).await, 0);
    assert_eq!(indexed(a.psn_no.clone()).await, sqlite.then_some((2, 3)));
    assert_eq!(
        indexed(other.psn_no.clone()).await,
        sqlite.then_some((1, 2))
    );
    assert_eq!(list(a.psn_no.clone(), 100, String::new()).await.0, mine);
    assert_eq!(entries(a.psn_no.clone()).await, 3);
    assert_eq!(
        list(other.psn_no.clone(), 100, String::new()).await.0,
        [theirs]
    );

    // One more, in the tail: two from the index table and one from the tail, in setl_id order,
    // and paged across the two.
    mine.push(id_of(
        swipe(&w.ph, swipe_req(&rid(), card(&a), lines(), true)).await,
    ));
    assert!(mine.windows(2).all(|p| p[0] < p[1]), "{mine:?}");
    // Pending on SQLite until merged (by the idle writer, maybe, a second after the swipe).
    if !pending().await {
        assert_eq!(indexed(a.psn_no.clone()).await, sqlite.then_some((3, 4)));
    }
    assert_eq!(list(a.psn_no.clone(), 100, String::new()).await.0, mine);
    let (first, token) = list(a.psn_no.clone(), 2, String::new()).await;
    assert_eq!(first, mine[..2]);
    assert!(!token.is_empty());
    let (rest, end) = list(a.psn_no.clone(), 2, token).await;
    assert_eq!(rest, mine[2..]);
    assert_eq!(end, "");
    assert_eq!(entries(a.psn_no.clone()).await, 4);
    // Merged a row of each tail at a time: never more, until nothing is left.
    loop {
        let mut c = ts.db.begin().await.expect("begin");
        let n = derived::merge_at_most(&mut c, 1, 1).await.expect("merge");
        c.commit().await.expect("commit");
        assert!(n <= if sqlite { 5 } else { 0 }, "merged {n} rows");
        if n == 0 {
            break;
        }
    }
    assert_eq!(indexed(a.psn_no.clone()).await, sqlite.then_some((3, 4)));
    assert!(!pending().await);
    assert_eq!(list(a.psn_no.clone(), 100, String::new()).await.0, mine);
    assert_eq!(entries(a.psn_no.clone()).await, 4);
    verify_ok(&ts).await;

    // The verification notices an index table that lost a row or had one changed.
    if sqlite {
        let psn = &a.psn_no;
        raw_sql(
            &ts,
            &[
                &format!(
                    "DELETE FROM settlement_person_ix WHERE setl_id = '{}'",
                    mine[0]
                ),
                &format!(
                    "UPDATE account_total SET amount_fen = amount_fen + 1 \
                     WHERE account = 'pacct:{psn}'"
                ),
            ],
        )
        .await;
        let v = w.op.led().verify(proto::VerifyRequest {}).await.must();
        let check = v.checks.iter().find(|c| c.name == "indexes_match_sources");
        let detail = check.map(|c| (c.ok, c.detail.clone()));
        let (ok, detail) = detail.expect("indexes_match_sources check");
        assert!(!ok && !v.ok, "{detail}");
        assert!(
            detail.contains(&format!("settlement_person_ix lacks {psn} {}", mine[0])),
            "{detail}"
        );
        assert!(
            detail.contains(&format!("account_total lacks pacct:{psn} ")),
            "{detail}"
        );
        assert!(
            detail.contains(&format!("account_total has pacct:{psn} ")),
            "{detail}"
        );
    }
}

/// What a pharmacy, its bureau and an operator read by institution, principal and account —
/// through SQLite's per-institution batch-maintained index tables, their tails, or both.
#[derive(Debug, Clone, PartialEq, Eq)]
struct InstitutionReads {
    /// ListSettlements of the pharmacy's day: setl_ids in order (two pages of 2 and the rest).
    day: Vec<String>,
    /// ReconcileTotals of the day: (count, medfee, fund, account, cash) of our one group.
    totals: Vec<(i64, String, String, String, String)>,
    /// ListAudit of the pharmacy's principal, newest first, in pages of 2: request ids.
    audit: Vec<String>,
    /// (balance, entries) of the pharmacy's receivable; the Wuhai→Ordos due account's balance.
    inst: (String, u64),
    due: String,
}

/// A pharmacy's settlements by day, its reconciliation totals, its audit records and the
/// journal's accounts of institutions and dues read the same whether their rows sit in SQLite's
/// batch-maintained index tables (settlement_inst_ix, audit_principal_ix, account_total), in
/// the tails not yet merged, or both; the verification notices an index table that lost or
/// changed a row. Hand-computed: each swipe is 35.50 of class A for a Wuhai employee at an Ordos
/// pharmacy, paid from the personal account (opening 300.00), so the pharmacy's receivable
/// grows by the fund and account parts of each, and the day's totals count one per swipe.
async fn institution_reads_across_merges(b: Backend) {
    use medsettle::proto::reconciliation_service_client::ReconciliationServiceClient;
    use medsettle::store::derived;
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    let a = person(&w, WUHAI, 1, "300.00").await;
    let lines = || vec![pl("1", "A001", "1", "35.50")];
    let sqlite = b == Backend::Sqlite;
    let recon = ReconciliationServiceClient::with_interceptor(
        ts.channel.clone(),
        bearer(&ts, institution_grant(PH)).await,
    );
    let mut settled: Vec<proto::Settlement> = Vec::new();
    let mut rids: Vec<String> = Vec::new();
    let book = || {
        let rid = rid();
        let req = swipe_req(&rid, card(&a), lines(), true);
        let ph = w.ph.clone();
        async move { (rid.clone(), swipe(&ph, req).await) }
    };
    let read = |date: String| {
        let (op, mut recon) = (w.op.clone(), recon.clone());
        let setl = setl_as(&ts, bureau_grant(ORDOS));
        async move {
            let mut setl = setl.await;
            let (mut day, mut token) = (Vec::new(), String::new());
            loop {
                let page = setl
                    .list_settlements(proto::ListSettlementsRequest {
                        filter: Some(proto::list_settlements_request::Filter::InstitutionDay(
                            proto::InstitutionDay {
                                institution: PH.into(),
                                date: date.clone(),
                            },
                        )),
                        page_size: 2,
                        page_token: token,
                    })
                    .await
                    .must();
                day.extend(page.settlements.into_iter().map(|s| s.setl_id));
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            let totals = recon
                .reconcile_totals(proto::ReconcileTotalsRequest {
                    from_date: date.clone(),
                    to_date: date.clone(),
                    groups: vec![],
                })
                .await
                .must()
                .groups
                .into_iter()
                .filter_map(|g| g.ours)
                .map(|g| {
                    let [m, f, a, c] = [
                        g.medfee_sumamt,
                        g.fund_pay_sumamt,
                        g.acct_pay,
                        g.psn_cash_pay,
                    ];
                    (g.count, m, f, a, c)
                })
                .collect();
            let (mut audit, mut token) = (Vec::new(), String::new());
            loop {
                let page = op
                    .led()
                    .list_audit(proto::ListAuditRequest {
                        principal: format!("institution:{PH}"),
                        page_size: 2,
                        page_token: token,
                    })
                    .await
                    .must();
                audit.extend(page.records.into_iter().map(|r| r.request_id));
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            let of = |b: proto::Balance| (b.balance, b.entries);
            let inst = of(balance(&op, &format!("inst:{PH}")).await);
            let due = balance(&op, &format!("due:{WUHAI}->{ORDOS}")).await.balance;
            InstitutionReads {
                day,
                totals,
                audit,
                inst,
                due,
            }
        }
    };
    // Rows of the pharmacy in SQLite's index tables (settlements, audit records, receivable
    // entries); None on PostgreSQL.
    let indexed = || {
        let db = ts.db.clone();
        async move {
            let mut c = db.read().await.expect("read");
            c.with_sqlite(move |x| {
                let count =
                    |sql: &str, key: String| x.query_row(sql, [key], |r| r.get::<_, i64>(0));
                Ok((
                    count(
                        "SELECT COUNT(*) FROM settlement_inst_ix WHERE institution = ?1",
                        PH.into(),
                    )?,
                    count(
                        "SELECT COUNT(*) FROM audit_principal_ix WHERE principal = ?1",
                        format!("institution:{PH}"),
                    )?,
                    count(
                        "SELECT COALESCE(SUM(entries), 0) FROM account_total WHERE account = ?1",
                        format!("inst:{PH}"),
                    )?,
                ))
            })
            .await
            .expect("count")
        }
    };
    // What the reads must show after the swipes so far (newest audit record first).
    let expected = |settled: &[proto::Settlement], rids: &[String]| {
        let n = i64::try_from(settled.len()).expect("count");
        let sum = |f: fn(&proto::Settlement) -> &str| {
            let total: rust_decimal::Decimal = settled
                .iter()
                .map(|s| f(s).parse::<rust_decimal::Decimal>().expect("amount"))
                .sum();
            format!("{total:.2}")
        };
        let fund = sum(|s| s.fund_pay_sumamt.as_str());
        let acct = sum(|s| s.acct_pay.as_str());
        let receivable: rust_decimal::Decimal =
            fund.parse::<rust_decimal::Decimal>().expect("fund")
                + acct.parse::<rust_decimal::Decimal>().expect("acct");
        InstitutionReads {
            day: settled.iter().map(|s| s.setl_id.clone()).collect(),
            totals: vec![(
                n,
                sum(|s| s.medfee_sumamt.as_str()),
                fund,
                acct.clone(),
                sum(|s| s.psn_cash_pay.as_str()),
            )],
            audit: rids.iter().rev().cloned().collect(),
            inst: (format!("{receivable:.2}"), settled.len() as u64),
            // The due account receives the fund parts and the account part, as the pharmacy.
            due: format!("{receivable:.2}"),
        }
    };

    for _ in 0..3 {
        let (rid, p) = book().await;
        rids.push(rid);
        settled.push(p.settlement.expect("settlement"));
    }
    let date = settled[0].business_date.clone();
    assert!(settled.iter().all(|s| s.business_date == date));
    // Hand-computed: 35.50 in scope, all from the account (no deductible at a pharmacy here).
    assert_eq!(settled[0].medfee_sumamt, "35.50");
    let want = expected(&settled, &rids);
    // In the tails (unless the idle writer merged meanwhile).
    assert_eq!(read(date.clone()).await, want);
    // Merged: the same answers; nothing left to merge.
    let merged = merge_tails(&ts).await;
    assert!(sqlite || merged == 0, "merged {merged} on PostgreSQL");
    assert_eq!(merge_tails(&ts).await, 0);
    assert_eq!(indexed().await, sqlite.then_some((3, 3, 3)));
    assert_eq!(read(date.clone()).await, want);

    // Two more, in the tails: the reads page across index tables and tails.
    for _ in 0..2 {
        let (rid, p) = book().await;
        rids.push(rid);
        settled.push(p.settlement.expect("settlement"));
    }
    assert!(settled.windows(2).all(|p| p[0].setl_id < p[1].setl_id));
    let want = expected(&settled, &rids);
    assert_eq!(read(date.clone()).await, want);
    // A row of each tail at a time until none is left.
    loop {
        let mut c = ts.db.begin().await.expect("begin");
        let n = derived::merge_at_most(&mut c, 1, 1).await.expect("merge");
        c.commit().await.expect("commit");
        assert!(n <= if sqlite { 5 } else { 0 }, "merged {n} rows");
        if n == 0 {
            break;
        }
        assert_eq!(read(date.clone()).await, want);
    }
    assert_eq!(indexed().await, sqlite.then_some((5, 5, 5)));
    assert_eq!(read(date.clone()).await, want);
    verify_ok(&ts).await;

    // The swipe writer's in-batch merge at its pace: 512 audit records of another principal
    // (MERGE_ROWS_BY_KEY_SOON) wait while the writer is busy, and are merged once it keeps up.
    const { assert!(derived::MERGE_ROWS_BY_KEY_SOON < derived::MERGE_ROWS_BY_KEY) };
    const { assert!(derived::MERGE_ROWS_BY_KEY_SOON < derived::MERGE_ROWS_SOON) };
    // `n` audit records of principal `bureau:{code}`, written behind the writer's back.
    let audit_rows = |code: &str, n: i64| {
        format!(
            "INSERT INTO audit_log (audit_id, principal, rpc, request_id, outcome, detail, at) \
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) \
             SELECT 'A{code}-' || i, 'bureau:{code}', '/x', 'r' || i, 'OK', '', '{date}' FROM n"
        )
    };
    raw_sql(
        &ts,
        &[&audit_rows("999998", derived::MERGE_ROWS_BY_KEY_SOON)],
    )
    .await;
    let mut merged_at = Vec::new();
    for pace in [
        derived::Pace::Busy,
        derived::Pace::KeepingUp,
        derived::Pace::KeepingUp,
    ] {
        let mut c = ts.db.begin().await.expect("begin");
        merged_at.push(derived::merge_due(&mut c, pace).await.expect("merge"));
        c.commit().await.expect("commit");
    }
    let soon = derived::MERGE_ROWS_BY_KEY_SOON;
    assert_eq!(merged_at, if sqlite { [0, soon, 0] } else { [0, 0, 0] });
    assert_eq!(read(date.clone()).await, want);

    // The busy writer (and `merge(MERGE_ROWS)`) takes a table keyed by principal once its tail
    // reaches MERGE_ROWS_BY_KEY rows, not MERGE_ROWS: 1,024 audit records of another principal
    // are merged, and the random-key tables' tiny tails are not.
    const { assert!(derived::MERGE_ROWS_BY_KEY < derived::MERGE_ROWS) };
    raw_sql(&ts, &[&audit_rows("999999", derived::MERGE_ROWS_BY_KEY)]).await;
    let mut c = ts.db.begin().await.expect("begin");
    let n = derived::merge(&mut c, derived::MERGE_ROWS)
        .await
        .expect("merge");
    c.commit().await.expect("commit");
    assert_eq!(
        n,
        if sqlite {
            derived::MERGE_ROWS_BY_KEY
        } else {
            0
        }
    );
    assert_eq!(read(date.clone()).await, want);
    verify_ok(&ts).await;

    // The verification notices an index table that lost a row or had one changed.
    if sqlite {
        raw_sql(
            &ts,
            &[
                &format!(
                    "DELETE FROM settlement_inst_ix WHERE setl_id = '{}'",
                    settled[0].setl_id
                ),
                &format!(
                    "DELETE FROM audit_principal_ix WHERE principal = 'institution:{PH}' \
                     AND audit_id = (SELECT MIN(audit_id) FROM audit_principal_ix \
                     WHERE principal = 'institution:{PH}')"
                ),
                &format!(
                    "UPDATE account_total SET amount_fen = amount_fen + 1 WHERE account = 'inst:{PH}'"
                ),
            ],
        )
        .await;
        let v = w.op.led().verify(proto::VerifyRequest {}).await.must();
        let check = v.checks.iter().find(|c| c.name == "indexes_match_sources");
        let detail = check.map(|c| (c.ok, c.detail.clone()));
        let (ok, detail) = detail.expect("indexes_match_sources check");
        assert!(!ok && !v.ok, "{detail}");
        for part in [
            format!(
                "settlement_inst_ix lacks {PH} {date} {}",
                settled[0].setl_id
            ),
            format!("audit_principal_ix lacks institution:{PH}"),
            format!("account_total lacks inst:{PH} 17750 in 5"),
            format!("account_total has inst:{PH} 17751 in 5"),
        ] {
            assert!(detail.contains(&part), "{part} not in {detail}");
        }
    }
}

/// The swipe writer keeps the persons it looked up (on SQLite, `store::persons::PersonCache`)
/// only while nobody changes persons or their insurances: each change below reaches the very next
/// swipe, by card and by e-voucher.
async fn person_changes_reach_the_next_swipe(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    let p = person(&w, WUHAI, 1, "300.00").await;
    let one = || vec![pl("1", "A001", "1", "35.50")];
    let status =
        |status: PersonStatus, insurance_type: InsuranceType| proto::SetPersonStatusRequest {
            request_id: rid(),
            psn_no: p.psn_no.clone(),
            status: status as i32,
            insurance_type: insurance_type as i32,
            reason: "e2e".into(),
        };
    swipe(&w.ph, swipe_req(&rid(), card(&p), one(), true)).await;
    swipe(&w.ph, swipe_req(&rid(), ev(&p), one(), true)).await;

    // Their employee insurance suspended (the person still active): refused both ways.
    let reg = w.wuhai.reg();
    reg.clone()
        .set_person_status(status(PersonStatus::Suspended, InsuranceType::Employee))
        .await
        .must();
    for cred in [card(&p), ev(&p)] {
        refused(
            w.ph.clone()
                .settle_purchase(swipe_req(&rid(), cred, one(), true))
                .await,
            "insurance_not_active",
        );
    }
    reg.clone()
        .set_person_status(status(PersonStatus::Active, InsuranceType::Employee))
        .await
        .must();
    swipe(&w.ph, swipe_req(&rid(), card(&p), one(), true)).await;

    // A new card: the old number finds nobody, the new one the person.
    reg.clone()
        .set_card_status(proto::SetCardStatusRequest {
            request_id: rid(),
            psn_no: p.psn_no.clone(),
            card_status: CardStatus::Active as i32,
            new_card_no: "CNEW0000001".into(),
        })
        .await
        .must();
    w.ph.clone()
        .settle_purchase(swipe_req(&rid(), card(&p), one(), true))
        .await
        .code_is(Code::NotFound);
    let renewed = Psn {
        card_no: "CNEW0000001".into(),
        ..p.clone()
    };
    swipe(&w.ph, swipe_req(&rid(), card(&renewed), one(), true)).await;

    // A card no one held when it was swiped, then given to a person enrolled since.
    let q_card = format!("C{WUHAI}{:05}", 2);
    let q_cred = Some(proto::CardCredential {
        credential: Some(proto::card_credential::Credential::CardNo(q_card.clone())),
    });
    w.ph.clone()
        .settle_purchase(swipe_req(&rid(), q_cred.clone(), one(), true))
        .await
        .code_is(Code::NotFound);
    let q = person(&w, WUHAI, 2, "300.00").await;
    assert_eq!(q.card_no, q_card);
    swipe(&w.ph, swipe_req(&rid(), q_cred, one(), true)).await;

    // SQLite: changes while no swipe comes are read (and their log emptied) by the idle writer,
    // not left for the next swipe's batch.
    if b == Backend::Sqlite {
        person(&w, WUHAI, 3, "300.00").await;
        let logged = || async {
            let mut c = ts.db.read().await.expect("read");
            c.with_sqlite(|x| {
                Ok(x.query_row("SELECT COUNT(*) FROM person_change", [], |r| {
                    r.get::<_, i64>(0)
                })?)
            })
            .await
            .expect("counting the log")
        };
        let mut waited = 0;
        while logged().await != Some(0) {
            assert!(
                waited < 50,
                "the idle writer left the person changes unread"
            );
            waited += 1;
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    verify_ok(&ts).await;
}

/// SQLite keeps the request ids' key in batches (sqlite/0017): `idempotency_ix` plus the rows
/// stored since its last merge, which the swipe writer keeps in a map from batch to batch. A
/// swipe's request id must be found wherever its key is — merged, in the tail, merged by the
/// writer within a batch after the writer had mapped it — and replay the first answer, or be
/// refused under another payload, with nothing booked twice; a request id another writer stored
/// (a 冲正's, closing an id never sent) must refuse the late swipe; the verification must notice
/// a key stored twice. PostgreSQL keeps its primary key and answers the same calls the same.
async fn request_ids_across_merges(b: Backend) {
    use medsettle::store::derived;
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    let sqlite = b == Backend::Sqlite;
    let p = person(&w, WUHAI, 1, "300.00").await;
    // (merged up to, rows) of SQLite's request ids; None on PostgreSQL.
    let key_state = || {
        let db = ts.db.clone();
        async move {
            let mut c = db.read().await.expect("read");
            c.with_sqlite(|x| {
                Ok(x.query_row(
                    "SELECT (SELECT upto FROM derived_index WHERE name = 'idempotency'), \
                     (SELECT MAX(rowid) FROM idempotency)",
                    [],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
                )?)
            })
            .await
            .expect("request ids")
        }
    };
    let replays_and_refusals = |ids: Vec<(String, proto::Purchase)>| {
        let (w, p) = (&w, &p);
        async move {
            for (id, first) in ids {
                let again =
                    w.ph.clone()
                        .settle_purchase(swipe_req(&id, card(p), reference_lines(), true))
                        .await
                        .must();
                assert_eq!(again, first, "{id} replayed");
                w.ph.clone()
                    .settle_purchase(swipe_req(&id, card(p), reference_lines(), false))
                    .await
                    .code_is(Code::AlreadyExists);
            }
        }
    };

    // One swipe's key merged, one's in the tail.
    let merged_id = rid();
    let merged = swipe(
        &w.ph,
        swipe_req(&merged_id, card(&p), reference_lines(), true),
    )
    .await;
    merge_tails(&ts).await;
    if let Some((upto, last)) = key_state().await {
        assert_eq!(upto, last, "merged");
    }
    let tail_id = rid();
    let tail = swipe(
        &w.ph,
        swipe_req(&tail_id, card(&p), reference_lines(), true),
    )
    .await;
    let mut ids = vec![(merged_id.clone(), merged), (tail_id.clone(), tail)];
    let booked = snapshot(&ts, &w, &p).await;
    assert_eq!(booked.settlements, 2);
    replays_and_refusals(ids.clone()).await;
    assert_eq!(snapshot(&ts, &w, &p).await, booked, "nothing booked twice");

    // The writer has mapped the tail; another principal's 600 request ids stored behind its
    // back (more than MERGE_ROWS_BY_KEY_SOON) make its next batch merge the key: the swipe's
    // own, the tail's and those 600 — and every id is found again afterwards, from the index.
    if sqlite {
        const { assert!(derived::MERGE_ROWS_BY_KEY_SOON < 600) };
        raw_sql(
            &ts,
            &[
                "INSERT INTO idempotency (principal, request_id, rpc, payload_hash, response, \
               created_at) \
               WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 600) \
               SELECT 'bureau:150300', 'r' || i, '/x', X'00', X'', '2026-11-27T00:00:00Z' FROM n",
            ],
        )
        .await;
    }
    let within_id = rid();
    let within = swipe(
        &w.ph,
        swipe_req(&within_id, card(&p), reference_lines(), true),
    )
    .await;
    if let Some((upto, last)) = key_state().await {
        assert!(
            upto >= 602 && upto == last,
            "merged within the batch: {upto} of {last}"
        );
    }
    ids.push((within_id, within));
    let booked = snapshot(&ts, &w, &p).await;
    assert_eq!(booked.settlements, 3);
    replays_and_refusals(ids.clone()).await;
    // And one merged a row at a time, found at every step.
    let one_more_id = rid();
    let one_more = swipe(
        &w.ph,
        swipe_req(&one_more_id, card(&p), reference_lines(), true),
    )
    .await;
    ids.push((one_more_id, one_more));
    let booked = snapshot(&ts, &w, &p).await;
    loop {
        let mut c = ts.db.begin().await.expect("begin");
        let n = derived::merge_at_most(&mut c, 1, 1).await.expect("merge");
        c.commit().await.expect("commit");
        replays_and_refusals(ids[ids.len() - 1..].to_vec()).await;
        if n == 0 {
            break;
        }
    }
    assert_eq!(snapshot(&ts, &w, &p).await, booked, "nothing booked twice");

    // A 冲正 of a request id never sent stores it (on the pool's connection, not the swipe
    // writer's); the swipe arriving late under it is refused.
    let lost = rid();
    let none = reverse_by_request(&w.ph, &lost).await.must();
    assert!(!none.found, "{none:?}");
    w.ph.clone()
        .settle_purchase(swipe_req(&lost, card(&p), reference_lines(), true))
        .await
        .code_is(Code::AlreadyExists);
    assert_eq!(snapshot(&ts, &w, &p).await, booked);
    // And a 冲正 by request id finds the settlement through the key, merged or not.
    let back = reverse_by_request(&w.ph, &merged_id).await.must();
    assert_eq!(
        back.reversal.unwrap().reverses,
        ids[0].1.settlement.as_ref().unwrap().setl_id
    );
    let back = reverse_by_request(&w.ph, &ids[3].0).await.must();
    assert_eq!(
        back.reversal.unwrap().reverses,
        ids[3].1.settlement.as_ref().unwrap().setl_id
    );
    verify_ok(&ts).await;

    // The verification notices a key stored twice (written behind the writers' backs).
    if sqlite {
        raw_sql(
            &ts,
            &[&format!(
                "INSERT INTO idempotency (principal, request_id, rpc, payload_hash, response, \
                 created_at, setl_id) SELECT principal, request_id, rpc, payload_hash, response, \
                 created_at, setl_id FROM idempotency WHERE request_id = '{tail_id}'"
            )],
        )
        .await;
        merge_tails(&ts).await;
        let v = w.op.led().verify(proto::VerifyRequest {}).await.must();
        let check = v.checks.iter().find(|c| c.name == "indexes_match_sources");
        let (ok, detail) = check.map(|c| (c.ok, c.detail.clone())).expect("the check");
        assert!(!ok && !v.ok, "{detail}");
        assert!(
            detail.contains(&format!(
                "idempotency_ix lacks institution:{PH} {tail_id} at "
            )),
            "{detail}"
        );
    }
}

/// ListJournal of a personal account on SQLite reads the person's settlements (through the
/// batch-maintained index by person) and the account's fundings (opening balance, deposits)
/// instead of scanning the journal (`store::journal::list_txs`). It must list exactly the
/// transactions with a leg on the account — what a scan of the journal finds, on both engines —
/// oldest first and paged, across the index's merge: the opening balance, a deposit, swipes paid
/// from the account, a refund and a 冲正; not a swipe paid in cash, nor another person's. The
/// verification notices a personal-account leg of any other kind of transaction, which that
/// listing would not see.
async fn personal_journal_through_settlements(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    let p = person(&w, WUHAI, 1, "300.00").await;
    let q = person(&w, WUHAI, 2, "300.00").await;
    let account = format!("pacct:{}", p.psn_no);
    w.wuhai
        .reg()
        .deposit_personal_account(deposit(&p.psn_no, "500.00"))
        .await
        .must();
    let mut settled = Vec::new();
    let s1 = swipe(&w.ph, swipe_req(&rid(), card(&p), reference_lines(), true)).await;
    settled.push(s1.settlement.clone().unwrap());
    let cash = swipe(&w.ph, swipe_req(&rid(), card(&p), reference_lines(), false)).await;
    let cash = cash.settlement.unwrap();
    assert_eq!(cash.acct_pay, "0.00");
    settled.push(cash.clone());
    swipe(&w.ph, swipe_req(&rid(), card(&q), reference_lines(), true)).await;
    merge_tails(&ts).await;
    let s1_id = settled[0].setl_id.clone();
    let r =
        w.ph.clone()
            .refund_purchase(refund_req(&s1_id, &[("2", "1")]))
            .await;
    settled.push(r.must().settlement.unwrap());
    let id2 = rid();
    let s2 = swipe(&w.ph, swipe_req(&id2, card(&p), reference_lines(), true)).await;
    settled.push(s2.settlement.unwrap());
    let back = reverse_by_request(&w.ph, &id2).await.must();
    settled.push(back.reversal.unwrap());

    // What the answers say moved money on the account: the two fundings (their reference is the
    // person), then every settlement with an account part, in booking order.
    let mut expected = vec![p.psn_no.clone(), p.psn_no.clone()];
    expected.extend(
        settled
            .iter()
            .filter(|s| s.acct_pay != "0.00")
            .map(|s| s.setl_id.clone()),
    );
    assert_eq!(expected.len(), 6, "{settled:?}");
    assert!(!expected.contains(&cash.setl_id));
    // What a scan of the journal finds.
    let mut conn = ts.db.begin().await.expect("begin");
    let sql = "SELECT t.journal_id FROM journal_tx t WHERE EXISTS (SELECT 1 FROM journal_entry e \
               WHERE e.journal_id = t.journal_id AND e.account = $1) ORDER BY t.journal_id";
    let scanned: Vec<(String,)> = medsettle::on_conn!(&mut conn, x => sqlx::query_as(sql)
        .bind(&account).fetch_all(x).await)
    .expect("scan");
    conn.commit().await.expect("commit");
    let scanned: Vec<String> = scanned.into_iter().map(|(j,)| j).collect();
    // ListJournal, whole and in pages of two.
    let list = |size: u32, token: String| {
        let (w, account) = (&w, &account);
        async move {
            w.wuhai
                .led()
                .list_journal(proto::ListJournalRequest {
                    account: account.clone(),
                    page_size: size,
                    page_token: token,
                })
                .await
                .must()
        }
    };
    let whole = list(0, String::new()).await;
    assert!(whole.next_page_token.is_empty());
    let ids: Vec<String> = whole
        .transactions
        .iter()
        .map(|t| t.journal_id.clone())
        .collect();
    let references: Vec<String> = whole
        .transactions
        .iter()
        .map(|t| t.reference.clone())
        .collect();
    assert_eq!(ids, scanned);
    assert_eq!(references, expected);
    let mut paged = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(2, token).await;
        assert!(page.transactions.len() <= 2);
        paged.extend(page.transactions.into_iter().map(|t| t.journal_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(paged, ids);
    verify_ok(&ts).await;

    // A leg on the account in a transaction of another kind (written behind the service's back,
    // balanced and moving nothing): the verification names it.
    raw_sql(
        &ts,
        &[
            "INSERT INTO journal_tx (journal_id, kind, reference, memo, business_date, booked_at) \
             VALUES ('J-adjust', 'adjustment', 'x', '', '2026-11-27', '2026-11-27T00:00:00Z')",
            &format!(
                "INSERT INTO journal_entry (journal_id, seq, account, amount_fen) \
                 VALUES ('J-adjust', 1, '{account}', 100), ('J-adjust', 2, '{account}', -100)"
            ),
        ],
    )
    .await;
    let v = w.op.led().verify(proto::VerifyRequest {}).await.must();
    let check = v
        .checks
        .iter()
        .find(|c| c.name == "personal_account_legs_listed");
    let (ok, detail) = check.map(|c| (c.ok, c.detail.clone())).expect("the check");
    assert!(!ok && !v.ok, "{detail}");
    assert!(detail.contains("J-adjust"), "{detail}");
}

/// Settlements and their stored identities on `b`: (rowid, setl_id) on SQLite (the
/// batch-maintained indexes find their tails by rowid), (0, setl_id) on PostgreSQL; and every
/// (principal, request id, setl_id) the idempotency rows name, when they have the column.
async fn stored_identities(
    ts: &TestServer,
    named: bool,
) -> (Vec<(i64, String)>, Vec<(String, String, String)>) {
    let rowid = match ts.backend {
        Backend::Sqlite => "rowid",
        Backend::Postgres => "0::bigint",
    };
    let mut conn = ts.db.begin().await.expect("begin");
    let sql = format!("SELECT {rowid}, setl_id FROM settlement ORDER BY setl_id");
    let settlements: Vec<(i64, String)> =
        medsettle::on_conn!(&mut conn, x => sqlx::query_as(&sql).fetch_all(x).await)
            .expect("settlements");
    let sql = "SELECT principal, request_id, setl_id FROM idempotency \
               WHERE setl_id IS NOT NULL ORDER BY setl_id";
    let named = if named {
        medsettle::on_conn!(&mut conn, x => sqlx::query_as(sql).fetch_all(x).await)
            .expect("idempotency rows")
    } else {
        Vec::new()
    };
    conn.commit().await.expect("commit");
    (settlements, named)
}

/// A database written before migrations sqlite/0013 and postgres/0011 kept each settlement's
/// request id a second time, in a unique index of the settlement table (and on SQLite, before 0014,
/// purchase lines in a rowid table with a separate key; before 0016, the personal accounts' entries
/// in an index table rather than totals; before 0017, the request ids' key a primary key of the
/// idempotency table; before 0019, the events' ids indexed). Built here by the real server (two
/// pharmacies' swipes under one request id, a refund), then put back into that shape (the
/// idempotency rows name no settlement, the unique index is back, the lines unclustered, the
/// personal totals taken apart, the migrations unrecorded): migrating again must total the personal
/// accounts as they were, keep every settlement (on SQLite with its rowid), every event (with its
/// seq) and every purchase as it was, name each settlement in the idempotency row of the call that
/// booked it, leave the request ids indexed once, and let each pharmacy's 冲正 by request id find its
/// own settlement.
async fn upgrade_to_request_ids_once(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    // Baotou's insured may swipe at both pharmacies (Ordos, and Shizuishan outside the province).
    let p = person(&w, BAOTOU, 1, "300.00").await;
    let shared = rid();
    let s = swipe(&w.ph, swipe_req(&shared, card(&p), reference_lines(), true))
        .await
        .settlement
        .unwrap();
    let s_nx = swipe(&w.ph_nx, swipe_req(&shared, card(&p), nx_lines(), false))
        .await
        .settlement
        .unwrap();
    let req = refund_req(&s_nx.setl_id, &[("1", "1")]);
    let refund_rid = req.request_id.clone();
    let r = w.ph_nx.clone().refund_purchase(req).await.must();
    let r = r.settlement.unwrap();
    let (settlements, named) = stored_identities(&ts, true).await;
    let events = stored_events(&ts).await;
    assert_eq!(events.len(), 3, "{events:?}");
    let purchases = [
        get_purchase(&w.ph, &s.setl_id).await.must(),
        get_purchase(&w.ph_nx, &s_nx.setl_id).await.must(),
    ];
    let mut expected = vec![
        (
            format!("institution:{PH}"),
            shared.clone(),
            s.setl_id.clone(),
        ),
        (
            format!("institution:{PH_NX}"),
            shared.clone(),
            s_nx.setl_id.clone(),
        ),
        (
            format!("institution:{PH_NX}"),
            refund_rid.clone(),
            r.setl_id.clone(),
        ),
    ];
    expected.sort_by(|a, b| a.2.cmp(&b.2));
    assert_eq!(
        named, expected,
        "each booking call's row names its settlement"
    );

    // Back to the shape before: no column naming settlements, the second index back.
    let (unique, version) = match b {
        Backend::Sqlite => (
            "CREATE UNIQUE INDEX uq_settlement_request ON settlement (institution, request_id)",
            13,
        ),
        Backend::Postgres => (
            "ALTER TABLE settlement ADD CONSTRAINT uq_settlement_request \
             UNIQUE (institution, request_id)",
            11,
        ),
    };
    let unrecord = format!("DELETE FROM _sqlx_migrations WHERE version >= {version}");
    raw_sql(
        &ts,
        &[
            "DROP VIEW idempotency_by_key",
            "ALTER TABLE idempotency DROP COLUMN setl_id",
            unique,
            &unrecord,
        ],
    )
    .await;
    // SQLite's totals of the personal accounts before they were taken apart.
    let mut totals = None;
    if b == Backend::Sqlite {
        // Purchase lines as 0003 made them: a rowid table and its key.
        let old = r"CREATE TABLE purchase_line_rowid (
            setl_id TEXT NOT NULL REFERENCES settlement (setl_id), line_no TEXT NOT NULL,
            code TEXT NOT NULL, name TEXT NOT NULL, qty_scaled BIGINT NOT NULL,
            price_micros BIGINT NOT NULL, class BIGINT NOT NULL, cap_micros BIGINT,
            b_ratio_bp BIGINT, catalogue_version BIGINT NOT NULL, amount_fen BIGINT NOT NULL,
            fulamt_fen BIGINT NOT NULL, overlmt_fen BIGINT NOT NULL, preself_fen BIGINT NOT NULL,
            inscp_fen BIGINT NOT NULL, refunded_qty_scaled BIGINT NOT NULL,
            PRIMARY KEY (setl_id, line_no))";
        raw_sql(
            &ts,
            &[
                old,
                "INSERT INTO purchase_line_rowid SELECT * FROM purchase_line",
                "DROP TABLE purchase_line",
                "ALTER TABLE purchase_line_rowid RENAME TO purchase_line",
            ],
        )
        .await;
        // And no record of person changes (0015's count, which 0021 replaced by a log).
        let mut drops: Vec<String> = ["person", "insurance"]
            .iter()
            .flat_map(|t| {
                ["insert", "update", "delete"]
                    .map(|op| format!("DROP TRIGGER person_change_{t}_{op}"))
            })
            .collect();
        drops.push("DROP TABLE person_change".into());
        raw_sql(&ts, &drops.iter().map(String::as_str).collect::<Vec<_>>()).await;
        // And the personal accounts' entries in an index table of their own (0010), merged as
        // far as the other accounts' totals: 0016 must total them again from the journal.
        let mut c = ts.db.begin().await.expect("begin");
        medsettle::store::derived::merge(&mut c, 1)
            .await
            .expect("merge");
        c.commit().await.expect("commit");
        let totals_before = pacct_totals(&ts).await;
        assert!(
            totals_before
                .iter()
                .any(|t| t.0 == format!("pacct:{}", p.psn_no)),
            "{totals_before:?}"
        );
        raw_sql(
            &ts,
            &[
                "CREATE TABLE entry_pacct_ix (account TEXT NOT NULL, journal_id TEXT NOT NULL, \
                 seq INTEGER NOT NULL, amount_fen INTEGER NOT NULL, \
                 PRIMARY KEY (account, journal_id, seq)) WITHOUT ROWID",
                "INSERT INTO entry_pacct_ix (account, journal_id, seq, amount_fen) \
                 SELECT e.account, e.journal_id, e.seq, e.amount_fen \
                 FROM journal_tx t CROSS JOIN journal_entry e ON e.journal_id = t.journal_id \
                 WHERE t.rowid <= (SELECT upto FROM derived_index WHERE name = 'account_total') \
                 AND e.account LIKE 'pacct:%'",
                "INSERT INTO derived_index (name, upto) \
                 SELECT 'entry_pacct', upto FROM derived_index WHERE name = 'account_total'",
                "DELETE FROM account_total WHERE account LIKE 'pacct:%'",
                "DROP VIEW account_sums",
                "CREATE VIEW account_sums AS \
                 SELECT account, amount_fen, entries FROM account_total UNION ALL \
                 SELECT account, amount_fen, 1 FROM entry_pacct_ix UNION ALL \
                 SELECT e.account, e.amount_fen, 1 \
                 FROM journal_tx t CROSS JOIN journal_entry e ON e.journal_id = t.journal_id \
                 WHERE t.rowid > (SELECT upto FROM derived_index WHERE name = 'account_total') \
                 AND e.account NOT LIKE 'pacct:%' UNION ALL \
                 SELECT e.account, e.amount_fen, 1 \
                 FROM journal_tx t CROSS JOIN journal_entry e ON e.journal_id = t.journal_id \
                 WHERE t.rowid > (SELECT upto FROM derived_index WHERE name = 'entry_pacct') \
                 AND e.account LIKE 'pacct:%'",
            ],
        )
        .await;
        assert_eq!(pacct_totals(&ts).await, []);
        // The request ids' key a primary key again (before 0017), the rowids kept.
        raw_sql(
            &ts,
            &[
                "DROP TABLE idempotency_ix",
                "DELETE FROM derived_index WHERE name = 'idempotency'",
                "CREATE TABLE idempotency_pk (principal TEXT NOT NULL, request_id TEXT NOT NULL, \
                 rpc TEXT NOT NULL, payload_hash BLOB NOT NULL, response BLOB NOT NULL, \
                 created_at TEXT NOT NULL, PRIMARY KEY (principal, request_id))",
                "INSERT INTO idempotency_pk (rowid, principal, request_id, rpc, payload_hash, \
                 response, created_at) SELECT rowid, principal, request_id, rpc, payload_hash, \
                 response, created_at FROM idempotency",
                "DROP TABLE idempotency",
                "ALTER TABLE idempotency_pk RENAME TO idempotency",
                // And the events' ids unique (their index, as 0006's constraint kept it).
                "CREATE UNIQUE INDEX event_id_unique ON event (event_id)",
            ],
        )
        .await;
        totals = Some(totals_before);
    }
    assert_eq!(stored_identities(&ts, false).await.0, settlements);
    ts.db
        .migrate()
        .await
        .expect("migrating to request ids once");
    if let Some(totals) = totals {
        assert_eq!(pacct_totals(&ts).await, totals);
    }

    assert_eq!(stored_identities(&ts, true).await, (settlements, expected));
    assert_eq!(stored_events(&ts).await, events, "every event as it was");
    let unique_indexes = match b {
        // The primary key's only.
        Backend::Sqlite => {
            "SELECT COUNT(*) FROM pragma_index_list('settlement') WHERE \"unique\" = 1"
        }
        Backend::Postgres => {
            "SELECT COUNT(*) FROM pg_indexes WHERE tablename = 'settlement' \
             AND indexdef LIKE 'CREATE UNIQUE%'"
        }
    };
    let mut conn = ts.db.begin().await.expect("begin");
    let (n,): (i64,) =
        medsettle::on_conn!(&mut conn, x => sqlx::query_as(unique_indexes).fetch_one(x).await)
            .expect("unique indexes");
    conn.commit().await.expect("commit");
    assert_eq!(n, 1, "settlement is unique by setl_id alone");
    assert_eq!(
        [
            get_purchase(&w.ph, &s.setl_id).await.must(),
            get_purchase(&w.ph_nx, &s_nx.setl_id).await.must(),
        ],
        purchases,
        "every purchase as it was"
    );
    if b == Backend::Sqlite {
        let mut conn = ts.db.begin().await.expect("begin");
        let sql = "SELECT sql FROM sqlite_schema WHERE name = 'purchase_line'";
        let (table,): (String,) =
            medsettle::on_conn!(&mut conn, x => sqlx::query_as(sql).fetch_one(x).await)
                .expect("purchase_line");
        conn.commit().await.expect("commit");
        assert!(table.ends_with("WITHOUT ROWID"), "{table}");
        // Events are read by seq: their ids are not indexed (0019).
        let mut conn = ts.db.begin().await.expect("begin");
        let sql = "SELECT COUNT(*) FROM pragma_index_list('event')";
        let (n,): (i64,) =
            medsettle::on_conn!(&mut conn, x => sqlx::query_as(sql).fetch_one(x).await)
                .expect("event's indexes");
        conn.commit().await.expect("commit");
        assert_eq!(n, 0, "event has no index");
    }

    // Each pharmacy's 冲正 of the shared request id finds its own purchase; of the refund's,
    // the refund (which is not a purchase).
    refused(
        reverse_by_request(&w.ph_nx, &refund_rid).await,
        "not_a_purchase",
    );
    let back = reverse_by_request(&w.ph, &shared).await.must();
    assert!(back.found);
    assert_eq!(back.reversal.unwrap().reverses, s.setl_id);
    let back_nx = reverse_by_request(&w.ph_nx, &shared).await.must();
    assert!(back_nx.found);
    assert_eq!(back_nx.reversal.unwrap().reverses, s_nx.setl_id);
    assert_eq!(pacct(&w, &p.psn_no).await, "300.00");
    verify_ok(&ts).await;
}

/// Every event on `b`: (seq, event_id, reference) on SQLite (the stream's cursor is the seq),
/// (0, event_id, reference) on PostgreSQL, in event_id order.
async fn stored_events(ts: &TestServer) -> Vec<(i64, String, String)> {
    let seq = match ts.backend {
        Backend::Sqlite => "seq",
        Backend::Postgres => "0::bigint",
    };
    let sql = format!("SELECT {seq}, event_id, reference FROM event ORDER BY event_id");
    let mut conn = ts.db.begin().await.expect("begin");
    let rows = medsettle::on_conn!(&mut conn, x => sqlx::query_as(&sql).fetch_all(x).await)
        .expect("events");
    conn.commit().await.expect("commit");
    rows
}

/// Merges every tail of SQLite's batch-maintained indexes (see `store::derived`) in a
/// transaction of its own; the rows merged (0 on PostgreSQL).
async fn merge_tails(ts: &TestServer) -> i64 {
    let mut c = ts.db.begin().await.expect("begin");
    let n = medsettle::store::derived::merge(&mut c, 1)
        .await
        .expect("merge");
    c.commit().await.expect("commit");
    n
}

/// SQLite's totals of the personal accounts' journal entries: (account, fen, entries).
async fn pacct_totals(ts: &TestServer) -> Vec<(String, i64, i64)> {
    let sql = "SELECT account, amount_fen, entries FROM account_total \
               WHERE account LIKE 'pacct:%' ORDER BY account";
    let mut conn = ts.db.begin().await.expect("begin");
    let rows: Vec<(String, i64, i64)> =
        medsettle::on_conn!(&mut conn, x => sqlx::query_as(sql).fetch_all(x).await)
            .expect("totals");
    conn.commit().await.expect("commit");
    rows
}

/// Runs futures concurrently and collects their outputs in order.
async fn futures_join<F: std::future::Future + Send + 'static>(fs: Vec<F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

// ------------------------------------------------------------------------------ kit

mod kit {
    #![allow(dead_code)]

    use super::common::*;
    use medsettle::domain::ids::{InstitutionCode, RegionCode};
    use medsettle::proto;
    use medsettle::proto::pharmacy_service_client::PharmacyServiceClient;
    use medsettle::proto::settlement_service_client::SettlementServiceClient;
    use medsettle::service::auth::Grant;
    use proto::{
        CardStatus, CareType, CatalogueClass, CatalogueKind, DeductibleBasis, InstitutionStatus,
        InsuranceType, LevelScope, PersonCategory, ProvinceScope, SettlementKind,
    };
    use tonic::metadata::{Ascii, MetadataValue};
    use tonic::service::Interceptor;
    use tonic::service::interceptor::InterceptedService;
    use tonic::transport::Channel;
    use tonic::{Code, Request, Response, Status};
    use tonic_types::StatusExt;

    /// Home region of the reference insured (乌海市), pharmacy scope: inside province 15.
    pub const WUHAI: &str = "150300";
    /// Treatment region, province 15 (鄂尔多斯市).
    pub const ORDOS: &str = "150600";
    /// Treatment region in province 64 (石嘴山市).
    pub const SHIZUISHAN: &str = "640200";
    /// A home region whose insured may swipe anywhere, with a pharmacy pooling rule (包头市).
    pub const BAOTOU: &str = "150200";
    /// A home region whose personal accounts may pay class C (呼和浩特市).
    pub const HOHHOT: &str = "150100";
    /// The Ordos pharmacy.
    pub const PH: &str = "P15060000001";
    /// The Shizuishan pharmacy.
    pub const PH_NX: &str = "P64020000001";
    /// An Ordos hospital (not a pharmacy).
    pub const HOSP: &str = "H15060000001";
    pub const JAN1: &str = "2026-01-01";

    // -------------------------------------------------------------- clients

    /// Adds `authorization: Bearer <token>` to every request.
    #[derive(Clone)]
    pub struct Token(MetadataValue<Ascii>);

    impl Interceptor for Token {
        fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
            req.metadata_mut().insert("authorization", self.0.clone());
            Ok(req)
        }
    }

    pub type Pharm = PharmacyServiceClient<InterceptedService<Channel, Token>>;
    pub type Setl = SettlementServiceClient<InterceptedService<Channel, Token>>;

    pub async fn bearer(ts: &TestServer, grant: Grant) -> Token {
        let token = ts.token(grant).await;
        Token(format!("Bearer {token}").parse().expect("ASCII token"))
    }

    pub fn institution_grant(code: &str) -> Grant {
        Grant::Institution(InstitutionCode::parse("code", code).expect("institution code"))
    }

    pub fn bureau_grant(region: &str) -> Grant {
        Grant::Bureau(RegionCode::parse("region", region).expect("region code"))
    }

    pub async fn pharm_as(ts: &TestServer, grant: Grant) -> Pharm {
        PharmacyServiceClient::with_interceptor(ts.channel.clone(), bearer(ts, grant).await)
    }

    /// PharmacyService as the institution `code`.
    pub async fn pharm(ts: &TestServer, code: &str) -> Pharm {
        pharm_as(ts, institution_grant(code)).await
    }

    pub async fn setl_as(ts: &TestServer, grant: Grant) -> Setl {
        SettlementServiceClient::with_interceptor(ts.channel.clone(), bearer(ts, grant).await)
    }

    // -------------------------------------------------------------- the world

    pub struct World {
        pub op: Caller,
        pub wuhai: Caller,
        pub ordos: Caller,
        pub nx: Caller,
        pub baotou: Caller,
        pub hohhot: Caller,
        /// PharmacyService as P15060000001 (Ordos).
        pub ph: Pharm,
        /// PharmacyService as P64020000001 (Shizuishan).
        pub ph_nx: Pharm,
    }

    /// Regions 150300 / 150600 / 640200 / 150200 / 150100; pharmacies P15060000001 and
    /// P64020000001 (level 0, cross-region); the hospital H15060000001; the Ordos and
    /// Shizuishan catalogues; the policies of Wuhai, Baotou and Hohhot (all from 2026-01-01).
    pub async fn world(ts: &TestServer) -> World {
        let op = ts.operator().await;
        for r in [WUHAI, ORDOS, SHIZUISHAN, BAOTOU, HOHHOT] {
            create_region(&op, r).await;
        }
        for (code, region) in [(PH, ORDOS), (PH_NX, SHIZUISHAN)] {
            let req = pharmacy(code, region);
            assert_eq!(req.level, 0);
            assert!(req.cross_region_enabled);
            let i = op.reg().register_institution(req).await.must();
            assert_eq!(i.kind, proto::InstitutionKind::Pharmacy as i32);
        }
        op.reg()
            .register_institution(hospital(HOSP, ORDOS, 3))
            .await
            .must();
        let ordos = ts.bureau(ORDOS).await;
        catalogue(&ordos, ORDOS, ordos_items()).await;
        let nx = ts.bureau(SHIZUISHAN).await;
        catalogue(&nx, SHIZUISHAN, nx_items()).await;
        let wuhai = ts.bureau(WUHAI).await;
        let baotou = ts.bureau(BAOTOU).await;
        let hohhot = ts.bureau(HOHHOT).await;
        assert_eq!(put_policy(&wuhai, WUHAI, wuhai_policy()).await.version, 1);
        put_policy(&baotou, BAOTOU, baotou_policy()).await;
        put_policy(&hohhot, HOHHOT, hohhot_policy()).await;
        World {
            op,
            wuhai,
            ordos,
            nx,
            baotou,
            hohhot,
            ph: pharm(ts, PH).await,
            ph_nx: pharm(ts, PH_NX).await,
        }
    }

    pub fn item(
        code: &str,
        class: CatalogueClass,
        b_ratio: &str,
        cap: &str,
    ) -> proto::CatalogueItem {
        proto::CatalogueItem {
            region: String::new(),
            code: code.into(),
            name: format!("item {code}"),
            kind: CatalogueKind::Drug as i32,
            class: class as i32,
            b_self_pay_ratio: b_ratio.into(),
            price_cap: cap.into(),
            effective_from: JAN1.into(),
            version: 0,
        }
    }

    /// Ordos: A001 class A; B001 class B, first self-paid 0.10, cap 100.00; C001 class C.
    pub fn ordos_items() -> Vec<proto::CatalogueItem> {
        use CatalogueClass::{A, B, C};
        vec![
            item("A001", A, "", ""),
            item("B001", B, "0.10", "100.00"),
            item("C001", C, "", ""),
        ]
    }

    /// Shizuishan: A001 class A; B001 class B, first self-paid 0.20, cap 50.00; C001 class C.
    pub fn nx_items() -> Vec<proto::CatalogueItem> {
        use CatalogueClass::{A, B, C};
        vec![
            item("A001", A, "", ""),
            item("B001", B, "0.20", "50.00"),
            item("C001", C, "", ""),
        ]
    }

    /// A purchase at Shizuishan: 3 × A001 25.01, 2 × B001 60.00, 1 × C001 9.99 (total 205.02).
    pub fn nx_lines() -> Vec<proto::PurchaseLine> {
        vec![
            pl("1", "A001", "3", "25.01"),
            pl("2", "B001", "2", "60.00"),
            pl("3", "C001", "1", "9.99"),
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

    pub async fn put_policy(
        bureau: &Caller,
        region: &str,
        body: proto::PolicyBody,
    ) -> proto::PolicyVersion {
        bureau
            .reg()
            .put_policy(proto::PutPolicyRequest {
                request_id: rid(),
                region: region.into(),
                effective_from: JAN1.into(),
                body: Some(body),
            })
            .await
            .must()
    }

    /// An employee inpatient rule (every policy needs at least one rule).
    fn inpatient_rule() -> proto::PolicyRule {
        proto::PolicyRule {
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
        }
    }

    /// Wuhai: no pharmacy rule (the pooled fund pays nothing at pharmacies), pharmacies only
    /// inside province 15, the account may not pay class C.
    pub fn wuhai_policy() -> proto::PolicyBody {
        proto::PolicyBody {
            rules: vec![inpatient_rule()],
            filing_reductions: vec![],
            unfiled_allowed: false,
            unfiled_reduction: None,
            account_pays_class_c: false,
            pharmacy_national: false,
        }
    }

    /// Baotou: pharmacies anywhere; a pharmacy pooling rule for active employees: annual
    /// deductible 100.00, ratio 0.50, no cap, any province.
    pub fn baotou_policy() -> proto::PolicyBody {
        proto::PolicyBody {
            rules: vec![
                inpatient_rule(),
                proto::PolicyRule {
                    insurance_type: InsuranceType::Employee as i32,
                    category: PersonCategory::Active as i32,
                    care_type: CareType::Pharmacy as i32,
                    level: LevelScope::Pharmacy as i32,
                    province_scope: ProvinceScope::Any as i32,
                    deductible_basis: DeductibleBasis::Annual as i32,
                    deductible: "100.00".into(),
                    repeat_admission_deductible: "0.00".into(),
                    ratio: "0.50".into(),
                    annual_cap: String::new(),
                    critical_illness: None,
                    assistance: None,
                },
            ],
            pharmacy_national: true,
            ..wuhai_policy()
        }
    }

    /// Hohhot: like Wuhai, but the account may pay class C.
    pub fn hohhot_policy() -> proto::PolicyBody {
        proto::PolicyBody {
            account_pays_class_c: true,
            ..wuhai_policy()
        }
    }

    // -------------------------------------------------------------- persons

    #[derive(Debug, Clone)]
    pub struct Psn {
        pub psn_no: String,
        pub national_id: String,
        pub home: String,
        pub card_no: String,
        pub evoucher: String,
    }

    /// An active employee (310) of `home` with a card, an e-voucher and `opening` in the
    /// personal account, enrolled by the home bureau.
    pub async fn person(w: &World, home: &str, seq: u32, opening: &str) -> Psn {
        let bureau = match home {
            WUHAI => &w.wuhai,
            ORDOS => &w.ordos,
            BAOTOU => &w.baotou,
            HOHHOT => &w.hohhot,
            SHIZUISHAN => &w.nx,
            _ => panic!("no bureau for {home}"),
        };
        let area = format!("{}02", &home[..4]);
        let national_id = national_id(&area, "19800101", seq);
        let card_no = format!("C{home}{seq:05}");
        let evoucher = format!("ev-{home}-{seq:05}-token");
        let p = bureau
            .reg()
            .enrol_person(proto::EnrolPersonRequest {
                card_no: card_no.clone(),
                evoucher_token: evoucher.clone(),
                ..employee(&national_id, home, opening)
            })
            .await
            .must();
        assert_eq!(p.account_balance, opening);
        Psn {
            psn_no: p.psn_no,
            national_id,
            home: home.into(),
            card_no,
            evoucher,
        }
    }

    /// An active Wuhai resident (390 only: no personal account) with a card and an e-voucher.
    pub async fn resident_with_card(w: &World, seq: u32) -> Psn {
        let national_id = national_id("150303", "19900101", seq);
        let card_no = format!("R{WUHAI}{seq:05}");
        let evoucher = format!("ev-r-{WUHAI}-{seq:05}");
        let p = w
            .wuhai
            .reg()
            .enrol_person(proto::EnrolPersonRequest {
                card_no: card_no.clone(),
                evoucher_token: evoucher.clone(),
                ..resident(&national_id, WUHAI)
            })
            .await
            .must();
        assert_eq!(p.account_balance, "");
        Psn {
            psn_no: p.psn_no,
            national_id,
            home: WUHAI.into(),
            card_no,
            evoucher,
        }
    }

    pub fn card(p: &Psn) -> Option<proto::CardCredential> {
        Some(proto::CardCredential {
            credential: Some(proto::card_credential::Credential::CardNo(
                p.card_no.clone(),
            )),
        })
    }

    pub fn ev(p: &Psn) -> Option<proto::CardCredential> {
        Some(proto::CardCredential {
            credential: Some(proto::card_credential::Credential::EvoucherToken(
                p.evoucher.clone(),
            )),
        })
    }

    pub async fn set_card(w: &World, p: &Psn, status: CardStatus) {
        let got = w
            .wuhai
            .reg()
            .set_card_status(proto::SetCardStatusRequest {
                request_id: rid(),
                psn_no: p.psn_no.clone(),
                card_status: status as i32,
                new_card_no: String::new(),
            })
            .await
            .must();
        assert_eq!(got.card_status, status as i32);
    }

    pub async fn update_pharmacy(
        w: &World,
        code: &str,
        status: Option<InstitutionStatus>,
        cross_region: Option<bool>,
    ) {
        w.op.reg()
            .update_institution(proto::UpdateInstitutionRequest {
                request_id: rid(),
                code: code.into(),
                name: None,
                status: status.map(|s| s as i32),
                cross_region_enabled: cross_region,
                valid_until: None,
            })
            .await
            .must();
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

    /// What a refused call must leave untouched: the account (balance and journal entries) and
    /// the person's settlements.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Snapshot {
        pub balance: String,
        pub entries: u64,
        pub settlements: usize,
    }

    pub async fn snapshot(ts: &TestServer, w: &World, p: &Psn) -> Snapshot {
        let b = balance(&w.op, &format!("pacct:{}", p.psn_no)).await;
        let person = get_person(&w.op, &p.psn_no).await;
        assert_eq!(b.balance, person.account_balance);
        let s = setl_as(ts, bureau_grant(&p.home))
            .await
            .list_settlements(proto::ListSettlementsRequest {
                filter: Some(proto::list_settlements_request::Filter::PsnNo(
                    p.psn_no.clone(),
                )),
                page_size: 1000,
                page_token: String::new(),
            })
            .await
            .must();
        Snapshot {
            balance: b.balance,
            entries: b.entries,
            settlements: s.settlements.len(),
        }
    }

    // -------------------------------------------------------------- requests

    pub fn pl(no: &str, code: &str, qty: &str, price: &str) -> proto::PurchaseLine {
        proto::PurchaseLine {
            line_no: no.into(),
            code: code.into(),
            name: format!("{code} as the pharmacy calls it"),
            quantity: qty.into(),
            unit_price: price.into(),
        }
    }

    pub fn swipe_req(
        request_id: &str,
        credential: Option<proto::CardCredential>,
        lines: Vec<proto::PurchaseLine>,
        use_account: bool,
    ) -> proto::SettlePurchaseRequest {
        proto::SettlePurchaseRequest {
            request_id: request_id.into(),
            credential,
            insurance_type: InsuranceType::Employee as i32,
            lines,
            use_account,
            account_only: false,
            expected_total: String::new(),
        }
    }

    pub fn pre_req(
        credential: Option<proto::CardCredential>,
        lines: Vec<proto::PurchaseLine>,
        use_account: bool,
    ) -> proto::PreSettlePurchaseRequest {
        proto::PreSettlePurchaseRequest {
            credential,
            insurance_type: InsuranceType::Employee as i32,
            lines,
            use_account,
        }
    }

    pub async fn lookup(
        ph: &Pharm,
        credential: Option<proto::CardCredential>,
    ) -> Result<Response<proto::CardHolder>, Status> {
        ph.clone()
            .lookup_card(proto::LookupCardRequest { credential })
            .await
    }

    /// Pre-settles; checks the identities and that nothing is booked.
    pub async fn pre_settle(
        ph: &Pharm,
        credential: Option<proto::CardCredential>,
        lines: Vec<proto::PurchaseLine>,
        use_account: bool,
    ) -> proto::Settlement {
        let s = ph
            .clone()
            .pre_settle_purchase(pre_req(credential, lines, use_account))
            .await
            .must();
        assert_identities(&s);
        assert_eq!(s.setl_id, "", "a pre-settlement has no setl_id");
        assert_eq!(s.journal_id, "", "a pre-settlement books nothing");
        s
    }

    /// The swipe; checks the identities, the kind and the lines.
    pub async fn swipe(ph: &Pharm, req: proto::SettlePurchaseRequest) -> proto::Purchase {
        let n = req.lines.len();
        let p = ph.clone().settle_purchase(req).await.must();
        let s = p.settlement.as_ref().expect("settlement");
        assert_identities(s);
        assert!(!s.setl_id.is_empty());
        assert_eq!(s.kind, SettlementKind::Settlement as i32);
        assert_eq!(s.care_type, CareType::Pharmacy as i32);
        assert_eq!(s.reverses, "");
        assert_eq!(p.lines.len(), n);
        assert_eq!(s.line_count as usize, n);
        assert_lines_sum(&p);
        p
    }

    pub fn refund_req(setl_id: &str, lines: &[(&str, &str)]) -> proto::RefundPurchaseRequest {
        proto::RefundPurchaseRequest {
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
        }
    }

    pub async fn try_refund(
        ph: &Pharm,
        setl_id: &str,
        lines: &[(&str, &str)],
    ) -> Result<Response<proto::Purchase>, Status> {
        ph.clone().refund_purchase(refund_req(setl_id, lines)).await
    }

    /// Refunds; checks the refund is a reversal of `setl_id` with negative lines.
    pub async fn refund(ph: &Pharm, setl_id: &str, lines: &[(&str, &str)]) -> proto::Purchase {
        let p = try_refund(ph, setl_id, lines).await.must();
        let s = p.settlement.as_ref().expect("settlement");
        assert_identities(s);
        assert_eq!(s.kind, SettlementKind::Reversal as i32);
        assert_eq!(s.reverses, setl_id);
        assert!(!s.setl_id.is_empty() && s.setl_id != setl_id);
        assert_eq!(s.care_type, CareType::Pharmacy as i32);
        assert_eq!(s.line_count as usize, p.lines.len());
        assert!(
            p.lines.iter().all(|l| l.quantity.starts_with('-')),
            "refund lines carry negative quantities: {:?}",
            p.lines
        );
        assert_lines_sum(&p);
        p
    }

    pub async fn get_purchase(
        ph: &Pharm,
        setl_id: &str,
    ) -> Result<Response<proto::Purchase>, Status> {
        ph.clone()
            .get_purchase(proto::GetPurchaseRequest {
                setl_id: setl_id.into(),
            })
            .await
    }

    pub async fn reverse_by_request(
        ph: &Pharm,
        original: &str,
    ) -> Result<Response<proto::ReverseByRequestIdResponse>, Status> {
        ph.clone()
            .reverse_purchase_by_request_id(proto::ReverseByRequestIdRequest {
                request_id: rid(),
                original_request_id: original.into(),
            })
            .await
    }

    // -------------------------------------------------------------- assertions

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

    /// The money fields without balance_after.
    pub fn m13(s: &proto::Settlement) -> M13 {
        M13::of(s)
    }

    /// The 13 money fields in fen (for sums).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct M13 {
        pub medfee: i64,
        pub fulamt: i64,
        pub overlmt: i64,
        pub preself: i64,
        pub inscp: i64,
        pub dedc: i64,
        pub hifp: i64,
        pub hifmi: i64,
        pub maf: i64,
        pub fund: i64,
        pub psn: i64,
        pub acct: i64,
        pub cash: i64,
    }

    impl M13 {
        pub fn zero() -> M13 {
            M13::default()
        }

        pub fn of(s: &proto::Settlement) -> M13 {
            M13 {
                medfee: fen(&s.medfee_sumamt),
                fulamt: fen(&s.fulamt_ownpay_amt),
                overlmt: fen(&s.overlmt_selfpay),
                preself: fen(&s.preselfpay_amt),
                inscp: fen(&s.inscp_scp_amt),
                dedc: fen(&s.act_pay_dedc),
                hifp: fen(&s.hifp_pay),
                hifmi: fen(&s.hifmi_pay),
                maf: fen(&s.maf_pay),
                fund: fen(&s.fund_pay_sumamt),
                psn: fen(&s.psn_part_amt),
                acct: fen(&s.acct_pay),
                cash: fen(&s.psn_cash_pay),
            }
        }

        fn plus(self, o: M13) -> M13 {
            M13 {
                medfee: self.medfee + o.medfee,
                fulamt: self.fulamt + o.fulamt,
                overlmt: self.overlmt + o.overlmt,
                preself: self.preself + o.preself,
                inscp: self.inscp + o.inscp,
                dedc: self.dedc + o.dedc,
                hifp: self.hifp + o.hifp,
                hifmi: self.hifmi + o.hifmi,
                maf: self.maf + o.maf,
                fund: self.fund + o.fund,
                psn: self.psn + o.psn,
                acct: self.acct + o.acct,
                cash: self.cash + o.cash,
            }
        }
    }

    /// Every amount negated.
    pub fn negated(x: &M13) -> M13 {
        M13 {
            medfee: -x.medfee,
            fulamt: -x.fulamt,
            overlmt: -x.overlmt,
            preself: -x.preself,
            inscp: -x.inscp,
            dedc: -x.dedc,
            hifp: -x.hifp,
            hifmi: -x.hifmi,
            maf: -x.maf,
            fund: -x.fund,
            psn: -x.psn,
            acct: -x.acct,
            cash: -x.cash,
        }
    }

    /// Field-by-field sum over settlements, in fen.
    pub fn sums(ss: &[proto::Settlement]) -> M13 {
        ss.iter().map(M13::of).fold(M13::zero(), M13::plus)
    }

    pub fn yuan(fen: i64) -> String {
        let sign = if fen < 0 { "-" } else { "" };
        format!("{sign}{}.{:02}", fen.abs() / 100, fen.abs() % 100)
    }

    /// DESIGN §3 identities, to the fen, and the fund payments list agreeing with the fields.
    #[track_caller]
    pub fn assert_identities(s: &proto::Settlement) {
        let x = M13::of(s);
        assert_eq!(
            x.medfee,
            x.fulamt + x.overlmt + x.preself + x.inscp,
            "medfee = fulamt + overlmt + preself + inscp: {s:?}"
        );
        assert_eq!(x.fund, x.hifp + x.hifmi + x.maf, "fund = layers: {s:?}");
        assert_eq!(x.medfee, x.fund + x.psn, "medfee = fund + psn_part: {s:?}");
        assert_eq!(x.psn, x.acct + x.cash, "psn_part = acct + cash: {s:?}");
        let listed: i64 = s.funds.iter().map(|f| fen(&f.amount)).sum();
        assert_eq!(listed, x.fund + x.acct, "funds list: {s:?}");
        if !s.balance_after.is_empty() {
            assert!(fen(&s.balance_after) >= 0, "negative balance: {s:?}");
        }
    }

    /// The lines' splits sum to the settlement's (for a purchase and for a refund).
    #[track_caller]
    pub fn assert_lines_sum(p: &proto::Purchase) {
        let s = p.settlement.as_ref().unwrap();
        let sum = |f: fn(&proto::PurchaseLineResult) -> &str| -> i64 {
            p.lines.iter().map(|l| fen(f(l))).sum()
        };
        assert_eq!(sum(|l| &l.amount), fen(&s.medfee_sumamt), "{p:?}");
        assert_eq!(
            sum(|l| &l.fulamt_ownpay_amt),
            fen(&s.fulamt_ownpay_amt),
            "{p:?}"
        );
        assert_eq!(
            sum(|l| &l.overlmt_selfpay),
            fen(&s.overlmt_selfpay),
            "{p:?}"
        );
        assert_eq!(sum(|l| &l.preselfpay_amt), fen(&s.preselfpay_amt), "{p:?}");
        assert_eq!(sum(|l| &l.inscp_scp_amt), fen(&s.inscp_scp_amt), "{p:?}");
    }

    pub fn funds(s: &proto::Settlement) -> Vec<(String, String)> {
        s.funds
            .iter()
            .map(|f| (f.fund_pay_type.clone(), f.amount.clone()))
            .collect()
    }

    /// A purchase line as answered.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct L {
        pub line_no: String,
        pub code: String,
        pub quantity: String,
        pub unit_price: String,
        pub amount: String,
        pub class: i32,
        pub split: [String; 4],
        pub refunded: String,
    }

    impl L {
        pub fn new(no: &str, code: &str, qty: &str, price: &str, amount: &str, class: i32) -> L {
            L {
                line_no: no.into(),
                code: code.into(),
                quantity: qty.into(),
                unit_price: price.into(),
                amount: amount.into(),
                class,
                split: Default::default(),
                refunded: String::new(),
            }
        }

        pub fn split(self, fulamt: &str, overlmt: &str, preself: &str, inscp: &str) -> L {
            L {
                split: [fulamt.into(), overlmt.into(), preself.into(), inscp.into()],
                ..self
            }
        }

        pub fn refunded(self, q: &str) -> L {
            L {
                refunded: q.into(),
                ..self
            }
        }
    }

    pub fn lines_of(p: &proto::Purchase) -> Vec<L> {
        p.lines
            .iter()
            .map(|l| L {
                line_no: l.line_no.clone(),
                code: l.code.clone(),
                quantity: l.quantity.clone(),
                unit_price: l.unit_price.clone(),
                amount: l.amount.clone(),
                class: l.class,
                split: [
                    l.fulamt_ownpay_amt.clone(),
                    l.overlmt_selfpay.clone(),
                    l.preselfpay_amt.clone(),
                    l.inscp_scp_amt.clone(),
                ],
                refunded: l.refunded_quantity.clone(),
            })
            .collect()
    }

    /// (line_no, refunded_quantity) per line of a purchase.
    pub fn refunded(p: &proto::Purchase) -> Vec<(&str, &str)> {
        p.lines
            .iter()
            .map(|l| (l.line_no.as_str(), l.refunded_quantity.as_str()))
            .collect()
    }

    /// `p` with settled_at truncated to whole microseconds (what PostgreSQL stores).
    pub fn micros_p(p: &proto::Purchase) -> proto::Purchase {
        let mut p = p.clone();
        if let Some(s) = p.settlement.as_mut() {
            let t = chrono::DateTime::parse_from_rfc3339(&s.settled_at)
                .unwrap_or_else(|e| panic!("settled_at {:?}: {e}", s.settled_at));
            s.settled_at = t.timestamp_micros().to_string();
        }
        p
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
}

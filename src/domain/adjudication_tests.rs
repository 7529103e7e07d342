//! Tests of the adjudication rules (hand-computed examples and properties).

use super::*;
use crate::domain::kinds::{CareType, InsuranceType, LevelScope, PersonCategory, ProvinceScope};
use crate::domain::policy::{Assistance, Band, CriticalIllness, Reduction};
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn amt(s: &str) -> Amount {
    Amount::parse("amount", s).unwrap()
}

fn price(s: &str) -> UnitPrice {
    UnitPrice::parse("unit_price", s).unwrap()
}

fn qty(s: &str) -> Quantity {
    Quantity::parse("quantity", s).unwrap()
}

fn ratio(s: &str) -> Ratio {
    Ratio::parse("ratio", s).unwrap()
}

fn class_a(cap: Option<&str>) -> CatalogueTerms {
    CatalogueTerms {
        class: CatalogueClass::A,
        b_ratio: None,
        cap: cap.map(price),
    }
}

fn class_b(b_ratio: &str, cap: Option<&str>) -> CatalogueTerms {
    CatalogueTerms {
        class: CatalogueClass::B,
        b_ratio: Some(ratio(b_ratio)),
        cap: cap.map(price),
    }
}

fn class_c() -> CatalogueTerms {
    CatalogueTerms {
        class: CatalogueClass::C,
        b_ratio: None,
        cap: None,
    }
}

/// A split written as (amount, fulamt_ownpay, overlmt_selfpay, preselfpay, inscp).
fn split(amount: &str, fulamt: &str, overlmt: &str, pre: &str, inscp: &str) -> LineSplit {
    LineSplit {
        amount: amt(amount),
        fulamt_ownpay: amt(fulamt),
        overlmt_selfpay: amt(overlmt),
        preselfpay: amt(pre),
        inscp: amt(inscp),
    }
}

fn neg_split(l: &LineSplit) -> LineSplit {
    LineSplit {
        amount: -l.amount,
        fulamt_ownpay: -l.fulamt_ownpay,
        overlmt_selfpay: -l.overlmt_selfpay,
        preselfpay: -l.preselfpay,
        inscp: -l.inscp,
    }
}

/// Employee, active, inpatient, level 3: per-admission deductible 800.00 (repeat 400.00),
/// ratio 0.85, annual cap 150,000.00, no further layers.
fn inpatient_rule() -> PolicyRule {
    PolicyRule {
        insurance_type: InsuranceType::Employee,
        category: PersonCategory::Active,
        care_type: CareType::Inpatient,
        level: LevelScope::Level3,
        province_scope: ProvinceScope::Any,
        deductible_basis: DeductibleBasis::PerAdmission,
        deductible: amt("800.00"),
        repeat_admission_deductible: amt("400.00"),
        ratio: ratio("0.85"),
        annual_cap: Some(amt("150000.00")),
        critical_illness: None,
        assistance: None,
    }
}

/// Employee, active, outpatient pooling: annual deductible 1,000.00, ratio 0.75, no cap.
fn outpatient_rule() -> PolicyRule {
    PolicyRule {
        care_type: CareType::Outpatient,
        level: LevelScope::Any,
        deductible_basis: DeductibleBasis::Annual,
        deductible: amt("1000.00"),
        repeat_admission_deductible: amt("0.00"),
        ratio: ratio("0.75"),
        annual_cap: None,
        ..inpatient_rule()
    }
}

/// Threshold 20,000; [20,000–50,000) at 0.60; [50,000–∞) at 0.70; annual cap 300,000.
fn ci_layer() -> CriticalIllness {
    CriticalIllness {
        threshold: amt("20000.00"),
        bands: vec![
            Band {
                from: amt("20000.00"),
                to: Some(amt("50000.00")),
                ratio: ratio("0.60"),
            },
            Band {
                from: amt("50000.00"),
                to: None,
                ratio: ratio("0.70"),
            },
        ],
        annual_cap: Some(amt("300000.00")),
    }
}

/// Terms for a first admission: rule's own ratio, zero accumulators, account balance 1,000.00
/// used, account may not pay class C.
fn terms(rule: &PolicyRule) -> Terms<'_> {
    Terms {
        rule,
        ratio: rule.ratio,
        admission: rule.care_type == CareType::Inpatient,
        before: Accumulators::default(),
        assistance_recipient: false,
        account_balance: Some(amt("1000.00")),
        use_account: true,
        account_pays_class_c: false,
    }
}

/// A single class-A line whose whole amount is in scope.
fn in_scope_line(a: &str) -> LineSplit {
    split(a, "0", "0", "0", a)
}

/// The mixed inpatient bill of 23,442.46 (see `inpatient_bill_lines_split_by_hand`).
fn big_bill() -> Vec<LineSplit> {
    vec![
        split_line(qty("10"), price("150.00"), Some(&class_a(None))),
        split_line(qty("3"), price("120.00"), Some(&class_a(Some("100.00")))),
        split_line(qty("20"), price("85.50"), Some(&class_b("0.10", None))),
        split_line(
            qty("4"),
            price("1250.00"),
            Some(&class_b("0.20", Some("1000.00"))),
        ),
        split_line(qty("2"), price("1366.23"), Some(&class_c())),
        split_line(qty("1"), price("12140.00"), Some(&class_a(None))),
    ]
}

fn precondition_rule(r: &DomainResult<Breakdown>) -> Option<&'static str> {
    match r {
        Err(DomainError::Precondition { rule, .. }) => Some(rule),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// split_line: hand-computed examples
// ---------------------------------------------------------------------------

#[test]
fn split_class_a_without_cap_is_all_in_scope() {
    // 2 × 12.50 = 25.00, class A, no cap → in scope 25.00.
    let l = split_line(qty("2"), price("12.50"), Some(&class_a(None)));
    assert_eq!(l, split("25.00", "0", "0", "0", "25.00"));
}

#[test]
fn split_class_a_under_its_cap_is_all_in_scope() {
    // price 80.00 ≤ cap 100.00: 3 × 80.00 = 240.00, no over-limit.
    let l = split_line(qty("3"), price("80.00"), Some(&class_a(Some("100.00"))));
    assert_eq!(l, split("240.00", "0", "0", "0", "240.00"));
    // price exactly at the cap: still nothing over the limit.
    let l = split_line(qty("3"), price("100.00"), Some(&class_a(Some("100.00"))));
    assert_eq!(l, split("300.00", "0", "0", "0", "300.00"));
}

#[test]
fn split_class_a_over_its_cap() {
    // price 120.00, cap 100.00, qty 3:
    // amount 3 × 120.00 = 360.00; over-limit (120 − 100) × 3 = 60.00; in scope 300.00.
    let l = split_line(qty("3"), price("120.00"), Some(&class_a(Some("100.00"))));
    assert_eq!(l, split("360.00", "0", "60.00", "0", "300.00"));
}

#[test]
fn split_class_a_ignores_a_stray_b_ratio() {
    // Only class B has a first self-paid part: class A with a b_ratio is still all in scope.
    let terms = CatalogueTerms {
        b_ratio: Some(ratio("0.10")),
        ..class_a(None)
    };
    let l = split_line(qty("4"), price("25.00"), Some(&terms));
    assert_eq!(l, split("100.00", "0", "0", "0", "100.00"));
}

#[test]
fn split_class_b_without_cap() {
    // 4 × 25.00 = 100.00; B ratio 0.10 → first self-paid 10.00; in scope 90.00.
    let l = split_line(qty("4"), price("25.00"), Some(&class_b("0.10", None)));
    assert_eq!(l, split("100.00", "0", "0", "10.00", "90.00"));
}

#[test]
fn split_class_b_with_cap() {
    // price 120.00, cap 100.00, qty 3, B ratio 0.10:
    // amount 360.00; over-limit (120 − 100) × 3 = 60.00;
    // first self-paid min(120, 100) × 3 × 0.10 = 30.00; in scope 360 − 60 − 30 = 270.00.
    let l = split_line(
        qty("3"),
        price("120.00"),
        Some(&class_b("0.10", Some("100.00"))),
    );
    assert_eq!(l, split("360.00", "0", "60.00", "30.00", "270.00"));
}

#[test]
fn split_class_b_with_cap_decimal_quantity_and_six_decimal_price() {
    // price 12.345678, cap 10.00, qty 2.5, B ratio 0.15:
    // amount 2.5 × 12.345678 = 30.864195 → 30.86;
    // over-limit (12.345678 − 10) × 2.5 = 5.864195 → 5.86;
    // first self-paid 10 × 2.5 × 0.15 = 3.75; in scope 30.86 − 5.86 − 3.75 = 21.25.
    let l = split_line(
        qty("2.5"),
        price("12.345678"),
        Some(&class_b("0.15", Some("10.00"))),
    );
    assert_eq!(l, split("30.86", "0", "5.86", "3.75", "21.25"));
}

#[test]
fn split_class_c_and_unknown_items_are_fully_self_paid() {
    // Class C: 2 × 33.33 = 66.66 fully self-paid, whatever its cap or b_ratio say.
    let l = split_line(qty("2"), price("33.33"), Some(&class_c()));
    assert_eq!(l, split("66.66", "66.66", "0", "0", "0"));
    let odd_c = CatalogueTerms {
        class: CatalogueClass::C,
        b_ratio: Some(ratio("0.10")),
        cap: Some(price("10.00")),
    };
    let l = split_line(qty("2"), price("33.33"), Some(&odd_c));
    assert_eq!(l, split("66.66", "66.66", "0", "0", "0"));
    // Not in the catalogue (None): same.
    let l = split_line(qty("2"), price("33.33"), None);
    assert_eq!(l, split("66.66", "66.66", "0", "0", "0"));
}

#[test]
fn split_rounds_half_up_per_line() {
    // 3 × 0.335 = 1.005 → 1.01 (half-up, not banker's 1.00).
    let l = split_line(qty("3"), price("0.335"), Some(&class_a(None)));
    assert_eq!(l, split("1.01", "0", "0", "0", "1.01"));
    // Class B 10%: 1.005 × 0.10 = 0.1005 → 0.10; in scope 1.01 − 0.10 = 0.91.
    let l = split_line(qty("3"), price("0.335"), Some(&class_b("0.10", None)));
    assert_eq!(l, split("1.01", "0", "0", "0.10", "0.91"));
    // Class B 50%: 1.005 × 0.5 = 0.5025 → 0.50; in scope 0.51.
    let l = split_line(qty("3"), price("0.335"), Some(&class_b("0.5", None)));
    assert_eq!(l, split("1.01", "0", "0", "0.50", "0.51"));
    // 0.5 × 0.015 = 0.0075 → 0.01; 2 × 0.001 = 0.002 → 0.00.
    let l = split_line(qty("0.5"), price("0.015"), None);
    assert_eq!(l, split("0.01", "0.01", "0", "0", "0"));
    let l = split_line(qty("2"), price("0.001"), Some(&class_a(None)));
    assert_eq!(l, split("0", "0", "0", "0", "0"));
}

#[test]
fn split_first_self_paid_never_exceeds_the_capped_amount() {
    // price 0.010, cap 0.005, qty 1, B ratio 1:
    // amount 0.01; over-limit 0.005 → 0.01; capped amount 0.01 − 0.01 = 0.00;
    // first self-paid 0.005 × 1 → 0.01 would exceed it, so it is held at 0.00; in scope 0.00.
    let l = split_line(qty("1"), price("0.010"), Some(&class_b("1", Some("0.005"))));
    assert_eq!(l, split("0.01", "0", "0.01", "0", "0"));
}

#[test]
fn split_refund_line_is_the_exact_negation() {
    let cases: Vec<(&str, &str, Option<CatalogueTerms>)> = vec![
        ("3", "120.00", Some(class_a(Some("100.00")))),
        ("3", "120.00", Some(class_b("0.10", Some("100.00")))),
        ("3", "0.335", Some(class_b("0.10", None))),
        ("2.5", "12.345678", Some(class_b("0.15", Some("10.00")))),
        ("2", "33.33", Some(class_c())),
        ("0.5", "0.015", None),
        ("1", "0.010", Some(class_b("1", Some("0.005")))),
    ];
    for (q, p, t) in cases {
        let pos = split_line(qty(q), price(p), t.as_ref());
        let neg = split_line(qty(&format!("-{q}")), price(p), t.as_ref());
        assert_eq!(neg, neg_split(&pos), "{q} × {p} {t:?}");
    }
    // Explicitly: −3 × 120.00 with cap 100.00, B 0.10 → −360.00 = −60.00 − 30.00 − 270.00.
    let l = split_line(
        qty("-3"),
        price("120.00"),
        Some(&class_b("0.10", Some("100.00"))),
    );
    assert_eq!(l, split("-360.00", "0", "-60.00", "-30.00", "-270.00"));
    // And the half-up case: −3 × 0.335 = −1.005 → −1.01; −0.1005 → −0.10.
    let l = split_line(qty("-3"), price("0.335"), Some(&class_b("0.10", None)));
    assert_eq!(l, split("-1.01", "0", "0", "-0.10", "-0.91"));
}

#[test]
fn total_sums_every_part() {
    let t = total(&big_bill());
    assert_eq!(
        t,
        split("23442.46", "2732.46", "1060.00", "971.00", "18679.00")
    );
    assert_eq!(total(&[]), LineSplit::default());
}

// ---------------------------------------------------------------------------
// adjudicate: hand-computed examples
// ---------------------------------------------------------------------------

#[test]
fn inpatient_bill_lines_split_by_hand() {
    // 1. class A, 10 × 150.00                 = 1,500.00 in scope
    // 2. class A, 3 × 120.00, cap 100.00      =   360.00: over 60.00, in scope 300.00
    // 3. class B 0.10, 20 × 85.50             = 1,710.00: first 171.00, in scope 1,539.00
    // 4. class B 0.20, 4 × 1,250.00, cap 1,000 = 5,000.00: over 1,000.00,
    //                                          first 1,000 × 4 × 0.2 = 800.00, in scope 3,200.00
    // 5. class C, 2 × 1,366.23                = 2,732.46 fully self-paid
    // 6. class A, 1 × 12,140.00               = 12,140.00 in scope
    let expected = [
        split("1500.00", "0", "0", "0", "1500.00"),
        split("360.00", "0", "60.00", "0", "300.00"),
        split("1710.00", "0", "0", "171.00", "1539.00"),
        split("5000.00", "0", "1000.00", "800.00", "3200.00"),
        split("2732.46", "2732.46", "0", "0", "0"),
        split("12140.00", "0", "0", "0", "12140.00"),
    ];
    assert_eq!(big_bill(), expected);
}

#[test]
fn inpatient_first_admission_level3() {
    // Totals: 23,442.46 = fulamt 2,732.46 + over 1,060.00 + first 971.00 + in scope 18,679.00.
    // Deductible (first admission) 800.00 ≤ 18,679.00 → act_pay_dedc 800.00.
    // hifp = (18,679.00 − 800.00) × 0.85 = 17,879 × 0.85 = 15,197.15 (cap 150,000 not reached).
    // fund total 15,197.15; psn_part = 23,442.46 − 15,197.15 = 8,245.31.
    // Account may pay psn_part − class C = 8,245.31 − 2,732.46 = 5,512.85; balance 1,000.00
    // → acct 1,000.00; cash 7,245.31.
    // Delta: fund 15,197.15; burden 18,679.00 − 15,197.15 = 3,481.85; one admission.
    let rule = inpatient_rule();
    let b = adjudicate(&big_bill(), &terms(&rule)).unwrap();
    let expected = Breakdown {
        medfee_sumamt: amt("23442.46"),
        fulamt_ownpay_amt: amt("2732.46"),
        overlmt_selfpay: amt("1060.00"),
        preselfpay_amt: amt("971.00"),
        inscp_scp_amt: amt("18679.00"),
        act_pay_dedc: amt("800.00"),
        hifp_pay: amt("15197.15"),
        hifmi_pay: amt("0"),
        maf_pay: amt("0"),
        fund_pay_sumamt: amt("15197.15"),
        psn_part_amt: amt("8245.31"),
        acct_pay: amt("1000.00"),
        psn_cash_pay: amt("7245.31"),
        delta: Accumulators {
            annual_deductible: amt("0"),
            fund: amt("15197.15"),
            burden: amt("3481.85"),
            critical_illness: amt("0"),
            assistance: amt("0"),
            admissions: 1,
        },
    };
    assert_eq!(b, expected);
    assert!(b.identities_hold());
}

#[test]
fn inpatient_repeat_admission_uses_the_repeat_deductible() {
    // before.admissions = 1 → deductible 400.00.
    // hifp = (18,679.00 − 400.00) × 0.85 = 18,279 × 0.85 = 15,537.15.
    // psn_part = 23,442.46 − 15,537.15 = 7,905.31; account 1,000.00; cash 6,905.31.
    // burden 18,679.00 − 15,537.15 = 3,141.85.
    let rule = inpatient_rule();
    let t = Terms {
        before: Accumulators {
            admissions: 1,
            fund: amt("10000.00"),
            burden: amt("2000.00"),
            ..Accumulators::default()
        },
        ..terms(&rule)
    };
    let b = adjudicate(&big_bill(), &t).unwrap();
    let expected = Breakdown {
        medfee_sumamt: amt("23442.46"),
        fulamt_ownpay_amt: amt("2732.46"),
        overlmt_selfpay: amt("1060.00"),
        preselfpay_amt: amt("971.00"),
        inscp_scp_amt: amt("18679.00"),
        act_pay_dedc: amt("400.00"),
        hifp_pay: amt("15537.15"),
        hifmi_pay: amt("0"),
        maf_pay: amt("0"),
        fund_pay_sumamt: amt("15537.15"),
        psn_part_amt: amt("7905.31"),
        acct_pay: amt("1000.00"),
        psn_cash_pay: amt("6905.31"),
        delta: Accumulators {
            annual_deductible: amt("0"),
            fund: amt("15537.15"),
            burden: amt("3141.85"),
            critical_illness: amt("0"),
            assistance: amt("0"),
            admissions: 1,
        },
    };
    assert_eq!(b, expected);
}

#[test]
fn per_admission_deductible_larger_than_in_scope() {
    // Bill: class A 500.00 in scope + class C 100.00. Deductible 800.00 > 500.00
    // → act_pay_dedc 500.00, hifp 0.00, psn_part 600.00; account may pay 600 − 100 = 500.00
    // (balance 1,000.00) → acct 500.00, cash 100.00. burden 500.00.
    let rule = inpatient_rule();
    let lines = [
        in_scope_line("500.00"),
        split("100.00", "100.00", "0", "0", "0"),
    ];
    let b = adjudicate(&lines, &terms(&rule)).unwrap();
    let expected = Breakdown {
        medfee_sumamt: amt("600.00"),
        fulamt_ownpay_amt: amt("100.00"),
        overlmt_selfpay: amt("0"),
        preselfpay_amt: amt("0"),
        inscp_scp_amt: amt("500.00"),
        act_pay_dedc: amt("500.00"),
        hifp_pay: amt("0"),
        hifmi_pay: amt("0"),
        maf_pay: amt("0"),
        fund_pay_sumamt: amt("0"),
        psn_part_amt: amt("600.00"),
        acct_pay: amt("500.00"),
        psn_cash_pay: amt("100.00"),
        delta: Accumulators {
            burden: amt("500.00"),
            admissions: 1,
            ..Accumulators::default()
        },
    };
    assert_eq!(b, expected);
}

#[test]
fn annual_deductible_partly_paid_applies_only_the_rest() {
    // Outpatient, annual deductible 1,000.00, before.annual_deductible 700.00 → 300.00 left.
    // Bill: class A 500.00 in scope. act_pay_dedc 300.00; hifp (500 − 300) × 0.75 = 150.00;
    // psn_part 350.00; account 350.00 (balance 1,000.00); cash 0.00.
    // Delta: annual_deductible 300.00, fund 150.00, burden 350.00, no admission.
    let rule = outpatient_rule();
    let t = Terms {
        before: Accumulators {
            annual_deductible: amt("700.00"),
            ..Accumulators::default()
        },
        ..terms(&rule)
    };
    let b = adjudicate(&[in_scope_line("500.00")], &t).unwrap();
    let expected = Breakdown {
        medfee_sumamt: amt("500.00"),
        inscp_scp_amt: amt("500.00"),
        act_pay_dedc: amt("300.00"),
        hifp_pay: amt("150.00"),
        fund_pay_sumamt: amt("150.00"),
        psn_part_amt: amt("350.00"),
        acct_pay: amt("350.00"),
        psn_cash_pay: amt("0"),
        delta: Accumulators {
            annual_deductible: amt("300.00"),
            fund: amt("150.00"),
            burden: amt("350.00"),
            admissions: 0,
            ..Accumulators::default()
        },
        ..Breakdown::default()
    };
    assert_eq!(b, expected);

    // Only 100.00 in scope with 300.00 left: all of it goes to the deductible.
    let b = adjudicate(&[in_scope_line("100.00")], &t).unwrap();
    assert_eq!(b.act_pay_dedc, amt("100.00"));
    assert_eq!(b.hifp_pay, amt("0"));
    assert_eq!(b.delta.annual_deductible, amt("100.00"));
    assert_eq!(b.psn_part_amt, amt("100.00"));
}

#[test]
fn annual_deductible_fully_paid_applies_nothing() {
    // before.annual_deductible 1,000.00 (= deductible) → 0 applied;
    // hifp 500.00 × 0.75 = 375.00; psn_part 125.00 all from the account.
    let rule = outpatient_rule();
    for paid in ["1000.00", "1200.00"] {
        let t = Terms {
            before: Accumulators {
                annual_deductible: amt(paid),
                ..Accumulators::default()
            },
            ..terms(&rule)
        };
        let b = adjudicate(&[in_scope_line("500.00")], &t).unwrap();
        let expected = Breakdown {
            medfee_sumamt: amt("500.00"),
            inscp_scp_amt: amt("500.00"),
            act_pay_dedc: amt("0"),
            hifp_pay: amt("375.00"),
            fund_pay_sumamt: amt("375.00"),
            psn_part_amt: amt("125.00"),
            acct_pay: amt("125.00"),
            psn_cash_pay: amt("0"),
            delta: Accumulators {
                fund: amt("375.00"),
                burden: amt("125.00"),
                ..Accumulators::default()
            },
            ..Breakdown::default()
        };
        assert_eq!(b, expected, "paid {paid}");
    }
}

#[test]
fn annual_cap_nearly_reached() {
    // before.fund = 150,000.00 − 500.00 = 149,500.00. Uncapped hifp would be 15,197.15
    // → hifp 500.00. psn_part 23,442.46 − 500.00 = 22,942.46; account 1,000.00;
    // cash 21,942.46. burden 18,679.00 − 500.00 = 18,179.00; delta.fund 500.00.
    let rule = inpatient_rule();
    let t = Terms {
        before: Accumulators {
            fund: amt("149500.00"),
            ..Accumulators::default()
        },
        ..terms(&rule)
    };
    let b = adjudicate(&big_bill(), &t).unwrap();
    let expected = Breakdown {
        medfee_sumamt: amt("23442.46"),
        fulamt_ownpay_amt: amt("2732.46"),
        overlmt_selfpay: amt("1060.00"),
        preselfpay_amt: amt("971.00"),
        inscp_scp_amt: amt("18679.00"),
        act_pay_dedc: amt("800.00"),
        hifp_pay: amt("500.00"),
        hifmi_pay: amt("0"),
        maf_pay: amt("0"),
        fund_pay_sumamt: amt("500.00"),
        psn_part_amt: amt("22942.46"),
        acct_pay: amt("1000.00"),
        psn_cash_pay: amt("21942.46"),
        delta: Accumulators {
            annual_deductible: amt("0"),
            fund: amt("500.00"),
            burden: amt("18179.00"),
            critical_illness: amt("0"),
            assistance: amt("0"),
            admissions: 1,
        },
    };
    assert_eq!(b, expected);

    // Cap reached exactly, or already exceeded: the pooled fund pays nothing.
    for before in ["150000.00", "150000.01"] {
        let t = Terms {
            before: Accumulators {
                fund: amt(before),
                ..Accumulators::default()
            },
            ..terms(&rule)
        };
        let b = adjudicate(&big_bill(), &t).unwrap();
        assert_eq!(b.hifp_pay, amt("0"), "before.fund {before}");
        assert_eq!(b.delta.fund, amt("0"));
        assert_eq!(b.delta.burden, amt("18679.00"));
        assert_eq!(b.psn_part_amt, amt("23442.46"));
    }
}

#[test]
fn filing_reduction_minus_points() {
    // Referral: 0.85 − 10 points = 0.75, passed as Terms.ratio.
    // hifp = 17,879.00 × 0.75 = 13,409.25; psn_part 23,442.46 − 13,409.25 = 10,033.21;
    // account 1,000.00; cash 9,033.21; burden 18,679.00 − 13,409.25 = 5,269.75.
    let rule = inpatient_rule();
    let reduced = Reduction::MinusPoints(ratio("0.10")).apply(rule.ratio);
    assert_eq!(reduced, ratio("0.75"));
    let t = Terms {
        ratio: reduced,
        ..terms(&rule)
    };
    let b = adjudicate(&big_bill(), &t).unwrap();
    let expected = Breakdown {
        medfee_sumamt: amt("23442.46"),
        fulamt_ownpay_amt: amt("2732.46"),
        overlmt_selfpay: amt("1060.00"),
        preselfpay_amt: amt("971.00"),
        inscp_scp_amt: amt("18679.00"),
        act_pay_dedc: amt("800.00"),
        hifp_pay: amt("13409.25"),
        hifmi_pay: amt("0"),
        maf_pay: amt("0"),
        fund_pay_sumamt: amt("13409.25"),
        psn_part_amt: amt("10033.21"),
        acct_pay: amt("1000.00"),
        psn_cash_pay: amt("9033.21"),
        delta: Accumulators {
            annual_deductible: amt("0"),
            fund: amt("13409.25"),
            burden: amt("5269.75"),
            critical_illness: amt("0"),
            assistance: amt("0"),
            admissions: 1,
        },
    };
    assert_eq!(b, expected);
}

#[test]
fn filing_reduction_factor_and_pooled_rounding() {
    // × 0.8: 0.85 × 0.8 = 0.68; hifp 17,879.00 × 0.68 = 12,157.72.
    let rule = inpatient_rule();
    let reduced = Reduction::Factor(ratio("0.8")).apply(rule.ratio);
    assert_eq!(reduced, ratio("0.68"));
    let t = Terms {
        ratio: reduced,
        ..terms(&rule)
    };
    let b = adjudicate(&big_bill(), &t).unwrap();
    assert_eq!(b.hifp_pay, amt("12157.72"));
    assert_eq!(b.psn_part_amt, amt("11284.74")); // 23,442.46 − 12,157.72

    // Half-up on the pooled fund: deductible 800.00, in scope 800.03, ratio 0.5
    // → 0.03 × 0.5 = 0.015 → 0.02; psn_part 800.03 − 0.02 = 800.01.
    let t = Terms {
        ratio: ratio("0.5"),
        ..terms(&rule)
    };
    let b = adjudicate(&[in_scope_line("800.03")], &t).unwrap();
    assert_eq!(b.act_pay_dedc, amt("800.00"));
    assert_eq!(b.hifp_pay, amt("0.02"));
    assert_eq!(b.psn_part_amt, amt("800.01"));
    assert_eq!(b.delta.burden, amt("800.01"));
}

#[test]
fn critical_illness_crossing_threshold_and_band() {
    // Rule: deductible 1,000.00, ratio 0.50, cap 150,000; CI threshold 20,000,
    // [20,000–50,000) 0.60, [50,000–∞) 0.70, cap 300,000.
    // Bill: class A 83,000.00 in scope. hifp (83,000 − 1,000) × 0.5 = 41,000.00 (cap ok).
    // burden this time 83,000 − 41,000 = 42,000.00; before.burden 18,000 → 60,000.
    // hifmi = (50,000 − 20,000) × 0.6 + (60,000 − 50,000) × 0.7 = 18,000 + 7,000 = 25,000.00.
    // fund total 66,000.00; psn_part 17,000.00; account 1,000.00; cash 16,000.00.
    let rule = PolicyRule {
        deductible: amt("1000.00"),
        ratio: ratio("0.50"),
        critical_illness: Some(ci_layer()),
        ..inpatient_rule()
    };
    let t = Terms {
        before: Accumulators {
            burden: amt("18000.00"),
            ..Accumulators::default()
        },
        ..terms(&rule)
    };
    let b = adjudicate(&[in_scope_line("83000.00")], &t).unwrap();
    let expected = Breakdown {
        medfee_sumamt: amt("83000.00"),
        fulamt_ownpay_amt: amt("0"),
        overlmt_selfpay: amt("0"),
        preselfpay_amt: amt("0"),
        inscp_scp_amt: amt("83000.00"),
        act_pay_dedc: amt("1000.00"),
        hifp_pay: amt("41000.00"),
        hifmi_pay: amt("25000.00"),
        maf_pay: amt("0"),
        fund_pay_sumamt: amt("66000.00"),
        psn_part_amt: amt("17000.00"),
        acct_pay: amt("1000.00"),
        psn_cash_pay: amt("16000.00"),
        delta: Accumulators {
            annual_deductible: amt("0"),
            fund: amt("41000.00"),
            burden: amt("42000.00"),
            critical_illness: amt("25000.00"),
            assistance: amt("0"),
            admissions: 1,
        },
    };
    assert_eq!(b, expected);
}

#[test]
fn critical_illness_already_above_threshold() {
    // Deductible 0, ratio 0.50. Bill: in scope 20,000.02 → hifp 10,000.01; burden 10,000.01.
    // before.burden 25,000.00 (over the threshold) → 25,000.00..35,000.01, all in band 1:
    // hifmi 10,000.01 × 0.6 = 6,000.006 → 6,000.01.
    // psn_part 20,000.02 − 10,000.01 − 6,000.01 = 4,000.00; account 1,000.00; cash 3,000.00.
    let rule = PolicyRule {
        deductible: amt("0"),
        ratio: ratio("0.50"),
        critical_illness: Some(ci_layer()),
        ..inpatient_rule()
    };
    let t = Terms {
        before: Accumulators {
            burden: amt("25000.00"),
            critical_illness: amt("3000.00"),
            ..Accumulators::default()
        },
        ..terms(&rule)
    };
    let b = adjudicate(&[in_scope_line("20000.02")], &t).unwrap();
    let expected = Breakdown {
        medfee_sumamt: amt("20000.02"),
        inscp_scp_amt: amt("20000.02"),
        act_pay_dedc: amt("0"),
        hifp_pay: amt("10000.01"),
        hifmi_pay: amt("6000.01"),
        maf_pay: amt("0"),
        fund_pay_sumamt: amt("16000.02"),
        psn_part_amt: amt("4000.00"),
        acct_pay: amt("1000.00"),
        psn_cash_pay: amt("3000.00"),
        delta: Accumulators {
            fund: amt("10000.01"),
            burden: amt("10000.01"),
            critical_illness: amt("6000.01"),
            admissions: 1,
            ..Accumulators::default()
        },
        ..Breakdown::default()
    };
    assert_eq!(b, expected);
}

#[test]
fn critical_illness_below_threshold_and_capped() {
    let rule = PolicyRule {
        deductible: amt("0"),
        ratio: ratio("0.50"),
        critical_illness: Some(ci_layer()),
        ..inpatient_rule()
    };
    // Below: in scope 30,000 → hifp 15,000, burden 15,000; before 0 → 15,000 < 20,000 → 0.
    let b = adjudicate(&[in_scope_line("30000.00")], &terms(&rule)).unwrap();
    assert_eq!(b.hifmi_pay, amt("0"));
    assert_eq!(b.delta.burden, amt("15000.00"));
    // Exactly reaching the threshold pays nothing either: before 5,000 → 20,000.
    let t = Terms {
        before: Accumulators {
            burden: amt("5000.00"),
            ..Accumulators::default()
        },
        ..terms(&rule)
    };
    let b = adjudicate(&[in_scope_line("30000.00")], &t).unwrap();
    assert_eq!(b.hifmi_pay, amt("0"));
    // Capped: before.burden 60,000, before.critical_illness 299,000 (cap 300,000).
    // Uncapped: 15,000 × 0.7 = 10,500 → capped to 1,000.00.
    // psn_part 30,000 − 15,000 − 1,000 = 14,000.00.
    let t = Terms {
        before: Accumulators {
            burden: amt("60000.00"),
            critical_illness: amt("299000.00"),
            ..Accumulators::default()
        },
        ..terms(&rule)
    };
    let b = adjudicate(&[in_scope_line("30000.00")], &t).unwrap();
    assert_eq!(b.hifmi_pay, amt("1000.00"));
    assert_eq!(b.delta.critical_illness, amt("1000.00"));
    assert_eq!(b.fund_pay_sumamt, amt("16000.00"));
    assert_eq!(b.psn_part_amt, amt("14000.00"));
    // CI cap already exhausted → 0.
    let t = Terms {
        before: Accumulators {
            burden: amt("60000.00"),
            critical_illness: amt("300000.00"),
            ..Accumulators::default()
        },
        ..terms(&rule)
    };
    let b = adjudicate(&[in_scope_line("30000.00")], &t).unwrap();
    assert_eq!(b.hifmi_pay, amt("0"));
}

#[test]
fn medical_assistance_on_what_remains() {
    // Assistance recipient, ratio 0.70, annual cap 10,000.00; the inpatient bill 23,442.46:
    // hifp 15,197.15, no CI; remaining personal part 23,442.46 − 15,197.15 = 8,245.31, of which
    // the fully self-paid 2,732.46 stays with the patient: base 5,512.85;
    // maf = 5,512.85 × 0.7 = 3,858.995 → 3,859.00 (≤ 10,000).
    // fund total 15,197.15 + 3,859.00 = 19,056.15; psn_part 4,386.31.
    // Account may pay psn_part − class C = 4,386.31 − 2,732.46 = 1,653.85 → balance 1,000.00;
    // cash 3,386.31.
    let rule = PolicyRule {
        assistance: Some(Assistance {
            ratio: ratio("0.70"),
            annual_cap: amt("10000.00"),
        }),
        ..inpatient_rule()
    };
    let t = Terms {
        assistance_recipient: true,
        ..terms(&rule)
    };
    let b = adjudicate(&big_bill(), &t).unwrap();
    let expected = Breakdown {
        medfee_sumamt: amt("23442.46"),
        fulamt_ownpay_amt: amt("2732.46"),
        overlmt_selfpay: amt("1060.00"),
        preselfpay_amt: amt("971.00"),
        inscp_scp_amt: amt("18679.00"),
        act_pay_dedc: amt("800.00"),
        hifp_pay: amt("15197.15"),
        hifmi_pay: amt("0"),
        maf_pay: amt("3859.00"),
        fund_pay_sumamt: amt("19056.15"),
        psn_part_amt: amt("4386.31"),
        acct_pay: amt("1000.00"),
        psn_cash_pay: amt("3386.31"),
        delta: Accumulators {
            annual_deductible: amt("0"),
            fund: amt("15197.15"),
            burden: amt("3481.85"),
            critical_illness: amt("0"),
            assistance: amt("3859.00"),
            admissions: 1,
        },
    };
    assert_eq!(b, expected);

    // before.assistance 7,000.00 → only 3,000.00 of the cap left → maf 3,000.00.
    // psn_part 23,442.46 − 15,197.15 − 3,000.00 = 5,245.31; account may pay
    // 5,245.31 − 2,732.46 = 2,512.85 → balance 1,000.00; cash 4,245.31.
    let t2 = Terms {
        before: Accumulators {
            assistance: amt("7000.00"),
            ..Accumulators::default()
        },
        ..t.clone()
    };
    let b = adjudicate(&big_bill(), &t2).unwrap();
    assert_eq!(b.maf_pay, amt("3000.00"));
    assert_eq!(b.fund_pay_sumamt, amt("18197.15"));
    assert_eq!(b.psn_part_amt, amt("5245.31"));
    assert_eq!(b.acct_pay, amt("1000.00"));
    assert_eq!(b.psn_cash_pay, amt("4245.31"));
    assert_eq!(b.delta.assistance, amt("3000.00"));

    // Cap exhausted (or exceeded) → 0.
    for used in ["10000.00", "10500.00"] {
        let t3 = Terms {
            before: Accumulators {
                assistance: amt(used),
                ..Accumulators::default()
            },
            ..t.clone()
        };
        assert_eq!(adjudicate(&big_bill(), &t3).unwrap().maf_pay, amt("0"));
    }

    // Not a recipient → 0, whatever the policy offers.
    let t4 = Terms {
        assistance_recipient: false,
        ..t.clone()
    };
    let b = adjudicate(&big_bill(), &t4).unwrap();
    assert_eq!(b.maf_pay, amt("0"));
    assert_eq!(b.psn_part_amt, amt("8245.31"));

    // A recipient under a policy without an assistance layer → 0.
    let plain = inpatient_rule();
    let t5 = Terms {
        assistance_recipient: true,
        ..terms(&plain)
    };
    assert_eq!(adjudicate(&big_bill(), &t5).unwrap().maf_pay, amt("0"));
}

#[test]
fn medical_assistance_after_critical_illness() {
    // The critical-illness case (83,000 in scope, hifp 41,000, hifmi 25,000) for a recipient:
    // remaining 83,000 − 41,000 − 25,000 = 17,000 × 0.7 = 11,900 → cap 10,000.00.
    // fund total 76,000.00; psn_part 7,000.00; account 1,000.00; cash 6,000.00.
    let rule = PolicyRule {
        deductible: amt("1000.00"),
        ratio: ratio("0.50"),
        critical_illness: Some(ci_layer()),
        assistance: Some(Assistance {
            ratio: ratio("0.70"),
            annual_cap: amt("10000.00"),
        }),
        ..inpatient_rule()
    };
    let t = Terms {
        before: Accumulators {
            burden: amt("18000.00"),
            ..Accumulators::default()
        },
        assistance_recipient: true,
        ..terms(&rule)
    };
    let b = adjudicate(&[in_scope_line("83000.00")], &t).unwrap();
    let expected = Breakdown {
        medfee_sumamt: amt("83000.00"),
        inscp_scp_amt: amt("83000.00"),
        act_pay_dedc: amt("1000.00"),
        hifp_pay: amt("41000.00"),
        hifmi_pay: amt("25000.00"),
        maf_pay: amt("10000.00"),
        fund_pay_sumamt: amt("76000.00"),
        psn_part_amt: amt("7000.00"),
        acct_pay: amt("1000.00"),
        psn_cash_pay: amt("6000.00"),
        delta: Accumulators {
            fund: amt("41000.00"),
            burden: amt("42000.00"),
            critical_illness: amt("25000.00"),
            assistance: amt("10000.00"),
            admissions: 1,
            ..Accumulators::default()
        },
        ..Breakdown::default()
    };
    assert_eq!(b, expected);
}

#[test]
fn personal_account_rules() {
    // The inpatient bill: psn_part 8,245.31 of which class C 2,732.46.
    let rule = inpatient_rule();
    let base = terms(&rule);
    let acct = |t: Terms<'_>| {
        let b = adjudicate(&big_bill(), &t).unwrap();
        assert_eq!(b.psn_part_amt, amt("8245.31"));
        assert_eq!(b.acct_pay + b.psn_cash_pay, b.psn_part_amt);
        (b.acct_pay, b.psn_cash_pay)
    };
    // Balance 1,000.00 smaller than the personal part → all of it; cash 7,245.31.
    assert_eq!(acct(base.clone()), (amt("1000.00"), amt("7245.31")));
    // Balance 10,000.00, class C excluded → 8,245.31 − 2,732.46 = 5,512.85; cash 2,732.46.
    let rich = Terms {
        account_balance: Some(amt("10000.00")),
        ..base.clone()
    };
    assert_eq!(acct(rich.clone()), (amt("5512.85"), amt("2732.46")));
    // Same balance, the account may pay class C → the whole 8,245.31; cash 0.
    let with_c = Terms {
        account_pays_class_c: true,
        ..rich.clone()
    };
    assert_eq!(acct(with_c), (amt("8245.31"), amt("0")));
    // Exactly the balance needed.
    let exact = Terms {
        account_balance: Some(amt("5512.85")),
        ..base.clone()
    };
    assert_eq!(acct(exact), (amt("5512.85"), amt("2732.46")));
    // Zero balance → 0.
    let empty = Terms {
        account_balance: Some(amt("0")),
        ..base.clone()
    };
    assert_eq!(acct(empty), (amt("0"), amt("8245.31")));
    // The caller does not ask for the account → 0.
    let unused = Terms {
        use_account: false,
        ..rich.clone()
    };
    assert_eq!(acct(unused), (amt("0"), amt("8245.31")));
    // No account at all (resident scheme) → 0.
    let none = Terms {
        account_balance: None,
        ..rich.clone()
    };
    assert_eq!(acct(none), (amt("0"), amt("8245.31")));
}

#[test]
fn empty_and_fully_refunded_bills_settle_to_zero() {
    let rule = inpatient_rule();
    let b = adjudicate(&[], &terms(&rule)).unwrap();
    assert_eq!(
        b,
        Breakdown {
            delta: Accumulators {
                admissions: 1,
                ..Accumulators::default()
            },
            ..Breakdown::default()
        }
    );
    let mut lines = big_bill();
    lines.extend(big_bill().iter().map(neg_split));
    let b = adjudicate(&lines, &terms(&rule)).unwrap();
    assert_eq!(b.medfee_sumamt, amt("0"));
    assert_eq!(b.fund_pay_sumamt, amt("0"));
    assert_eq!(b.psn_part_amt, amt("0"));
    assert_eq!(b.acct_pay, amt("0"));
}

#[test]
fn partial_refund_nets_against_its_original() {
    // 3 × 120.00 over cap 100.00 (360 / over 60 / in scope 300) refunded by −1 unit
    // (−120 / −20 / −100): net 240.00 / over 40.00 / in scope 200.00.
    // Outpatient (deductible 1,000) fully paid → hifp 200 × 0.75 = 150.00, psn_part 90.00.
    let t = class_a(Some("100.00"));
    let lines = [
        split_line(qty("3"), price("120.00"), Some(&t)),
        split_line(qty("-1"), price("120.00"), Some(&t)),
    ];
    let rule = outpatient_rule();
    let tt = Terms {
        before: Accumulators {
            annual_deductible: amt("1000.00"),
            ..Accumulators::default()
        },
        ..terms(&rule)
    };
    let b = adjudicate(&lines, &tt).unwrap();
    assert_eq!(b.medfee_sumamt, amt("240.00"));
    assert_eq!(b.overlmt_selfpay, amt("40.00"));
    assert_eq!(b.inscp_scp_amt, amt("200.00"));
    assert_eq!(b.hifp_pay, amt("150.00"));
    assert_eq!(b.psn_part_amt, amt("90.00"));
    // Account may pay all of it (no class C): 90.00.
    assert_eq!(b.acct_pay, amt("90.00"));
    assert_eq!(b.psn_cash_pay, amt("0"));
}

#[test]
fn negative_totals_are_refused() {
    let rule = inpatient_rule();
    let t = terms(&rule);
    let a = class_a(None);
    // Refund of 150.00 against a 100.00 line: total −50.00.
    let lines = [
        split_line(qty("1"), price("100.00"), Some(&a)),
        split_line(qty("-1"), price("150.00"), Some(&a)),
    ];
    let r = adjudicate(&lines, &t);
    assert_eq!(precondition_rule(&r), Some("negative_total"), "{r:?}");
    // A lone refund line.
    let r = adjudicate(&[split_line(qty("-2"), price("10.00"), None)], &t);
    assert_eq!(precondition_rule(&r), Some("negative_total"), "{r:?}");
    // Total positive but in scope negative: class C 100.00, class A refund −50.00.
    let lines = [
        split_line(qty("1"), price("100.00"), Some(&class_c())),
        split_line(qty("-1"), price("50.00"), Some(&a)),
    ];
    let r = adjudicate(&lines, &t);
    assert_eq!(precondition_rule(&r), Some("negative_total"), "{r:?}");
    // Total positive but fully self-paid negative: class A 100.00, class C refund −50.00.
    let lines = [
        split_line(qty("1"), price("100.00"), Some(&a)),
        split_line(qty("-1"), price("50.00"), Some(&class_c())),
    ];
    let r = adjudicate(&lines, &t);
    assert_eq!(precondition_rule(&r), Some("negative_total"), "{r:?}");
}

/// Ratio 1, no deductible, no cap: the pooled fund pays all of in scope.
fn full_cover_rule() -> PolicyRule {
    PolicyRule {
        deductible: amt("0"),
        ratio: Ratio::ONE,
        annual_cap: None,
        ..inpatient_rule()
    }
}

#[test]
fn negative_over_limit_total_is_refused() {
    // Class A 200.00 + a refund (no original in this bill) of 1 × 120.00 over cap 100.00:
    // amount 200 − 120 = 80.00; over-limit −20.00; in scope 200 − 100 = 100.00.
    // Accepted today: hifp 100.00 > total 80.00 → psn_part −20.00, cash −20.00.
    let rule = full_cover_rule();
    let lines = [
        split_line(qty("1"), price("200.00"), Some(&class_a(None))),
        split_line(qty("-1"), price("120.00"), Some(&class_a(Some("100.00")))),
    ];
    let r = adjudicate(&lines, &terms(&rule));
    assert_eq!(precondition_rule(&r), Some("negative_total"), "{r:?}");
}

#[test]
fn negative_first_self_paid_total_is_refused() {
    // Class A 100.00 + a refund (no original in this bill) of a class-B (0.10) 10.00 line:
    // amount 90.00, first self-paid −1.00, in scope 91.00 → hifp 91.00 > 90.00, psn_part −1.00.
    let rule = full_cover_rule();
    let lines = [
        split_line(qty("1"), price("100.00"), Some(&class_a(None))),
        split_line(qty("-1"), price("10.00"), Some(&class_b("0.10", None))),
    ];
    let r = adjudicate(&lines, &terms(&rule));
    assert_eq!(precondition_rule(&r), Some("negative_total"), "{r:?}");
}

#[test]
fn reversal_negates_everything_and_restores_accumulators() {
    let rule = PolicyRule {
        critical_illness: Some(ci_layer()),
        assistance: Some(Assistance {
            ratio: ratio("0.70"),
            annual_cap: amt("10000.00"),
        }),
        ..inpatient_rule()
    };
    let before = Accumulators {
        annual_deductible: amt("0"),
        fund: amt("1234.56"),
        burden: amt("19000.00"),
        critical_illness: amt("10.00"),
        assistance: amt("20.00"),
        admissions: 1,
    };
    let t = Terms {
        before,
        assistance_recipient: true,
        ..terms(&rule)
    };
    let b = adjudicate(&big_bill(), &t).unwrap();
    let r = b.negated();
    assert!(r.identities_hold());
    assert_eq!(r.medfee_sumamt, amt("-23442.46"));
    assert_eq!(r.psn_cash_pay, -b.psn_cash_pay);
    assert_eq!(r.delta.admissions, -1);
    assert_eq!(r.negated(), b);
    assert_eq!(before.plus(&b.delta).plus(&r.delta), before);
}

// ---------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------

/// One generated fee line.
#[derive(Debug, Clone)]
struct GenLine {
    qty: Quantity,
    price: UnitPrice,
    terms: Option<CatalogueTerms>,
}

impl GenLine {
    fn split(&self) -> LineSplit {
        split_line(self.qty, self.price, self.terms.as_ref())
    }
}

fn arb_price() -> impl Strategy<Value = UnitPrice> {
    prop_oneof![
        // whole fen, up to 20,000.00
        (0i64..=2_000_000).prop_map(|fen| UnitPrice::from_micros(fen * 10_000).unwrap()),
        // up to 6 decimals, up to 5,000
        (0i64..=5_000_000_000).prop_map(|m| UnitPrice::from_micros(m).unwrap()),
        // tiny prices where rounding dominates
        (0i64..=20_000).prop_map(|m| UnitPrice::from_micros(m).unwrap()),
    ]
}

fn arb_qty() -> impl Strategy<Value = Quantity> {
    prop_oneof![
        (1i64..=30).prop_map(|n| Quantity::from_scaled(n * 10_000).unwrap()),
        (1i64..=300_000).prop_map(|s| Quantity::from_scaled(s).unwrap()),
    ]
}

fn arb_ratio() -> impl Strategy<Value = Ratio> {
    prop_oneof![
        (0i64..=100).prop_map(|p| Ratio::from_bp(p * 100).unwrap()),
        (0i64..=10_000).prop_map(|bp| Ratio::from_bp(bp).unwrap()),
    ]
}

fn arb_terms() -> impl Strategy<Value = Option<CatalogueTerms>> {
    let class = prop_oneof![
        Just(CatalogueClass::A),
        Just(CatalogueClass::B),
        Just(CatalogueClass::C)
    ];
    let some = (
        class,
        proptest::option::weighted(0.8, arb_ratio()),
        proptest::option::of(arb_price()),
    )
        .prop_map(|(class, b_ratio, cap)| {
            Some(CatalogueTerms {
                class,
                b_ratio,
                cap,
            })
        });
    prop_oneof![4 => some, 1 => Just(None)]
}

fn arb_line() -> impl Strategy<Value = GenLine> {
    (arb_qty(), arb_price(), arb_terms()).prop_map(|(qty, price, terms)| GenLine {
        qty,
        price,
        terms,
    })
}

/// 1..30 lines, the first ones charges, some followed by refunds of at most their quantity.
fn arb_bill() -> impl Strategy<Value = Vec<GenLine>> {
    proptest::collection::vec(
        (arb_line(), proptest::option::weighted(0.25, 1u32..=100)),
        1..=20,
    )
    .prop_map(|charges| {
        let mut lines = Vec::new();
        for (line, refund_pct) in charges {
            let refund = refund_pct.map(|pct| {
                let orig = line.qty.to_scaled();
                // refund whole, or a percentage of the original quantity (never more)
                let scaled = if pct == 100 {
                    orig
                } else {
                    (orig * i64::from(pct) / 100).max(1)
                };
                GenLine {
                    qty: Quantity::from_scaled(-scaled).unwrap(),
                    ..line.clone()
                }
            });
            lines.push(line);
            lines.extend(refund);
        }
        lines.truncate(30);
        lines
    })
}

fn arb_amount(max_fen: i64) -> impl Strategy<Value = Amount> {
    prop_oneof![
        (0i64..=max_fen / 100).prop_map(|y| Amount::from_fen(y * 100)),
        (0i64..=max_fen).prop_map(Amount::from_fen),
    ]
}

fn arb_ci() -> impl Strategy<Value = CriticalIllness> {
    (
        arb_amount(5_000_000),
        proptest::collection::vec(
            (arb_amount(5_000_000), 1i64..=5_000_000, arb_ratio()),
            1..=3,
        ),
        any::<bool>(),
        proptest::option::of(arb_amount(50_000_000)),
    )
        .prop_map(|(threshold, raw, open_end, annual_cap)| {
            // Ascending, non-overlapping bands from the threshold: gap, then width.
            let mut floor = threshold;
            let n = raw.len();
            let bands = raw
                .into_iter()
                .enumerate()
                .map(|(i, (gap, width, ratio))| {
                    let from = floor + gap;
                    let to = from + Amount::from_fen(width);
                    floor = to;
                    Band {
                        from,
                        to: if open_end && i + 1 == n {
                            None
                        } else {
                            Some(to)
                        },
                        ratio,
                    }
                })
                .collect();
            CriticalIllness {
                threshold,
                bands,
                annual_cap,
            }
        })
}

fn arb_rule() -> impl Strategy<Value = PolicyRule> {
    (
        prop_oneof![
            Just(DeductibleBasis::PerAdmission),
            Just(DeductibleBasis::Annual)
        ],
        arb_amount(300_000),
        arb_amount(300_000),
        arb_ratio(),
        proptest::option::of(arb_amount(50_000_000)),
        proptest::option::of(arb_ci()),
        proptest::option::of((arb_ratio(), arb_amount(3_000_000))),
    )
        .prop_map(|(basis, d1, d2, ratio, cap, ci, assistance)| PolicyRule {
            deductible_basis: basis,
            deductible: d1.max(d2),
            repeat_admission_deductible: d1.min(d2),
            ratio,
            annual_cap: cap,
            critical_illness: ci,
            assistance: assistance.map(|(ratio, annual_cap)| Assistance { ratio, annual_cap }),
            ..inpatient_rule()
        })
}

fn arb_reduction() -> impl Strategy<Value = Option<Reduction>> {
    proptest::option::of(prop_oneof![
        arb_ratio().prop_map(Reduction::MinusPoints),
        arb_ratio().prop_map(Reduction::Factor),
    ])
}

fn arb_before() -> impl Strategy<Value = Accumulators> {
    (
        arb_amount(300_000),
        arb_amount(50_000_000),
        arb_amount(10_000_000),
        arb_amount(10_000_000),
        arb_amount(3_000_000),
        0i64..=3,
    )
        .prop_map(
            |(annual_deductible, fund, burden, critical_illness, assistance, admissions)| {
                Accumulators {
                    annual_deductible,
                    fund,
                    burden,
                    critical_illness,
                    assistance,
                    admissions,
                }
            },
        )
}

/// Everything Terms holds besides the rule (which it borrows).
#[derive(Debug, Clone)]
struct Situation {
    reduction: Option<Reduction>,
    admission: bool,
    before: Accumulators,
    assistance_recipient: bool,
    account_balance: Option<Amount>,
    use_account: bool,
    account_pays_class_c: bool,
}

fn arb_situation() -> impl Strategy<Value = Situation> {
    (
        arb_reduction(),
        any::<bool>(),
        arb_before(),
        any::<bool>(),
        proptest::option::of(arb_amount(2_000_000)),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(reduction, admission, before, recipient, balance, use_account, class_c)| Situation {
                reduction,
                admission,
                before,
                assistance_recipient: recipient,
                account_balance: balance,
                use_account,
                account_pays_class_c: class_c,
            },
        )
}

impl Situation {
    fn terms<'a>(&self, rule: &'a PolicyRule) -> Terms<'a> {
        Terms {
            rule,
            ratio: self.reduction.map_or(rule.ratio, |r| r.apply(rule.ratio)),
            admission: self.admission,
            before: self.before,
            assistance_recipient: self.assistance_recipient,
            account_balance: self.account_balance,
            use_account: self.use_account,
            account_pays_class_c: self.account_pays_class_c,
        }
    }
}

fn non_neg(a: Amount) -> Amount {
    a.max(Amount::ZERO)
}

/// Same sign as `amount` or zero.
fn agrees(part: Amount, amount: Amount) -> bool {
    part.is_zero() || (part.is_negative() == amount.is_negative() && !amount.is_zero())
}

proptest! {
    // Default case count (256, or PROPTEST_CASES); no regression files written into the tree.
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn prop_split_line_parts_add_up_and_share_the_sign(line in arb_line(), refund in any::<bool>()) {
        let q = if refund {
            Quantity::from_scaled(-line.qty.to_scaled()).unwrap()
        } else {
            line.qty
        };
        let l = split_line(q, line.price, line.terms.as_ref());
        prop_assert_eq!(
            l.amount,
            l.fulamt_ownpay + l.overlmt_selfpay + l.preselfpay + l.inscp
        );
        for part in [l.fulamt_ownpay, l.overlmt_selfpay, l.preselfpay, l.inscp] {
            prop_assert!(agrees(part, l.amount), "{:?} vs {:?}", part, l);
        }
        // The amount is quantity × price rounded half-up once.
        prop_assert_eq!(l.amount, crate::domain::money::line_amount(q, line.price));
        // Fully self-paid exactly for class C and unknown items.
        let covered = matches!(line.terms, Some(t) if t.class != CatalogueClass::C);
        if covered {
            prop_assert_eq!(l.fulamt_ownpay, Amount::ZERO);
        } else {
            prop_assert_eq!(l, LineSplit { amount: l.amount, fulamt_ownpay: l.amount, ..LineSplit::default() });
        }
        // Only class B has a first self-paid part; only a price above the cap an over-limit one.
        if !matches!(line.terms, Some(t) if t.class == CatalogueClass::B) {
            prop_assert_eq!(l.preselfpay, Amount::ZERO);
        }
        if !matches!(line.terms, Some(t) if covered && t.cap.is_some_and(|c| line.price > c)) {
            prop_assert_eq!(l.overlmt_selfpay, Amount::ZERO);
        }
    }

    #[test]
    fn prop_refund_line_is_exact_negation(line in arb_line()) {
        let pos = line.split();
        let neg_q = Quantity::from_scaled(-line.qty.to_scaled()).unwrap();
        let neg = split_line(neg_q, line.price, line.terms.as_ref());
        prop_assert_eq!(neg, neg_split(&pos));
    }

    #[test]
    fn prop_breakdown_invariants(
        bill in arb_bill(),
        rule in arb_rule(),
        s in arb_situation(),
    ) {
        let lines: Vec<LineSplit> = bill.iter().map(GenLine::split).collect();
        let sum = total(&lines);
        let t = s.terms(&rule);
        let b = match adjudicate(&lines, &t) {
            Ok(b) => b,
            Err(e) => {
                // Refused only when a total really is negative (a partial refund can round a
                // part 0.01 above its original's share).
                prop_assert!(
                    matches!(e, DomainError::Precondition { rule: "negative_total", .. }),
                    "{:?}", e
                );
                prop_assert!(
                    sum.amount.is_negative() || sum.inscp.is_negative()
                        || sum.fulamt_ownpay.is_negative(),
                    "refused {:?}", sum
                );
                return Ok(());
            }
        };
        prop_assert!(b.identities_hold(), "{:?}", b);
        // The breakdown carries the line totals.
        prop_assert_eq!(b.medfee_sumamt, sum.amount);
        prop_assert_eq!(b.fulamt_ownpay_amt, sum.fulamt_ownpay);
        prop_assert_eq!(b.overlmt_selfpay, sum.overlmt_selfpay);
        prop_assert_eq!(b.preselfpay_amt, sum.preselfpay);
        prop_assert_eq!(b.inscp_scp_amt, sum.inscp);
        // No fund amount negative; the personal part and its split are not negative.
        for fund in [b.hifp_pay, b.hifmi_pay, b.maf_pay, b.fund_pay_sumamt] {
            prop_assert!(!fund.is_negative(), "{:?}", b);
        }
        prop_assert!(!b.psn_part_amt.is_negative(), "{:?}", b);
        prop_assert!(!b.acct_pay.is_negative(), "{:?}", b);
        prop_assert!(!b.psn_cash_pay.is_negative(), "{:?}", b);
        // Deductible: within in scope and within what is outstanding.
        prop_assert!(!b.act_pay_dedc.is_negative());
        prop_assert!(b.act_pay_dedc <= b.inscp_scp_amt);
        let outstanding = match rule.deductible_basis {
            DeductibleBasis::Annual => non_neg(rule.deductible - s.before.annual_deductible),
            DeductibleBasis::PerAdmission if s.admission && s.before.admissions >= 1 => {
                rule.repeat_admission_deductible
            }
            DeductibleBasis::PerAdmission => rule.deductible,
        };
        prop_assert_eq!(b.act_pay_dedc, b.inscp_scp_amt.min(outstanding));
        // Pooled fund: the ratio of what is above the deductible, within the cap left.
        prop_assert!(b.hifp_pay <= (b.inscp_scp_amt - b.act_pay_dedc).apply_ratio(t.ratio));
        if let Some(cap) = rule.annual_cap {
            prop_assert!(b.hifp_pay <= non_neg(cap - s.before.fund), "{:?}", b);
        }
        // Critical illness: within its cap left, never more than this settlement's burden,
        // nothing while the year's burden stays at or under the threshold.
        match &rule.critical_illness {
            Some(ci) => {
                if let Some(cap) = ci.annual_cap {
                    prop_assert!(b.hifmi_pay <= non_neg(cap - s.before.critical_illness));
                }
                prop_assert!(b.hifmi_pay <= non_neg(b.delta.burden), "{:?}", b);
                if s.before.burden + b.delta.burden <= ci.threshold {
                    prop_assert_eq!(b.hifmi_pay, Amount::ZERO);
                }
            }
            None => prop_assert_eq!(b.hifmi_pay, Amount::ZERO),
        }
        // Assistance: recipients only, within its cap left, at most ratio × what remains.
        match (&rule.assistance, s.assistance_recipient) {
            (Some(a), true) => {
                prop_assert!(b.maf_pay <= non_neg(a.annual_cap - s.before.assistance));
                let remaining = b.medfee_sumamt - b.hifp_pay - b.hifmi_pay - b.fulamt_ownpay_amt;
                prop_assert!(b.maf_pay <= non_neg(remaining).apply_ratio(a.ratio));
            }
            _ => prop_assert_eq!(b.maf_pay, Amount::ZERO),
        }
        // Account: within the balance and the personal part; class C only if allowed.
        match (s.use_account, s.account_balance) {
            (true, Some(balance)) => {
                prop_assert!(b.acct_pay <= balance);
                prop_assert!(b.acct_pay <= b.psn_part_amt);
                if !s.account_pays_class_c {
                    prop_assert!(b.acct_pay <= non_neg(b.psn_part_amt - b.fulamt_ownpay_amt));
                }
            }
            _ => prop_assert_eq!(b.acct_pay, Amount::ZERO),
        }
        // Accumulator delta mirrors the breakdown.
        prop_assert_eq!(b.delta.fund, b.hifp_pay);
        prop_assert_eq!(b.delta.burden, b.inscp_scp_amt - b.hifp_pay);
        prop_assert_eq!(b.delta.critical_illness, b.hifmi_pay);
        prop_assert_eq!(b.delta.assistance, b.maf_pay);
        prop_assert_eq!(b.delta.admissions, i64::from(s.admission));
        let expected_annual = if rule.deductible_basis == DeductibleBasis::Annual {
            b.act_pay_dedc
        } else {
            Amount::ZERO
        };
        prop_assert_eq!(b.delta.annual_deductible, expected_annual);
    }

    #[test]
    fn prop_settle_then_reverse_restores_state(
        bill in arb_bill(),
        rule in arb_rule(),
        s in arb_situation(),
    ) {
        let lines: Vec<LineSplit> = bill.iter().map(GenLine::split).collect();
        let t = s.terms(&rule);
        let Ok(b) = adjudicate(&lines, &t) else {
            return Ok(());
        };
        let r = b.negated();
        prop_assert!(r.identities_hold(), "{:?}", r);
        prop_assert_eq!(r.negated(), b);
        prop_assert_eq!(s.before.plus(&b.delta).plus(&r.delta), s.before);
        // Every amount negated, field by field.
        prop_assert_eq!(r.medfee_sumamt, -b.medfee_sumamt);
        prop_assert_eq!(r.fund_pay_sumamt, -b.fund_pay_sumamt);
        prop_assert_eq!(r.psn_part_amt, -b.psn_part_amt);
        prop_assert_eq!(r.acct_pay, -b.acct_pay);
        prop_assert_eq!(r.psn_cash_pay, -b.psn_cash_pay);
        prop_assert_eq!(r.delta, b.delta.negated());
    }

    #[test]
    fn prop_refund_only_bill_is_refused(
        bill in proptest::collection::vec(arb_line(), 1..=10),
        rule in arb_rule(),
        s in arb_situation(),
    ) {
        // Refund lines with nothing to refund: the total is negative (or zero when every line
        // rounds to 0.00, which settles to nothing).
        let lines: Vec<LineSplit> = bill.iter().map(|l| neg_split(&l.split())).collect();
        let r = adjudicate(&lines, &s.terms(&rule));
        if total(&lines).amount.is_zero() {
            prop_assert!(r.is_ok(), "{:?}", r);
        } else {
            prop_assert_eq!(precondition_rule(&r), Some("negative_total"), "{:?}", r);
        }
    }

    #[test]
        fn prop_accepted_bills_never_pay_more_than_the_total(
        charges in proptest::collection::vec(arb_line(), 1..=10),
        refunds in proptest::collection::vec(arb_line(), 0..=5),
        rule in arb_rule(),
        s in arb_situation(),
    ) {
        // Any mix of charges and refunds, refunds not necessarily matching a charge: whatever
        // is accepted must keep every part of the total and the personal part non-negative.
        let mut lines: Vec<LineSplit> = charges.iter().map(GenLine::split).collect();
        lines.extend(refunds.iter().map(|l| neg_split(&l.split())));
        if let Ok(b) = adjudicate(&lines, &s.terms(&rule)) {
            for part in [b.fulamt_ownpay_amt, b.overlmt_selfpay, b.preselfpay_amt, b.inscp_scp_amt] {
                prop_assert!(!part.is_negative(), "{:?}", b);
            }
            prop_assert!(b.fund_pay_sumamt <= b.medfee_sumamt, "{:?}", b);
            prop_assert!(!b.psn_part_amt.is_negative(), "{:?}", b);
            prop_assert!(!b.psn_cash_pay.is_negative(), "{:?}", b);
        }
    }

    #[test]
    fn prop_adjudication_is_deterministic_and_order_free(
        bill in arb_bill(),
        rule in arb_rule(),
        s in arb_situation(),
    ) {
        // Line order does not matter: the rules work on totals.
        let lines: Vec<LineSplit> = bill.iter().map(GenLine::split).collect();
        let mut reversed = lines.clone();
        reversed.reverse();
        let t = s.terms(&rule);
        prop_assert_eq!(adjudicate(&lines, &t), adjudicate(&reversed, &t));
    }
}

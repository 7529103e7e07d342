//! Adjudication: the money rules of DESIGN §3, as pure functions. The treatment region's
//! catalogue splits each fee line; the home region's policy rule, the filing's effective ratio
//! and the person's year-to-date accumulators turn the totals into fund layers, the personal
//! part, and the account / cash split.
//!
//! Every amount is exact: products are taken in `Decimal` and rounded once, half-up, with
//! `money::round_half_up` (through `Amount::from_decimal_rounded`).

use super::kinds::{CatalogueClass, DeductibleBasis};
use super::money::{Amount, Quantity, Ratio, UnitPrice};
use super::policy::PolicyRule;
use super::{DomainError, DomainResult};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// What the catalogue says about an item (None for an item not in the catalogue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogueTerms {
    pub class: CatalogueClass,
    /// Class-B first self-paid ratio.
    pub b_ratio: Option<Ratio>,
    /// Price cap per unit.
    pub cap: Option<UnitPrice>,
}

/// One fee line split into its four parts (DESIGN §3 steps 1–4). For every line:
/// amount = fulamt_ownpay + overlmt_selfpay + preselfpay + inscp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LineSplit {
    /// det_item_fee_sumamt: quantity × unit price, rounded per line.
    pub amount: Amount,
    /// fulamt_ownpay_amt: class C or not in the catalogue.
    pub fulamt_ownpay: Amount,
    /// overlmt_selfpay: (price − cap) × quantity.
    pub overlmt_selfpay: Amount,
    /// preselfpay_amt: class B first self-paid share of the capped amount.
    pub preselfpay: Amount,
    /// inscp_scp_amt: the rest, in scope.
    pub inscp: Amount,
}

/// Largest amount one line may carry: 10,000,000,000.00 yuan (in fen). A bill of up to a
/// million such lines still fits the books' integer fen exactly.
pub const MAX_LINE_FEN: i64 = 1_000_000_000_000;

/// Checks that quantity × unit price stays within [`MAX_LINE_FEN`]; `field` names the line
/// (called only for a refusal: a good line costs no formatting).
pub fn check_line_amount(
    field: impl FnOnce() -> String,
    qty: Quantity,
    price: UnitPrice,
) -> DomainResult<()> {
    match super::money::checked_line_amount(qty, price) {
        Some(a) if a.to_fen().abs() <= MAX_LINE_FEN => Ok(()),
        _ => Err(DomainError::invalid(
            field(),
            "quantity × unit price exceeds 10,000,000,000.00 yuan",
        )),
    }
}

/// Splits one line. Negative quantities (refund lines) give the exact negation of the same
/// positive line, because rounding is symmetric.
pub fn split_line(qty: Quantity, price: UnitPrice, terms: Option<&CatalogueTerms>) -> LineSplit {
    let q = qty.as_decimal();
    let p = price.as_decimal();
    let amount = Amount::from_decimal_rounded(q * p);
    let terms = match terms {
        Some(t) if t.class != CatalogueClass::C => t,
        _ => {
            return LineSplit {
                amount,
                fulamt_ownpay: amount,
                ..LineSplit::default()
            };
        }
    };
    let (capped_price, overlmt_selfpay) = match terms.cap.map(|c| c.as_decimal()) {
        Some(cap) if p > cap => (cap, Amount::from_decimal_rounded((p - cap) * q)),
        _ => (p, Amount::ZERO),
    };
    let capped = amount - overlmt_selfpay;
    let preselfpay = match (terms.class, terms.b_ratio) {
        (CatalogueClass::B, Some(r)) => {
            let share = Amount::from_decimal_rounded(capped_price * q * r.as_decimal());
            // Rounding can never move more than the capped amount out of scope.
            if share.abs() > capped.abs() {
                capped
            } else {
                share
            }
        }
        _ => Amount::ZERO,
    };
    LineSplit {
        amount,
        fulamt_ownpay: Amount::ZERO,
        overlmt_selfpay,
        preselfpay,
        inscp: capped - preselfpay,
    }
}

/// Sum of line splits.
pub fn total(lines: &[LineSplit]) -> LineSplit {
    lines.iter().fold(LineSplit::default(), |acc, l| LineSplit {
        amount: acc.amount + l.amount,
        fulamt_ownpay: acc.fulamt_ownpay + l.fulamt_ownpay,
        overlmt_selfpay: acc.overlmt_selfpay + l.overlmt_selfpay,
        preselfpay: acc.preselfpay + l.preselfpay,
        inscp: acc.inscp + l.inscp,
    })
}

/// A person's year-to-date figures for one insurance type (DESIGN §3 "accumulators").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Accumulators {
    /// Deductible paid under annual-basis rules.
    pub annual_deductible: Amount,
    /// Pooled fund paid (hifp_pay), against the annual cap.
    pub fund: Amount,
    /// In-scope personal burden (in scope − pooled fund), for critical-illness bands.
    pub burden: Amount,
    /// Critical-illness layer paid (hifmi_pay).
    pub critical_illness: Amount,
    /// Medical assistance paid (maf_pay).
    pub assistance: Amount,
    /// Unreversed inpatient settlements.
    pub admissions: i64,
}

impl Accumulators {
    pub fn plus(self, d: &Accumulators) -> Accumulators {
        Accumulators {
            annual_deductible: self.annual_deductible + d.annual_deductible,
            fund: self.fund + d.fund,
            burden: self.burden + d.burden,
            critical_illness: self.critical_illness + d.critical_illness,
            assistance: self.assistance + d.assistance,
            admissions: self.admissions + d.admissions,
        }
    }

    pub fn negated(&self) -> Accumulators {
        Accumulators {
            annual_deductible: -self.annual_deductible,
            fund: -self.fund,
            burden: -self.burden,
            critical_illness: -self.critical_illness,
            assistance: -self.assistance,
            admissions: -self.admissions,
        }
    }
}

/// Everything adjudication needs beyond the lines.
#[derive(Debug, Clone)]
pub struct Terms<'a> {
    /// The home policy's rule for this insurance type, category, care type, level, province.
    pub rule: &'a PolicyRule,
    /// The pooled-fund ratio after any filing reduction.
    pub ratio: Ratio,
    /// An inpatient admission (counts for repeat-admission deductibles).
    pub admission: bool,
    /// Year-to-date figures before this settlement.
    pub before: Accumulators,
    pub assistance_recipient: bool,
    /// Personal account balance, None when the person has none.
    pub account_balance: Option<Amount>,
    /// The caller asks to use the personal account.
    pub use_account: bool,
    /// The home policy lets the account pay class C (fully self-paid) items.
    pub account_pays_class_c: bool,
}

/// The adjudicated result, with NHSA names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Breakdown {
    pub medfee_sumamt: Amount,
    pub fulamt_ownpay_amt: Amount,
    pub overlmt_selfpay: Amount,
    pub preselfpay_amt: Amount,
    pub inscp_scp_amt: Amount,
    /// Deductible applied.
    pub act_pay_dedc: Amount,
    /// Pooled fund (统筹基金).
    pub hifp_pay: Amount,
    /// Critical-illness layer (大病保险).
    pub hifmi_pay: Amount,
    /// Medical assistance (医疗救助).
    pub maf_pay: Amount,
    pub fund_pay_sumamt: Amount,
    pub psn_part_amt: Amount,
    pub acct_pay: Amount,
    pub psn_cash_pay: Amount,
    /// Changes to the accumulators this settlement makes.
    pub delta: Accumulators,
}

impl Breakdown {
    /// The reversal: every amount negated.
    pub fn negated(&self) -> Breakdown {
        Breakdown {
            medfee_sumamt: -self.medfee_sumamt,
            fulamt_ownpay_amt: -self.fulamt_ownpay_amt,
            overlmt_selfpay: -self.overlmt_selfpay,
            preselfpay_amt: -self.preselfpay_amt,
            inscp_scp_amt: -self.inscp_scp_amt,
            act_pay_dedc: -self.act_pay_dedc,
            hifp_pay: -self.hifp_pay,
            hifmi_pay: -self.hifmi_pay,
            maf_pay: -self.maf_pay,
            fund_pay_sumamt: -self.fund_pay_sumamt,
            psn_part_amt: -self.psn_part_amt,
            acct_pay: -self.acct_pay,
            psn_cash_pay: -self.psn_cash_pay,
            delta: self.delta.negated(),
        }
    }

    /// `self − other`, field by field: what a refund of part of a settlement changes.
    pub fn minus(&self, o: &Breakdown) -> Breakdown {
        self.plus(&o.negated())
    }

    /// `self + other`, field by field.
    pub fn plus(&self, o: &Breakdown) -> Breakdown {
        Breakdown {
            medfee_sumamt: self.medfee_sumamt + o.medfee_sumamt,
            fulamt_ownpay_amt: self.fulamt_ownpay_amt + o.fulamt_ownpay_amt,
            overlmt_selfpay: self.overlmt_selfpay + o.overlmt_selfpay,
            preselfpay_amt: self.preselfpay_amt + o.preselfpay_amt,
            inscp_scp_amt: self.inscp_scp_amt + o.inscp_scp_amt,
            act_pay_dedc: self.act_pay_dedc + o.act_pay_dedc,
            hifp_pay: self.hifp_pay + o.hifp_pay,
            hifmi_pay: self.hifmi_pay + o.hifmi_pay,
            maf_pay: self.maf_pay + o.maf_pay,
            fund_pay_sumamt: self.fund_pay_sumamt + o.fund_pay_sumamt,
            psn_part_amt: self.psn_part_amt + o.psn_part_amt,
            acct_pay: self.acct_pay + o.acct_pay,
            psn_cash_pay: self.psn_cash_pay + o.psn_cash_pay,
            delta: self.delta.plus(&o.delta),
        }
    }

    /// The identities of DESIGN §3, to the fen. A breakdown that breaks one is a bug.
    pub fn identities_hold(&self) -> bool {
        self.medfee_sumamt
            == self.fulamt_ownpay_amt
                + self.overlmt_selfpay
                + self.preselfpay_amt
                + self.inscp_scp_amt
            && self.fund_pay_sumamt == self.hifp_pay + self.hifmi_pay + self.maf_pay
            && self.medfee_sumamt == self.fund_pay_sumamt + self.psn_part_amt
            && self.psn_part_amt == self.acct_pay + self.psn_cash_pay
    }
}

/// Adjudicates a settlement's lines (DESIGN §3 steps 5–9).
pub fn adjudicate(lines: &[LineSplit], t: &Terms<'_>) -> DomainResult<Breakdown> {
    let sum = total(lines);
    let negative_part = [
        sum.amount,
        sum.fulamt_ownpay,
        sum.overlmt_selfpay,
        sum.preselfpay,
        sum.inscp,
    ]
    .iter()
    .any(Amount::is_negative);
    if negative_part {
        return Err(DomainError::precondition(
            "negative_total",
            "refund lines exceed the lines they refund: nothing to settle",
        ));
    }
    let rule = t.rule;
    let in_scope = sum.inscp;

    // 5. Deductible still outstanding.
    let outstanding = match rule.deductible_basis {
        DeductibleBasis::Annual => non_negative(rule.deductible - t.before.annual_deductible),
        DeductibleBasis::PerAdmission if t.admission && t.before.admissions >= 1 => {
            rule.repeat_admission_deductible
        }
        DeductibleBasis::PerAdmission => rule.deductible,
    };
    let act_pay_dedc = in_scope.min(outstanding);

    // 6. Pooled fund, up to the annual cap.
    let pooled = (in_scope - act_pay_dedc).apply_ratio(t.ratio);
    let hifp_pay = match rule.annual_cap {
        Some(cap) => pooled.min(non_negative(cap - t.before.fund)),
        None => pooled,
    };

    // 7a. Critical-illness bands on the year's in-scope personal burden.
    let burden = in_scope - hifp_pay;
    let hifmi_pay = match &rule.critical_illness {
        Some(ci) => {
            let from = t.before.burden.as_decimal();
            let to = (t.before.burden + burden).as_decimal();
            let raw: Decimal = ci
                .bands
                .iter()
                .map(|b| {
                    let lo = from.max(b.from.as_decimal()).max(ci.threshold.as_decimal());
                    let hi = b.to.map_or(to, |x| to.min(x.as_decimal()));
                    (hi - lo).max(Decimal::ZERO) * b.ratio.as_decimal()
                })
                .sum();
            let pay = Amount::from_decimal_rounded(raw);
            match ci.annual_cap {
                Some(cap) => pay.min(non_negative(cap - t.before.critical_illness)),
                None => pay,
            }
        }
        None => Amount::ZERO,
    };

    // 7b. Medical assistance, last, on what remains of the personal part within the catalogue:
    // fully self-paid items (class C, not in the catalogue) stay with the patient.
    let maf_pay = match (&rule.assistance, t.assistance_recipient) {
        (Some(a), true) => {
            let remaining = non_negative(sum.amount - hifp_pay - hifmi_pay - sum.fulamt_ownpay);
            remaining
                .apply_ratio(a.ratio)
                .min(non_negative(a.annual_cap - t.before.assistance))
        }
        _ => Amount::ZERO,
    };

    // 8–9. Fund total, personal part, account and cash.
    let fund_pay_sumamt = hifp_pay + hifmi_pay + maf_pay;
    let psn_part_amt = sum.amount - fund_pay_sumamt;
    let account_may_pay = if t.account_pays_class_c {
        psn_part_amt
    } else {
        non_negative(psn_part_amt - sum.fulamt_ownpay)
    };
    let acct_pay = match (t.use_account, t.account_balance) {
        (true, Some(balance)) => account_may_pay.min(non_negative(balance)),
        _ => Amount::ZERO,
    };
    let breakdown = Breakdown {
        medfee_sumamt: sum.amount,
        fulamt_ownpay_amt: sum.fulamt_ownpay,
        overlmt_selfpay: sum.overlmt_selfpay,
        preselfpay_amt: sum.preselfpay,
        inscp_scp_amt: in_scope,
        act_pay_dedc,
        hifp_pay,
        hifmi_pay,
        maf_pay,
        fund_pay_sumamt,
        psn_part_amt,
        acct_pay,
        psn_cash_pay: psn_part_amt - acct_pay,
        delta: Accumulators {
            annual_deductible: if rule.deductible_basis == DeductibleBasis::Annual {
                act_pay_dedc
            } else {
                Amount::ZERO
            },
            fund: hifp_pay,
            burden,
            critical_illness: hifmi_pay,
            assistance: maf_pay,
            admissions: i64::from(t.admission),
        },
    };
    debug_assert!(breakdown.identities_hold(), "{breakdown:?}");
    Ok(breakdown)
}

fn non_negative(a: Amount) -> Amount {
    a.max(Amount::ZERO)
}

#[cfg(test)]
#[path = "adjudication_tests.rs"]
mod tests;

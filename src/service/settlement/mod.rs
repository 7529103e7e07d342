//! Hospital direct settlement: eligibility, visits, fee lines, pre-settle, settle, reverse,
//! queries. Pharmacy purchases reuse `settle::adjudicate_and_book`.

pub mod context;
pub mod eligibility;
pub mod lines;
pub mod pharmacy;
pub mod query;
pub mod reverse;
pub mod settle;
pub mod swipe_batch;
pub mod visits;

use crate::domain::adjudication::{Accumulators, Breakdown, Terms};
use crate::domain::kinds::{DeductibleBasis, LevelScope, ProvinceScope};
use crate::domain::money::Amount;
use crate::domain::money::Ratio;
use crate::domain::policy::PolicyRule;
use crate::ledger::{Account, Posting};
use crate::store::settlement::{AccumulatorRow, SettlementRow};
use serde::{Deserialize, Serialize};

/// Settlement kinds as stored.
pub const KIND_SETTLEMENT: i64 = 1;
pub const KIND_REVERSAL: i64 = 2;

/// The filing a settlement used, as recorded in its explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilingUsed {
    pub filing_id: String,
    pub filing_type: i64,
    pub destination: String,
    pub valid_from: String,
    pub valid_until: String,
}

/// Which rules and figures produced a settlement (stored as JSON with it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    pub policy_region: String,
    pub policy_version: i64,
    pub catalogue_versions: Vec<i64>,
    pub filing: Option<FilingUsed>,
    pub base_ratio: String,
    pub effective_ratio: String,
    pub reduction: String,
    pub deductible_basis: DeductibleBasis,
    pub deductible_outstanding: Amount,
    /// None = no annual cap.
    pub annual_cap_remaining: Option<Amount>,
    pub year: i64,
    pub before: Accumulators,
    pub repeat_admission: bool,
    pub level: LevelScope,
    pub province: ProvinceScope,
    /// The exact adjudication inputs, so that a refund of part of a purchase can be recomputed.
    pub terms: TermsSnapshot,
}

/// Everything `adjudicate` took besides the lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermsSnapshot {
    pub rule: PolicyRule,
    pub ratio: Ratio,
    pub admission: bool,
    pub assistance_recipient: bool,
    pub account_balance: Option<Amount>,
    pub use_account: bool,
    pub account_pays_class_c: bool,
}

impl TermsSnapshot {
    /// The adjudication terms again (with the accumulators recorded before the settlement).
    pub fn terms<'a>(&'a self, before: Accumulators) -> Terms<'a> {
        Terms {
            rule: &self.rule,
            ratio: self.ratio,
            admission: self.admission,
            before,
            assistance_recipient: self.assistance_recipient,
            account_balance: self.account_balance,
            use_account: self.use_account,
            account_pays_class_c: self.account_pays_class_c,
        }
    }
}

/// Accumulator row ⇄ domain accumulators.
pub fn accumulators(r: &AccumulatorRow) -> Accumulators {
    Accumulators {
        annual_deductible: Amount::from_fen(r.annual_ded_fen),
        fund: Amount::from_fen(r.fund_fen),
        burden: Amount::from_fen(r.burden_fen),
        critical_illness: Amount::from_fen(r.ci_fen),
        assistance: Amount::from_fen(r.maf_fen),
        admissions: r.admissions,
    }
}

pub fn accumulator_row(a: &Accumulators) -> AccumulatorRow {
    AccumulatorRow {
        annual_ded_fen: a.annual_deductible.to_fen(),
        fund_fen: a.fund.to_fen(),
        burden_fen: a.burden.to_fen(),
        ci_fen: a.critical_illness.to_fen(),
        maf_fen: a.assistance.to_fen(),
        admissions: a.admissions,
    }
}

/// The breakdown stored in a settlement row.
pub fn breakdown_of(s: &SettlementRow) -> Breakdown {
    let f = Amount::from_fen;
    Breakdown {
        medfee_sumamt: f(s.medfee_fen),
        fulamt_ownpay_amt: f(s.fulamt_fen),
        overlmt_selfpay: f(s.overlmt_fen),
        preselfpay_amt: f(s.preself_fen),
        inscp_scp_amt: f(s.inscp_fen),
        act_pay_dedc: f(s.dedc_fen),
        hifp_pay: f(s.hifp_fen),
        hifmi_pay: f(s.hifmi_fen),
        maf_pay: f(s.maf_fen),
        fund_pay_sumamt: f(s.fund_fen),
        psn_part_amt: f(s.psn_part_fen),
        acct_pay: f(s.acct_fen),
        psn_cash_pay: f(s.cash_fen),
        delta: Accumulators {
            annual_deductible: f(s.d_annual_ded_fen),
            fund: f(s.hifp_fen),
            burden: f(s.d_burden_fen),
            critical_illness: f(s.hifmi_fen),
            assistance: f(s.maf_fen),
            admissions: s.d_admissions,
        },
    }
}

/// The journal transaction of a settlement (DESIGN §4): each fund layer and the personal
/// account pay into due:{home}->{treat}; the treatment bureau advances the same to the
/// institution. Patient cash is paid at the counter and is not platform money.
pub fn posting(kind: &'static str, s: &SettlementRow) -> Posting {
    // Negative amounts (reversals, refunds) move the same legs backwards.
    let (home, treat) = (s.home_region.clone(), s.treatment_region.clone());
    let due = || Account::Due {
        home: home.clone(),
        treat: treat.clone(),
    };
    Posting::new(kind, &s.setl_id, s.business_date)
        .transfer(Account::Fund(home.clone()), due(), s.hifp_fen)
        .transfer(Account::CriticalIllness(home.clone()), due(), s.hifmi_fen)
        .transfer(Account::Assistance(home.clone()), due(), s.maf_fen)
        .transfer(
            Account::PersonalAccount(s.psn_no.clone()),
            due(),
            s.acct_fen,
        )
        .transfer(
            Account::Advance(treat.clone()),
            Account::Institution(s.institution.clone()),
            s.fund_fen + s.acct_fen,
        )
}

/// YYYYMM of a business date (NHSA setlym).
pub fn clearing_period(d: chrono::NaiveDate) -> String {
    d.format("%Y%m").to_string()
}

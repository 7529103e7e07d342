//! Pre-settlement and settlement of a visit: adjudicate the unsettled lines and, for a
//! settlement, book everything in one transaction (settlement row, journal, accumulators,
//! personal account, lines, visit).

use super::context::{self, Context};
use super::lines::terms_of;
use super::visits::{self, CANCELLED, SETTLED};
use super::{
    Explanation, FilingUsed, KIND_SETTLEMENT, TermsSnapshot, accumulator_row, accumulators,
    clearing_period, posting,
};
use crate::domain::adjudication::{Breakdown, LineSplit, Terms, adjudicate};
use crate::domain::kinds::{CareType, DeductibleBasis, InsuranceType};
use crate::domain::money::Amount;
use crate::domain::time::{business_date, fmt_date, fmt_opt_date};
use crate::ledger;
use crate::service::auth::Principal;
use crate::service::error::{AppError, AppResult};
use crate::store::Conn;
use crate::store::persons::{self, PersonKey};
use crate::store::settlement::{self, AccumulatorRow, FeeLineRow, SettlementRow, VisitRow};
use chrono::{DateTime, Datelike, Utc};

/// An adjudicated bill, not yet booked.
#[derive(Debug, Clone)]
pub struct Adjudicated {
    pub ctx: Context,
    pub year: i64,
    pub breakdown: Breakdown,
    pub explanation: Explanation,
    pub balance_fen: Option<i64>,
    pub line_count: usize,
}

/// Deductible outstanding and annual cap remaining for a rule and accumulators.
pub fn outstanding(
    ctx: &Context,
    before: &crate::domain::adjudication::Accumulators,
    admission: bool,
) -> (Amount, Option<Amount>) {
    let r = &ctx.rule;
    let ded = match r.deductible_basis {
        DeductibleBasis::Annual => (r.deductible - before.annual_deductible).max(Amount::ZERO),
        DeductibleBasis::PerAdmission if admission && before.admissions >= 1 => {
            r.repeat_admission_deductible
        }
        DeductibleBasis::PerAdmission => r.deductible,
    };
    (
        ded,
        r.annual_cap.map(|c| (c - before.fund).max(Amount::ZERO)),
    )
}

/// Adjudicates `splits` for a resolved context. With `lock`, the accumulator and personal-account
/// rows are locked for the rest of the transaction (the person's row must be locked already).
pub async fn adjudicate_in(
    conn: &mut Conn,
    ctx: Context,
    splits: &[LineSplit],
    catalogue_versions: Vec<i64>,
    use_account: bool,
    lock: bool,
) -> AppResult<Adjudicated> {
    let year = i64::from(ctx.service_date.year());
    let psn_no = ctx.person.psn_no.clone();
    let acc = if lock {
        settlement::lock_accumulator(conn, &psn_no, ctx.insurance_type.code(), year).await?
    } else {
        settlement::read_accumulator(conn, &psn_no, ctx.insurance_type.code(), year, false)
            .await?
            .unwrap_or_default()
    };
    let balance_fen = persons::account_balance(conn, &psn_no, lock).await?;
    adjudicate_with(
        ctx,
        splits,
        catalogue_versions,
        use_account,
        &acc,
        balance_fen,
    )
}

/// Adjudicates `splits` for a resolved context, given the person's accumulator row for the
/// service year and their account balance: pure, no I/O (the batch path feeds it from memory).
pub fn adjudicate_with(
    ctx: Context,
    splits: &[LineSplit],
    catalogue_versions: Vec<i64>,
    use_account: bool,
    acc: &AccumulatorRow,
    balance_fen: Option<i64>,
) -> AppResult<Adjudicated> {
    let year = i64::from(ctx.service_date.year());
    let before = accumulators(acc);
    let admission = ctx.care_type == CareType::Inpatient;
    let terms = Terms {
        rule: &ctx.rule,
        ratio: ctx.effective_ratio,
        admission,
        before,
        assistance_recipient: ctx.person.assistance_recipient,
        account_balance: balance_fen.map(Amount::from_fen),
        use_account,
        account_pays_class_c: ctx.policy.account_pays_class_c,
    };
    let breakdown = adjudicate(splits, &terms)?;
    if !breakdown.identities_hold() {
        return Err(AppError::Internal(anyhow::anyhow!(
            "adjudication broke an identity: {breakdown:?}"
        )));
    }
    let (deductible_outstanding, annual_cap_remaining) = outstanding(&ctx, &before, admission);
    let explanation = Explanation {
        policy_region: ctx.home.as_str().to_owned(),
        policy_version: ctx.policy_version,
        catalogue_versions,
        filing: ctx.filing.as_ref().map(|f| FilingUsed {
            filing_id: f.filing_id.clone(),
            filing_type: f.filing_type,
            destination: f.destination.clone(),
            valid_from: fmt_date(f.valid_from),
            valid_until: fmt_opt_date(f.valid_until),
        }),
        base_ratio: ctx.base_ratio.to_string(),
        effective_ratio: ctx.effective_ratio.to_string(),
        reduction: ctx.reduction.clone(),
        deductible_basis: ctx.rule.deductible_basis,
        deductible_outstanding,
        annual_cap_remaining,
        year,
        before,
        repeat_admission: admission && before.admissions >= 1,
        level: ctx.level,
        province: ctx.province,
        terms: TermsSnapshot {
            rule: ctx.rule.clone(),
            ratio: ctx.effective_ratio,
            admission,
            assistance_recipient: ctx.person.assistance_recipient,
            account_balance: balance_fen.map(Amount::from_fen),
            use_account,
            account_pays_class_c: ctx.policy.account_pays_class_c,
        },
    };
    Ok(Adjudicated {
        ctx,
        year,
        breakdown,
        explanation,
        balance_fen,
        line_count: splits.len(),
    })
}

/// Splits and catalogue versions of stored lines.
fn splits_of(lines: &[FeeLineRow]) -> (Vec<LineSplit>, Vec<i64>) {
    let splits = lines
        .iter()
        .map(|l| LineSplit {
            amount: Amount::from_fen(l.amount_fen),
            fulamt_ownpay: Amount::from_fen(l.fulamt_fen),
            overlmt_selfpay: Amount::from_fen(l.overlmt_fen),
            preselfpay: Amount::from_fen(l.preself_fen),
            inscp: Amount::from_fen(l.inscp_fen),
        })
        .collect();
    let mut versions: Vec<i64> = lines
        .iter()
        .filter(|l| terms_of(l).is_some())
        .map(|l| l.catalogue_version)
        .collect();
    versions.sort_unstable();
    versions.dedup();
    (splits, versions)
}

/// Loads and adjudicates a visit of the calling institution. With `lock`, takes the row locks
/// in the fixed order visit → person → accumulator → personal account.
async fn prepare(
    conn: &mut Conn,
    who: &Principal,
    mdtrt_id: &str,
    use_account: bool,
    lock: bool,
) -> AppResult<(VisitRow, Vec<FeeLineRow>, Adjudicated)> {
    let visit = visits::own_visit(conn, who, mdtrt_id, lock).await?;
    match visit.status {
        CANCELLED => {
            return Err(AppError::precondition(
                "visit_cancelled",
                format!("visit {mdtrt_id} is cancelled"),
            ));
        }
        SETTLED => {
            return Err(AppError::precondition(
                "visit_already_settled",
                format!(
                    "visit {mdtrt_id} is settled ({})",
                    visit.setl_id.clone().unwrap_or_default()
                ),
            ));
        }
        _ => {}
    }
    let person = persons::find_person(conn, PersonKey::PsnNo, &visit.psn_no, lock)
        .await?
        .ok_or_else(|| {
            AppError::Internal(anyhow::anyhow!("visit {mdtrt_id} names a missing person"))
        })?;
    let institution = visits::calling_institution(conn, who).await?;
    let insurance_type = InsuranceType::from_code(visit.insurance_type).ok_or_else(|| {
        AppError::Internal(anyhow::anyhow!(
            "stored insurance type {}",
            visit.insurance_type
        ))
    })?;
    let care_type = CareType::from_code(visit.care_type).ok_or_else(|| {
        AppError::Internal(anyhow::anyhow!("stored care type {}", visit.care_type))
    })?;
    let ctx = context::resolve(
        conn,
        person,
        institution,
        insurance_type,
        care_type,
        visit.begin_date,
    )
    .await?;
    let lines: Vec<FeeLineRow> = settlement::lines(conn, mdtrt_id)
        .await?
        .into_iter()
        .filter(|l| l.setl_id.is_none())
        .collect();
    if lines.is_empty() {
        return Err(AppError::precondition(
            "no_fee_lines",
            format!("visit {mdtrt_id} has no unsettled fee lines"),
        ));
    }
    let (splits, versions) = splits_of(&lines);
    let adj = adjudicate_in(conn, ctx, &splits, versions, use_account, lock).await?;
    Ok((visit, lines, adj))
}

/// The settlement row of an adjudication (setl_id "" for a pre-settlement).
pub fn row(
    adj: &Adjudicated,
    setl_id: &str,
    mdtrt_id: Option<&str>,
    request_id: &str,
    now: DateTime<Utc>,
) -> AppResult<SettlementRow> {
    let b = &adj.breakdown;
    let day = business_date(now);
    let explanation = serde_json::to_string(&adj.explanation)
        .map_err(|e| AppError::Internal(anyhow::anyhow!("encoding explanation: {e}")))?;
    Ok(SettlementRow {
        setl_id: setl_id.to_owned(),
        kind: KIND_SETTLEMENT,
        reverses: None,
        reversed_by: None,
        mdtrt_id: mdtrt_id.map(str::to_owned),
        psn_no: adj.ctx.person.psn_no.clone(),
        home_region: adj.ctx.home.as_str().to_owned(),
        treatment_region: adj.ctx.treatment.as_str().to_owned(),
        institution: adj.ctx.institution.code.clone(),
        insurance_type: adj.ctx.insurance_type.code(),
        care_type: adj.ctx.care_type.code(),
        settled_at: now,
        business_date: day,
        clearing_period: clearing_period(day),
        service_year: adj.year,
        medfee_fen: b.medfee_sumamt.to_fen(),
        fulamt_fen: b.fulamt_ownpay_amt.to_fen(),
        overlmt_fen: b.overlmt_selfpay.to_fen(),
        preself_fen: b.preselfpay_amt.to_fen(),
        inscp_fen: b.inscp_scp_amt.to_fen(),
        dedc_fen: b.act_pay_dedc.to_fen(),
        hifp_fen: b.hifp_pay.to_fen(),
        hifmi_fen: b.hifmi_pay.to_fen(),
        maf_fen: b.maf_pay.to_fen(),
        fund_fen: b.fund_pay_sumamt.to_fen(),
        psn_part_fen: b.psn_part_amt.to_fen(),
        acct_fen: b.acct_pay.to_fen(),
        cash_fen: b.psn_cash_pay.to_fen(),
        balance_after_fen: adj.balance_fen.map(|bal| bal - b.acct_pay.to_fen()),
        d_annual_ded_fen: b.delta.annual_deductible.to_fen(),
        d_burden_fen: b.delta.burden.to_fen(),
        d_admissions: b.delta.admissions,
        line_count: i64::try_from(adj.line_count).unwrap_or(i64::MAX),
        explanation,
        journal_id: String::new(),
        request_id: request_id.to_owned(),
    })
}

/// The full breakdown of a visit's unsettled lines; nothing is written.
pub async fn pre_settle(
    conn: &mut Conn,
    who: &Principal,
    mdtrt_id: &str,
    use_account: bool,
    now: DateTime<Utc>,
) -> AppResult<SettlementRow> {
    let (visit, _, adj) = prepare(conn, who, mdtrt_id, use_account, false).await?;
    row(&adj, "", Some(&visit.mdtrt_id), "", now)
}

/// Books an adjudicated settlement: journal (when money moves), the settlement row and the
/// accumulators. Returns the stored row.
pub async fn book(
    conn: &mut Conn,
    kind: &'static str,
    mut s: SettlementRow,
    now: DateTime<Utc>,
) -> AppResult<SettlementRow> {
    let p = posting(kind, &s);
    if !p.legs.is_empty() {
        let posted = ledger::post(conn, &p, now).await?;
        s.journal_id = posted.journal_id;
        if let Some((_, balance)) = posted.personal_balances.first() {
            s.balance_after_fen = Some(*balance);
        }
    }
    if s.balance_after_fen.is_none() {
        s.balance_after_fen = persons::account_balance(conn, &s.psn_no, false).await?;
    }
    settlement::insert_settlement(conn, &s).await?;
    // Counted by the metrics once (if) the transaction commits.
    conn.note_booked(&s);
    settlement::add_to_accumulator(
        conn,
        &s.psn_no,
        s.insurance_type,
        s.service_year,
        &delta_row(&s),
    )
    .await?;
    Ok(s)
}

/// Settles a visit: one transaction, idempotent by the caller's request id (see `mutate`).
pub async fn settle(
    conn: &mut Conn,
    who: &Principal,
    mdtrt_id: &str,
    use_account: bool,
    expected_total: Option<Amount>,
    request_id: &str,
    now: DateTime<Utc>,
) -> AppResult<SettlementRow> {
    let (mut visit, _, adj) = prepare(conn, who, mdtrt_id, use_account, true).await?;
    if let Some(expected) = expected_total
        && expected != adj.breakdown.medfee_sumamt
    {
        return Err(AppError::precondition(
            "total_mismatch",
            format!(
                "expected_total {expected} but the unsettled lines total {}",
                adj.breakdown.medfee_sumamt
            ),
        ));
    }
    let setl_id = crate::store::new_id("S", now);
    let s = book(
        conn,
        "settlement",
        row(&adj, &setl_id, Some(mdtrt_id), request_id, now)?,
        now,
    )
    .await?;
    settlement::assign_lines(conn, mdtrt_id, &setl_id).await?;
    visit.status = SETTLED;
    visit.setl_id = Some(setl_id);
    settlement::update_visit(conn, &visit).await?;
    Ok(s)
}

/// What a settlement (or reversal) row adds to its accumulator.
pub fn delta_row(s: &SettlementRow) -> AccumulatorRow {
    accumulator_row(&super::breakdown_of(s).delta)
}

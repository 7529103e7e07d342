//! Pharmacy purchases: the card swipe (one transaction), pre-settle, refunds of the whole
//! purchase or chosen lines, 冲正 by request id.
//!
//! A refund is a negative mirror settlement: the purchase's exact adjudication inputs are kept in
//! its explanation, so refunding lines is `adjudicate(lines left after) − adjudicate(lines left
//! before)` under those inputs. Purchase plus all its refunds always equals the adjudication of
//! what was finally kept, to the fen.

use super::context;
use super::reverse::close_request_id;
use super::settle::{self, adjudicate_in, book};
use super::visits::{self, Credential};
use super::{Explanation, KIND_REVERSAL, KIND_SETTLEMENT, clearing_period};
use crate::domain::adjudication::{
    Breakdown, CatalogueTerms, LineSplit, adjudicate, check_line_amount, split_line,
};
use crate::domain::kinds::{CareType, CatalogueClass, InsuranceType};
use crate::domain::money::{Amount, Quantity, Ratio, UnitPrice};
use crate::domain::time::business_date;
use crate::service::auth::Principal;
use crate::service::error::{AppError, AppResult};
use crate::store::Conn;
use crate::store::cache::CatalogueSnapshot;
use crate::store::catalogue::{self, CatalogueRow};
use crate::store::persons::{self, PersonKey};
use crate::store::pharmacy::{self, PurchaseLineRow};
use crate::store::settlement::{self, SettlementRow};
use chrono::{DateTime, Utc};
use std::collections::HashSet;

/// Lines per purchase at most.
pub const MAX_LINES: usize = 200;

#[derive(Debug, Clone)]
pub struct NewLine {
    pub line_no: String,
    pub code: String,
    pub name: String,
    pub quantity: Quantity,
    pub unit_price: UnitPrice,
}

#[derive(Debug, Clone)]
pub struct Swipe {
    pub credential: Credential,
    pub insurance_type: InsuranceType,
    pub lines: Vec<NewLine>,
    pub use_account: bool,
    pub account_only: bool,
    pub expected_total: Option<Amount>,
}

fn terms_of(l: &PurchaseLineRow) -> Option<CatalogueTerms> {
    Some(CatalogueTerms {
        class: CatalogueClass::from_code(l.class)?,
        b_ratio: l.b_ratio_bp.and_then(|bp| Ratio::from_bp(bp).ok()),
        cap: l.cap_micros.and_then(|m| UnitPrice::from_micros(m).ok()),
    })
}

fn split_of(l: &PurchaseLineRow, qty_scaled: i64) -> AppResult<LineSplit> {
    let qty = Quantity::from_scaled(qty_scaled)?;
    let price = UnitPrice::from_micros(l.price_micros)?;
    Ok(split_line(qty, price, terms_of(l).as_ref()))
}

/// Prices the lines against the pharmacy region's catalogue (one query for all codes).
async fn price_lines(
    conn: &mut Conn,
    region: &str,
    on: chrono::NaiveDate,
    new: &[NewLine],
) -> AppResult<Vec<PurchaseLineRow>> {
    let catalogue = catalogue::snapshot(conn, region).await?;
    price(&catalogue, on, new)
}

/// Checks the shape of a purchase's lines before anything is looked up: 1..MAX_LINES lines,
/// unique line numbers, positive quantities, amounts within bounds.
pub fn check_lines(new: &[NewLine]) -> AppResult<()> {
    if new.is_empty() || new.len() > MAX_LINES {
        return Err(AppError::invalid(
            "lines",
            format!("1..{MAX_LINES} lines per purchase"),
        ));
    }
    let mut seen = HashSet::new();
    for (i, l) in new.iter().enumerate() {
        if !seen.insert(l.line_no.as_str()) {
            return Err(AppError::invalid(
                format!("lines[{i}].line_no"),
                "appears twice",
            ));
        }
        check_line_amount(|| format!("lines[{i}]"), l.quantity, l.unit_price)?;
        if l.quantity.is_negative() {
            return Err(AppError::invalid(
                format!("lines[{i}].quantity"),
                "must be positive: refunds use RefundPurchase",
            ));
        }
    }
    Ok(())
}

/// Prices checked purchase lines against a catalogue snapshot (pure).
pub fn price(
    catalogue: &CatalogueSnapshot,
    on: chrono::NaiveDate,
    new: &[NewLine],
) -> AppResult<Vec<PurchaseLineRow>> {
    Ok(new
        .iter()
        .map(|l| {
            let entry = catalogue.in_force(&l.code, on);
            let terms = entry.and_then(CatalogueRow::terms);
            let s = split_line(l.quantity, l.unit_price, terms.as_ref());
            PurchaseLineRow {
                setl_id: String::new(),
                line_no: l.line_no.clone(),
                code: l.code.clone(),
                name: l.name.clone(),
                qty_scaled: l.quantity.to_scaled(),
                price_micros: l.unit_price.to_micros(),
                class: terms.map_or(0, |t| t.class.code()),
                cap_micros: terms.and_then(|t| t.cap).map(|c| c.to_micros()),
                b_ratio_bp: terms.and_then(|t| t.b_ratio).map(|r| r.to_bp()),
                catalogue_version: entry.map_or(0, |e| e.version),
                amount_fen: s.amount.to_fen(),
                fulamt_fen: s.fulamt_ownpay.to_fen(),
                overlmt_fen: s.overlmt_selfpay.to_fen(),
                preself_fen: s.preselfpay.to_fen(),
                inscp_fen: s.inscp.to_fen(),
                refunded_qty_scaled: 0,
            }
        })
        .collect())
}

fn stored_split(l: &PurchaseLineRow) -> LineSplit {
    LineSplit {
        amount: Amount::from_fen(l.amount_fen),
        fulamt_ownpay: Amount::from_fen(l.fulamt_fen),
        overlmt_selfpay: Amount::from_fen(l.overlmt_fen),
        preselfpay: Amount::from_fen(l.preself_fen),
        inscp: Amount::from_fen(l.inscp_fen),
    }
}

/// The breakdown a swipe would book, nothing written (the swipe itself is booked by
/// `swipe_batch`, with the same pure checks, pricing and adjudication).
pub async fn pre_settle(
    conn: &mut Conn,
    who: &Principal,
    cmd: Swipe,
    now: DateTime<Utc>,
) -> AppResult<(SettlementRow, Vec<PurchaseLineRow>)> {
    let institution = visits::calling_institution(conn, who).await?;
    let person = visits::person_by_credential(conn, &cmd.credential, false).await?;
    let today = business_date(now);
    let ctx =
        context::resolve_pharmacy(conn, person, institution, cmd.insurance_type, today).await?;
    let lines = price_lines(conn, ctx.treatment.as_str(), today, &cmd.lines).await?;
    let splits: Vec<LineSplit> = lines.iter().map(stored_split).collect();
    let mut versions: Vec<i64> = lines
        .iter()
        .filter(|l| l.class != 0)
        .map(|l| l.catalogue_version)
        .collect();
    versions.sort_unstable();
    versions.dedup();
    let adj = adjudicate_in(
        conn,
        ctx,
        &splits,
        versions,
        cmd.use_account || cmd.account_only,
        false,
    )
    .await?;
    let b = &adj.breakdown;
    if cmd.account_only && b.acct_pay != b.psn_part_amt {
        return Err(AppError::precondition(
            "insufficient_balance",
            format!(
                "the personal account can pay {} of the personal part {}",
                b.acct_pay, b.psn_part_amt
            ),
        ));
    }
    if let Some(expected) = cmd.expected_total
        && expected != b.medfee_sumamt
    {
        return Err(AppError::precondition(
            "total_mismatch",
            format!(
                "expected_total {expected} but the lines total {}",
                b.medfee_sumamt
            ),
        ));
    }
    Ok((settle::row(&adj, "", None, "", now)?, lines))
}

/// A purchase of the calling pharmacy, locked.
async fn own_purchase(
    conn: &mut Conn,
    who: &Principal,
    setl_id: &str,
    lock: bool,
) -> AppResult<SettlementRow> {
    let p = settlement::get_settlement(conn, setl_id, lock)
        .await?
        .ok_or_else(|| AppError::not_found(format!("purchase {setl_id} does not exist")))?;
    match who {
        Principal::Institution { code } if *code == p.institution => {}
        Principal::Operator { .. } if !lock => {}
        _ => {
            return Err(AppError::denied(format!(
                "purchase {setl_id} belongs to another pharmacy"
            )));
        }
    }
    if p.care_type != CareType::Pharmacy.code() {
        return Err(AppError::precondition(
            "not_a_purchase",
            format!("{setl_id} is not a pharmacy purchase"),
        ));
    }
    Ok(p)
}

/// A purchase or refund with its lines.
pub async fn get(
    conn: &mut Conn,
    who: &Principal,
    setl_id: &str,
) -> AppResult<(SettlementRow, Vec<PurchaseLineRow>)> {
    let p = own_purchase(conn, who, setl_id, false).await?;
    let lines = pharmacy::lines(conn, setl_id).await?;
    Ok((p, lines))
}

/// Refunds chosen quantities of lines (all that is left when `chosen` is empty).
pub async fn refund(
    conn: &mut Conn,
    who: &Principal,
    setl_id: &str,
    chosen: &[(String, Quantity)],
    request_id: &str,
    now: DateTime<Utc>,
) -> AppResult<(SettlementRow, Vec<PurchaseLineRow>)> {
    let purchase = own_purchase(conn, who, setl_id, true).await?;
    if purchase.kind != KIND_SETTLEMENT {
        return Err(AppError::precondition(
            "cannot_refund_refund",
            format!("{setl_id} is itself a refund"),
        ));
    }
    if let Some(r) = &purchase.reversed_by {
        return Err(AppError::precondition(
            "already_refunded",
            format!("{setl_id} was fully refunded by {r}"),
        ));
    }
    persons::find_person(conn, PersonKey::PsnNo, &purchase.psn_no, true).await?;
    settlement::lock_accumulator(
        conn,
        &purchase.psn_no,
        purchase.insurance_type,
        purchase.service_year,
    )
    .await?;
    let lines = pharmacy::lines(conn, setl_id).await?;
    let take = refund_quantities(&lines, chosen)?;

    let explanation: Explanation = serde_json::from_str(&purchase.explanation)
        .map_err(|e| AppError::Internal(anyhow::anyhow!("purchase {setl_id} explanation: {e}")))?;
    let terms = explanation.terms.terms(explanation.before);
    let mut before_splits = Vec::new();
    let mut after_splits = Vec::new();
    let mut refund_lines = Vec::new();
    for (l, t) in lines.iter().zip(&take) {
        let left = l.qty_scaled - l.refunded_qty_scaled;
        let before = if left > 0 {
            split_of(l, left)?
        } else {
            LineSplit::default()
        };
        let after = if left - t > 0 {
            split_of(l, left - t)?
        } else {
            LineSplit::default()
        };
        before_splits.push(before);
        after_splits.push(after);
        if *t > 0 {
            refund_lines.push(PurchaseLineRow {
                qty_scaled: -t,
                amount_fen: (after.amount - before.amount).to_fen(),
                fulamt_fen: (after.fulamt_ownpay - before.fulamt_ownpay).to_fen(),
                overlmt_fen: (after.overlmt_selfpay - before.overlmt_selfpay).to_fen(),
                preself_fen: (after.preselfpay - before.preselfpay).to_fen(),
                inscp_fen: (after.inscp - before.inscp).to_fen(),
                refunded_qty_scaled: 0,
                ..l.clone()
            });
        }
    }
    let was = adjudicate(&before_splits, &terms)?;
    let will = adjudicate(&after_splits, &terms)?;
    let diff = will.minus(&was);
    let refund_id = crate::store::new_id("S", now);
    let row = refund_row(
        &purchase,
        &diff,
        &refund_id,
        refund_lines.len(),
        request_id,
        now,
    );
    let row = book(conn, "refund", row, now).await?;
    for l in &mut refund_lines {
        l.setl_id = refund_id.clone();
    }
    pharmacy::insert_lines(conn, &refund_lines).await?;
    for (l, t) in lines.iter().zip(&take) {
        if *t > 0 {
            pharmacy::add_refunded(conn, setl_id, &l.line_no, *t).await?;
        }
    }
    let everything = lines
        .iter()
        .zip(&take)
        .all(|(l, t)| l.refunded_qty_scaled + t == l.qty_scaled);
    if everything {
        settlement::set_reversed_by(conn, setl_id, &refund_id).await?;
    }
    Ok((row, refund_lines))
}

/// Quantity (×10^4) to refund of each purchase line, in line order.
fn refund_quantities(
    lines: &[PurchaseLineRow],
    chosen: &[(String, Quantity)],
) -> AppResult<Vec<i64>> {
    let mut take = vec![0i64; lines.len()];
    if chosen.is_empty() {
        for (t, l) in take.iter_mut().zip(lines) {
            *t = l.qty_scaled - l.refunded_qty_scaled;
        }
    } else {
        for (i, (no, qty)) in chosen.iter().enumerate() {
            let k = lines.iter().position(|l| &l.line_no == no).ok_or_else(|| {
                AppError::invalid(
                    format!("lines[{i}].line_no"),
                    format!("no line {no} in this purchase"),
                )
            })?;
            let left = lines[k].qty_scaled - lines[k].refunded_qty_scaled - take[k];
            let q = qty.to_scaled();
            if q <= 0 || q > left {
                return Err(AppError::invalid(
                    format!("lines[{i}].quantity"),
                    format!(
                        "must be > 0 and ≤ what is left of line {no} ({})",
                        Quantity::from_scaled(left)
                            .map(|q| q.to_string())
                            .unwrap_or_default()
                    ),
                ));
            }
            take[k] += q;
        }
    }
    if take.iter().all(|t| *t == 0) {
        return Err(AppError::precondition(
            "already_refunded",
            "nothing is left to refund",
        ));
    }
    Ok(take)
}

fn refund_row(
    p: &SettlementRow,
    d: &Breakdown,
    setl_id: &str,
    line_count: usize,
    request_id: &str,
    now: DateTime<Utc>,
) -> SettlementRow {
    let day = business_date(now);
    SettlementRow {
        setl_id: setl_id.to_owned(),
        kind: KIND_REVERSAL,
        reverses: Some(p.setl_id.clone()),
        reversed_by: None,
        settled_at: now,
        business_date: day,
        clearing_period: clearing_period(day),
        medfee_fen: d.medfee_sumamt.to_fen(),
        fulamt_fen: d.fulamt_ownpay_amt.to_fen(),
        overlmt_fen: d.overlmt_selfpay.to_fen(),
        preself_fen: d.preselfpay_amt.to_fen(),
        inscp_fen: d.inscp_scp_amt.to_fen(),
        dedc_fen: d.act_pay_dedc.to_fen(),
        hifp_fen: d.hifp_pay.to_fen(),
        hifmi_fen: d.hifmi_pay.to_fen(),
        maf_fen: d.maf_pay.to_fen(),
        fund_fen: d.fund_pay_sumamt.to_fen(),
        psn_part_fen: d.psn_part_amt.to_fen(),
        acct_fen: d.acct_pay.to_fen(),
        cash_fen: d.psn_cash_pay.to_fen(),
        balance_after_fen: None,
        d_annual_ded_fen: d.delta.annual_deductible.to_fen(),
        d_burden_fen: d.delta.burden.to_fen(),
        d_admissions: d.delta.admissions,
        line_count: i64::try_from(line_count).unwrap_or(i64::MAX),
        journal_id: String::new(),
        request_id: request_id.to_owned(),
        ..p.clone()
    }
}

/// 冲正 for purchases: refund in full whatever `original_request_id` booked; close the id when
/// it never landed.
pub async fn reverse_by_request(
    conn: &mut Conn,
    who: &Principal,
    original_request_id: &str,
    request_id: &str,
    now: DateTime<Utc>,
) -> AppResult<Option<(SettlementRow, Vec<PurchaseLineRow>)>> {
    let Principal::Institution { .. } = who else {
        return Err(AppError::denied(
            "only pharmacies reverse purchases by request id",
        ));
    };
    if let Some(s) =
        settlement::settlement_by_request(conn, &who.key(), original_request_id).await?
    {
        if s.kind != KIND_SETTLEMENT {
            return Err(AppError::precondition(
                "not_a_purchase",
                format!("request {original_request_id} made a refund"),
            ));
        }
        return refund(conn, who, &s.setl_id, &[], request_id, now)
            .await
            .map(Some);
    }
    close_request_id(
        conn,
        who,
        original_request_id,
        request_id,
        "not_a_purchase",
        SETTLE_PURCHASE_RPC,
        now,
    )
    .await?;
    Ok(None)
}

/// The card swipe's RPC path (as stored with its request ids).
pub const SETTLE_PURCHASE_RPC: &str = "/medsettle.v1.PharmacyService/SettlePurchase";

/// What the swipe needs to show at the counter before charging: the holder and whether they may
/// swipe here.
pub async fn lookup(
    conn: &mut Conn,
    who: &Principal,
    credential: &Credential,
    now: DateTime<Utc>,
) -> AppResult<(
    crate::store::persons::PersonRecord,
    Option<(&'static str, String)>,
)> {
    let institution = visits::calling_institution(conn, who).await?;
    let person = visits::person_by_credential(conn, credential, false).await?;
    context::check_card(&person)?;
    let record = persons::record(conn, person.clone()).await?;
    let insurance = record
        .insurances
        .iter()
        .filter_map(|i| InsuranceType::from_code(i.insurance_type))
        .next()
        .unwrap_or(InsuranceType::Employee);
    let refusal =
        match context::resolve_pharmacy(conn, person, institution, insurance, business_date(now))
            .await
        {
            Ok(_) => None,
            Err(AppError::Precondition { rule, detail }) => Some((rule, detail)),
            Err(e) => return Err(e),
        };
    Ok((record, refusal))
}

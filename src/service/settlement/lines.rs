//! Fee lines: upload in batches with their split, delete while unsettled.

use super::visits::{self, CANCELLED, SETTLED};
use crate::domain::adjudication::{CatalogueTerms, check_line_amount, split_line};
use crate::domain::kinds::CatalogueClass;
use crate::domain::money::{Amount, Quantity, Ratio, UnitPrice};
use crate::service::auth::Principal;
use crate::service::error::{AppError, AppResult};
use crate::store::Conn;
use crate::store::catalogue::{self, CatalogueRow};
use crate::store::settlement::{self, FeeLineRow};
use chrono::NaiveDate;
use std::collections::HashMap;

/// Lines per upload call at most.
pub const MAX_LINES: usize = 1000;

/// A parsed fee line of an upload.
#[derive(Debug, Clone)]
pub struct NewLine {
    pub line_no: String,
    pub code: String,
    pub name: String,
    pub quantity: Quantity,
    pub unit_price: UnitPrice,
    /// None = the visit's begin date.
    pub fee_date: Option<NaiveDate>,
    pub refund_of: Option<String>,
}

/// The catalogue terms recorded on a stored line.
pub fn terms_of(l: &FeeLineRow) -> Option<CatalogueTerms> {
    let class = CatalogueClass::from_code(l.class)?;
    Some(CatalogueTerms {
        class,
        b_ratio: l.b_ratio_bp.and_then(|bp| Ratio::from_bp(bp).ok()),
        cap: l.cap_micros.and_then(|m| UnitPrice::from_micros(m).ok()),
    })
}

fn check_unsettled_visit(v: &crate::store::settlement::VisitRow) -> AppResult<()> {
    match v.status {
        CANCELLED => Err(AppError::precondition(
            "visit_cancelled",
            format!("visit {} is cancelled", v.mdtrt_id),
        )),
        SETTLED => Err(AppError::precondition(
            "visit_settled",
            format!("visit {} is settled: reverse it first", v.mdtrt_id),
        )),
        _ => Ok(()),
    }
}

/// Uploads lines; returns every line of the request as stored (new or already there), and the
/// visit's unsettled total with them.
pub async fn upload(
    conn: &mut Conn,
    who: &Principal,
    mdtrt_id: &str,
    new: Vec<NewLine>,
) -> AppResult<(Vec<FeeLineRow>, Amount)> {
    if new.is_empty() || new.len() > MAX_LINES {
        return Err(AppError::invalid(
            "lines",
            format!("1..{MAX_LINES} lines per call"),
        ));
    }
    let visit = visits::own_visit(conn, who, mdtrt_id, true).await?;
    check_unsettled_visit(&visit)?;
    let existing: HashMap<String, FeeLineRow> = settlement::lines(conn, mdtrt_id)
        .await?
        .into_iter()
        .map(|l| (l.line_no.clone(), l))
        .collect();
    let catalogue = catalogue::snapshot(conn, &visit.treatment_region).await?;

    let mut batch: HashMap<&str, FeeLineRow> = HashMap::new();
    let mut out = Vec::with_capacity(new.len());
    let mut to_insert = Vec::new();
    for (i, l) in new.iter().enumerate() {
        let f = |name: &str| format!("lines[{i}].{name}");
        if batch.contains_key(l.line_no.as_str()) {
            return Err(AppError::invalid(
                f("line_no"),
                "appears twice in this call",
            ));
        }
        let fee_date = l.fee_date.unwrap_or(visit.begin_date);
        if fee_date < visit.begin_date || visit.end_date.is_some_and(|e| fee_date > e) {
            return Err(AppError::invalid(
                f("fee_date"),
                "outside the visit's dates",
            ));
        }
        let entry = catalogue.in_force(&l.code, fee_date);
        let terms = entry.and_then(CatalogueRow::terms);
        check_line_amount(|| format!("lines[{i}]"), l.quantity, l.unit_price)?;
        let split = split_line(l.quantity, l.unit_price, terms.as_ref());
        let row = FeeLineRow {
            mdtrt_id: mdtrt_id.to_owned(),
            line_no: l.line_no.clone(),
            code: l.code.clone(),
            name: l.name.clone(),
            qty_scaled: l.quantity.to_scaled(),
            price_micros: l.unit_price.to_micros(),
            fee_date,
            refund_of: l.refund_of.clone(),
            class: terms.map_or(0, |t| t.class.code()),
            cap_micros: terms.and_then(|t| t.cap).map(|c| c.to_micros()),
            b_ratio_bp: terms.and_then(|t| t.b_ratio).map(|r| r.to_bp()),
            catalogue_version: entry.map_or(0, |e| e.version),
            amount_fen: split.amount.to_fen(),
            fulamt_fen: split.fulamt_ownpay.to_fen(),
            overlmt_fen: split.overlmt_selfpay.to_fen(),
            preself_fen: split.preselfpay.to_fen(),
            inscp_fen: split.inscp.to_fen(),
            setl_id: None,
        };
        match existing.get(&l.line_no) {
            Some(old) if same_content(old, &row) => out.push(old.clone()),
            Some(_) => {
                return Err(AppError::AlreadyExists(format!(
                    "line {} was already uploaded with different content (lines[{i}])",
                    l.line_no
                )));
            }
            None => {
                to_insert.push(row.clone());
                out.push(row.clone());
            }
        }
        batch.insert(l.line_no.as_str(), row);
    }
    check_refunds(&new, &existing, &batch)?;
    settlement::insert_lines(conn, &to_insert).await?;
    // The visit's lines now: those stored before and those just inserted (new line numbers).
    let total = unsettled_total(existing.values().chain(&to_insert));
    Ok((out, total))
}

fn same_content(a: &FeeLineRow, b: &FeeLineRow) -> bool {
    a.code == b.code
        && a.name == b.name
        && a.qty_scaled == b.qty_scaled
        && a.price_micros == b.price_micros
        && a.fee_date == b.fee_date
        && a.refund_of == b.refund_of
}

/// A refund line has a negative quantity and names an original (non-refund) line of the visit
/// with the same code and unit price; refunds never exceed the original quantity.
fn check_refunds(
    new: &[NewLine],
    existing: &HashMap<String, FeeLineRow>,
    batch: &HashMap<&str, FeeLineRow>,
) -> AppResult<()> {
    let find = |no: &str| batch.get(no).or_else(|| existing.get(no));
    for (i, l) in new.iter().enumerate() {
        let f = |name: &str| format!("lines[{i}].{name}");
        match (&l.refund_of, l.quantity.is_negative()) {
            (None, false) => {}
            (None, true) => {
                return Err(AppError::invalid(
                    f("refund_of"),
                    "a negative quantity must name the line it refunds",
                ));
            }
            (Some(_), false) => {
                return Err(AppError::invalid(
                    f("quantity"),
                    "a refund line has a negative quantity",
                ));
            }
            (Some(orig_no), true) => {
                let orig = find(orig_no).ok_or_else(|| {
                    AppError::invalid(
                        f("refund_of"),
                        format!("line {orig_no} is not on this visit"),
                    )
                })?;
                if orig.refund_of.is_some()
                    || orig.code != l.code
                    || orig.price_micros != l.unit_price.to_micros()
                {
                    return Err(AppError::invalid(
                        f("refund_of"),
                        format!(
                            "line {orig_no} is not an original line with the same code and unit price"
                        ),
                    ));
                }
            }
        }
    }
    // Refunded quantity per original, over stored and new lines together.
    let mut refunded: HashMap<&str, i64> = HashMap::new();
    let all = existing
        .values()
        .filter(|l| !batch.contains_key(l.line_no.as_str()))
        .chain(batch.values());
    for l in all {
        if let Some(orig) = &l.refund_of {
            *refunded.entry(orig.as_str()).or_default() += -l.qty_scaled;
        }
    }
    for (orig, qty) in refunded {
        if let Some(o) = find(orig)
            && qty > o.qty_scaled
        {
            return Err(AppError::invalid(
                "lines",
                format!("refunds of line {orig} exceed its quantity"),
            ));
        }
    }
    Ok(())
}

/// Deletes unsettled lines (all when `line_nos` is empty); returns how many.
pub async fn delete(
    conn: &mut Conn,
    who: &Principal,
    mdtrt_id: &str,
    line_nos: &[String],
) -> AppResult<u64> {
    let visit = visits::own_visit(conn, who, mdtrt_id, true).await?;
    check_unsettled_visit(&visit)?;
    if line_nos.is_empty() {
        return Ok(settlement::delete_lines(conn, mdtrt_id, None).await?);
    }
    let stored = settlement::lines(conn, mdtrt_id).await?;
    for (i, no) in line_nos.iter().enumerate() {
        if !stored
            .iter()
            .any(|l| &l.line_no == no && l.setl_id.is_none())
        {
            return Err(AppError::not_found(format!(
                "line_nos[{i}]: no unsettled line {no} on this visit"
            )));
        }
        if stored
            .iter()
            .any(|l| l.refund_of.as_ref() == Some(no) && !line_nos.contains(&l.line_no))
        {
            return Err(AppError::precondition(
                "line_has_refunds",
                format!("line {no} has refund lines: delete them too"),
            ));
        }
    }
    let mut n = 0;
    for no in line_nos {
        n += settlement::delete_lines(conn, mdtrt_id, Some(no)).await?;
    }
    Ok(n)
}

/// Unsettled total of a visit's lines.
pub fn unsettled_total<'a>(lines: impl IntoIterator<Item = &'a FeeLineRow>) -> Amount {
    lines
        .into_iter()
        .filter(|l| l.setl_id.is_none())
        .map(|l| Amount::from_fen(l.amount_fen))
        .sum()
}

//! Reversal (结算撤销 2208/2305, 冲正 2601): a new settlement with every amount negated, pointing
//! at the original; a reversing journal transaction; accumulators and personal account restored
//! exactly. Only the settling institution; never twice.

use super::settle::book;
use super::visits::{DISCHARGED, OPEN};
use super::{KIND_REVERSAL, KIND_SETTLEMENT, clearing_period};
use crate::domain::time::business_date;
use crate::service::auth::Principal;
use crate::service::error::{AppError, AppResult};
use crate::store::Conn;
use crate::store::access::{self, IdempotencyRow};
use crate::store::persons::{self, PersonKey};
use crate::store::settlement::{self, SettlementRow};
use chrono::{DateTime, Utc};

/// The rpc recorded under a request id closed by a 冲正 (so a late arrival of it is refused).
pub const TOMBSTONE: &str = "closed by 冲正 request";

/// The reversal row of `o`: every amount and accumulator change negated.
fn negated(
    o: &SettlementRow,
    setl_id: &str,
    request_id: &str,
    now: DateTime<Utc>,
) -> SettlementRow {
    let day = business_date(now);
    SettlementRow {
        setl_id: setl_id.to_owned(),
        kind: KIND_REVERSAL,
        reverses: Some(o.setl_id.clone()),
        reversed_by: None,
        settled_at: now,
        business_date: day,
        clearing_period: clearing_period(day),
        medfee_fen: -o.medfee_fen,
        fulamt_fen: -o.fulamt_fen,
        overlmt_fen: -o.overlmt_fen,
        preself_fen: -o.preself_fen,
        inscp_fen: -o.inscp_fen,
        dedc_fen: -o.dedc_fen,
        hifp_fen: -o.hifp_fen,
        hifmi_fen: -o.hifmi_fen,
        maf_fen: -o.maf_fen,
        fund_fen: -o.fund_fen,
        psn_part_fen: -o.psn_part_fen,
        acct_fen: -o.acct_fen,
        cash_fen: -o.cash_fen,
        balance_after_fen: None,
        d_annual_ded_fen: -o.d_annual_ded_fen,
        d_burden_fen: -o.d_burden_fen,
        d_admissions: -o.d_admissions,
        journal_id: String::new(),
        request_id: request_id.to_owned(),
        ..o.clone()
    }
}

/// Reverses settlement `setl_id` of the calling institution.
pub async fn reverse(
    conn: &mut Conn,
    who: &Principal,
    setl_id: &str,
    request_id: &str,
    now: DateTime<Utc>,
) -> AppResult<SettlementRow> {
    let original = settlement::get_settlement(conn, setl_id, true)
        .await?
        .ok_or_else(|| AppError::not_found(format!("settlement {setl_id} does not exist")))?;
    match who {
        Principal::Institution { code } if *code == original.institution => {}
        _ => {
            return Err(AppError::denied(
                "only the settling institution may reverse a settlement",
            ));
        }
    }
    if original.mdtrt_id.is_none() {
        return Err(AppError::precondition(
            "use_refund",
            format!("{setl_id} is a pharmacy purchase: use PharmacyService.RefundPurchase"),
        ));
    }
    if original.kind != KIND_SETTLEMENT {
        return Err(AppError::precondition(
            "cannot_reverse_reversal",
            format!("{setl_id} is itself a reversal"),
        ));
    }
    if let Some(r) = &original.reversed_by {
        return Err(AppError::precondition(
            "already_reversed",
            format!("{setl_id} was reversed by {r}"),
        ));
    }
    // Locks in the settlement order: visit → person → accumulator → personal account.
    let visit = match &original.mdtrt_id {
        Some(m) => settlement::get_visit(conn, m, true).await?,
        None => None,
    };
    persons::find_person(conn, PersonKey::PsnNo, &original.psn_no, true).await?;
    settlement::lock_accumulator(
        conn,
        &original.psn_no,
        original.insurance_type,
        original.service_year,
    )
    .await?;

    let rev = negated(&original, &crate::store::new_id("S", now), request_id, now);
    let rev = book(conn, "reversal", rev, now).await?;
    settlement::set_reversed_by(conn, setl_id, &rev.setl_id).await?;
    settlement::release_lines(conn, setl_id).await?;
    if let Some(mut v) = visit
        && v.setl_id.as_deref() == Some(setl_id)
    {
        v.setl_id = None;
        v.status = if v.end_date.is_some() {
            DISCHARGED
        } else {
            OPEN
        };
        settlement::update_visit(conn, &v).await?;
    }
    Ok(rev)
}

/// 冲正: undoes whatever the caller's earlier request `original_request_id` did. When it made a
/// settlement, that settlement is reversed (Some). When it never landed, the request id is
/// closed, so that a late arrival of the original is refused as ALREADY_EXISTS (None).
pub async fn reverse_by_request(
    conn: &mut Conn,
    who: &Principal,
    original_request_id: &str,
    request_id: &str,
    now: DateTime<Utc>,
) -> AppResult<Option<SettlementRow>> {
    let Principal::Institution { .. } = who else {
        return Err(AppError::denied("only institutions reverse by request id"));
    };
    if let Some(s) =
        settlement::settlement_by_request(conn, &who.key(), original_request_id).await?
    {
        if s.kind != KIND_SETTLEMENT {
            return Err(AppError::precondition(
                "not_a_settlement",
                format!("request {original_request_id} made a reversal, which cannot be reversed"),
            ));
        }
        return reverse(conn, who, &s.setl_id, request_id, now)
            .await
            .map(Some);
    }
    close_request_id(
        conn,
        who,
        original_request_id,
        request_id,
        "not_a_settlement",
        "/medsettle.v1.SettlementService/Settle",
        now,
    )
    .await?;
    Ok(None)
}

/// The 冲正 of a request id that booked nothing: closes the id, so that a late arrival of the
/// original is refused as ALREADY_EXISTS. Closing twice is fine; an id that did something else
/// is FAILED_PRECONDITION `rule`; an id whose booking call (`booking_rpc`) committed after the
/// caller looked for its settlement is a transient conflict (the 冲正 runs again and finds it).
pub async fn close_request_id(
    conn: &mut Conn,
    who: &Principal,
    original_request_id: &str,
    request_id: &str,
    rule: &'static str,
    booking_rpc: &str,
    now: DateTime<Utc>,
) -> AppResult<()> {
    let key = who.key();
    if let Some(first) = access::find_idempotent(conn, &key, original_request_id).await? {
        if first.rpc.starts_with(TOMBSTONE) {
            return Ok(());
        }
        if first.rpc == booking_rpc {
            // The original committed between our two reads: run again and reverse it.
            return Err(AppError::Retry(
                "original request committed meanwhile".into(),
            ));
        }
        return Err(AppError::precondition(
            rule,
            format!("request {original_request_id} did not book anything to reverse"),
        ));
    }
    let tombstone = IdempotencyRow {
        rpc: format!("{TOMBSTONE} {request_id}"),
        payload_hash: Vec::new(),
        response: Vec::new(),
        setl_id: None,
    };
    access::insert_idempotent(conn, &key, original_request_id, &tombstone, now)
        .await
        .map_err(|e| match e {
            // The original is landing right now: run again and reverse it.
            crate::store::StoreError::Unique { .. } => {
                AppError::Retry("original request in flight".into())
            }
            other => other.into(),
        })
}

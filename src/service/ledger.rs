//! Reading the ledger: balances, the journal, verification, the audit log.

use super::auth::Principal;
use super::error::{AppError, AppResult};
use super::{Page, page_after};
use crate::ledger::verify::{self, Report};
use crate::store::access::{self, AuditRow};
use crate::store::journal::{self, EntryRow, JournalTxRow};
use crate::store::persons::{self, PersonKey};
use crate::store::{self, Conn};

/// Whether `who` may read `account`: operators all; a bureau its region's accounts, dues in
/// which it is a party and its insured persons' personal accounts; an institution its own.
async fn check_account(conn: &mut Conn, who: &Principal, account: &str) -> AppResult<()> {
    let allowed = match who {
        Principal::Operator { .. } => true,
        Principal::Institution { code } => account == format!("inst:{code}"),
        Principal::Bureau { region } => {
            let (kind, rest) = account.split_once(':').unwrap_or((account, ""));
            match kind {
                "bank" | "fund" | "advance" | "prepay" | "net" | "ci" | "maf" => rest == region,
                "due" => rest
                    .split_once("->")
                    .is_some_and(|(h, t)| h == region || t == region),
                "pacct" => persons::find_person(conn, PersonKey::PsnNo, rest, false)
                    .await?
                    .is_some_and(|p| &p.home_region == region),
                "inst" => store::registry::get_institution(conn, rest, false)
                    .await?
                    .is_some_and(|i| &i.region == region),
                _ => false,
            }
        }
    };
    if allowed {
        Ok(())
    } else {
        Err(AppError::denied(format!(
            "{} may not read account {account}",
            who.key()
        )))
    }
}

/// (balance fen, entries) of an account, from the journal.
pub async fn balance(conn: &mut Conn, who: &Principal, account: &str) -> AppResult<(i64, i64)> {
    if account.is_empty() {
        return Err(AppError::invalid("account", "is required"));
    }
    check_account(conn, who, account).await?;
    Ok(crate::ledger::balance(conn, account).await?)
}

/// Journal transactions (oldest first) with their entries.
pub async fn journal(
    conn: &mut Conn,
    who: &Principal,
    account: &str,
    page_size: u32,
    page_token: &str,
) -> AppResult<Page<(JournalTxRow, Vec<EntryRow>)>> {
    if account.is_empty() {
        who.require_operator()?;
    } else {
        check_account(conn, who, account).await?;
    }
    let after = page_after(page_token)?;
    let size = store::page_size(page_size);
    let rows = journal::list_txs(conn, account, &after, size + 1).await?;
    let (txs, next_page_token) = store::page(rows, size, |t| t.journal_id.clone());
    let mut entries = match (txs.first(), txs.last()) {
        (Some(f), Some(l)) => journal::entries_of(conn, &f.journal_id, &l.journal_id).await?,
        _ => Vec::new(),
    };
    let mut items = Vec::with_capacity(txs.len());
    for tx in txs {
        let mine: Vec<EntryRow> = entries
            .iter()
            .filter(|e| e.journal_id == tx.journal_id)
            .cloned()
            .collect();
        entries.retain(|e| e.journal_id != tx.journal_id);
        items.push((tx, mine));
    }
    Ok(Page {
        items,
        next_page_token,
    })
}

/// Verification: operators only.
pub async fn verify(conn: &mut Conn, who: &Principal) -> AppResult<Report> {
    who.require_operator()?;
    Ok(verify::run(conn).await?)
}

/// Audit records, newest first: operators any principal, others only their own.
pub async fn audit(
    conn: &mut Conn,
    who: &Principal,
    principal: &str,
    page_size: u32,
    page_token: &str,
) -> AppResult<Page<AuditRow>> {
    let principal = if who.is_operator() {
        principal.to_owned()
    } else if principal.is_empty() || principal == who.key() {
        who.key()
    } else {
        return Err(AppError::denied(format!(
            "{} may read only its own audit records",
            who.key()
        )));
    };
    let before = page_after(page_token)?;
    let size = store::page_size(page_size);
    let rows = access::list_audit(conn, &principal, &before, size + 1).await?;
    let (items, next_page_token) = store::page(rows, size, |a| a.audit_id.clone());
    Ok(Page {
        items,
        next_page_token,
    })
}

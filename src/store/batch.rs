//! What a swipe batch writes, and how: set-based multi-row statements on PostgreSQL (one round
//! trip per table); on SQLite one prepared single-row statement per table, run on the calling
//! thread (see [`super::direct`]).

use super::access::{self, Answer, AuditRow};
use super::events::EventRow;
use super::journal::{EntryRow, JournalTxRow};
use super::pharmacy::PurchaseLineRow;
use super::settlement::{AccumulatorKey, AccumulatorRow, SettlementRow};
use super::{Conn, StoreResult, cells, direct, persons, settlement};
use std::collections::HashMap;

/// Everything a batch writes.
#[derive(Default)]
pub struct Writes {
    /// The first answers (idempotency rows), in (principal, request id) order.
    pub answers: Vec<Answer>,
    pub settlements: Vec<SettlementRow>,
    pub lines: Vec<PurchaseLineRow>,
    pub txs: Vec<JournalTxRow>,
    pub entries: Vec<EntryRow>,
    /// What the batch adds to each accumulator (locked by the batch).
    pub accumulators: HashMap<AccumulatorKey, AccumulatorRow>,
    /// What the batch adds to each personal account (locked by the batch).
    pub accounts: HashMap<String, i64>,
    pub audits: Vec<AuditRow>,
}

/// Writes a batch in the caller's transaction, the answers first. Returns how many answers were
/// stored: fewer than given means a request id was stored concurrently (another writer), and
/// nothing else was written.
pub async fn write(c: &mut Conn, w: &Writes) -> StoreResult<usize> {
    let on_sqlite = c
        .with_sqlite(|x| {
            // No conflict clause: the table has no unique key on SQLite, and the writer looked
            // every key up inside this transaction (see `access::RequestIdTail`).
            let stored = direct::insert(x, &w.answers, "")?;
            if stored == w.answers.len() {
                // Each settlement with the event bureaus follow (as `insert_settlements`).
                let events: Vec<EventRow> =
                    w.settlements.iter().map(EventRow::settlement).collect();
                direct::insert(x, &w.settlements, "")?;
                direct::insert(x, &events, "")?;
                direct::insert(x, &w.lines, "")?;
                direct::insert(x, &w.txs, "")?;
                direct::insert(x, &w.entries, "")?;
                settlement::add_to_accumulators_direct(x, &w.accumulators)?;
                persons::add_to_accounts_direct(x, &w.accounts)?;
                direct::insert(x, &w.audits, "")?;
            }
            Ok(stored)
        })
        .await?;
    if let Some(stored) = on_sqlite {
        return Ok(stored);
    }
    let stored = access::insert_answers(c, &w.answers).await?;
    if stored == w.answers.len() {
        settlement::insert_settlements(c, &w.settlements).await?;
        cells::insert(c, &w.lines, "").await?;
        cells::insert(c, &w.txs, "").await?;
        cells::insert(c, &w.entries, "").await?;
        settlement::add_to_accumulators(c, &w.accumulators).await?;
        persons::add_to_accounts(c, &w.accounts).await?;
        cells::insert(c, &w.audits, "").await?;
    }
    Ok(stored)
}

//! What a swipe batch writes, and how: on PostgreSQL one statement for everything (a part per
//! table, each its rows as arrays: one round trip, see [`Together`]); on SQLite one prepared
//! single-row statement per table, run on the calling thread (see [`super::direct`]).

use super::access::{self, Answer, AuditRow};
use super::cells::Together;
use super::journal::{EntryRow, JournalTxRow};
use super::pharmacy::PurchaseLineRow;
use super::settlement::{AccumulatorKey, AccumulatorRow, SettlementRow};
use super::{Conn, StoreResult, direct, persons, settlement};
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

/// Writes a batch in the caller's transaction. Returns how many answers were stored: fewer than
/// given means a request id was stored concurrently (another writer), and the caller must roll
/// the transaction back (on SQLite nothing else was written; on PostgreSQL everything was, in
/// the same statement).
pub async fn write(c: &mut Conn, w: &Writes) -> StoreResult<usize> {
    let on_sqlite = c
        .with_sqlite(|x| {
            // No conflict clause: the table has no unique key on SQLite, and the writer looked
            // every key up inside this transaction (see `access::RequestIdTail`).
            let stored = direct::insert(x, &w.answers, "")?;
            if stored == w.answers.len() {
                // Each settlement with the event bureaus follow (as `insert_settlements`).
                let events = settlement::events_of(&w.settlements);
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
    // Everything at once: should another writer have stored one of the request ids meanwhile
    // (fewer answers stored than given), the caller rolls the whole batch back.
    let mut t = Together::default();
    let answers = t.insert(&w.answers, access::ANSWERS_STORED)?;
    settlement::insert_settlements_in(&mut t, &w.settlements)?;
    t.insert(&w.lines, "")?;
    t.insert(&w.txs, "")?;
    t.insert(&w.entries, "")?;
    settlement::add_to_accumulators_in(&mut t, &w.accumulators)?;
    persons::add_to_accounts_in(&mut t, &w.accounts)?;
    t.insert(&w.audits, "")?;
    let stored = t.run(c, answers.as_deref()).await?;
    let stored = usize::try_from(stored).unwrap_or(0);
    Ok(stored)
}

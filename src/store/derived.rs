//! SQLite's batch-maintained indexes: a person's settlements (`settlement_person_ix`) and an
//! account's journal entries (`entry_account_ix`). Their keys are random (a person, a personal
//! account), so as ordinary indexes every swipe dirtied a leaf page of each, and SQLite's WAL
//! logs whole pages. Instead [`merge`] copies the rows committed since the last merge (the tail:
//! rowids above `derived_index.upto`) into the index tables, sorted, in the caller's
//! transaction; the views `settlement_by_person` and `entry_by_account` read the index tables
//! plus the tail, so they are exact at every moment (migration 0009). The swipe writer merges
//! inside a batch once the tail reaches [`MERGE_ROWS`], and when idle merges whatever is left.
//! On PostgreSQL the views are the tables (its indexes log small records) and there is nothing
//! to merge.

use super::{Conn, StoreResult};

/// Settlements in the tail that make the swipe writer merge within its batch: the tail is what
/// a read by person or by account scans besides the index tables, and the merge writes each
/// index leaf once for all of it.
pub const MERGE_ROWS: i64 = 4096;

/// The index tables, each with the table (and its key) whose rowids mark what it holds, and the
/// statement copying rows `?1 < rowid <= ?2` of that table, in index order.
const INDEXES: [(&str, &str, &str); 1] = [(
    "settlement_person",
    "settlement",
    "INSERT OR IGNORE INTO settlement_person_ix (psn_no, setl_id) \
     SELECT psn_no, setl_id FROM settlement WHERE rowid > ?1 AND rowid <= ?2 \
     ORDER BY psn_no, setl_id",
)];

/// In the caller's write transaction: merges the tails into the index tables when either
/// tail holds at least `min_rows` rows (1: whenever anything is left). Returns the rows merged
/// (settlements and journal transactions); 0 on PostgreSQL.
pub async fn merge(c: &mut Conn, min_rows: i64) -> StoreResult<i64> {
    let merged = c
        .with_sqlite(|x| {
            let mut tails = Vec::with_capacity(INDEXES.len());
            for (name, table, _) in INDEXES {
                let upto: i64 = x.query_row(
                    "SELECT upto FROM derived_index WHERE name = ?1",
                    [name],
                    |r| r.get(0),
                )?;
                let last: i64 = x.query_row(
                    &format!("SELECT COALESCE(MAX(rowid), 0) FROM {table}"),
                    [],
                    |r| r.get(0),
                )?;
                tails.push((upto, last));
            }
            if tails
                .iter()
                .all(|(upto, last)| last - upto < min_rows.max(1))
            {
                return Ok(0);
            }
            let mut merged = 0;
            for ((name, _, copy), (upto, last)) in INDEXES.into_iter().zip(tails) {
                if last > upto {
                    x.execute(copy, [upto, last])?;
                    x.execute(
                        "UPDATE derived_index SET upto = ?2 WHERE name = ?1",
                        rusqlite::params![name, last],
                    )?;
                    merged += last - upto;
                }
            }
            Ok(merged)
        })
        .await?;
    Ok(merged.unwrap_or(0))
}

//! SQLite's batch-maintained indexes: a person's settlements (`settlement_person_ix`) and the
//! personal accounts' journal entries (`entry_pacct_ix`). Their keys are random (a person, a
//! personal account), so as ordinary indexes every swipe dirtied a leaf page of each, and
//! SQLite's WAL logs whole pages. Instead [`merge`] copies the rows committed since the last
//! merge (the tail: rowids above `derived_index.upto`) into the index tables, sorted, in the
//! caller's transaction; the views `settlement_by_person` and `entry_by_account` read the index
//! tables plus the tail, so they are exact at every moment (migrations 0009 and 0010). The swipe
//! writer merges inside a batch once a tail reaches [`MERGE_ROWS`], and when idle merges
//! whatever is left. On PostgreSQL the views are the tables (its indexes log small records) and
//! there is nothing to merge.

use super::{Conn, StoreResult};

/// Rows in a tail (settlements, or journal transactions) that make the swipe writer merge it
/// within its batch: the tail is what a read by person or by account scans besides the index
/// table, and the merge writes each index leaf once for all of it.
pub const MERGE_ROWS: i64 = 4096;
/// Rows of a tail merged by one call at most, so that a long tail (after a bulk import, say)
/// holds the writer for a bounded time; the rest goes in the next batch, or the next idle
/// second.
pub const MERGE_MAX: i64 = 65_536;

/// The index tables, each with the table (and its key) whose rowids mark what it holds, and the
/// statement copying rows `?1 < rowid <= ?2` of that table, in index order.
const INDEXES: [(&str, &str, &str); 2] = [
    (
        "settlement_person",
        "settlement",
        "INSERT OR IGNORE INTO settlement_person_ix (psn_no, setl_id) \
         SELECT psn_no, setl_id FROM settlement WHERE rowid > ?1 AND rowid <= ?2 \
         ORDER BY psn_no, setl_id",
    ),
    (
        "entry_pacct",
        "journal_tx",
        "INSERT OR IGNORE INTO entry_pacct_ix (account, journal_id, seq, amount_fen) \
         SELECT e.account, e.journal_id, e.seq, e.amount_fen \
         FROM journal_tx t CROSS JOIN journal_entry e ON e.journal_id = t.journal_id \
         WHERE t.rowid > ?1 AND t.rowid <= ?2 AND e.account LIKE 'pacct:%' \
         ORDER BY e.account, e.journal_id, e.seq",
    ),
];

/// In the caller's write transaction: merges a tail (up to [`MERGE_MAX`] rows of it) into its
/// index table once it holds at least `min_rows` rows. Above 1, only the first such index is
/// merged (the tails grow together, so a batch pays for one merge, the next batch for the
/// other); at 1 every tail is merged. Returns the rows merged (settlements or journal
/// transactions); 0 on PostgreSQL.
pub async fn merge(c: &mut Conn, min_rows: i64) -> StoreResult<i64> {
    merge_at_most(c, min_rows, MERGE_MAX).await
}

/// [`merge`], with at most `max_rows` rows of a tail per call.
pub async fn merge_at_most(c: &mut Conn, min_rows: i64, max_rows: i64) -> StoreResult<i64> {
    let (min_rows, max_rows) = (min_rows.max(1), max_rows.max(1));
    let merged = c
        .with_sqlite(|x| {
            let mut merged = 0;
            for ((name, _, copy), (upto, last)) in INDEXES.into_iter().zip(tails(x)?) {
                if last - upto < min_rows {
                    continue;
                }
                let last = last.min(upto + max_rows);
                x.execute(copy, [upto, last])?;
                x.execute(
                    "UPDATE derived_index SET upto = ?2 WHERE name = ?1",
                    rusqlite::params![name, last],
                )?;
                merged += last - upto;
                if min_rows > 1 {
                    break;
                }
            }
            Ok(merged)
        })
        .await?;
    Ok(merged.unwrap_or(0))
}

/// Whether any tail holds a row (read-only: the idle writer asks before it takes the write
/// lock); false on PostgreSQL.
pub async fn pending(c: &mut Conn) -> StoreResult<bool> {
    let tails = c.with_sqlite(tails).await?;
    Ok(tails.is_some_and(|t| t.iter().any(|(upto, last)| last > upto)))
}

/// (merged up to, last rowid of the source) of each index in [`INDEXES`], in order.
fn tails(x: &rusqlite::Connection) -> StoreResult<Vec<(i64, i64)>> {
    let mut out = Vec::with_capacity(INDEXES.len());
    for (name, table, _) in INDEXES {
        // Prepared once on the swipe writer's own connection (every batch asks).
        let upto: i64 = x
            .prepare_cached("SELECT upto FROM derived_index WHERE name = ?1")?
            .query_row([name], |r| r.get(0))?;
        let last: i64 = x
            .prepare_cached(&format!("SELECT COALESCE(MAX(rowid), 0) FROM {table}"))?
            .query_row([], |r| r.get(0))?;
        out.push((upto, last));
    }
    Ok(out)
}

/// Disagreements between the index tables and their sources up to the merged rowids (a row
/// missing, extra or changed), at most `limit`; none on PostgreSQL. The ledger verification
/// runs it: a row missing from an index table would hide a settlement or a payment from the
/// reads by person and by account.
pub async fn mismatches(c: &mut Conn, limit: i64) -> StoreResult<Vec<String>> {
    const SQL: &str = "\
        WITH m AS (SELECT \
            (SELECT upto FROM derived_index WHERE name = 'settlement_person') AS s, \
            (SELECT upto FROM derived_index WHERE name = 'entry_pacct') AS j) \
        SELECT 'settlement_person_ix lacks ' || x.psn_no || ' ' || x.setl_id \
        FROM m CROSS JOIN settlement x WHERE x.rowid <= m.s AND NOT EXISTS \
            (SELECT 1 FROM settlement_person_ix i WHERE i.psn_no = x.psn_no AND i.setl_id = x.setl_id) \
        UNION ALL \
        SELECT 'settlement_person_ix has ' || i.psn_no || ' ' || i.setl_id \
        FROM m CROSS JOIN settlement_person_ix i WHERE NOT EXISTS (SELECT 1 FROM settlement x \
            WHERE x.setl_id = i.setl_id AND x.psn_no = i.psn_no AND x.rowid <= m.s) \
        UNION ALL \
        SELECT 'entry_pacct_ix lacks ' || e.account || ' ' || e.journal_id || '#' || e.seq \
        FROM m CROSS JOIN journal_tx t CROSS JOIN journal_entry e ON e.journal_id = t.journal_id \
        WHERE t.rowid <= m.j AND e.account LIKE 'pacct:%' AND NOT EXISTS \
            (SELECT 1 FROM entry_pacct_ix i WHERE i.account = e.account \
             AND i.journal_id = e.journal_id AND i.seq = e.seq AND i.amount_fen = e.amount_fen) \
        UNION ALL \
        SELECT 'entry_pacct_ix has ' || i.account || ' ' || i.journal_id || '#' || i.seq \
        FROM m CROSS JOIN entry_pacct_ix i WHERE NOT EXISTS (SELECT 1 FROM journal_entry e \
            JOIN journal_tx t ON t.journal_id = e.journal_id WHERE e.journal_id = i.journal_id \
            AND e.seq = i.seq AND e.account = i.account AND e.amount_fen = i.amount_fen \
            AND t.rowid <= m.j) \
        LIMIT ?1";
    let found = c
        .with_sqlite(|x| {
            let mut st = x.prepare(SQL)?;
            let rows = st.query_map([limit], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await?;
    Ok(found.unwrap_or_default())
}

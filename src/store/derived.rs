//! SQLite's batch-maintained indexes. One has random keys — a person's settlements
//! (`settlement_person_ix`) — and four one insertion point per institution, principal or account —
//! settlements by institution and day (`settlement_inst_ix`), audit records by principal
//! (`audit_principal_ix`), the request ids' key (`idempotency_ix`: a caller's ids in order), and
//! the journal's entries, which are only ever read as sums and so are kept as totals by account
//! (`account_total`; a personal account's total is one row per person, and a merge adds up each
//! person's entries of the tail into it). As ordinary indexes every swipe batch dirtied a leaf page
//! of each for every person or pharmacy in it, and SQLite's WAL logs whole pages. Instead [`merge`]
//! copies the rows committed since the last merge (the tail: rowids above `derived_index.upto`)
//! into the index tables, sorted (or adds them up), in the caller's transaction; the views
//! `settlement_by_person`, `settlement_by_institution`, `audit_by_principal`, `idempotency_by_key`
//! and `account_sums` read the index tables plus the tails, so they are exact at every moment
//! (migrations 0009–0011, 0016, 0017). The swipe writer merges inside a batch once a tail reaches
//! its threshold, which is lower while the writer keeps up ([`Pace`]) — and then a random-key tail
//! a slice a batch ([`MERGE_SLICE`]) —, and when idle merges whatever is left. On PostgreSQL the
//! views are the tables (its indexes log small records) and there is nothing to merge.

use super::{Conn, StoreResult};

/// Rows in a tail (settlements, audit records or journal transactions) that make the swipe
/// writer merge it within its batch when it is busy (see [`Pace`]): the tail is what a read
/// through a view scans besides the index table, and the merge writes each index leaf once for
/// all of it.
pub const MERGE_ROWS: i64 = 4096;
/// The same when the writer keeps up. A merge holds the writer, and every swipe that arrives
/// meanwhile waits, then makes the next batch longer: at 4,096 rows a random-key merge took
/// 5–8 ms and its stall about doubled that way (p99 at 5,000 swipes/s offered). A quarter of the
/// rows is a quarter of the stall; it costs more page writes per row merged (a leaf is written
/// by each merge that touches it), which the writer can afford only while it has time to spare
/// (closed loop: 7–19 % fewer swipes/s with these thresholds always).
pub const MERGE_ROWS_SOON: i64 = 1024;
/// [`MERGE_ROWS`] for the tables keyed by institution, principal or account: a merge writes one
/// run of leaves per key whatever its size, so they merge four times as often as the
/// random-key ones, each merge a quarter as long.
pub const MERGE_ROWS_BY_KEY: i64 = 1024;
/// [`MERGE_ROWS_SOON`] for the tables keyed by institution, principal or account.
pub const MERGE_ROWS_BY_KEY_SOON: i64 = 512;
/// Rows of a random-key tail merged within one batch while the writer keeps up: the tail is
/// taken in slices from the threshold on, one slice a batch, rather than whole. Each row of a
/// random-key merge dirties a leaf of its own, so a slice costs about what its rows would have
/// cost in the whole merge, but holds the batch it is in for ≈ 0.5 ms instead of 3–7 ms
/// (BENCHMARKS.md, session 14, six rounds at 5,000 swipes/s: the p99's median 18.9 → 15.2 ms,
/// the p99.9's 30.9 → 22.4 ms, for ≈ 4 % more CPU and 10 % more bytes). The tables keyed by
/// institution, principal or account are not sliced: their merge writes one run of leaves per
/// key whatever its size, so slices would multiply their writes.
pub const MERGE_SLICE: i64 = 128;
/// Rows of a tail merged by one call at most, so that a long tail (after a bulk import, say)
/// holds the writer for a bounded time; the rest goes in the next batch, or the next idle
/// second.
pub const MERGE_MAX: i64 = 65_536;

/// The largest average swipe batch of a writer that keeps up (averaged over the last ≈ 16
/// batches: see [`Pacer`]). Offered 5,000 swipes/s, batches average 3–5 swipes; in a closed loop
/// of 256 callers, which keeps the writer always busy, 60–100 (single batches vary far more, so
/// one batch alone says little).
pub const KEEPING_UP_BATCH: u64 = 32;

/// How eagerly the swipe writer merges within a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// Batches have been small: tails merge at [`MERGE_ROWS_SOON`] / [`MERGE_ROWS_BY_KEY_SOON`]
    /// rows.
    KeepingUp,
    /// Batches have been big: tails merge at [`MERGE_ROWS`] / [`MERGE_ROWS_BY_KEY`] rows.
    Busy,
}

/// The swipe writer's pace: an exponential average of its batch sizes (weight 1/16 each),
/// kept in sixteenths so that it is exact in integers.
#[derive(Debug, Default)]
pub struct Pacer {
    sixteenths: u64,
}

impl Pacer {
    /// Notes a batch of `swipes`; the pace to merge at within it.
    pub fn batch(&mut self, swipes: usize) -> Pace {
        let n = u64::try_from(swipes).unwrap_or(u64::MAX);
        self.sixteenths = (self.sixteenths - self.sixteenths / 16).saturating_add(n);
        if self.sixteenths <= KEEPING_UP_BATCH * 16 {
            Pace::KeepingUp
        } else {
            Pace::Busy
        }
    }
}

/// One batch-maintained index: its name in `derived_index`, the table whose rowids mark what it
/// holds, the tail lengths at which the swipe writer merges it (keeping up, busy: see [`Pace`])
/// and the rows of it merged in one batch while keeping up,
/// the statement copying rows `?1 < rowid <= ?2` of that table in index order, and the statement
/// listing its disagreements with its source up to the merged rowid `?1` (at most `?2` of them).
struct Index {
    name: &'static str,
    table: &'static str,
    soon: i64,
    every: i64,
    /// Rows merged within one batch at most while the writer keeps up.
    slice: i64,
    copy: &'static str,
    check: &'static str,
}

const INDEXES: [Index; 5] = [
    Index {
        name: "settlement_person",
        table: "settlement",
        soon: MERGE_ROWS_SOON,
        every: MERGE_ROWS,
        slice: MERGE_SLICE,
        copy: "INSERT OR IGNORE INTO settlement_person_ix (psn_no, setl_id) \
               SELECT psn_no, setl_id FROM settlement WHERE rowid > ?1 AND rowid <= ?2 \
               ORDER BY psn_no, setl_id",
        check: "SELECT 'settlement_person_ix lacks ' || x.psn_no || ' ' || x.setl_id \
             FROM settlement x WHERE x.rowid <= ?1 AND NOT EXISTS \
                (SELECT 1 FROM settlement_person_ix i WHERE i.psn_no = x.psn_no AND i.setl_id = x.setl_id) \
             UNION ALL \
             SELECT 'settlement_person_ix has ' || i.psn_no || ' ' || i.setl_id \
             FROM settlement_person_ix i WHERE NOT EXISTS (SELECT 1 FROM settlement x \
                WHERE x.setl_id = i.setl_id AND x.psn_no = i.psn_no AND x.rowid <= ?1) \
             LIMIT ?2",
    },
    Index {
        name: "settlement_inst",
        table: "settlement",
        soon: MERGE_ROWS_BY_KEY_SOON,
        every: MERGE_ROWS_BY_KEY,
        slice: MERGE_MAX,
        copy: "INSERT OR IGNORE INTO settlement_inst_ix (institution, business_date, setl_id) \
               SELECT institution, business_date, setl_id FROM settlement \
               WHERE rowid > ?1 AND rowid <= ?2 ORDER BY institution, business_date, setl_id",
        check: "SELECT 'settlement_inst_ix lacks ' || x.institution || ' ' || x.business_date || ' ' || x.setl_id \
             FROM settlement x WHERE x.rowid <= ?1 AND NOT EXISTS \
                (SELECT 1 FROM settlement_inst_ix i WHERE i.institution = x.institution \
                 AND i.business_date = x.business_date AND i.setl_id = x.setl_id) \
             UNION ALL \
             SELECT 'settlement_inst_ix has ' || i.institution || ' ' || i.business_date || ' ' || i.setl_id \
             FROM settlement_inst_ix i WHERE NOT EXISTS (SELECT 1 FROM settlement x \
                WHERE x.setl_id = i.setl_id AND x.institution = i.institution \
                AND x.business_date = i.business_date AND x.rowid <= ?1) \
             LIMIT ?2",
    },
    Index {
        name: "audit_principal",
        table: "audit_log",
        soon: MERGE_ROWS_BY_KEY_SOON,
        every: MERGE_ROWS_BY_KEY,
        slice: MERGE_MAX,
        copy: "INSERT OR IGNORE INTO audit_principal_ix (principal, audit_id) \
               SELECT principal, audit_id FROM audit_log WHERE rowid > ?1 AND rowid <= ?2 \
               ORDER BY principal, audit_id",
        check: "SELECT 'audit_principal_ix lacks ' || x.principal || ' ' || x.audit_id \
             FROM audit_log x WHERE x.rowid <= ?1 AND NOT EXISTS \
                (SELECT 1 FROM audit_principal_ix i WHERE i.principal = x.principal AND i.audit_id = x.audit_id) \
             UNION ALL \
             SELECT 'audit_principal_ix has ' || i.principal || ' ' || i.audit_id \
             FROM audit_principal_ix i WHERE NOT EXISTS (SELECT 1 FROM audit_log x \
                WHERE x.audit_id = i.audit_id AND x.principal = i.principal AND x.rowid <= ?1) \
             LIMIT ?2",
    },
    Index {
        name: "idempotency",
        table: "idempotency",
        soon: MERGE_ROWS_BY_KEY_SOON,
        every: MERGE_ROWS_BY_KEY,
        slice: MERGE_MAX,
        copy: "INSERT OR IGNORE INTO idempotency_ix (principal, request_id, row) \
               SELECT principal, request_id, rowid FROM idempotency WHERE rowid > ?1 AND rowid <= ?2 \
               ORDER BY principal, request_id",
        // A key stored twice shows as a row the index table lacks (it holds the first).
        check: "SELECT 'idempotency_ix lacks ' || x.principal || ' ' || x.request_id || ' at ' || x.rowid \
             FROM idempotency x WHERE x.rowid <= ?1 AND NOT EXISTS \
                (SELECT 1 FROM idempotency_ix i WHERE i.principal = x.principal \
                 AND i.request_id = x.request_id AND i.row = x.rowid) \
             UNION ALL \
             SELECT 'idempotency_ix has ' || i.principal || ' ' || i.request_id || ' at ' || i.row \
             FROM idempotency_ix i WHERE NOT EXISTS (SELECT 1 FROM idempotency x \
                WHERE x.rowid = i.row AND x.principal = i.principal \
                AND x.request_id = i.request_id AND x.rowid <= ?1) \
             LIMIT ?2",
    },
    Index {
        name: "account_total",
        table: "journal_tx",
        soon: MERGE_ROWS_BY_KEY_SOON,
        every: MERGE_ROWS_BY_KEY,
        slice: MERGE_MAX,
        // The WHERE before GROUP BY also keeps SQLite from reading ON CONFLICT as a join's.
        copy: "INSERT INTO account_total (account, amount_fen, entries) \
               SELECT e.account, SUM(e.amount_fen), COUNT(*) \
               FROM journal_tx t CROSS JOIN journal_entry e ON e.journal_id = t.journal_id \
               WHERE t.rowid > ?1 AND t.rowid <= ?2 GROUP BY e.account \
               ON CONFLICT (account) DO UPDATE SET amount_fen = amount_fen + excluded.amount_fen, \
               entries = entries + excluded.entries",
        check: "WITH s AS (SELECT e.account, SUM(e.amount_fen) AS amount_fen, COUNT(*) AS entries \
                FROM journal_tx t CROSS JOIN journal_entry e ON e.journal_id = t.journal_id \
                WHERE t.rowid <= ?1 GROUP BY e.account) \
             SELECT 'account_total lacks ' || s.account || ' ' || s.amount_fen || ' in ' || s.entries \
             FROM s WHERE NOT EXISTS (SELECT 1 FROM account_total a WHERE a.account = s.account \
                AND a.amount_fen = s.amount_fen AND a.entries = s.entries) \
             UNION ALL \
             SELECT 'account_total has ' || a.account || ' ' || a.amount_fen || ' in ' || a.entries \
             FROM account_total a WHERE NOT EXISTS (SELECT 1 FROM s WHERE s.account = a.account \
                AND s.amount_fen = a.amount_fen AND s.entries = a.entries) \
             LIMIT ?2",
    },
];

/// In the caller's write transaction: merges a tail (up to [`MERGE_MAX`] rows of it) into its
/// index table once it holds at least `min_rows` rows, or its index's busy threshold
/// ([`MERGE_ROWS`], [`MERGE_ROWS_BY_KEY`]) if fewer. Above 1, only the first such index is merged
/// (the tails grow together, so a batch pays for one merge, the next batches for the others); at
/// 1 every tail is merged. Returns the rows merged (of the sources); 0 on PostgreSQL.
pub async fn merge(c: &mut Conn, min_rows: i64) -> StoreResult<i64> {
    merge_at_most(c, min_rows, MERGE_MAX).await
}

/// [`merge`], with at most `max_rows` rows of a tail per call.
pub async fn merge_at_most(c: &mut Conn, min_rows: i64, max_rows: i64) -> StoreResult<i64> {
    let min_rows = min_rows.max(1);
    merge_where(c, |ix| (min_rows.min(ix.every), max_rows), min_rows > 1).await
}

/// The swipe writer's merge within a batch, at its `pace`: the first tail that reached its
/// index's threshold for that pace, if any (see [`merge`]); while keeping up, a random-key tail
/// a slice at a time ([`MERGE_SLICE`]).
pub async fn merge_due(c: &mut Conn, pace: Pace) -> StoreResult<i64> {
    merge_where(c, |ix| due(ix, pace), true).await
}

/// (threshold, rows at most) of `ix`'s merge within a batch at `pace`.
fn due(ix: &Index, pace: Pace) -> (i64, i64) {
    match pace {
        Pace::KeepingUp => (ix.soon, ix.slice),
        Pace::Busy => (ix.every, MERGE_MAX),
    }
}

/// Merges the tails that hold at least the threshold `rule(index)` gives, at most the rows it
/// gives of each (only the first such tail if `first_only`).
async fn merge_where(
    c: &mut Conn,
    rule: impl Fn(&Index) -> (i64, i64),
    first_only: bool,
) -> StoreResult<i64> {
    let merged = c
        .with_sqlite(|x| {
            let mut merged = 0;
            for (ix, (upto, last)) in INDEXES.iter().zip(tails(x)?) {
                let (threshold, max_rows) = rule(ix);
                if last - upto < threshold {
                    continue;
                }
                let last = last.min(upto + max_rows.max(1));
                let t0 = std::time::Instant::now();
                x.prepare_cached(ix.copy)?.execute([upto, last])?;
                x.prepare_cached("UPDATE derived_index SET upto = ?2 WHERE name = ?1")?
                    .execute(rusqlite::params![ix.name, last])?;
                tracing::debug!(index = ix.name, rows = last - upto, elapsed = ?t0.elapsed(), "index tail merged");
                merged += last - upto;
                if first_only {
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

/// (merged up to, last rowid of the source) of each index in [`INDEXES`], in order: every batch
/// asks, so one statement reads every `upto` and one the last rowid of each source table.
fn tails(x: &rusqlite::Connection) -> StoreResult<Vec<(i64, i64)>> {
    // Prepared once on the swipe writer's own connection.
    let mut upto = std::collections::HashMap::new();
    let mut st = x.prepare_cached("SELECT name, upto FROM derived_index")?;
    let mut rows = st.query([])?;
    while let Some(r) = rows.next()? {
        upto.insert(r.get::<_, String>(0)?, r.get::<_, i64>(1)?);
    }
    let mut last: Vec<(&str, i64)> = Vec::with_capacity(3);
    let mut out = Vec::with_capacity(INDEXES.len());
    for ix in &INDEXES {
        let found = last.iter().find(|(t, _)| *t == ix.table).map(|(_, l)| *l);
        let l = match found {
            Some(l) => l,
            None => {
                let l: i64 = x
                    .prepare_cached(&format!("SELECT COALESCE(MAX(rowid), 0) FROM {}", ix.table))?
                    .query_row([], |r| r.get(0))?;
                last.push((ix.table, l));
                l
            }
        };
        let u = upto.get(ix.name).copied().ok_or_else(|| {
            super::StoreError::Other(anyhow::anyhow!("derived_index lacks {}", ix.name))
        })?;
        out.push((u, l));
    }
    Ok(out)
}

/// Disagreements between the index tables and their sources up to the merged rowids (a row
/// missing, extra or changed), at most `limit`; none on PostgreSQL. The ledger verification
/// runs it: a row missing from an index table would hide a settlement, a payment or an audit
/// record from the reads through the views.
pub async fn mismatches(c: &mut Conn, limit: i64) -> StoreResult<Vec<String>> {
    let found = c
        .with_sqlite(|x| {
            // One snapshot for the merged marks and the checks: between two statements of their
            // own, a merge committed meanwhile (the idle writer's, say) showed as index rows past
            // the mark read before it. In the caller's transaction if it is in one.
            let own = x.is_autocommit();
            if own {
                x.execute_batch("BEGIN")?;
            }
            let found = mismatches_in(x, limit);
            if own {
                x.execute_batch("COMMIT")?;
            }
            found
        })
        .await?;
    Ok(found.unwrap_or_default())
}

/// [`mismatches`] on SQLite, inside a transaction.
fn mismatches_in(x: &rusqlite::Connection, limit: i64) -> StoreResult<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for (ix, (upto, _)) in INDEXES.iter().zip(tails(x)?) {
        let left = limit - i64::try_from(out.len()).unwrap_or(i64::MAX);
        if left <= 0 {
            break;
        }
        let mut st = x.prepare(ix.check)?;
        let rows = st.query_map([upto, left], |r| r.get::<_, String>(0))?;
        for row in rows {
            out.push(row?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{
        INDEXES, KEEPING_UP_BATCH, MERGE_MAX, MERGE_ROWS, MERGE_ROWS_BY_KEY,
        MERGE_ROWS_BY_KEY_SOON, MERGE_ROWS_SOON, MERGE_SLICE, Pace, Pacer, due,
    };

    #[test]
    fn keeping_up_the_writer_takes_the_random_key_tail_a_slice_a_batch() {
        let due_of = |name: &str, pace| {
            INDEXES
                .iter()
                .find(|ix| ix.name == name)
                .map(|ix| due(ix, pace))
        };
        const { assert!(MERGE_SLICE < MERGE_ROWS_SOON) };
        // The random-key tail: from 1,024 rows on, 128 of them a batch (the tail drains while it
        // keeps growing by a few rows a batch, and no batch holds a whole merge); busy (big
        // batches), the whole tail from 4,096 rows on, as before.
        assert_eq!(
            due_of("settlement_person", Pace::KeepingUp),
            Some((MERGE_ROWS_SOON, MERGE_SLICE))
        );
        assert_eq!(
            due_of("settlement_person", Pace::Busy),
            Some((MERGE_ROWS, MERGE_MAX))
        );
        for by_key in [
            "settlement_inst",
            "audit_principal",
            "idempotency",
            "account_total",
        ] {
            assert_eq!(
                due_of(by_key, Pace::KeepingUp),
                Some((MERGE_ROWS_BY_KEY_SOON, MERGE_MAX))
            );
            assert_eq!(
                due_of(by_key, Pace::Busy),
                Some((MERGE_ROWS_BY_KEY, MERGE_MAX))
            );
        }
    }

    #[test]
    fn the_pace_follows_the_average_batch_not_one_batch() {
        let mut p = Pacer::default();
        // Small batches (5,000/s offered: 3–5 swipes each) keep up.
        for _ in 0..100 {
            assert_eq!(p.batch(4), Pace::KeepingUp);
        }
        // One big batch (a stall caught up) does not make the writer busy…
        assert_eq!(p.batch(256), Pace::KeepingUp);
        // …the next one does (in sixteenths: 64 - 4 + 256 = 316, then 316 - 19 + 256 = 553,
        // past 32 × 16 = 512)…
        assert_eq!(p.batch(256), Pace::Busy);
        // …and a closed loop's mix of small and big batches (average ≈ 68) stays busy.
        for i in 0..200 {
            assert_eq!(p.batch(if i % 3 == 0 { 2 } else { 100 }), Pace::Busy);
        }
        // Back to small batches: keeping up again once the average has decayed to 32 (the 13th).
        let back_after = (0..100).position(|_| p.batch(4) == Pace::KeepingUp);
        assert_eq!(back_after, Some(12));
        // A steady batch size averages to itself, exactly.
        let mut q = Pacer::default();
        for _ in 0..2000 {
            q.batch(usize::try_from(KEEPING_UP_BATCH).unwrap_or(0));
        }
        assert_eq!(q.sixteenths, KEEPING_UP_BATCH * 16);
        assert_eq!(q.batch(33), Pace::Busy);
    }
}

//! Journal rows (immutable) and the sums that balances and verification derive from them.

use super::cells::{Cell, Cells};
use super::query::{One, Query};
use super::{Conn, StoreResult};
use chrono::{DateTime, NaiveDate, Utc};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JournalTxRow {
    pub journal_id: String,
    pub kind: String,
    pub reference: String,
    pub memo: String,
    pub business_date: NaiveDate,
    pub booked_at: DateTime<Utc>,
}

crate::direct_row!(JournalTxRow {
    journal_id,
    kind,
    reference,
    memo,
    business_date,
    booked_at,
});

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EntryRow {
    pub journal_id: String,
    pub seq: i64,
    pub account: String,
    pub amount_fen: i64,
}

crate::direct_row!(EntryRow {
    journal_id,
    seq,
    account,
    amount_fen,
});

pub async fn insert_tx(c: &mut Conn, t: &JournalTxRow, entries: &[EntryRow]) -> StoreResult<()> {
    insert_many(c, std::slice::from_ref(t), entries).await
}

/// (sum in fen, number of entries) of an account.
pub async fn account_sum(c: &mut Conn, account: &str) -> StoreResult<(i64, i64)> {
    // Through the view: on SQLite the other accounts' entries are summed, and personal accounts'
    // entries indexed, in batches (see `store::derived`).
    let sql = "SELECT CAST(COALESCE(SUM(amount_fen), 0) AS BIGINT), \
               CAST(COALESCE(SUM(entries), 0) AS BIGINT) FROM account_sums WHERE account = $1";
    Query::new(sql).bind(account).fetch_one(c).await
}

/// (account, sum in fen) of every account whose name starts with `prefix` (e.g. "due:").
pub async fn sums_with_prefix(c: &mut Conn, prefix: &str) -> StoreResult<Vec<(String, i64)>> {
    let sql = "SELECT account, CAST(SUM(amount_fen) AS BIGINT) FROM account_sums \
               WHERE account LIKE $1 GROUP BY account ORDER BY account";
    // Account prefixes are plain ("due:", "net:"): no LIKE wildcards to escape.
    let pattern = format!("{prefix}%");
    Query::new(sql).bind(&pattern).fetch_all(c).await
}

/// The kinds of journal transaction that fund a personal account, their reference the person's
/// psn_no: an employee's opening balance (EnrolPerson) and a deposit (DepositPersonalAccount).
/// Every other leg on a personal account is a settlement's of that person (see
/// [`unlisted_pacct_legs`]). The SQLite migration 0018 names them in its partial index.
pub const OPENING_BALANCE: &str = "opening_balance";
/// See [`OPENING_BALANCE`].
pub const PACCT_DEPOSIT: &str = "pacct_deposit";

/// Transactions (oldest first) after `after`, optionally only those touching `account`.
pub async fn list_txs(
    c: &mut Conn,
    account: &str,
    after: &str,
    limit: i64,
) -> StoreResult<Vec<JournalTxRow>> {
    // SQLite keeps no index of entries by account (the swipes would write one for every leg; the
    // totals are batch-maintained instead), so a scan of the journal for the account's entries
    // finds a personal account's few transactions among all of them: the whole journal read for
    // a page. Those transactions are its person's settlements (through the batch-maintained
    // index by person) and the fundings of the account (a partial index, 0018); the accounts no
    // swipe writes have partial indexes of their entries (0020). The others' legs are dense
    // (funds, dues, advances) — except an institution's, left to the scan.
    let pacct = account.strip_prefix("pacct:").filter(|p| !p.is_empty());
    if let (super::Engine::Sqlite, Some(psn_no)) = (c.engine(), pacct) {
        // The funding kinds as literals, as the partial index names them: SQLite uses a partial
        // index only for a query whose terms imply its WHERE, which a bound value cannot.
        let sql = "SELECT journal_id, kind, reference, memo, business_date, booked_at \
                   FROM journal_tx t WHERE t.journal_id IN (SELECT s.journal_id \
                       FROM settlement_by_person b CROSS JOIN settlement s ON s.setl_id = b.setl_id \
                       WHERE b.psn_no = $4 \
                     UNION ALL SELECT f.journal_id FROM journal_tx f \
                       WHERE f.reference = $4 AND f.kind IN ('opening_balance', 'pacct_deposit')) \
                   AND t.journal_id > $1 AND EXISTS (SELECT 1 FROM journal_entry e \
                   WHERE e.journal_id = t.journal_id AND e.account = $2) \
                   ORDER BY t.journal_id LIMIT $3";
        return Query::new(sql)
            .bind(after)
            .bind(account)
            .bind(limit)
            .bind(psn_no)
            .fetch_all(c)
            .await;
    }
    if let (super::Engine::Sqlite, Some(sql)) = (c.engine(), sqlite_by_account(account)) {
        return Query::new(sql)
            .bind(after)
            .bind(account)
            .bind(limit)
            .fetch_all(c)
            .await;
    }
    let sql = "SELECT journal_id, kind, reference, memo, business_date, booked_at FROM journal_tx t \
               WHERE t.journal_id > $1 AND ($2 = '' OR EXISTS (SELECT 1 FROM journal_entry e \
               WHERE e.journal_id = t.journal_id AND e.account = $2)) \
               ORDER BY t.journal_id LIMIT $3";
    Query::new(sql)
        .bind(after)
        .bind(account)
        .bind(limit)
        .fetch_all(c)
        .await
}

/// SQLite: a page of the transactions of an account no swipe writes (`bank:`, `prepay:`,
/// `net:`), through that prefix's partial index of entries (migration 0020): the range of the
/// index's WHERE spelled out as literals, which lets SQLite use it. None for other accounts.
fn sqlite_by_account(account: &str) -> Option<&'static str> {
    /// (prefix, the page's statement for accounts from `prefix` up to `end`, its next string).
    macro_rules! by_prefix {
        ($prefix:literal, $end:literal) => {
            (
                $prefix,
                concat!(
                    "SELECT journal_id, kind, reference, memo, business_date, booked_at \
                     FROM journal_tx t WHERE t.journal_id IN (SELECT DISTINCT e.journal_id \
                     FROM journal_entry e WHERE e.account = $2 AND e.account >= '",
                    $prefix,
                    "' AND e.account < '",
                    $end,
                    "' AND e.journal_id > $1 ORDER BY e.journal_id LIMIT $3) \
                     ORDER BY t.journal_id LIMIT $3"
                ),
            )
        };
    }
    const BY_PREFIX: [(&str, &str); 3] = [
        by_prefix!("bank:", "bank;"),
        by_prefix!("prepay:", "prepay;"),
        by_prefix!("net:", "net;"),
    ];
    BY_PREFIX
        .iter()
        .find(|(prefix, _)| account.starts_with(prefix))
        .map(|(_, sql)| *sql)
}

/// Personal-account legs whose transaction is neither a settlement of that person (the
/// settlement its reference names, with this journal transaction) nor a funding of that
/// person's account ([`OPENING_BALANCE`], [`PACCT_DEPOSIT`]): (journal_id, account), at most
/// `limit`. ListJournal on SQLite finds a personal account's transactions through those two, so
/// such a leg would be missing there.
pub async fn unlisted_pacct_legs(c: &mut Conn, limit: i64) -> StoreResult<Vec<(String, String)>> {
    let sql = "SELECT e.journal_id, e.account FROM journal_entry e \
               JOIN journal_tx t ON t.journal_id = e.journal_id \
               WHERE e.account LIKE 'pacct:%' \
               AND NOT (t.kind IN ($2, $3) AND e.account = 'pacct:' || t.reference) \
               AND NOT EXISTS (SELECT 1 FROM settlement s WHERE s.setl_id = t.reference \
                   AND s.journal_id = t.journal_id AND e.account = 'pacct:' || s.psn_no) \
               ORDER BY e.journal_id, e.seq LIMIT $1";
    Query::new(sql)
        .bind(limit)
        .bind(OPENING_BALANCE)
        .bind(PACCT_DEPOSIT)
        .fetch_all(c)
        .await
}

/// Entries of the given transactions, in (journal_id, seq) order.
pub async fn entries_of(c: &mut Conn, first: &str, last: &str) -> StoreResult<Vec<EntryRow>> {
    let sql = "SELECT journal_id, seq, account, amount_fen FROM journal_entry \
               WHERE journal_id >= $1 AND journal_id <= $2 ORDER BY journal_id, seq";
    Query::new(sql).bind(first).bind(last).fetch_all(c).await
}

/// Sum of every entry in the journal (the trial balance; must be 0).
pub async fn trial_balance(c: &mut Conn) -> StoreResult<i64> {
    let sql = "SELECT CAST(COALESCE(SUM(amount_fen), 0) AS BIGINT) FROM journal_entry";
    let One(n) = Query::new(sql).fetch_one(c).await?;
    Ok(n)
}

/// Journal transactions whose entries do not sum to zero (or have fewer than two legs).
pub async fn unbalanced(c: &mut Conn, limit: i64) -> StoreResult<Vec<(String, i64)>> {
    let sql = "SELECT t.journal_id, CAST(COALESCE(SUM(e.amount_fen), 0) AS BIGINT) FROM journal_tx t \
               LEFT JOIN journal_entry e ON e.journal_id = t.journal_id \
               GROUP BY t.journal_id HAVING COALESCE(SUM(e.amount_fen), 0) <> 0 OR COUNT(e.seq) < 2 \
               ORDER BY t.journal_id LIMIT $1";
    Query::new(sql).bind(limit).fetch_all(c).await
}

/// Personal accounts whose maintained balance differs from their journal sum, or is negative:
/// (psn_no, maintained fen, journal fen).
pub async fn account_mismatches(c: &mut Conn, limit: i64) -> StoreResult<Vec<(String, i64, i64)>> {
    let sql = "SELECT a.psn_no, a.balance_fen, CAST(COALESCE(s.total, 0) AS BIGINT) \
               FROM personal_account a LEFT JOIN (SELECT account, SUM(amount_fen) AS total \
               FROM journal_entry WHERE account LIKE 'pacct:%' GROUP BY account) s \
               ON s.account = 'pacct:' || a.psn_no \
               WHERE a.balance_fen <> COALESCE(s.total, 0) OR a.balance_fen < 0 \
               ORDER BY a.psn_no LIMIT $1";
    Query::new(sql).bind(limit).fetch_all(c).await
}

/// Journal personal-account legs on accounts with no personal_account row.
pub async fn orphan_pacct_entries(c: &mut Conn) -> StoreResult<i64> {
    let sql = "SELECT COUNT(*) FROM journal_entry e WHERE e.account LIKE 'pacct:%' AND NOT EXISTS \
               (SELECT 1 FROM personal_account a WHERE 'pacct:' || a.psn_no = e.account)";
    let One(n) = Query::new(sql).fetch_one(c).await?;
    Ok(n)
}

/// Inserts many journal transactions and their entries, set-based.
pub async fn insert_many(
    c: &mut Conn,
    txs: &[JournalTxRow],
    entries: &[EntryRow],
) -> StoreResult<()> {
    super::cells::insert(c, txs, "").await?;
    super::cells::insert(c, entries, "").await?;
    Ok(())
}

impl Cells for JournalTxRow {
    const TABLE: &'static str = "journal_tx";
    const COLUMNS: &'static str = "journal_id, kind, reference, memo, business_date, booked_at";
    const N: usize = 6;
    fn cells<'a>(&'a self, out: &mut dyn FnMut(Cell<'a>)) {
        out(Cell::Text(&self.journal_id));
        out(Cell::Text(&self.kind));
        out(Cell::Text(&self.reference));
        out(Cell::Text(&self.memo));
        out(Cell::Date(self.business_date));
        out(Cell::Time(self.booked_at));
    }
}

impl Cells for EntryRow {
    const TABLE: &'static str = "journal_entry";
    const COLUMNS: &'static str = "journal_id, seq, account, amount_fen";
    const N: usize = 4;
    fn cells<'a>(&'a self, out: &mut dyn FnMut(Cell<'a>)) {
        out(Cell::Text(&self.journal_id));
        out(Cell::Int(self.seq));
        out(Cell::Text(&self.account));
        out(Cell::Int(self.amount_fen));
    }
}

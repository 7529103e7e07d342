//! SQLite without the driver in between: the swipe writer's own connection, and the pool's
//! connections lent to the calling thread ([`Lent`]) for every statement of [`super::query`]
//! and [`insert`]. sqlx runs every SQLite statement on the connection's own thread: a batch's
//! multi-row INSERTs and `IN (…)` lookups were sent there, parsed anew for every batch size (a
//! new statement text), bound value by value into owned buffers, and the writes run with a
//! statement journal (a multi-row statement may fail half-way); a hospital call's statements
//! each made a round trip there while the call held the write lock. Here the calling thread
//! borrows the connection's handle (sqlx's `lock_handle`: the driver's thread waits meanwhile)
//! and runs prepared statements (one single-row statement per row for inserts): parsed once a
//! loan (for good on the writer's own), bound in place, no statement journal. Values are encoded
//! exactly as sqlx encodes them, so that everything written here reads back through sqlx
//! unchanged.

use super::cells::{Cell, Cells};
use super::{Conn, Inner, StoreError, StoreResult};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{LockedSqliteHandle, Sqlite, SqliteConnection};

impl Conn {
    /// Runs `f` on this connection's SQLite handle, inside whatever transaction the connection
    /// is in; None on PostgreSQL. A pool connection's handle stays lent to this thread (see
    /// [`Lent`]) until a statement goes through the driver again or the connection's work ends,
    /// so that consecutive calls — a write transaction's statements — pay for one hand-over.
    pub async fn with_sqlite<R>(
        &mut self,
        f: impl FnOnce(&rusqlite::Connection) -> StoreResult<R>,
    ) -> StoreResult<Option<R>> {
        match &mut self.inner {
            Inner::Sqlite(lent) => f(lent.view().await?).map(Some),
            // The in-memory swipe writer's connection (tests): lent for this call.
            Inner::SqliteKept(k) => {
                let loan = Loan::take(&mut k.conn).await?;
                let out = f(&loan.view);
                drop(loan);
                out.map(Some)
            }
            // The writer's own connection: on this thread already.
            Inner::Direct(d) => f(&d.x).map(Some),
            Inner::PgTx(_) | Inner::Pg(_) | Inner::PgKept(_) => Ok(None),
        }
    }
}

/// A pool's SQLite connection, its handle lent to the calling thread while statements run
/// there. sqlx runs every SQLite statement on the connection's own thread: each is a round trip
/// there (≈ 55 µs of that thread's CPU, and two wake-ups: 0.15–0.5 ms each on a busy virtual
/// machine, while a write transaction holds the file's write lock). Lent (sqlx's
/// `lock_handle`: one round trip, after which the driver's thread waits for the handle back),
/// statements run here ([`super::query`], [`insert`]), and a write transaction begins, commits
/// and rolls back here too: its statements are one hand-over in all.
pub(super) struct Lent {
    /// Declared first, dropped first: the handle goes back before the connection does.
    loan: Option<Loan>,
    pub(super) conn: PoolConnection<Sqlite>,
    /// A transaction is open on the handle (begun by [`Lent::begin`], not yet ended).
    open: bool,
}

impl Lent {
    pub(super) fn new(conn: PoolConnection<Sqlite>) -> Lent {
        Lent {
            loan: None,
            conn,
            open: false,
        }
    }

    /// The handle, lent to this thread (taken now unless it is already).
    pub(super) async fn view(&mut self) -> StoreResult<&rusqlite::Connection> {
        if self.loan.is_none() {
            self.loan = Some(Loan::take(&mut self.conn).await?);
        }
        match &self.loan {
            Some(loan) => Ok(&loan.view),
            None => Err(StoreError::Other(anyhow::anyhow!("no SQLite handle lent"))),
        }
    }

    /// The connection for a statement through the driver: the handle goes back to its thread.
    pub(super) fn driver(&mut self) -> &mut SqliteConnection {
        self.loan = None;
        &mut self.conn
    }

    /// Begins a write transaction (`BEGIN IMMEDIATE`: SQLite's write lock taken now).
    pub(super) async fn begin(&mut self) -> StoreResult<()> {
        self.view().await?.execute_batch("BEGIN IMMEDIATE")?;
        self.open = true;
        Ok(())
    }

    /// Whether a transaction is open (see [`Lent::begin`]).
    pub(super) fn is_open(&self) -> bool {
        self.open
    }

    /// Ends the transaction with `sql` (COMMIT or ROLLBACK) on the handle lent already
    /// ([`Lent::view`]: nothing to wait for here), and gives the handle back.
    pub(super) fn end(&mut self, sql: &str) -> StoreResult<()> {
        let Some(loan) = &self.loan else {
            return Err(StoreError::Other(anyhow::anyhow!(
                "{sql} without the SQLite handle lent"
            )));
        };
        let ended = loan.view.execute_batch(sql);
        if ended.is_ok() || sql == "ROLLBACK" {
            self.open = false;
        }
        self.loan = None;
        Ok(ended?)
    }
}

impl Drop for Lent {
    /// A transaction left open (an error, a cancelled call) is rolled back here and now, before
    /// the connection goes back to the pool, so the file's write lock is free when this
    /// returns. If the handle went back to the driver, it is lent again first: its thread is
    /// between statements (this connection is not in use), so the wait is one hand-over, and
    /// it needs no runtime. Should that fail, the connection is closed instead (SQLite rolls
    /// back what a closed connection left).
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        if self.loan.is_none() {
            self.loan = futures::executor::block_on(Loan::take(&mut self.conn)).ok();
        }
        let rolled_back = self
            .loan
            .as_ref()
            .is_some_and(|loan| loan.view.execute_batch("ROLLBACK").is_ok());
        if !rolled_back {
            self.conn.close_on_drop();
        }
    }
}

/// The handle of a driver's SQLite connection lent to the calling thread, and a rusqlite view
/// of it whose prepared statements are kept for the loan.
struct Loan {
    /// Dropped first (fields drop in order): it finalizes its statements while the handle is
    /// still this thread's.
    view: rusqlite::Connection,
    _locked: LockedSqliteHandle<'static>,
}

impl Loan {
    async fn take(x: &mut SqliteConnection) -> StoreResult<Loan> {
        let mut locked = x.lock_handle().await?;
        let handle = locked.as_raw_handle();
        // SAFETY: `locked` gives this thread the connection alone until it is dropped (sqlx's
        // thread waits on the connection's mutex meanwhile). The rusqlite view does not own the
        // handle (it will not close it) and is dropped — finalizing the statements it prepared
        // — before `locked` is. Both crates link the same libsqlite3-sys, so the handle types
        // are one.
        let view = unsafe { rusqlite::Connection::from_handle(handle.as_ptr()) }?;
        view.set_prepared_statement_cache_capacity(64);
        // SAFETY: the guard borrows the mutex inside the connection's shared worker state (an
        // `Arc` the connection holds), which does not move when the connection does. The loan
        // lives beside the connection it borrows from ([`Lent`], declared before it: dropped
        // first) or within one call (`SqliteKept`), and is given back before anything else
        // reaches the connection ([`Lent::driver`]: every statement through the driver).
        let locked = unsafe {
            std::mem::transmute::<LockedSqliteHandle<'_>, LockedSqliteHandle<'static>>(locked)
        };
        Ok(Loan {
            view,
            _locked: locked,
        })
    }
}

/// Inserts rows with one prepared single-row statement; `suffix` follows the VALUES list.
/// Returns the rows inserted (a row an ON CONFLICT clause skipped counts 0).
pub fn insert<T: Cells>(c: &rusqlite::Connection, rows: &[T], suffix: &str) -> StoreResult<usize> {
    if rows.is_empty() {
        return Ok(0);
    }
    let sql = format!(
        "INSERT INTO {} ({}) VALUES ({}){suffix}",
        T::TABLE,
        T::COLUMNS,
        super::list(super::Engine::Sqlite, T::N, 1)
    );
    let mut st = c.prepare_cached(&sql)?;
    // A batch's rows share its one timestamp and business date: each formatted once a call.
    let (mut time, mut date) = (Memo::default(), Memo::default());
    let mut n = 0;
    for row in rows {
        let mut i = 0;
        let mut failed = None;
        row.cells(&mut |cell| {
            i += 1;
            let bound = match cell {
                Cell::Time(v) => st.raw_bind_parameter(i, time.text(v, time_text)),
                Cell::Date(v) => st.raw_bind_parameter(i, date.text(v, date_text)),
                cell => st.raw_bind_parameter(i, Bound(cell)),
            };
            if let Err(e) = bound {
                failed.get_or_insert(e);
            }
        });
        if let Some(e) = failed {
            return Err(e.into());
        }
        n += st.raw_execute()?;
    }
    Ok(n)
}

/// A time as sqlx-sqlite binds it: RFC 3339 text (`AutoSi` fractions, `+00:00`).
fn time_text(v: DateTime<Utc>) -> String {
    v.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

/// A date as sqlx-sqlite binds it: `YYYY-MM-DD`.
fn date_text(v: NaiveDate) -> String {
    v.format("%F").to_string()
}

/// The text of the value last formatted, kept while the next values are the same.
struct Memo<K>(Option<(K, String)>);

impl<K> Default for Memo<K> {
    fn default() -> Self {
        Memo(None)
    }
}

impl<K: PartialEq + Copy> Memo<K> {
    fn text(&mut self, v: K, format: fn(K) -> String) -> &str {
        if self.0.as_ref().is_some_and(|(last, _)| *last != v) {
            self.0 = None;
        }
        &self.0.get_or_insert_with(|| (v, format(v))).1
    }
}

/// A cell bound as sqlx-sqlite binds its type (times and dates as [`time_text`] and
/// [`date_text`] put them).
pub(super) struct Bound<'a>(pub(super) Cell<'a>);

impl rusqlite::ToSql for Bound<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self.0 {
            Cell::Text(v) | Cell::OptText(Some(v)) => {
                ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes()))
            }
            Cell::Int(v) | Cell::OptInt(Some(v)) => ToSqlOutput::Owned(Value::Integer(v)),
            Cell::OptText(None) | Cell::OptInt(None) | Cell::OptDate(None) => {
                ToSqlOutput::Owned(Value::Null)
            }
            // As sqlx-sqlite binds a bool.
            Cell::Bool(v) => ToSqlOutput::Owned(Value::Integer(i64::from(v))),
            Cell::Bytes(v) => ToSqlOutput::Borrowed(ValueRef::Blob(v)),
            Cell::Time(v) => ToSqlOutput::Owned(Value::Text(time_text(v))),
            Cell::Date(v) | Cell::OptDate(Some(v)) => ToSqlOutput::Owned(Value::Text(date_text(v))),
        })
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        if let rusqlite::Error::SqliteFailure(f, msg) = &e {
            let message = msg.clone().unwrap_or_else(|| f.to_string());
            if let Some(classified) =
                StoreError::classify(&f.extended_code.to_string(), None, &message)
            {
                return classified;
            }
        }
        StoreError::Other(anyhow::Error::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::super::access::{Answer, AuditRow};
    use super::super::journal::{EntryRow, JournalTxRow};
    use super::super::{Conn, Db, DbConfig, StoreError};
    use super::{Cells, insert};
    use chrono::{NaiveDate, TimeZone, Utc};
    use rusqlite::types::Value;

    async fn memory() -> anyhow::Result<Db> {
        Db::open(&DbConfig {
            url: "sqlite::memory:".into(),
            max_connections: 1,
        })
        .await
    }

    /// Every stored value of a table, as SQLite holds it (type and bytes), in key order.
    async fn stored<T: Cells>(c: &mut Conn) -> anyhow::Result<Vec<Vec<Value>>> {
        let rows = c
            .with_sqlite(|x| {
                let sql = format!("SELECT {} FROM {} ORDER BY 1", T::COLUMNS, T::TABLE);
                let mut st = x.prepare(&sql)?;
                let rows = st.query_map([], |r| {
                    (0..T::N)
                        .map(|i| r.get::<_, Value>(i))
                        .collect::<Result<Vec<_>, _>>()
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await?;
        rows.ok_or_else(|| anyhow::anyhow!("not SQLite"))
    }

    /// Inserts `row` through sqlx, its values bound as sqlx-sqlite binds their Rust types.
    async fn through_the_driver<T: Cells>(c: &mut Conn, row: &T) -> anyhow::Result<()> {
        let mut args = sqlx::sqlite::SqliteArguments::default();
        let mut failed = Ok(());
        row.cells(&mut |cell| {
            if failed.is_ok() {
                failed = super::super::cells::add::<sqlx::Sqlite>(&mut args, cell);
            }
        });
        failed?;
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({})",
            T::TABLE,
            T::COLUMNS,
            super::super::list(super::super::Engine::Sqlite, T::N, 1)
        );
        let super::super::Raw::Sqlite(x) = c.raw() else {
            anyhow::bail!("not the driver's SQLite connection");
        };
        sqlx::query_with(&sql, args).execute(x).await?;
        Ok(())
    }

    /// Writes `a` through sqlx and `b` (the same values under another key: its first `key`
    /// columns) directly; the two stored rows must be the same but for the key.
    async fn same_either_way<T: Cells>(c: &mut Conn, key: usize, a: T, b: T) -> anyhow::Result<()> {
        through_the_driver(c, &a).await?;
        let n = c
            .with_sqlite(|x| insert(x, std::slice::from_ref(&b), ""))
            .await?;
        assert_eq!(n, Some(1));
        let rows = stored::<T>(c).await?;
        assert_eq!(rows.len(), 2, "{}", T::TABLE);
        assert_ne!(rows[0][..key], rows[1][..key]);
        assert_eq!(
            rows[0][key..],
            rows[1][key..],
            "{} stored differently",
            T::TABLE
        );
        Ok(())
    }

    #[tokio::test]
    async fn direct_rows_are_stored_as_sqlx_stores_them() -> anyhow::Result<()> {
        let db = memory().await?;
        let mut c = db.begin().await?;
        // A time with nanoseconds, one with none, and a date.
        let at = Utc
            .with_ymd_and_hms(2026, 11, 28, 1, 2, 3)
            .single()
            .unwrap_or_default()
            + chrono::Duration::nanoseconds(123_456_789);
        let whole = Utc
            .with_ymd_and_hms(2026, 12, 31, 23, 59, 59)
            .single()
            .unwrap_or_default();
        let day = NaiveDate::from_ymd_opt(2026, 2, 28).unwrap_or_default();
        let audit = |id: &str, at| AuditRow {
            audit_id: id.into(),
            principal: "institution:P15030000001".into(),
            rpc: "/medsettle.v1.Settlement/SettlePurchase".into(),
            request_id: "r-1".into(),
            outcome: "OK".into(),
            detail: "药店 swipe".into(),
            at,
        };
        same_either_way(&mut c, 1, audit("A1", at), audit("A2", at)).await?;
        let tx = |id: &str, at| JournalTxRow {
            journal_id: id.into(),
            kind: "purchase".into(),
            reference: "S1".into(),
            memo: String::new(),
            business_date: day,
            booked_at: at,
        };
        same_either_way(&mut c, 1, tx("J1", whole), tx("J2", whole)).await?;
        let entry = |id: &str| EntryRow {
            journal_id: id.into(),
            seq: 1,
            account: "pacct:P1".into(),
            amount_fen: -12_345,
        };
        same_either_way(&mut c, 1, entry("J1"), entry("J2")).await?;
        let answer = |r: &str| Answer {
            principal: "institution:P1".into(),
            request_id: r.into(),
            rpc: "SettlePurchase".into(),
            payload_hash: vec![0, 1, 254, 255],
            response: vec![],
            created_at: at,
            setl_id: Some("S1".into()),
        };
        same_either_way(&mut c, 2, answer("r1"), answer("r2")).await?;
        // And sqlx reads the direct rows back as they were.
        let listed = super::super::access::list_audit(&mut c, "", "", 10).await?;
        assert!(listed.iter().all(|a| a.at == at), "{listed:?}");
        let entries = super::super::journal::entries_of(&mut c, "J2", "J2").await?;
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].amount_fen, -12_345);
        c.rollback().await?;
        Ok(())
    }

    /// Rows of one call share a formatted time or date only while it is the same value: rows
    /// whose times and dates change from one to the next, and back, are stored as sqlx stores
    /// them one by one.
    #[tokio::test]
    async fn times_and_dates_of_many_rows() -> anyhow::Result<()> {
        let db = memory().await?;
        let mut c = db.begin().await?;
        let t1 = Utc
            .with_ymd_and_hms(2026, 11, 28, 1, 2, 3)
            .single()
            .unwrap_or_default();
        let t2 = t1 + chrono::Duration::microseconds(1);
        let d1 = NaiveDate::from_ymd_opt(2026, 11, 28).unwrap_or_default();
        let d2 = NaiveDate::from_ymd_opt(2026, 11, 29).unwrap_or_default();
        let tx = |id: String, business_date, booked_at| JournalTxRow {
            journal_id: id,
            kind: "purchase".into(),
            reference: "S1".into(),
            memo: String::new(),
            business_date,
            booked_at,
        };
        let shapes = [(d1, t1), (d1, t1), (d1, t2), (d2, t2), (d2, t1), (d1, t1)];
        let rows = |prefix: &str| -> Vec<JournalTxRow> {
            shapes
                .iter()
                .enumerate()
                .map(|(i, &(d, t))| tx(format!("{prefix}{i}"), d, t))
                .collect()
        };
        for row in rows("A") {
            through_the_driver(&mut c, &row).await?;
        }
        let n = c.with_sqlite(|x| insert(x, &rows("B"), "")).await?;
        assert_eq!(n, Some(shapes.len()));
        let stored = stored::<JournalTxRow>(&mut c).await?;
        let (by_sqlx, direct) = stored.split_at(shapes.len());
        for (a, b) in by_sqlx.iter().zip(direct) {
            assert_eq!(a[1..], b[1..], "{a:?} against {b:?}");
        }
        // And the values differ where the shapes do (the memo was not kept past a change).
        assert_ne!(direct[1][4], direct[3][4], "business dates");
        assert_ne!(direct[1][5], direct[2][5], "booked_at");
        assert_eq!(direct[0][4..], direct[5][4..]);
        c.rollback().await?;
        Ok(())
    }

    #[tokio::test]
    async fn direct_errors_are_classified() -> anyhow::Result<()> {
        let db = memory().await?;
        let mut c = db.begin().await?;
        let tx = JournalTxRow {
            journal_id: "J1".into(),
            kind: "purchase".into(),
            reference: "S1".into(),
            memo: String::new(),
            business_date: NaiveDate::from_ymd_opt(2026, 11, 28).unwrap_or_default(),
            booked_at: Utc::now(),
        };
        let rows = [tx.clone(), tx];
        // The second is skipped by a conflict clause, as the set-based insert skips it.
        let n = c
            .with_sqlite(|x| insert(x, &rows, " ON CONFLICT (journal_id) DO NOTHING"))
            .await?;
        assert_eq!(n, Some(1));
        let entry = EntryRow {
            journal_id: "J-missing".into(),
            seq: 1,
            account: "x".into(),
            amount_fen: 1,
        };
        // A key stored twice without a conflict clause is a unique violation.
        let twice = c.with_sqlite(|x| insert(x, &rows[..1], "")).await;
        assert!(matches!(twice, Err(StoreError::Unique { .. })), "{twice:?}");
        // A journal entry of no transaction breaks the foreign key: not retried, not unique.
        let orphan = c
            .with_sqlite(|x| insert(x, std::slice::from_ref(&entry), ""))
            .await;
        assert!(matches!(orphan, Err(StoreError::Other(_))), "{orphan:?}");
        c.rollback().await?;
        Ok(())
    }
}

//! Persistence behind one interface, with two native engines: SQLite (embedded default) and
//! PostgreSQL (production). Every query is written once: the [`on_conn!`] macro expands the same
//! body for each engine's concrete connection type, so SQL that both engines accept is shared
//! and engine-specific SQL stays visible at the one place it differs (see [`Conn::engine`]).

pub mod access;
pub mod batch;
pub mod cache;
pub mod catalogue;
pub mod cells;
pub mod checkpoint;
pub mod clearing;
pub mod derived;
pub mod direct;
pub mod durability;
pub mod events;
pub mod filings;
pub mod journal;
mod pcache;
pub mod persons;
pub mod pharmacy;
pub mod policies;
pub mod query;
pub mod reconciliation;
pub mod registry;
pub mod settlement;
mod walbuf;

use cache::Caches;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgConnection, PgPool, Postgres, SqliteConnection, SqlitePool, Transaction};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// Which database engine a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// Store failures, classified so that the service layer can react (retry, map to a status).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique or primary-key constraint was violated; `constraint` names it when the engine
    /// reports it (PostgreSQL), else the table/column text (SQLite).
    #[error("unique violation: {constraint}")]
    Unique { constraint: String },
    /// Serialization failure, deadlock or a busy SQLite database: run the transaction again.
    #[error("transient conflict, retry: {0}")]
    Retry(String),
    /// A CHECK constraint failed (a bound enforced by the schema).
    #[error("check violation: {0}")]
    Check(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl StoreError {
    /// The class of a database error code (PostgreSQL SQLSTATE or SQLite extended result code),
    /// None for the unclassified.
    fn classify(code: &str, constraint: Option<&str>, message: &str) -> Option<StoreError> {
        Some(match code {
            // PostgreSQL unique_violation; SQLite SQLITE_CONSTRAINT_UNIQUE / _PRIMARYKEY.
            "23505" | "2067" | "1555" => StoreError::Unique {
                constraint: constraint.unwrap_or(message).to_owned(),
            },
            // PostgreSQL serialization_failure, deadlock_detected; SQLite BUSY / LOCKED.
            "40001" | "40P01" | "5" | "6" | "261" | "262" | "517" => {
                StoreError::Retry(message.to_owned())
            }
            // PostgreSQL check_violation; SQLite SQLITE_CONSTRAINT_CHECK.
            "23514" | "275" => StoreError::Check(message.to_owned()),
            _ => return None,
        })
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            if let Some(classified) = StoreError::classify(&code, db.constraint(), db.message()) {
                return classified;
            }
        }
        StoreError::Other(anyhow::Error::new(e))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A connection pool on one of the two engines, with the caches of immutable versioned data
/// read from it (policy versions, catalogue versions).
#[derive(Clone, Debug)]
pub struct Db {
    pool: Pool,
    caches: Arc<Caches>,
    /// The swipe writer's lazy commits and their fsyncs (a SQLite database file only).
    durability: Option<Arc<durability::Durability>>,
    /// SQLite: the request ids stored since their key's last merge, kept for every writer (see
    /// [`access::RequestIdTail`]).
    request_ids: Arc<std::sync::Mutex<access::RequestIdTail>>,
    /// SQLite: this process's write transactions, one at a time and first come first served (see
    /// [`Db::write_turn`]).
    writes: Option<Arc<tokio::sync::Mutex<()>>>,
    /// SQLite: the lanes write transactions run in (see [`Db::lane`]).
    lanes: Option<Arc<tokio::sync::Semaphore>>,
}

#[derive(Clone, Debug)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Connection settings.
#[derive(Clone, Debug)]
pub struct DbConfig {
    /// `sqlite://path.db` (created when missing), `sqlite::memory:`, or `postgres://…`.
    pub url: String,
    /// Pool size.
    pub max_connections: u32,
}

impl Db {
    fn new(pool: Pool, durability: Option<Arc<durability::Durability>>) -> Db {
        let writes = matches!(pool, Pool::Sqlite(_)).then(Arc::default);
        let lanes =
            matches!(pool, Pool::Sqlite(_)).then(|| Arc::new(tokio::sync::Semaphore::new(LANES)));
        Db {
            pool,
            caches: Arc::new(Caches::default()),
            durability,
            request_ids: Arc::default(),
            writes,
            lanes,
        }
    }

    /// SQLite: waits for this process's turn to write (None on PostgreSQL), held until the
    /// transaction ends. SQLite has one writer at a time, and a connection that finds the write
    /// lock taken polls for it, sleeping between tries (1, 2, 5, 10 … 100 ms): with a few dozen
    /// concurrent calls its writers slept most of the time while the lock stood free — enrolments
    /// over gRPC ran at ≈ 70 a second on an idle machine (BENCHMARKS.md, session 24). Here they
    /// queue instead, and each is woken the moment the one before it ends. Taken before a pool
    /// connection, so that writers waiting their turn hold none. Another process writing the
    /// same file still meets SQLite's own wait.
    async fn write_turn(&self) -> StoreResult<Option<tokio::sync::OwnedMutexGuard<()>>> {
        let Some(writes) = &self.writes else {
            return Ok(None);
        };
        within_busy_timeout("turn to write", writes.clone().lock_owned())
            .await
            .map(Some)
    }

    /// A lane for a write transaction (see [`Lane`]); waits while every lane is taken.
    pub async fn lane(&self) -> StoreResult<Lane> {
        let Some(lanes) = &self.lanes else {
            return Ok(Lane(None));
        };
        match within_busy_timeout("lane to write in", lanes.clone().acquire_owned()).await? {
            Ok(permit) => Ok(Lane(Some(permit))),
            Err(_) => Err(StoreError::Other(anyhow::anyhow!(
                "the write lanes are closed"
            ))),
        }
    }

    /// SQLite: the map of the request ids' tail every writer of this database shares; used
    /// only inside write transactions, which SQLite runs one at a time.
    pub fn request_ids(&self) -> Arc<std::sync::Mutex<access::RequestIdTail>> {
        self.request_ids.clone()
    }

    /// Connects (creating a SQLite file when missing) and applies the migrations.
    pub async fn open(cfg: &DbConfig) -> anyhow::Result<Db> {
        let db = Self::connect(cfg).await?;
        db.migrate().await?;
        Ok(db)
    }

    /// Connects without migrating.
    pub async fn connect(cfg: &DbConfig) -> anyhow::Result<Db> {
        use anyhow::Context;
        let url = cfg.url.as_str();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url).context("parsing PostgreSQL URL")?;
            let pool = PgPoolOptions::new()
                .max_connections(cfg.max_connections)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await
                .context("connecting to PostgreSQL")?;
            Ok(Db::new(Pool::Postgres(pool), None))
        } else if url.starts_with("sqlite:") {
            install_page_cache();
            let opts = SqliteConnectOptions::from_str(url)
                .context("parsing SQLite URL")?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .foreign_keys(true)
                .busy_timeout(SQLITE_BUSY_TIMEOUT);
            let opts = SQLITE_PRAGMAS
                .iter()
                .chain([&POOL_MMAP])
                .fold(opts, |o, (name, value)| o.pragma(*name, *value));
            let file = opts.get_filename();
            let in_memory = file == std::path::Path::new(":memory:") || url.contains("mode=memory");
            let durability = if in_memory {
                None
            } else {
                Some(durability::Durability::start(file).context("starting the WAL syncer")?)
            };
            // Durable commits: every acknowledged write survives a power cut. On a file the
            // syncer makes write transactions durable after their COMMIT (see `durability` and
            // `Conn::commit`); SQLite's own fsync inside each COMMIT otherwise.
            let opts = opts.synchronous(match durability {
                Some(_) => SqliteSynchronous::Normal,
                None => SqliteSynchronous::Full,
            });
            // A file's WAL is checkpointed in the background; SQLite's own checkpoints stay as
            // the backstop (see `checkpoint`).
            let opts = match durability {
                Some(_) => opts.pragma(
                    "wal_autocheckpoint",
                    checkpoint::BACKSTOP_FRAMES.to_string(),
                ),
                None => opts,
            };
            // No ping before each acquire: a local connection's thread is there or the
            // connection errs at its first statement (a ping was one more round trip a call).
            let pool = SqlitePoolOptions::new()
                .max_connections(cfg.max_connections)
                .test_before_acquire(false)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await
                .context("opening SQLite database")?;
            Ok(Db::new(Pool::Sqlite(pool), durability))
        } else {
            anyhow::bail!("unsupported database URL (expected sqlite:… or postgres://…): {url}")
        }
    }

    /// Applies pending migrations (migrations/sqlite or migrations/postgres). No advisory
    /// locks: distributed PostgreSQL-wire engines do not all provide them.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        use anyhow::Context;
        match &self.pool {
            Pool::Sqlite(p) => {
                let mut m = sqlx::migrate!("migrations/sqlite");
                m.set_locking(false);
                // SQLite's procedure for rebuilding a table that others reference (0013): foreign
                // keys off while migrating (they cannot change inside the migration's
                // transaction), then every reference checked. The connection never returns to
                // the pool with them off.
                let started = std::time::Instant::now();
                let mut conn = p.acquire().await.context("migrating SQLite")?;
                let migrated = async {
                    // Migrations commit durably on their own (no syncer waits for them).
                    sqlx::query("PRAGMA foreign_keys = OFF; PRAGMA synchronous = FULL")
                        .execute(&mut *conn)
                        .await?;
                    let pending = log_pending(&mut *conn, &m).await?;
                    m.run(&mut *conn).await.context("migrating SQLite")?;
                    log_applied(pending, started);
                    let broken = sqlx::query("PRAGMA foreign_key_check")
                        .fetch_all(&mut *conn)
                        .await?;
                    anyhow::ensure!(
                        broken.is_empty(),
                        "migrating SQLite left {} rows whose foreign key points nowhere",
                        broken.len()
                    );
                    sqlx::query(if self.durability.is_some() {
                        "PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL"
                    } else {
                        "PRAGMA foreign_keys = ON"
                    })
                    .execute(&mut *conn)
                    .await?;
                    anyhow::Ok(())
                }
                .await;
                if migrated.is_err() {
                    conn.close_on_drop();
                }
                migrated?;
            }
            Pool::Postgres(p) => {
                let mut m = sqlx::migrate!("migrations/postgres");
                m.set_locking(false);
                let started = std::time::Instant::now();
                let mut conn = p.acquire().await.context("migrating PostgreSQL")?;
                let pending = log_pending(&mut *conn, &m).await?;
                m.run(&mut *conn).await.context("migrating PostgreSQL")?;
                log_applied(pending, started);
            }
        }
        Ok(())
    }

    /// A writer that keeps its own connection (see [`Writer`]).
    pub fn writer(&self) -> Writer {
        Writer {
            db: self.clone(),
            kept: Arc::new(std::sync::Mutex::new(None)),
            direct: Arc::new(std::sync::Mutex::new(None)),
            pg: Arc::new(std::sync::Mutex::new(None)),
        }
    }

    /// The lazy commits of this database's swipe writer (None: every commit is durable when it
    /// returns — PostgreSQL, or an in-memory SQLite database).
    pub fn durability(&self) -> Option<Arc<durability::Durability>> {
        self.durability.clone()
    }

    /// Claims a SQLite database file for this process's server (see
    /// [`durability::Durability::claim_server`]); nothing to claim on PostgreSQL.
    pub fn claim_server(&self) -> anyhow::Result<()> {
        match &self.durability {
            Some(d) => d.claim_server(),
            None => Ok(()),
        }
    }

    /// Returns once every swipe committed so far is on disk (see [`durability`]).
    pub async fn durable(&self) {
        if let Some(d) = &self.durability {
            d.barrier().await;
        }
    }

    pub fn engine(&self) -> Engine {
        match self.pool {
            Pool::Sqlite(_) => Engine::Sqlite,
            Pool::Postgres(_) => Engine::Postgres,
        }
    }

    /// Starts a write transaction. SQLite takes the write lock at once (`BEGIN IMMEDIATE`), so a
    /// transaction never fails half-way on a lock upgrade; PostgreSQL runs READ COMMITTED with
    /// explicit row locks (`SELECT … FOR UPDATE`, see [`Conn::for_update`]).
    pub async fn begin(&self) -> StoreResult<Conn> {
        let turn = self.write_turn().await?;
        let inner = match &self.pool {
            Pool::Sqlite(p) => {
                let mut lent = direct::Lent::new(p.acquire().await?);
                lent.begin().await?;
                Inner::Sqlite(lent)
            }
            Pool::Postgres(p) => Inner::PgTx(p.begin().await?),
        };
        Ok(Conn::new(
            inner,
            turn,
            self.durability.clone(),
            &self.caches,
        ))
    }

    /// A plain connection for reads (autocommit).
    pub async fn read(&self) -> StoreResult<Conn> {
        let inner = match &self.pool {
            Pool::Sqlite(p) => Inner::Sqlite(direct::Lent::new(p.acquire().await?)),
            Pool::Postgres(p) => Inner::Pg(p.acquire().await?),
        };
        Ok(Conn::new(inner, None, None, &self.caches))
    }

    /// (size, idle) of the pool.
    pub fn pool_usage(&self) -> (u32, usize) {
        match &self.pool {
            Pool::Sqlite(p) => (p.size(), p.num_idle()),
            Pool::Postgres(p) => (p.size(), p.num_idle()),
        }
    }

    /// The most connections the pool opens.
    pub fn pool_max(&self) -> u32 {
        match &self.pool {
            Pool::Sqlite(p) => p.options().get_max_connections(),
            Pool::Postgres(p) => p.options().get_max_connections(),
        }
    }

    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }
}

/// Waits for `what` as long as a SQLite connection waits for another's write lock; after that a
/// transient error (the call may be retried).
async fn within_busy_timeout<T>(
    what: &str,
    wait: impl std::future::Future<Output = T>,
) -> StoreResult<T> {
    tokio::time::timeout(SQLITE_BUSY_TIMEOUT, wait)
        .await
        .map_err(|_| {
            StoreError::Retry(format!(
                "no {what} within {} s",
                SQLITE_BUSY_TIMEOUT.as_secs()
            ))
        })
}

/// How long a SQLite connection waits for another's write lock.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Logs each migration `m` is about to apply on `conn` (one may take a while: sqlite/0013
/// rebuilds the settlement table, ≈ 25 s a million settlements), and returns how many.
async fn log_pending<C>(conn: &mut C, m: &sqlx::migrate::Migrator) -> anyhow::Result<usize>
where
    C: sqlx::migrate::Migrate + Send + ?Sized,
{
    conn.ensure_migrations_table().await?;
    let applied: std::collections::HashSet<i64> = conn
        .list_applied_migrations()
        .await?
        .into_iter()
        .map(|a| a.version)
        .collect();
    let pending: Vec<_> = m
        .iter()
        .filter(|x| x.migration_type.is_up_migration() && !applied.contains(&x.version))
        .collect();
    for x in &pending {
        tracing::info!(version = x.version, description = %x.description, "migration pending");
    }
    Ok(pending.len())
}

/// Logs that `pending` migrations were applied, if any, and how long they took.
fn log_applied(pending: usize, started: std::time::Instant) {
    if pending > 0 {
        tracing::info!(applied = pending, elapsed = ?started.elapsed(), "migrations applied");
    }
}

/// Settings of every SQLite connection besides WAL mode, foreign keys and the busy timeout: a
/// 64 MiB page cache (the hot rows stay in memory).
const SQLITE_PRAGMAS: [(&str, &str); 2] = [("cache_size", "-65536"), ("temp_store", "memory")];

/// The pool's connections also read through a memory map of the file. Not the swipe writer's
/// or the checkpointer's ([`open_direct`]): SQLite unmaps the whole file from a connection
/// whenever another connection has committed since its last transaction, and maps it again
/// page fault by page fault — the writer's lot after every hospital call's commit (its CPU a
/// swipe 185 → 168 µs unmapped beside 100 flows a second, the same with swipes alone), and the
/// checkpointer's at every pass (it only copies WAL frames into the file).
const POOL_MMAP: (&str, &str) = ("mmap_size", "268435456");

/// One long-lived writer's transactions (the swipe batcher's). On SQLite its connection is kept
/// from one transaction to the next, outside the pool: its page cache stays warm (SQLite drops a
/// connection's cache whenever another connection wrote since it last ran, and the pool hands
/// its idle connections out in turn), and no pool round trips (a ping on release, another on
/// acquire) stand between two transactions. On a SQLite file that connection is outside the
/// driver too: its statements run on the writer's own thread, where each statement sent through
/// sqlx is a round trip to the driver's thread for the connection (and every wake-up of a thread
/// costs 0.15–0.5 ms on a busy virtual machine; a batch made about ten). An in-memory database
/// can only be reached through the driver, which names it. On PostgreSQL transactions come from
/// the pool.
pub struct Writer {
    db: Db,
    /// The driver's SQLite connection between two transactions (an in-memory database); None
    /// before the first, or after a transaction that did not end cleanly (its connection was
    /// closed, which rolls it back).
    kept: Arc<std::sync::Mutex<Option<SqliteConnection>>>,
    /// The same for a SQLite file: a connection of the writer's own, outside the driver.
    direct: Arc<std::sync::Mutex<Option<rusqlite::Connection>>>,
    /// The same on PostgreSQL: a connection of the writer's own, outside the pool, opened on
    /// the writer's thread (see [`Writer::begin`]).
    pg: Arc<std::sync::Mutex<Option<PgConnection>>>,
}

impl Writer {
    /// Starts a write transaction, like [`Db::begin`].
    ///
    /// On PostgreSQL the transaction runs on a connection of the writer's own, outside the pool,
    /// opened by the writer's first transaction and kept between them: the swipe writers run
    /// on threads of their own (`swipe_batch::Batcher`), and a connection opened there is
    /// watched by that thread's runtime, so each of a batch's statements wakes the writer
    /// directly when PostgreSQL answers — not a task queued behind every gRPC call on the
    /// server's runtime, whose reactor would see the answer.
    pub async fn begin(&self) -> StoreResult<Conn> {
        use sqlx::ConnectOptions;
        let pool = match &self.db.pool {
            Pool::Sqlite(pool) => pool,
            Pool::Postgres(pool) => return self.begin_pg(pool).await,
        };
        let turn = self.db.write_turn().await?;
        if self.db.durability.is_some() {
            return self.begin_direct(pool, turn);
        }
        let mut conn = match take_kept(&self.kept) {
            Some(c) => c,
            None => pool.connect_options().connect().await?,
        };
        sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await?;
        let inner = Inner::SqliteKept(Kept {
            conn,
            home: self.kept.clone(),
        });
        Ok(Conn::new(inner, turn, None, &self.db.caches))
    }

    /// [`Writer::begin`] on PostgreSQL.
    async fn begin_pg(&self, pool: &PgPool) -> StoreResult<Conn> {
        use sqlx::ConnectOptions;
        let mut conn = match take_kept(&self.pg) {
            Some(c) => c,
            None => pool.connect_options().connect().await?,
        };
        // As sqlx begins a pool's transaction.
        sqlx::query("BEGIN").execute(&mut conn).await?;
        let inner = Inner::PgKept(Kept {
            conn,
            home: self.pg.clone(),
        });
        Ok(Conn::new(inner, None, None, &self.db.caches))
    }

    /// Closes the writer's own PostgreSQL connection, if it has one (a writer that stops).
    pub async fn close(&self) {
        use sqlx::Connection;
        if let Some(c) = take_kept(&self.pg)
            && let Err(e) = c.close().await
        {
            tracing::debug!(error = %e, "closing the swipe writer's connection");
        }
    }

    /// [`Writer::begin`] on a SQLite file: BEGIN IMMEDIATE on the writer's own connection
    /// (opened on first use), run on the calling thread.
    fn begin_direct(
        &self,
        pool: &SqlitePool,
        turn: Option<tokio::sync::OwnedMutexGuard<()>>,
    ) -> StoreResult<Conn> {
        let x = match take_kept(&self.direct) {
            Some(x) => x,
            None => open_direct(pool.connect_options().get_filename())?,
        };
        if self.db.durability.as_ref().is_some_and(|d| d.restart_due()) {
            checkpoint::finish(&x);
        }
        if let Err(e) = x.execute_batch("BEGIN IMMEDIATE") {
            // Nothing begun (the lock stayed busy): the connection waits for the next.
            keep(&self.direct, x);
            return Err(e.into());
        }
        let inner = Inner::Direct(Direct {
            x,
            home: self.direct.clone(),
        });
        Ok(Conn::new(
            inner,
            turn,
            self.db.durability.clone(),
            &self.db.caches,
        ))
    }

    /// Commits a transaction begun by [`Writer::begin`]; what it wrote is visible now and
    /// durable once [`Committed::durable`] returns.
    pub async fn commit(&self, conn: Conn) -> StoreResult<Committed> {
        conn.commit_lazily().await
    }
}

/// A committed writer transaction, durable once [`Committed::durable`] returns.
pub struct Committed {
    ticket: Option<(u64, Arc<durability::Durability>)>,
}

impl Committed {
    /// Waits for the fsync that makes this commit durable (at once where commits are durable
    /// when they return).
    pub async fn durable(self) {
        if let Some((ticket, d)) = self.ticket {
            d.wait(ticket).await;
        }
    }

    /// Runs `f` once the commit is durable: at once where commits are durable when they return,
    /// else on the syncer's thread after its fsync (see [`durability::Durability::then`]). `f`
    /// must be quick and must not block: every later commit's callers wait behind it.
    pub fn then(self, f: impl FnOnce() + Send + 'static) {
        match self.ticket {
            Some((ticket, d)) => d.then(ticket, Box::new(f)),
            None => f(),
        }
    }
}

/// A write transaction on a [`Writer`]'s connection through the driver (an in-memory SQLite
/// database's, begun with BEGIN IMMEDIATE, or PostgreSQL's). Dropped unfinished, the connection
/// closes (the database rolls the transaction back) and the writer opens another.
struct Kept<C> {
    conn: C,
    home: Arc<std::sync::Mutex<Option<C>>>,
}

/// A [`Writer`]'s own connection, taken from where it is kept between transactions (None: it
/// has none yet, or it was closed).
fn take_kept<C>(home: &std::sync::Mutex<Option<C>>) -> Option<C> {
    home.lock().ok().and_then(|mut k| k.take())
}

/// Hands a [`Writer`]'s own connection back, its transaction ended (or never begun).
fn keep<C>(home: &std::sync::Mutex<Option<C>>, conn: C) {
    if let Ok(mut home) = home.lock() {
        *home = Some(conn);
    }
}

impl Kept<SqliteConnection> {
    /// Ends the transaction (`COMMIT` or `ROLLBACK`) and hands the connection back to its
    /// writer; on failure the connection is closed instead.
    async fn end(self, sql: &'static str) -> StoreResult<()> {
        let Kept { mut conn, home } = self;
        sqlx::query(sql).execute(&mut conn).await?;
        keep(&home, conn);
        Ok(())
    }
}

impl Kept<PgConnection> {
    /// As [`Kept::<SqliteConnection>::end`].
    async fn end(self, sql: &'static str) -> StoreResult<()> {
        let Kept { mut conn, home } = self;
        sqlx::query(sql).execute(&mut conn).await?;
        keep(&home, conn);
        Ok(())
    }
}

/// Chooses SQLite's page cache ([`pcache`]), if the process has not opened a SQLite connection
/// yet (it is a choice made once, before SQLite initializes).
fn install_page_cache() {
    if let Err(why) = pcache::install() {
        tracing::debug!(%why, "SQLite's default page cache stays");
    }
}

/// Rows whose foreign key points at no row (at most `limit`, as "table row → parent"): SQLite's
/// `PRAGMA foreign_key_check` over the whole file (the swipe writer does not enforce them, see
/// [`open_direct`]); none on PostgreSQL, which enforces every one at every write.
pub async fn reference_breaks(c: &mut Conn, limit: i64) -> StoreResult<Vec<String>> {
    let found = c
        .with_sqlite(|x| {
            let mut st = x.prepare(
                "SELECT \"table\" || ' ' || COALESCE('row ' || rowid, 'a row') || ' → ' || parent \
                 FROM pragma_foreign_key_check LIMIT ?1",
            )?;
            let found = st.query_map([limit], |r| r.get(0))?;
            Ok(found.collect::<rusqlite::Result<Vec<String>>>()?)
        })
        .await?;
    Ok(found.unwrap_or_default())
}

/// Opens the swipe writer's connection to a SQLite file outside the driver (see [`Writer`]),
/// set up as the pool's connections are but for the memory map ([`POOL_MMAP`]), with lazy
/// commits (the syncer makes them durable before anyone is answered, see [`durability`]); its
/// WAL is checkpointed in the background, SQLite's autocheckpoint only a backstop (see
/// [`checkpoint`]). The checkpointer's connection is opened the same way.
///
/// Foreign keys are not enforced on this connection: every reference a swipe batch writes is
/// one it made or read in the same transaction — the settlement's and accumulator's person
/// (loaded, and no other connection can write meanwhile), the lines' settlement and the
/// entries' journal transaction (inserted just before) — so the checks could only ever pass, and
/// cost the writer a B-tree seek of the parent's text key for every child row (ten a swipe; ≈ 7 %
/// of its time at 5,000 swipes/s, BENCHMARKS.md session 18). The pool's connections still
/// enforce them (every other write, and every delete of a parent), and `verify` checks every
/// reference in the file (`references_hold`).
fn open_direct(file: &std::path::Path) -> StoreResult<rusqlite::Connection> {
    use rusqlite::OpenFlags;
    // Its WAL appends reach the file in one write per commit (see [`walbuf`]).
    let vfs = walbuf::register().map_err(|e| anyhow::anyhow!("registering the WAL VFS: {e}"))?;
    let x = rusqlite::Connection::open_with_flags_and_vfs(
        file,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        vfs,
    )?;
    x.busy_timeout(SQLITE_BUSY_TIMEOUT)?;
    let mut setup = String::from("PRAGMA foreign_keys = OFF; PRAGMA synchronous = NORMAL; ");
    for (name, value) in SQLITE_PRAGMAS {
        setup.push_str(&format!("PRAGMA {name} = {value}; "));
    }
    setup.push_str(&format!(
        "PRAGMA wal_autocheckpoint = {};",
        checkpoint::BACKSTOP_FRAMES
    ));
    x.execute_batch(&setup)?;
    // Every statement of a batch stays prepared from one batch to the next.
    x.set_prepared_statement_cache_capacity(64);
    Ok(x)
}

/// A write transaction on a [`Writer`]'s own SQLite connection, begun with BEGIN IMMEDIATE.
/// Dropped unfinished, the connection closes (SQLite rolls the transaction back) and the writer
/// opens another.
struct Direct {
    x: rusqlite::Connection,
    home: Arc<std::sync::Mutex<Option<rusqlite::Connection>>>,
}

impl Direct {
    /// Ends the transaction (`COMMIT` or `ROLLBACK`) and hands the connection back to its
    /// writer; on failure the connection is closed instead.
    fn end(self, sql: &str) -> StoreResult<()> {
        let Direct { x, home } = self;
        x.execute_batch(sql)?;
        keep(&home, x);
        Ok(())
    }
}

/// A connection: inside a transaction (from [`Db::begin`]) or not (from [`Db::read`]), with its
/// database's caches.
pub struct Conn {
    inner: Inner,
    /// A SQLite write transaction's turn ([`Db::write_turn`]), given up once `inner` has ended
    /// it (fields drop in order).
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
    /// A write transaction on a SQLite file (the pool's or the swipe writer's): its COMMIT is
    /// made durable by the syncer (see [`Conn::commit_lazily`]).
    lazy: Option<Arc<durability::Durability>>,
    caches: Arc<Caches>,
    /// Settlement rows booked in this transaction (id and figures): the metrics count them
    /// once it commits, and the call's idempotency row names the first.
    booked: Vec<(String, crate::metrics::Booked)>,
}

enum Inner {
    /// A pool's SQLite connection, in a write transaction or not (see [`direct::Lent`]).
    Sqlite(direct::Lent),
    PgTx(Transaction<'static, Postgres>),
    Pg(PoolConnection<Postgres>),
    SqliteKept(Kept<SqliteConnection>),
    /// A PostgreSQL swipe writer's transaction on its own connection (see [`Writer::begin`]).
    PgKept(Kept<PgConnection>),
    Direct(Direct),
}

/// SQLite write transactions in lanes at once at most (see [`Lane`]).
const LANES: usize = 4;

/// A lane to run a SQLite write transaction in, turn and all ([`Db::lane`]). Two things:
/// - There are few lanes ([`LANES`]), so few pool transactions queue for the turn to write at
///   once: the swipe writer, which queues for it too (first come, first served), waits behind
///   a few hospital calls at most, not behind every one in flight; the rest wait for a lane.
/// - The transaction runs on the calling thread, out of the runtime's queue. Its statements
///   run on that thread (the connection's handle lent to it, see [`direct::Lent`]), but it
///   waits for the turn and for the handle, and each wake-up of an ordinary task waits behind
///   every task queued on the runtime (hundreds of swipe calls under load). In its lane the
///   thread blocks on the transaction alone (the runtime's other tasks handed to another
///   thread, see `tokio::task::block_in_place`): the turn when the transaction before it ends,
///   and the driver's thread handing over the handle, wake it at once.
///
/// Measured with 100 hospital flows a second among 1,900 swipes (BENCHMARKS.md, session 26): the
/// swipes' p99 a third of what it was, the flows' median a third lower; the few lanes alone did
/// the first, the thread the second. On PostgreSQL, or on a single-threaded runtime (which
/// cannot hand its tasks over), there is no lane: the transaction is awaited as usual.
pub struct Lane(Option<tokio::sync::OwnedSemaphorePermit>);

impl Lane {
    /// Runs `transaction` in this lane.
    pub async fn run<F: std::future::Future>(self, transaction: F) -> F::Output {
        use tokio::runtime::{Handle, RuntimeFlavor};
        match Handle::try_current() {
            Ok(rt) if self.0.is_some() && rt.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(move || rt.block_on(transaction))
            }
            _ => transaction.await,
        }
    }
}

/// The engine-specific connection behind a [`Conn`].
pub enum Raw<'a> {
    Sqlite(&'a mut SqliteConnection),
    Pg(&'a mut PgConnection),
    /// The swipe writer's SQLite connection outside the driver (see [`Writer`]): statements run
    /// on it through [`Conn::with_sqlite`] and [`cells::insert`]; one sent through sqlx fails.
    Direct(&'a rusqlite::Connection),
}

impl Conn {
    /// A connection in `inner`, holding the write `turn` it took, committing through `lazy`.
    fn new(
        inner: Inner,
        turn: Option<tokio::sync::OwnedMutexGuard<()>>,
        lazy: Option<Arc<durability::Durability>>,
        caches: &Arc<Caches>,
    ) -> Conn {
        Conn {
            inner,
            _turn: turn,
            lazy,
            caches: caches.clone(),
            booked: Vec::new(),
        }
    }

    pub fn raw(&mut self) -> Raw<'_> {
        match &mut self.inner {
            // A statement through the driver: its thread takes the handle back.
            Inner::Sqlite(c) => Raw::Sqlite(c.driver()),
            Inner::PgTx(t) => Raw::Pg(t),
            Inner::Pg(c) => Raw::Pg(c),
            Inner::SqliteKept(k) => Raw::Sqlite(&mut k.conn),
            Inner::PgKept(k) => Raw::Pg(&mut k.conn),
            Inner::Direct(d) => Raw::Direct(&d.x),
        }
    }

    /// The PostgreSQL connection, for statements only PostgreSQL runs (array parameters); an
    /// error on SQLite.
    pub fn pg(&mut self) -> StoreResult<&mut PgConnection> {
        match self.raw() {
            Raw::Pg(x) => Ok(x),
            Raw::Sqlite(_) | Raw::Direct(_) => Err(StoreError::Other(anyhow::anyhow!(
                "a PostgreSQL-only statement on SQLite"
            ))),
        }
    }

    pub fn engine(&self) -> Engine {
        match self.inner {
            Inner::Sqlite(_) | Inner::SqliteKept(_) | Inner::Direct(_) => Engine::Sqlite,
            Inner::PgTx(_) | Inner::Pg(_) | Inner::PgKept(_) => Engine::Postgres,
        }
    }

    /// The caches of this connection's database.
    pub fn caches(&self) -> Arc<Caches> {
        self.caches.clone()
    }

    /// Notes a settlement row booked in this transaction (the metrics count it after the commit,
    /// and the call's idempotency row names it: see `App::finish_call`; a rolled-back
    /// transaction takes its notes with it).
    pub fn note_booked(&mut self, s: &settlement::SettlementRow) {
        self.booked
            .push((s.setl_id.clone(), crate::metrics::Booked::of(s)));
    }

    /// The first settlement booked in this transaction so far: the one a call booked.
    pub fn first_booked(&self) -> Option<&str> {
        self.booked.first().map(|(id, _)| id.as_str())
    }

    /// The settlement rows noted so far, taken out (to count once the commit succeeds).
    pub fn take_booked(&mut self) -> Vec<crate::metrics::Booked> {
        std::mem::take(&mut self.booked)
            .into_iter()
            .map(|(_, b)| b)
            .collect()
    }

    /// Row-lock suffix for a SELECT inside a write transaction: PostgreSQL locks the rows;
    /// SQLite already holds the database write lock (BEGIN IMMEDIATE).
    pub fn for_update(&self) -> &'static str {
        match self.engine() {
            Engine::Postgres => " FOR UPDATE",
            Engine::Sqlite => "",
        }
    }

    /// Commits a transaction, durably once this returns; a plain connection has nothing to
    /// commit.
    pub async fn commit(self) -> StoreResult<()> {
        self.commit_lazily().await?.durable().await;
        Ok(())
    }

    /// Commits a transaction; durable once [`Committed::durable`] returns. A pool transaction on
    /// a SQLite file commits lazily, as the swipe writer does (see [`durability`]): its COMMIT
    /// returns once written to the WAL and the next writer takes its turn, and the syncer's
    /// fsync — shared with every commit meanwhile — makes it durable. (With SQLite's own fsync
    /// inside each COMMIT every other writer waited for it.) Any other commit is durable when
    /// this returns.
    pub async fn commit_lazily(self) -> StoreResult<Committed> {
        let Conn { inner, lazy, .. } = self;
        match inner {
            // A pool transaction's COMMIT runs here, on the lent handle (lent first: nothing
            // waits between the ticket and its end).
            Inner::Sqlite(mut x) if x.is_open() => {
                x.view().await?;
                return commit_here(lazy, || x.end("COMMIT"));
            }
            // The swipe writer's own connection (a SQLite file's: always lazy).
            Inner::Direct(x) => return commit_here(lazy, || x.end("COMMIT")),
            Inner::PgTx(t) => t.commit().await?,
            Inner::SqliteKept(k) => k.end("COMMIT").await?,
            Inner::PgKept(k) => k.end("COMMIT").await?,
            Inner::Sqlite(_) | Inner::Pg(_) => {}
        }
        Ok(Committed { ticket: None })
    }

    /// Rolls back a transaction (dropping it does the same, without waiting).
    pub async fn rollback(self) -> StoreResult<()> {
        match self.inner {
            Inner::Sqlite(mut x) if x.is_open() => {
                x.view().await?;
                x.end("ROLLBACK")?;
            }
            Inner::PgTx(t) => t.rollback().await?,
            Inner::SqliteKept(k) => k.end("ROLLBACK").await?,
            Inner::PgKept(k) => k.end("ROLLBACK").await?,
            Inner::Direct(d) => d.end("ROLLBACK")?,
            Inner::Sqlite(_) | Inner::Pg(_) => {}
        }
        Ok(())
    }
}

/// Runs a COMMIT here and now (`end`); with a syncer (`lazy`), as a lazy one: counted from its
/// ticket to its end, durable once the returned [`Committed`] is.
fn commit_here(
    lazy: Option<Arc<durability::Durability>>,
    end: impl FnOnce() -> StoreResult<()>,
) -> StoreResult<Committed> {
    let Some(d) = lazy else {
        end()?;
        return Ok(Committed { ticket: None });
    };
    let ticket = d.begin();
    let done = end();
    d.ended(ticket);
    done?;
    Ok(Committed {
        ticket: Some((ticket, d)),
    })
}

/// Runs the same body against whichever engine `conn` is on: `on_conn!(conn, c => query.fetch_one(c).await)`.
/// `c` is `&mut SqliteConnection` in one expansion and `&mut PgConnection` in the other.
#[macro_export]
macro_rules! on_conn {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn.raw() {
            $crate::store::Raw::Sqlite($c) => $body,
            $crate::store::Raw::Pg($c) => $body,
            $crate::store::Raw::Direct(_) => Err(sqlx::Error::Protocol(
                "a statement through the driver on the swipe writer's own connection".into(),
            )),
        }
    };
}

/// Keyset paging: a page size from the request (0 → 100, capped at 1000).
pub fn page_size(requested: u32) -> i64 {
    match requested {
        0 => 100,
        n => i64::from(n.min(1000)),
    }
}

/// Splits `rows` fetched with LIMIT page+1 into the page and the next token.
pub fn page<T>(mut rows: Vec<T>, size: i64, key: impl Fn(&T) -> String) -> (Vec<T>, String) {
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    if rows.len() > size {
        rows.truncate(size);
        let token = rows.last().map(|r| hex::encode(key(r))).unwrap_or_default();
        (rows, token)
    } else {
        (rows, String::new())
    }
}

/// Decodes a page token back to the last key of the previous page ("" for the first page).
pub fn page_after(token: &str) -> Option<String> {
    if token.is_empty() {
        return Some(String::new());
    }
    hex::decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
}

/// A new explicit key: `prefix` + 12 hex digits of milliseconds since the epoch + 16 random hex
/// digits. Keys sort by creation time (to the millisecond) and need no sequence or SERIAL.
pub fn new_id(prefix: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    let ms = u64::try_from(now.timestamp_millis()).unwrap_or(0);
    format!("{prefix}{ms:012x}{:016x}", rand::random::<u64>())
}

/// Placeholders for `rows` rows of `cols` values, for multi-row VALUES lists both engines
/// accept: `($1,$2,…),…` numbered from `first` on PostgreSQL; `(?,?,…),…` on SQLite, whose
/// named-parameter lookup is linear per parameter (quadratic for a big statement), while
/// anonymous `?` binds in order at no cost. Callers bind in the order the placeholders appear.
pub fn values(engine: Engine, rows: usize, cols: usize, first: usize) -> String {
    let mut s = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        if r > 0 {
            s.push(',');
        }
        s.push('(');
        s.push_str(&list(engine, cols, first + r * cols));
        s.push(')');
    }
    s
}

/// `n` placeholders separated by commas (see [`values`]), e.g. for `IN (…)`.
pub fn list(engine: Engine, n: usize, first: usize) -> String {
    let mut s = String::with_capacity(n * 5);
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        match engine {
            Engine::Sqlite => s.push('?'),
            Engine::Postgres => {
                s.push('$');
                s.push_str(&(first + i).to_string());
            }
        }
    }
    s
}

/// Rows per multi-row statement for `cols` columns: under SQLite's 32,766 and PostgreSQL's
/// 65,535 bound parameters.
pub fn chunk_rows(cols: usize) -> usize {
    (30_000 / cols.max(1)).max(1)
}

/// A fresh directory under the system's temp directory, removed when dropped: where the tests of
/// the SQLite file machinery (WAL, checkpoints, durability) put their databases.
#[cfg(test)]
pub(crate) struct TempDir(pub(crate) std::path::PathBuf);

#[cfg(test)]
impl TempDir {
    /// `medsettle-{name}-{random}` under the temp directory, created.
    pub(crate) fn new(name: &str) -> anyhow::Result<TempDir> {
        let dir =
            std::env::temp_dir().join(format!("medsettle-{name}-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

#[cfg(test)]
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    /// SQLite write transactions of this process take turns, first come first served, and those
    /// waiting hold no pool connection: a read goes on meanwhile, and the writers go in the
    /// order they came once the transaction ahead ends — the pool writer's and the swipe
    /// writer's alike. (Waiting in SQLite's busy handler instead, each waiter held a connection:
    /// with a pool of two, the read found none.)
    #[tokio::test]
    async fn write_transactions_take_turns_in_order_holding_no_connection() -> anyhow::Result<()> {
        let (_dir, db) = file_db("turns").await?;
        let first = db.begin().await?;
        let (came, mut order) = tokio::sync::mpsc::unbounded_channel();
        let mut waiting = Vec::new();
        for i in 0..4 {
            let (db, came) = (db.clone(), came.clone());
            waiting.push(tokio::spawn(async move {
                // The third comes through the swipe writer.
                if i == 2 {
                    let w = db.writer();
                    let conn = w.begin().await?;
                    let _ = came.send(i);
                    w.commit(conn).await?.durable().await;
                } else {
                    let conn = db.begin().await?;
                    let _ = came.send(i);
                    conn.commit().await?;
                }
                anyhow::Ok(())
            }));
            // The test's runtime has one thread: the task runs until it waits for its turn.
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
        }
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), db.read()).await;
        let Ok(Ok(mut conn)) = read else {
            anyhow::bail!("no connection to read with while writers wait");
        };
        let one: i64 =
            crate::on_conn!(&mut conn, x => sqlx::query_scalar("SELECT 1").fetch_one(x).await)?;
        assert_eq!(one, 1);
        drop(conn);
        assert!(order.try_recv().is_err(), "a writer went before its turn");
        first.commit().await?;
        for w in waiting {
            tokio::time::timeout(std::time::Duration::from_secs(30), w).await???;
        }
        let order: Vec<i32> = std::iter::from_fn(|| order.try_recv().ok()).collect();
        assert_eq!(order, [0, 1, 2, 3]);
        Ok(())
    }

    /// A pool write transaction on a SQLite file commits without an fsync of its own (its
    /// connection runs `synchronous = NORMAL`, the migrations' connection too once they are
    /// done) and returns only once the syncer has made it durable.
    #[tokio::test]
    async fn pool_commits_are_lazy_and_return_durable() -> anyhow::Result<()> {
        use futures::FutureExt;
        let (_dir, db) = file_db("lazy").await?;
        let Some(d) = db.durability() else {
            anyhow::bail!("a SQLite file has a syncer");
        };
        for i in 0..20 {
            let mut conn = db.begin().await?;
            let sync: i64 = crate::on_conn!(&mut conn, x =>
                sqlx::query_scalar("PRAGMA synchronous").fetch_one(x).await)?;
            assert_eq!(sync, 1, "synchronous = NORMAL");
            let row = super::access::AuditRow {
                audit_id: format!("A-lazy-{i}"),
                principal: "test".into(),
                rpc: "/test/Lazy".into(),
                request_id: format!("r{i}"),
                outcome: "OK".into(),
                detail: String::new(),
                at: chrono::Utc::now(),
            };
            super::access::insert_audit(&mut conn, &row).await?;
            conn.commit().await?;
            assert!(
                d.barrier().now_or_never().is_some(),
                "commit {i} returned before the fsync that makes it durable"
            );
        }
        Ok(())
    }

    /// A transaction in its lane ([`super::Lane`]) is not queued behind the runtime's tasks:
    /// with the runtime's one worker taken by a task that blocks it, the transaction's wake-up
    /// (from another thread, as the driver's replies come) still reaches it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_transaction_in_its_lane_is_not_queued_behind_the_runtime() -> anyhow::Result<()> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let (reply, replied) = tokio::sync::oneshot::channel::<()>();
        let (entered, in_lane) = tokio::sync::oneshot::channel::<()>();
        let blocked_done = std::sync::Arc::new(AtomicBool::new(false));
        let transaction = tokio::spawn({
            let blocked_done = blocked_done.clone();
            async move {
                let permit =
                    std::sync::Arc::new(tokio::sync::Semaphore::new(1)).try_acquire_owned()?;
                super::Lane(Some(permit))
                    .run(async move {
                        let _ = entered.send(());
                        let _ = replied.await;
                    })
                    .await;
                // Whether it had to wait for the blocking task to end.
                anyhow::Ok(blocked_done.load(Ordering::SeqCst))
            }
        });
        in_lane.await?;
        let blocking = tokio::spawn({
            let blocked_done = blocked_done.clone();
            async move {
                std::thread::sleep(std::time::Duration::from_secs(1));
                blocked_done.store(true, Ordering::SeqCst);
            }
        });
        let driver = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            let _ = reply.send(());
        });
        assert!(
            !transaction.await??,
            "the transaction waited for the runtime's blocked worker"
        );
        blocking.await?;
        let _ = driver.join();
        Ok(())
    }

    /// A database in a SQLite file of its own (deleted with the directory), two connections.
    pub(super) async fn file_db(name: &str) -> anyhow::Result<(super::TempDir, super::Db)> {
        let dir = super::TempDir::new(name)?;
        let url = format!("sqlite://{}", dir.0.join("t.db").display());
        let db = super::Db::open(&super::DbConfig {
            url,
            max_connections: 2,
        })
        .await?;
        Ok((dir, db))
    }

    /// The swipe writer's connection leaves references to the batch that makes them (see
    /// `open_direct`); the pool's connections still refuse a broken one, and `verify`'s check
    /// finds one that got in.
    #[tokio::test]
    async fn references_the_writer_does_not_check_are_checked_by_verify() -> anyhow::Result<()> {
        let (_dir, db) = file_db("references").await?;
        assert!(
            super::reference_breaks(&mut db.read().await?, 10)
                .await?
                .is_empty()
        );
        let dangling = "INSERT INTO journal_entry (journal_id, seq, account, amount_fen) \
                        VALUES ('J-none', 1, 'cash', 5)";
        // A pool connection refuses an entry of no journal transaction.
        let mut pooled = db.begin().await?;
        let refused =
            crate::on_conn!(&mut pooled, x => sqlx::query(dangling).execute(x).await.map(|_| ()));
        let refused = refused.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refused.contains("FOREIGN KEY"), "{refused}");
        drop(pooled);
        // The writer's connection takes it (its batches only ever reference their own rows).
        let w = db.writer();
        let mut conn = w.begin().await?;
        conn.with_sqlite(|x| Ok(x.execute(dangling, [])?)).await?;
        w.commit(conn).await?.durable().await;
        let broken = super::reference_breaks(&mut db.read().await?, 10).await?;
        assert_eq!(broken, ["journal_entry a row → journal_tx"]);
        Ok(())
    }

    #[test]
    fn values_lists() {
        use super::Engine::{Postgres, Sqlite};
        assert_eq!(super::values(Postgres, 2, 3, 1), "($1,$2,$3),($4,$5,$6)");
        assert_eq!(super::values(Postgres, 1, 2, 5), "($5,$6)");
        assert_eq!(super::values(Sqlite, 2, 2, 1), "(?,?),(?,?)");
        assert_eq!(super::list(Postgres, 3, 2), "$2,$3,$4");
        assert_eq!(super::chunk_rows(36), 833);
    }
}

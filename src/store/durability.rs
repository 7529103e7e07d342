//! Group durability for the SQLite swipe writer: its commits are made durable by one `fsync` of
//! the write-ahead log shared by every batch committed meanwhile, off the writer's path.
//!
//! The swipe writer's connection commits with `synchronous=NORMAL`: COMMIT appends the batch's
//! pages to the WAL (the operating system's cache) and returns, and the writer goes on to the
//! next batch at once. A syncer thread then `fdatasync`s the WAL file once for every commit made
//! before it started — the fsync `synchronous=FULL` would have made inside each COMMIT — and only
//! then are the batch's callers answered. So no caller is ever told "settled" before its
//! settlement is on disk, while the next batch is booked during the previous one's fsync.
//!
//! Why this is safe: SQLite's WAL is a log; after a crash it replays frames only as long as their
//! checksum chain holds, so what survives is a prefix of the committed transactions, and an
//! fsync of the WAL file makes every earlier commit durable. A checkpoint with
//! `synchronous=NORMAL` syncs the WAL before copying it and the database file after, so a batch
//! whose frames were checkpointed before our fsync is durable in the database file.
//!
//! The pool's write transactions commit the same way (see `Conn::commit`): their callers wait
//! for the fsync after giving up the write lock, rather than every other writer waiting for an
//! fsync inside it. Migrations, which nobody waits for, commit with `synchronous=FULL`.
//!
//! What else needs care: another connection can *read* a lazy commit before it is durable. Every
//! answer that may show such data waits for [`Durability::barrier`] first (a layer in front of
//! the services, and the event stream before each page), so what a client is shown has reached
//! the disk. A commit is counted before its COMMIT is issued (readers may see its data before
//! the COMMIT returns), so a barrier also waits for a commit under way. An fsync that fails leaves the WAL's state unknown (the kernel may have dropped the
//! pages): the process stops, as PostgreSQL does, and recovery on restart decides what is
//! committed; callers not yet answered retry with their request ids.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use super::checkpoint::{Checkpointer, RESTART_FRAMES};

/// Exit code of a process stopped by a failed fsync (EX_TEMPFAIL).
const FSYNC_FAILED_EXIT: i32 = 75;

struct Shared {
    /// The database file.
    database: PathBuf,
    /// The WAL file (`<database>-wal`).
    wal: PathBuf,
    /// Lazy commits begun (one at a time: SQLite has one writer), numbered from 1: a COMMIT's data
    /// can be visible to readers before the COMMIT returns, so it is counted before it starts.
    begun: AtomicU64,
    /// The highest lazy commit ended (returned, with or without success): what an fsync covers.
    committed: AtomicU64,
    /// The highest lazy commit known durable.
    synced: tokio::sync::watch::Sender<u64>,
    /// What to run once a lazy commit is durable, by ticket in ascending order (see
    /// [`Durability::then`]); run by the syncer right after the fsync that covers it.
    after: std::sync::Mutex<Vec<(u64, AfterSync)>>,
}

/// Work handed to the syncer to run once a commit is durable.
pub type AfterSync = Box<dyn FnOnce() + Send>;

/// The durability of one SQLite database file's lazy commits (see the module docs).
pub struct Durability {
    shared: Arc<Shared>,
    /// Wakes the syncer; the syncer thread ends when this is dropped.
    wake: mpsc::Sender<()>,
    /// The lock file of the one server serving this database (see [`Durability::claim_server`]).
    server_lock: std::sync::Mutex<Option<std::fs::File>>,
    /// Copies the WAL into the database off the writer's path (see [`super::checkpoint`]).
    checkpointer: Checkpointer,
}

impl std::fmt::Debug for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durability")
            .field("wal", &self.shared.wal)
            .field("committed", &self.shared.committed.load(Ordering::Relaxed))
            .field("synced", &*self.shared.synced.borrow())
            .finish()
    }
}

impl Durability {
    /// Starts the syncer thread for the database file `database`.
    pub fn start(database: &std::path::Path) -> std::io::Result<Arc<Durability>> {
        let database = std::path::absolute(database)?;
        let mut wal = database.clone().into_os_string();
        wal.push("-wal");
        let shared = Arc::new(Shared {
            database,
            wal: PathBuf::from(wal),
            begun: AtomicU64::new(0),
            committed: AtomicU64::new(0),
            synced: tokio::sync::watch::Sender::new(0),
            after: std::sync::Mutex::new(Vec::new()),
        });
        let (wake, woken) = mpsc::channel();
        let s = shared.clone();
        std::thread::Builder::new()
            .name("wal-syncer".into())
            .spawn(move || syncer(&s, &woken))?;
        let checkpointer = Checkpointer::start(&shared.database, RESTART_FRAMES)?;
        Ok(Arc::new(Durability {
            shared,
            wake,
            server_lock: std::sync::Mutex::new(None),
            checkpointer,
        }))
    }

    /// Claims the database for this process's server, held until the process ends: a reader in
    /// another process could not wait for this process's lazy commits, so two servers must not
    /// share one SQLite file. Fails when another process holds it.
    pub fn claim_server(&self) -> anyhow::Result<()> {
        let mut path = self.shared.database.clone().into_os_string();
        path.push("-server-lock");
        let path = PathBuf::from(path);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
                "another medsettle server is serving this SQLite database ({} is locked); one server per SQLite file",
                path.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
        if let Ok(mut held) = self.server_lock.lock() {
            *held = Some(file);
        }
        Ok(())
    }

    /// Counts a lazy COMMIT about to be issued; its ticket for [`Durability::ended`] and
    /// [`Durability::wait`]. Commits are begun and ended one at a time (one writer).
    pub fn begin(&self) -> u64 {
        self.shared.begun.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Records that the COMMIT of `ticket` has returned (successful or not: a failed one has
    /// nothing to make durable, but barriers that counted it must be released) and starts the
    /// fsync that covers it. Every COMMIT runs from its ticket to its end without waiting
    /// (nothing can cancel it half-way), so tickets end in order; should one ever end after a
    /// later one, the later end covers it (SQLite ran their COMMITs one after the other): the
    /// highest ended is kept.
    pub fn ended(&self, ticket: u64) {
        self.shared.committed.fetch_max(ticket, Ordering::SeqCst);
        let _ = self.wake.send(());
        self.checkpointer.committed();
    }

    /// Whether the writer should finish a checkpoint before its next transaction, so that the
    /// WAL starts again (see [`super::checkpoint`]).
    pub fn restart_due(&self) -> bool {
        self.checkpointer.restart_due()
    }

    /// Returns once lazy commit `ticket` (and every one before it) has ended and is on disk.
    pub async fn wait(&self, ticket: u64) {
        if *self.shared.synced.borrow() >= ticket {
            return;
        }
        let mut synced = self.shared.synced.subscribe();
        // The syncer is alive as long as `self` is (it holds the receiving end). A commit still
        // under way is covered by the fsync its ending starts.
        let _ = self.wake.send(());
        let _ = synced.wait_for(|&s| s >= ticket).await;
    }

    /// Runs `f` once lazy commit `ticket` (and every one before it) is on disk: on the syncer's
    /// thread right after the fsync that covers it, or here and now if one already has. For the
    /// swipe writer's answers, which need nothing but the fsync: [`Durability::wait`] on a task
    /// of their own cost a task spawned, woken by the fsync and run before the callers were.
    pub fn then(&self, ticket: u64, f: AfterSync) {
        let now = {
            // Checked and queued under the lock the syncer drains with, after it publishes
            // `synced`: either the syncer finds `f` queued, or `f` finds the commit synced.
            let mut after = self.shared.after.lock().unwrap_or_else(|e| e.into_inner());
            if *self.shared.synced.borrow() >= ticket {
                Some(f)
            } else {
                after.push((ticket, f));
                None
            }
        };
        if let Some(f) = now {
            f();
        }
    }

    /// Returns once every lazy commit made before this call is on disk: call it after reading
    /// and before answering with what was read.
    pub async fn barrier(&self) {
        // Begun, not just ended: a commit under way may already be visible to the reader.
        let ticket = self.shared.begun.load(Ordering::SeqCst);
        self.wait(ticket).await;
    }
}

fn syncer(shared: &Shared, woken: &mpsc::Receiver<()>) {
    while woken.recv().is_ok() {
        // Every wake-up queued meanwhile is answered by this one fsync.
        while woken.try_recv().is_ok() {}
        let target = shared.committed.load(Ordering::SeqCst);
        if target <= *shared.synced.borrow() {
            continue;
        }
        let synced = {
            let _under_way = super::walbuf::SyncInFlight::start();
            sync_wal(&shared.wal)
        };
        if let Err(e) = synced {
            tracing::error!(wal = %shared.wal.display(), error = %e,
                "fsync of the write-ahead log failed; stopping: what is on disk is unknown, and no caller may be told their settlement is durable");
            std::process::exit(FSYNC_FAILED_EXIT);
        }
        shared.synced.send_replace(target);
        let due: Vec<(u64, AfterSync)> = {
            let mut after = shared.after.lock().unwrap_or_else(|e| e.into_inner());
            let n = after.partition_point(|(ticket, _)| *ticket <= target);
            after.drain(..n).collect()
        };
        for (_, f) in due {
            f();
        }
    }
}

/// `fdatasync` of the WAL file. Opened anew each time, so it is the file SQLite uses now. No WAL
/// file means SQLite checkpointed it into the database (syncing the database) and removed it.
fn sync_wal(wal: &std::path::Path) -> std::io::Result<()> {
    match std::fs::File::open(wal) {
        Ok(f) => f.sync_data(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::Durability;
    use crate::store::TempDir;

    /// A database path in a fresh temp directory, removed when dropped.
    struct TempDb(TempDir);

    impl TempDb {
        fn new(name: &str) -> anyhow::Result<TempDb> {
            Ok(TempDb(TempDir::new(&format!("durability-{name}"))?))
        }

        fn db(&self) -> std::path::PathBuf {
            self.0.0.join("t.db")
        }

        /// A WAL file with something in it to sync.
        fn with_wal(self) -> anyhow::Result<TempDb> {
            std::fs::write(self.0.0.join("t.db-wal"), b"frames")?;
            Ok(self)
        }
    }

    #[tokio::test]
    async fn commits_are_answered_once_synced_in_order() -> anyhow::Result<()> {
        let dir = TempDb::new("order")?.with_wal()?;
        let d = Durability::start(&dir.db())?;
        // Nothing committed lazily: a barrier does not wait for anything.
        d.barrier().await;
        assert_eq!(*d.shared.synced.borrow(), 0);
        let first = d.begin();
        d.ended(first);
        let second = d.begin();
        d.ended(second);
        assert_eq!((first, second), (1, 2));
        d.wait(first).await;
        assert!(*d.shared.synced.borrow() >= first);
        d.wait(second).await;
        assert_eq!(*d.shared.synced.borrow(), 2);
        // Nothing more to sync: a barrier now returns at once.
        d.barrier().await;
        Ok(())
    }

    /// A ticket ending after a later one (should one ever) does not take back what the later
    /// one's end covers.
    #[tokio::test]
    async fn tickets_ending_out_of_order_are_all_synced() -> anyhow::Result<()> {
        let dir = TempDb::new("out-of-order")?.with_wal()?;
        let d = Durability::start(&dir.db())?;
        let first = d.begin();
        let second = d.begin();
        d.ended(second);
        d.ended(first);
        let waited = tokio::time::timeout(std::time::Duration::from_secs(10), d.wait(second));
        waited.await?;
        assert_eq!(*d.shared.synced.borrow(), 2);
        Ok(())
    }

    #[tokio::test]
    async fn a_barrier_waits_for_a_commit_under_way() -> anyhow::Result<()> {
        let dir = TempDb::new("underway")?.with_wal()?;
        let d = Durability::start(&dir.db())?;
        // A COMMIT has begun (its data may already be visible) but not returned.
        let ticket = d.begin();
        let barrier = {
            let d = d.clone();
            tokio::spawn(async move { d.barrier().await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            !barrier.is_finished(),
            "the barrier passed a commit under way"
        );
        assert_eq!(*d.shared.synced.borrow(), 0);
        // The COMMIT returns, which starts the fsync; the answer of its batch waits for it.
        d.ended(ticket);
        d.wait(ticket).await;
        barrier.await?;
        // A COMMIT that failed releases the barriers that counted it just the same.
        let failed = d.begin();
        let barrier = {
            let d = d.clone();
            tokio::spawn(async move { d.barrier().await })
        };
        d.ended(failed);
        barrier.await?;
        assert!(*d.shared.synced.borrow() >= failed);
        Ok(())
    }

    #[test]
    fn work_after_a_commit_runs_once_it_is_synced_in_order() -> anyhow::Result<()> {
        use std::sync::mpsc;
        use std::time::Duration;
        let dir = TempDb::new("then")?.with_wal()?;
        let d = Durability::start(&dir.db())?;
        // Each piece of work reports its name and the synced mark it found when it ran.
        let (tx, rx) = mpsc::channel::<(&str, u64)>();
        let report = |name: &'static str| {
            let (tx, d) = (tx.clone(), d.clone());
            Box::new(move || {
                let _ = tx.send((name, *d.shared.synced.borrow()));
            })
        };
        // Queued behind a COMMIT under way: nothing runs before its fsync.
        let first = d.begin();
        d.then(first, report("first"));
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
        d.ended(first);
        let ran = rx.recv_timeout(Duration::from_secs(10))?;
        assert_eq!(ran.0, "first");
        assert!(ran.1 >= first, "ran before its commit was synced: {ran:?}");
        // Two commits in a row: their work runs in commit order, each after its own fsync.
        let second = d.begin();
        d.then(second, report("second"));
        d.ended(second);
        let third = d.begin();
        d.then(third, report("third"));
        d.ended(third);
        let ran = [
            rx.recv_timeout(Duration::from_secs(10))?,
            rx.recv_timeout(Duration::from_secs(10))?,
        ];
        assert_eq!(ran.map(|r| r.0), ["second", "third"]);
        assert!(ran[0].1 >= second && ran[1].1 >= third, "{ran:?}");
        // A commit already synced: the work runs at once, on the caller's thread.
        d.then(first, report("at once"));
        assert_eq!(rx.try_recv().ok(), Some(("at once", third)));
        Ok(())
    }

    #[test]
    fn one_server_per_database_file() -> anyhow::Result<()> {
        let dir = TempDb::new("lock")?;
        let first = Durability::start(&dir.db())?;
        let second = Durability::start(&dir.db())?;
        first.claim_server()?;
        let refused = match second.claim_server() {
            Ok(()) => anyhow::bail!("a second server claimed the same database"),
            Err(e) => e.to_string(),
        };
        assert!(refused.contains("another medsettle server"), "{refused}");
        drop(first);
        second.claim_server()?;
        Ok(())
    }

    #[tokio::test]
    async fn a_checkpointed_and_removed_wal_counts_as_synced() -> anyhow::Result<()> {
        let dir = TempDb::new("gone")?;
        let d = Durability::start(&dir.db())?;
        let t = d.begin();
        d.ended(t);
        d.wait(t).await;
        assert_eq!(*d.shared.synced.borrow(), 1);
        Ok(())
    }
}

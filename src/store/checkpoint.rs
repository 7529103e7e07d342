//! Checkpoints of a SQLite file's write-ahead log off the swipe writer's path.
//!
//! A checkpoint copies the pages the WAL holds into the database file (and fsyncs both); until
//! one has copied every frame, the WAL cannot start again from its beginning and grows. Run by the
//! writer's own commits (SQLite's autocheckpoint), each one stalled every swipe queued behind it
//! for 20–37 ms — the bulk of the p99 at a few thousand swipes a second.
//!
//! Here a thread of its own copies the WAL in the background, a pass every [`PASS_EVERY`] while
//! commits come in: a passive checkpoint takes no lock a writer needs, so the writer goes on
//! committing meanwhile. What such a pass cannot do is finish: frames committed during it are
//! left, and SQLite restarts the WAL only once every frame is in the database file. So when the
//! WAL has grown past [`RESTART_FRAMES`], the thread catches up with a few passes in a row (each
//! copies what came in during the one before), then tells the writer, and the writer copies the
//! remainder itself between two batches ([`Checkpointer::restart_due`]): the frames of one short
//! pass, ≈ 1.6 ms instead of 20–37 ms for the whole log. Its next write then starts the WAL
//! afresh.
//!
//! Nothing depends on this thread for correctness: every connection keeps SQLite's own
//! autocheckpoint at [`BACKSTOP_FRAMES`], which takes over if the passes ever fall behind (or
//! cannot run at all). Only the swipe writer's commits wake the thread: without swipes, a pool
//! connection's commit checkpoints the WAL at that backstop. Measured with hospital flows only
//! (BENCHMARKS.md, session 10): better than SQLite's 1,000 frames, and better than waking the
//! thread on every pool commit too (its passes' fsyncs then compete with the pool's).
//!
//! A checkpoint with `synchronous=NORMAL` syncs the WAL before copying and the database after, so
//! the passes never make a lazy commit look durable before it is (see [`super::durability`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// The least time between two background passes: each copies every page written since the last
/// one (a page the swipes rewrite all the time is copied once per pass).
pub const PASS_EVERY: Duration = Duration::from_millis(20);

/// WAL frames after which the writer finishes a checkpoint so that the WAL starts again. Each
/// finish stalls the writer (median ≈ 2 ms, up to ≈ 20 ms: the last frames copied and two
/// fsyncs): at 5,000 swipes/s 4,000 frames meant ten a second, and 12,000 gave a lower p99
/// (median of seven rounds 15.5 against 20.8 ms, BENCHMARKS.md session 30). The backstop stays
/// twice as high, room for slow passes (the WAL peaked at ≈ 13,200 frames in a closed loop; a
/// pass can take 0.2 s while the disk is busy).
pub const RESTART_FRAMES: i64 = 12_000;

/// New frames below which a catch-up pass is the last before the writer finishes.
const CATCH_UP_FRAMES: i64 = 32;
/// Passes in a row at most before the writer finishes.
const CATCH_UP_PASSES: usize = 4;

/// SQLite's autocheckpoint on every connection of a file with a checkpointer: a backstop (and,
/// with no swipes to wake the checkpointer, the pool's own checkpoints).
pub const BACKSTOP_FRAMES: u32 = 24_000;

/// What a passive checkpoint reports: whether it was blocked, the frames in the WAL, the frames
/// copied into the database so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub busy: bool,
    pub log: i64,
    pub copied: i64,
}

/// Runs a passive checkpoint on `x` (copies what it can without waiting for anyone).
fn passive(x: &rusqlite::Connection) -> rusqlite::Result<Pass> {
    x.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok(Pass {
            busy: r.get::<_, i64>(0)? != 0,
            log: r.get(1)?,
            copied: r.get(2)?,
        })
    })
}

/// The swipe writer's part, between two batches when [`Checkpointer::restart_due`]: copies into
/// the database what the passes left in the WAL (the frames of the last short catch-up pass), so
/// that the writer's next write starts the WAL afresh.
pub fn finish(x: &rusqlite::Connection) {
    let started = std::time::Instant::now();
    match passive(x) {
        Ok(p) => tracing::debug!(
            log = p.log,
            copied = p.copied,
            busy = p.busy,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "WAL checkpoint finished by the writer"
        ),
        Err(e) => tracing::warn!(error = %e, "the writer's WAL checkpoint failed"),
    }
}

struct Shared {
    database: PathBuf,
    restart_frames: i64,
    /// Set by a pass that left a WAL past `restart_frames`; taken by the writer.
    restart_due: AtomicBool,
}

/// The background checkpointer of one SQLite file (see the module docs).
pub struct Checkpointer {
    shared: Arc<Shared>,
    /// Wakes the thread after a commit; the thread ends when this is dropped.
    wake: mpsc::Sender<()>,
}

impl Checkpointer {
    /// Starts the checkpointer thread for `database`, restarting the WAL past `restart_frames`.
    pub fn start(database: &Path, restart_frames: i64) -> std::io::Result<Checkpointer> {
        let shared = Arc::new(Shared {
            database: database.to_path_buf(),
            restart_frames,
            restart_due: AtomicBool::new(false),
        });
        let (wake, woken) = mpsc::channel();
        let s = shared.clone();
        std::thread::Builder::new()
            .name("wal-checkpointer".into())
            .spawn(move || run(&s, &woken))?;
        Ok(Checkpointer { shared, wake })
    }

    /// Notes a commit: the WAL has grown.
    pub fn committed(&self) {
        let _ = self.wake.send(());
    }

    /// Whether the writer should finish a checkpoint now (see the module docs); true once per
    /// pass that asked for it.
    pub fn restart_due(&self) -> bool {
        self.shared.restart_due.swap(false, Ordering::Relaxed)
    }
}

fn run(shared: &Shared, woken: &mpsc::Receiver<()>) {
    let mut conn: Option<rusqlite::Connection> = None;
    while woken.recv().is_ok() {
        // Every commit queued meanwhile is covered by this pass.
        while woken.try_recv().is_ok() {}
        let x = match conn.take() {
            Some(x) => x,
            // Set up as the writer's (`synchronous = NORMAL`: the WAL synced before a copy, the
            // database after; the backstop autocheckpoint). A passive checkpoint never waits on
            // the busy timeout, and reads the WAL rather than through the page cache.
            None => match super::open_direct(&shared.database) {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "the WAL checkpointer cannot open the database; SQLite's own checkpoints remain");
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let started = std::time::Instant::now();
        match passes(&x, shared.restart_frames) {
            Ok(p) => {
                tracing::debug!(
                    log = p.log,
                    copied = p.copied,
                    busy = p.busy,
                    ms = started.elapsed().as_secs_f64() * 1e3,
                    "WAL checkpoint pass"
                );
                if p.log >= shared.restart_frames {
                    shared.restart_due.store(true, Ordering::Relaxed);
                }
                conn = Some(x);
            }
            Err(e) => {
                tracing::warn!(error = %e, "WAL checkpoint pass failed");
            }
        }
        std::thread::sleep(PASS_EVERY.saturating_sub(started.elapsed()));
    }
}

/// A pass; past `restart_frames`, more passes at once while each finds more than
/// [`CATCH_UP_FRAMES`] new frames (at most [`CATCH_UP_PASSES`] in all), so that what the writer
/// is left to copy is as little as the frames of one short pass.
fn passes(x: &rusqlite::Connection, restart_frames: i64) -> rusqlite::Result<Pass> {
    let mut p = passive(x)?;
    for _ in 1..CATCH_UP_PASSES {
        if p.log < restart_frames {
            break;
        }
        let before = p.log;
        p = passive(x)?;
        if p.log - before <= CATCH_UP_FRAMES {
            break;
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::{Checkpointer, passive};
    use crate::store::TempDir;
    use std::time::{Duration, Instant};

    /// A connection to a fresh WAL database in a temp directory, its own checkpoints off (as if
    /// they never came due), and that directory.
    fn writer() -> anyhow::Result<(TempDir, rusqlite::Connection)> {
        let dir = TempDir::new("checkpoint")?;
        let x = rusqlite::Connection::open(dir.0.join("t.db"))?;
        x.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
             PRAGMA wal_autocheckpoint = 0; CREATE TABLE t (v BLOB);",
        )?;
        Ok((dir, x))
    }

    /// Commits `n` transactions of one page-sized row each.
    fn commit(x: &rusqlite::Connection, n: usize) -> anyhow::Result<()> {
        for _ in 0..n {
            x.execute("INSERT INTO t (v) VALUES (zeroblob(4000))", [])?;
        }
        Ok(())
    }

    /// Frames in the WAL, as a checkpoint that copies nothing new reports them.
    fn frames(x: &rusqlite::Connection) -> anyhow::Result<i64> {
        Ok(passive(x)?.log)
    }

    #[test]
    fn passes_copy_the_wal_and_the_writer_restarts_it() -> anyhow::Result<()> {
        let (dir, x) = writer()?;
        let c = Checkpointer::start(&dir.0.join("t.db"), 150)?;
        // 20 commits (2 or 3 frames each: the row's page, the table's, the file header's): a pass
        // copies them, but the WAL is below the restart threshold.
        commit(&x, 20)?;
        c.committed();
        // Only checkpoints write the database file: it grows by the 20 rows' pages once a pass ran.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(dir.0.join("t.db"))?.len() < 20 * 4096 {
            anyhow::ensure!(Instant::now() < deadline, "no pass copied the WAL");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            !c.restart_due(),
            "a WAL under the threshold asked for a restart"
        );
        // 100 more: past 150 frames, the next pass asks the writer to finish.
        commit(&x, 100)?;
        c.committed();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !c.restart_due() {
            anyhow::ensure!(Instant::now() < deadline, "no pass asked for a restart");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Asked once per pass.
        assert!(!c.restart_due());
        // The writer copies what is left, and its next commit starts the WAL afresh.
        let p = passive(&x)?;
        assert!(p.log >= 150, "{p:?}");
        assert_eq!((p.busy, p.copied), (false, p.log), "{p:?}");
        commit(&x, 1)?;
        let after = frames(&x)?;
        assert!(
            after < 10,
            "the WAL did not start again: {} → {after} frames",
            p.log
        );
        assert_eq!(
            x.query_row("SELECT COUNT(*) FROM t", [], |r| r.get::<_, i64>(0))?,
            121
        );
        Ok(())
    }
}

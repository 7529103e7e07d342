//! One write per commit into SQLite's WAL, instead of two per page.
//!
//! SQLite appends a commit to the WAL frame by frame, each frame with two `pwrite`s (its 24-byte
//! header, then the page): a swipe batch of ≈ 50 pages made ≈ 100 system calls, a quarter of the
//! swipe writer's time at 5,000 swipes/s (BENCHMARKS.md). This VFS is the system's own (`unix`)
//! with one change: a WAL file gathers the frames SQLite appends in memory and hands them to the
//! operating system in one write when the commit frame is complete — before SQLite publishes
//! the commit to other connections (the wal-index header), so a reader never finds a frame
//! that is not in the file yet, and before COMMIT returns, so the syncer's `fdatasync` (see
//! [`super::durability`]) covers it exactly as before.
//!
//! What it must never do is change what ends up in the file or the order of overlapping writes:
//! - only appends are gathered, and only starting at a frame header that does not commit;
//!   a write inside what is gathered is copied over it (SQLite rewriting a page of the same
//!   transaction), any other write first writes out what is gathered;
//! - the page completing a commit frame writes everything out, and so does every other call
//!   on the file (read, sync, truncate, size, close, file control) before it is passed on;
//! - a commit frame header that starts nothing (SQLite rewriting checksums after the commit's
//!   frames, or a commit of one frame after a pause) is written at once, as is the WAL header.
//!
//! A write-out made while the syncer's `fdatasync` of a WAL is under way ([`SyncInFlight`]) also
//! starts the disk writing those bytes at once (on Linux, `sync_file_range` with
//! `SYNC_FILE_RANGE_WRITE`, through a read-only handle on the same file): the next `fdatasync`
//! then finds the batch's pages already on their way and waits mostly for the disk's flush,
//! instead of only then starting to write all that was committed meanwhile. A hint and nothing
//! more: durability still comes from the `fdatasync` alone. The hint is given by a thread of its
//! own (`wal-writeback`, [`Hints`]), never by the committing writer: the system call waits for
//! room in the disk's queue, and the kernel throttles such writes while the disk is busy — with a
//! checkpoint's database sync under way the swipe writer's COMMIT waited in it for 30–85 ms
//! (BENCHMARKS.md, session 30). Ranges handed over while the thread is still busy with an
//! earlier one are merged into one call. Measured at 2,500 swipes/s on a machine whose disk set the
//! latency (BENCHMARKS.md, session 15, medians of four alternating pairs): the syncer's
//! `fdatasync` 1.43 → 0.81 ms, the swipes' p50 15.1 → 10.0 ms, p99 72 → 40 ms. With no
//! `fdatasync` under way the hint is not given: the commit's own `fdatasync` starts at once
//! (the COMMIT wakes the syncer) and writes those bytes itself, and the system call cost the
//! writer ≈ 5 % of its time at 5,000 swipes/s where the disk kept up (session 18).
//!
//! Main and rollback journals, the database file and its shared memory are the system VFS's own
//! files: only WAL files are wrapped, so locking is untouched.

use rusqlite::ffi;
use std::ffi::{CString, c_char, c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

/// The name the VFS is registered under.
pub const NAME: &str = "medsettle-walbuf";

/// What is gathered at most before it is written out anyway (a transaction spilling pages).
const LIMIT: usize = 8 << 20;
/// Bytes handed to the system's write at most: its `unixWrite` takes fewer than 128 KiB a
/// call (it masks the length with 0x1ffff).
const CHUNK: usize = 124 << 10;
const _: () = assert!(CHUNK < 0x1ffff);
/// Bytes in a WAL frame header.
const FRAME_HEADER: usize = 24;

/// Registers the VFS (once; later calls return the first outcome) and returns its name, to
/// open connections with.
pub fn register() -> Result<&'static str, String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        // SAFETY: sqlite3_vfs_find returns SQLite's static default VFS (or null); the copy made
        // of it lives for the process (leaked), as SQLite requires of a registered VFS.
        unsafe {
            let system = ffi::sqlite3_vfs_find(std::ptr::null());
            if system.is_null() {
                return Err("SQLite has no default VFS".into());
            }
            let size =
                std::mem::size_of::<WalFile>() + usize::try_from((*system).szOsFile).unwrap_or(0);
            let mut vfs: ffi::sqlite3_vfs = std::ptr::read(system);
            vfs.szOsFile = c_int::try_from(size).map_err(|e| e.to_string())?;
            vfs.zName = CString::new(NAME).map_err(|e| e.to_string())?.into_raw();
            vfs.pNext = std::ptr::null_mut();
            vfs.xOpen = Some(open);
            // Every other method is the system VFS's own, called with this copy (same pAppData).
            SYSTEM_VFS
                .set(SystemVfs(system))
                .map_err(|_| "registered twice".to_owned())?;
            let rc = ffi::sqlite3_vfs_register(Box::into_raw(Box::new(vfs)), 0);
            if rc != ffi::SQLITE_OK {
                return Err(format!("sqlite3_vfs_register failed ({rc})"));
            }
        }
        Ok(())
    })
    .clone()
    .map(|()| NAME)
}

/// The system VFS this one wraps.
struct SystemVfs(*mut ffi::sqlite3_vfs);
// SAFETY: SQLite's VFS objects are process-wide and immutable once registered.
unsafe impl Send for SystemVfs {}
unsafe impl Sync for SystemVfs {}
static SYSTEM_VFS: OnceLock<SystemVfs> = OnceLock::new();

/// A WAL file: the system's file (placed after this struct, in the memory SQLite allocated for
/// `szOsFile`) and the frames gathered for it.
#[repr(C)]
struct WalFile {
    base: ffi::sqlite3_file,
    system: *mut ffi::sqlite3_file,
    gathered: Gathered,
    /// A read-only handle on the same file, to start the disk writing what was written out
    /// (none where the system cannot: see [`start_writeback`]); shared with the hints' thread
    /// while a range of it waits there.
    writeback: Option<Arc<std::fs::File>>,
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let Some(SystemVfs(system)) = SYSTEM_VFS.get() else {
        return ffi::SQLITE_ERROR;
    };
    // SAFETY (all of this function): `file` points to `szOsFile` bytes SQLite allocated for
    // this VFS: a WalFile followed by room for the system's file, which is opened there.
    unsafe {
        let Some(system_open) = (**system).xOpen else {
            return ffi::SQLITE_ERROR;
        };
        if flags & ffi::SQLITE_OPEN_WAL == 0 {
            // Any other file is the system's own, in place.
            return system_open(*system, name, file, flags, out_flags);
        }
        let inner = file.cast::<u8>().add(std::mem::size_of::<WalFile>()).cast();
        let w = file.cast::<WalFile>();
        std::ptr::write(
            w,
            WalFile {
                // No methods until the system open succeeded: SQLite then closes nothing.
                base: ffi::sqlite3_file {
                    pMethods: std::ptr::null(),
                },
                system: inner,
                gathered: Gathered::default(),
                writeback: None,
            },
        );
        let rc = system_open(*system, name, inner, flags, out_flags);
        if rc != ffi::SQLITE_OK {
            std::ptr::drop_in_place(w);
            // The memory stays SQLite's; make it look unopened.
            (*file).pMethods = std::ptr::null();
            return rc;
        }
        (*w).base.pMethods = &METHODS;
        // The same file SQLite has just opened (or created) under this name; without it the
        // WAL is written exactly as before, only without the early start.
        if cfg!(target_os = "linux") && !name.is_null() {
            let path = std::ffi::CStr::from_ptr(name)
                .to_string_lossy()
                .into_owned();
            (*w).writeback = std::fs::File::open(path).ok().map(Arc::new);
        }
        ffi::SQLITE_OK
    }
}

/// The wrapper of `f` and a writer to its system file.
///
/// SAFETY: `f` must be a WAL file this VFS opened (SQLite calls these methods only on it).
unsafe fn parts<'a>(f: *mut ffi::sqlite3_file) -> (&'a mut WalFile, &'a ffi::sqlite3_io_methods) {
    unsafe {
        let w = &mut *f.cast::<WalFile>();
        let m = &*(*w.system).pMethods;
        (w, m)
    }
}

impl WalFile {
    /// Writes out what is gathered (`m`: the system file's methods).
    fn flush(&mut self, m: &ffi::sqlite3_io_methods) -> c_int {
        self.out(m, |g, out| g.flush(out))
    }

    /// SQLite's write of `data` at `offset` (`m`: the system file's methods).
    fn write(&mut self, m: &ffi::sqlite3_io_methods, data: &[u8], offset: i64) -> c_int {
        self.out(m, |g, out| g.write(data, offset, out))
    }

    /// Runs `step` on what is gathered with a writer to the system's file, then starts the disk
    /// writing the bytes it wrote out if a sync is under way.
    fn out(
        &mut self,
        m: &ffi::sqlite3_io_methods,
        step: impl FnOnce(&mut Gathered, &mut Out) -> c_int,
    ) -> c_int {
        let system = self.system;
        let mut span: Option<(i64, i64)> = None;
        let rc = step(&mut self.gathered, &mut |b, at| {
            let rc = write_system(system, m, b, at);
            if rc == ffi::SQLITE_OK {
                let end = at + b.len() as i64;
                span = Some(span.map_or((at, end), |(s, e)| (s.min(at), e.max(end))));
            }
            rc
        });
        if let (Some(f), Some((start, end))) = (&self.writeback, span)
            && writeback_wanted(SYNCS_IN_FLIGHT.load(Ordering::SeqCst))
        {
            #[cfg(test)]
            tests::WRITEBACKS.with(|w| w.borrow_mut().push((start, end - start)));
            HINTS.hand_over(f, start, end);
        }
        rc
    }
}

/// `fdatasync`s of a WAL under way in this process (see [`SyncInFlight`]).
static SYNCS_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// An `fdatasync` of a WAL under way, while this lives: write-outs meanwhile start their
/// writeback at once (see the module docs). Taken by the syncer around each of its syncs.
pub struct SyncInFlight(());

impl SyncInFlight {
    /// Marks a sync as under way until the value is dropped.
    pub fn start() -> SyncInFlight {
        SYNCS_IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        SyncInFlight(())
    }
}

impl Drop for SyncInFlight {
    fn drop(&mut self) {
        SYNCS_IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether bytes written out now should start their writeback at once: only while a sync is
/// under way (`in_flight` of them), which they would otherwise wait behind.
fn writeback_wanted(in_flight: usize) -> bool {
    in_flight > 0
}

/// Byte ranges of WAL files whose writeback is to be started, for the `wal-writeback` thread:
/// per file one range, `[start, end)`, spanning everything handed over since the thread last
/// took them.
struct Hints {
    pending: Mutex<Vec<(Arc<std::fs::File>, i64, i64)>>,
    handed: Condvar,
    /// Whether the thread runs (started with the first hint; `false` if it could not be).
    thread: OnceLock<bool>,
}

static HINTS: Hints = Hints::new();

impl Hints {
    const fn new() -> Hints {
        Hints {
            pending: Mutex::new(Vec::new()),
            handed: Condvar::new(),
            thread: OnceLock::new(),
        }
    }

    /// Adds `[start, end)` of `f` to what waits; whether the thread must be woken (nothing
    /// waited before: otherwise it is awake, or about to take what waits).
    fn add(&self, f: &Arc<std::fs::File>, start: i64, end: i64) -> bool {
        // Only hints: what a panicking holder left is as good as any.
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let wake = pending.is_empty();
        match pending.iter_mut().find(|(g, _, _)| Arc::ptr_eq(f, g)) {
            Some((_, s, e)) => (*s, *e) = ((*s).min(start), (*e).max(end)),
            None => pending.push((f.clone(), start, end)),
        }
        wake
    }

    /// Everything that waits, once there is any.
    fn take(&self) -> Vec<(Arc<std::fs::File>, i64, i64)> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        while pending.is_empty() {
            pending = self.handed.wait(pending).unwrap_or_else(|e| e.into_inner());
        }
        std::mem::take(&mut *pending)
    }

    /// Hands `[start, end)` of `f` to the thread (started on first use); dropped if the thread
    /// cannot run — the hint is only a hint.
    fn hand_over(&'static self, f: &Arc<std::fs::File>, start: i64, end: i64) {
        let running = *self.thread.get_or_init(|| {
            std::thread::Builder::new()
                .name("wal-writeback".into())
                .spawn(move || {
                    loop {
                        for (f, start, end) in self.take() {
                            start_writeback(&f, start, end - start);
                        }
                    }
                })
                .is_ok()
        });
        if running && self.add(f, start, end) {
            self.handed.notify_one();
        }
    }
}

/// Starts the disk writing `len` bytes of `f` at `offset` that are in the operating system's
/// cache (a hint: errors are ignored; the fsync decides durability). It may wait for room in
/// the disk's queue: only the `wal-writeback` thread calls it.
#[cfg(target_os = "linux")]
fn start_writeback(f: &std::fs::File, offset: i64, len: i64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain system call on an open descriptor; it touches no memory of ours.
    unsafe {
        libc::sync_file_range(f.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_: &std::fs::File, _: i64, _: i64) {}

/// Writes `data` at `offset` through the system's file `system` (its methods `m`).
fn write_system(
    system: *mut ffi::sqlite3_file,
    m: &ffi::sqlite3_io_methods,
    data: &[u8],
    offset: i64,
) -> c_int {
    let (Ok(n), Some(x)) = (c_int::try_from(data.len()), m.xWrite) else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    #[cfg(test)]
    tests::SYSTEM_WRITES.with(|w| w.set(w.get() + 1));
    // SAFETY: the system's file is open; `data` is valid for `n` bytes.
    unsafe { x(system, data.as_ptr().cast(), n, offset) }
}

/// The frames gathered for one WAL file, and the rules of when they are written out (see the
/// module docs); `out` writes bytes at an offset to the file and returns an SQLite result code.
#[derive(Default)]
struct Gathered {
    /// Bytes to be written at `start`.
    buf: Vec<u8>,
    start: i64,
    /// The last write gathered was a commit frame's header: its page completes the commit.
    commit_pending: bool,
}

type Out<'a> = dyn FnMut(&[u8], i64) -> c_int + 'a;

impl Gathered {
    /// Writes out what is gathered.
    fn flush(&mut self, out: &mut Out) -> c_int {
        self.commit_pending = false;
        let mut rc = ffi::SQLITE_OK;
        let mut at = self.start;
        for chunk in self.buf.chunks(CHUNK) {
            rc = out(chunk, at);
            if rc != ffi::SQLITE_OK {
                break;
            }
            at += chunk.len() as i64;
        }
        self.buf.clear();
        rc
    }

    /// SQLite's write of `data` at `offset`.
    fn write(&mut self, data: &[u8], offset: i64, out: &mut Out) -> c_int {
        let len = data.len() as i64;
        let end = self.start + self.buf.len() as i64;
        if !self.buf.is_empty() && offset == end {
            self.buf.extend_from_slice(data);
        } else if !self.buf.is_empty() && offset >= self.start && offset + len <= end {
            let at = (offset - self.start) as usize;
            self.buf[at..at + data.len()].copy_from_slice(data);
        } else {
            let rc = self.flush(out);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            // Nothing gathered: a frame header that does not commit starts frames being
            // appended; anything else is written at once.
            if data.len() != FRAME_HEADER || commit_size(data) != 0 {
                return out(data, offset);
            }
            self.start = offset;
            self.buf.extend_from_slice(data);
            return ffi::SQLITE_OK;
        }
        if data.len() == FRAME_HEADER && commit_size(data) != 0 {
            self.commit_pending = true;
            return ffi::SQLITE_OK;
        }
        if self.commit_pending || self.buf.len() >= LIMIT {
            return self.flush(out);
        }
        ffi::SQLITE_OK
    }
}

/// The "database size after commit" field of a frame header: nonzero for a commit frame.
fn commit_size(header: &[u8]) -> u32 {
    u32::from_be_bytes([header[4], header[5], header[6], header[7]])
}

unsafe extern "C" fn write(
    f: *mut ffi::sqlite3_file,
    data: *const c_void,
    n: c_int,
    offset: i64,
) -> c_int {
    let Ok(len) = usize::try_from(n) else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    // SAFETY: SQLite passes its WAL file and `n` readable bytes at `data`.
    let (w, m, data) = unsafe {
        let (w, m) = parts(f);
        (w, m, std::slice::from_raw_parts(data.cast::<u8>(), len))
    };
    w.write(m, data, offset)
}

unsafe extern "C" fn close(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes each file once; the wrapper is dropped here and never used again.
    unsafe {
        let (w, m) = parts(f);
        let flushed = w.flush(m);
        let closed = m.xClose.map_or(ffi::SQLITE_OK, |x| x(w.system));
        std::ptr::drop_in_place(f.cast::<WalFile>());
        if flushed != ffi::SQLITE_OK {
            flushed
        } else {
            closed
        }
    }
}

/// Defines a method that writes out what is gathered and then passes the call on.
macro_rules! flushing {
    ($name:ident, $method:ident ( $($arg:ident : $ty:ty),* )) => {
        unsafe extern "C" fn $name(f: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> c_int {
            // SAFETY: SQLite passes its WAL file and the arguments the method documents.
            unsafe {
                let (w, m) = parts(f);
                let rc = w.flush(m);
                if rc != ffi::SQLITE_OK {
                    return rc;
                }
                match m.$method {
                    Some(x) => x(w.system $(, $arg)*),
                    None => ffi::SQLITE_NOTFOUND,
                }
            }
        }
    };
}

flushing!(read, xRead(data: *mut c_void, n: c_int, offset: i64));
flushing!(truncate, xTruncate(size: i64));
flushing!(sync, xSync(flags: c_int));
flushing!(file_size, xFileSize(size: *mut i64));
flushing!(lock, xLock(level: c_int));
flushing!(unlock, xUnlock(level: c_int));
flushing!(check_reserved_lock, xCheckReservedLock(out: *mut c_int));
flushing!(file_control, xFileControl(op: c_int, arg: *mut c_void));

unsafe extern "C" fn sector_size(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: as `parts`.
    unsafe {
        let (w, m) = parts(f);
        m.xSectorSize.map_or(4096, |x| x(w.system))
    }
}

unsafe extern "C" fn device_characteristics(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: as `parts`.
    unsafe {
        let (w, m) = parts(f);
        m.xDeviceCharacteristics.map_or(0, |x| x(w.system))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TempDir;
    use rusqlite::{Connection, OpenFlags};
    use std::cell::Cell;
    use std::path::Path;

    thread_local! {
        /// Writes handed to the system's file on this thread.
        pub(super) static SYSTEM_WRITES: Cell<u64> = const { Cell::new(0) };
        /// Writebacks handed to the `wal-writeback` thread from this thread: (offset, bytes).
        pub(super) static WRITEBACKS: std::cell::RefCell<Vec<(i64, i64)>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }

    /// A connection through this VFS to a fresh WAL database (checkpoints off, so that every
    /// commit stays in the WAL), with a table `t (k, v)`.
    fn writer(db: &Path) -> anyhow::Result<Connection> {
        let x = Connection::open_with_flags_and_vfs(
            db,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
            register().map_err(anyhow::Error::msg)?,
        )?;
        x.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
             PRAGMA wal_autocheckpoint = 0; \
             CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL);",
        )?;
        Ok(x)
    }

    /// Copies the database and its WAL as a crash would leave them (the writer still open, the
    /// WAL not checkpointed) and opens the copy with the system's VFS, which recovers the WAL:
    /// only frames that are in the file with unbroken checksums survive.
    fn crash_copy(db: &Path, dir: &Path) -> anyhow::Result<Connection> {
        let copy = dir.join("crash.db");
        std::fs::copy(db, &copy)?;
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        let mut copy_wal = copy.as_os_str().to_owned();
        copy_wal.push("-wal");
        std::fs::copy(&wal, &copy_wal)?;
        let x = Connection::open(&copy)?;
        let ok: String = x.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        assert_eq!(ok, "ok");
        Ok(x)
    }

    /// Rows whose `v` is `n` copies of the letter chosen for their key from `first`, of those
    /// with `k` in `keys`.
    fn matching(
        x: &Connection,
        first: char,
        n: i64,
        keys: std::ops::Range<i64>,
    ) -> anyhow::Result<i64> {
        Ok(x.query_row(
            "SELECT COUNT(*) FROM t WHERE k >= ?1 AND k < ?2 \
             AND v = printf('%.*c', ?3, char(unicode(?4) + k % 26))",
            rusqlite::params![keys.start, keys.end, n, first.to_string()],
            |r| r.get(0),
        )?)
    }

    #[test]
    fn writeback_is_started_only_while_a_sync_is_under_way() {
        assert!(!super::writeback_wanted(0));
        assert!(super::writeback_wanted(1));
        assert!(super::writeback_wanted(2));
        // The syncer's mark counts while it lives (other tests of this process may hold marks
        // of their own meanwhile, so only this one's presence is certain).
        let mark = super::SyncInFlight::start();
        assert!(super::SYNCS_IN_FLIGHT.load(std::sync::atomic::Ordering::SeqCst) >= 1);
        drop(mark);
    }

    #[test]
    fn ranges_handed_over_meanwhile_become_one_per_file() -> anyhow::Result<()> {
        let dir = TempDir::new("walbuf")?;
        let (a, b) = (dir.0.join("a"), dir.0.join("b"));
        std::fs::write(&a, b"")?;
        std::fs::write(&b, b"")?;
        let (a, b) = (
            Arc::new(std::fs::File::open(a)?),
            Arc::new(std::fs::File::open(b)?),
        );
        let hints = super::Hints::new();
        // The first range wakes the thread; the next ones find it awake (or about to take them).
        assert!(hints.add(&a, 100, 200));
        assert!(!hints.add(&b, 4_000, 8_120));
        assert!(!hints.add(&a, 200, 300));
        assert!(!hints.add(&a, 40, 60));
        let taken: Vec<_> = hints
            .take()
            .into_iter()
            .map(|(f, s, e)| (Arc::ptr_eq(&f, &a), s, e))
            .collect();
        assert_eq!(taken, [(true, 40, 300), (false, 4_000, 8_120)]);
        // Taken: the next range wakes the thread again.
        assert!(hints.add(&b, 0, 10));
        Ok(())
    }

    #[test]
    fn each_commit_reaches_the_file_in_one_write_and_readers_see_it() -> anyhow::Result<()> {
        let dir = TempDir::new("walbuf")?;
        let db = dir.0.join("t.db");
        let x = writer(&db)?;
        let reader = Connection::open(&db)?;
        let wal = dir.0.join("t.db-wal");
        // As if the syncer's `fdatasync` were under way throughout: every write-out starts its
        // writeback.
        let _under_way = super::SyncInFlight::start();
        for i in 0..40i64 {
            SYSTEM_WRITES.with(|w| w.set(0));
            WRITEBACKS.with(|w| w.borrow_mut().clear());
            let before = std::fs::metadata(&wal)?.len();
            // Three rows of 3,000 bytes: three pages of the table, its interior pages and the
            // file header's page — frames of 4,120 bytes each, far below one write's 124 KiB.
            x.execute_batch(&format!(
                "BEGIN; INSERT INTO t (k, v) SELECT {i} * 3 + value, printf('%.*c', 3000, \
                 char(65 + ({i} * 3 + value) % 26)) FROM (SELECT 0 AS value UNION ALL \
                 SELECT 1 UNION ALL SELECT 2); COMMIT;"
            ))?;
            let writes = SYSTEM_WRITES.with(Cell::get);
            // (The WAL's header went with the CREATE TABLE's commit, on its own.)
            assert_eq!(writes, 1, "commit {i} took {writes} writes");
            // And the disk was set to write exactly those bytes: the frames appended to the WAL
            // (whole frames of 4,096 + 24 bytes), from where the file ended.
            if cfg!(target_os = "linux") {
                let after = std::fs::metadata(&wal)?.len();
                let started = WRITEBACKS.with(|w| w.borrow().clone());
                let appended = i64::try_from(after - before)?;
                assert_eq!(started, [(i64::try_from(before)?, appended)], "commit {i}");
                assert_eq!(appended % 4120, 0, "commit {i}");
            }
            // Another connection (the system's VFS) sees every committed row, exactly.
            assert_eq!(matching(&reader, 'A', 3000, 0..(i + 1) * 3)?, (i + 1) * 3);
        }
        // The ranges were taken by the `wal-writeback` thread, not left waiting.
        if cfg!(target_os = "linux") {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !super::HINTS
                .pending
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .is_empty()
            {
                anyhow::ensure!(
                    std::time::Instant::now() < deadline,
                    "no thread took the hints"
                );
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        let copy = crash_copy(&db, &dir.0)?;
        assert_eq!(matching(&copy, 'A', 3000, 0..120)?, 120);
        assert_eq!(
            copy.query_row("SELECT COUNT(*) FROM t", [], |r| r.get::<_, i64>(0))?,
            120
        );
        Ok(())
    }

    #[test]
    fn a_transaction_that_spills_rewrites_and_rolls_back_leaves_exactly_what_committed()
    -> anyhow::Result<()> {
        let dir = TempDir::new("walbuf")?;
        let db = dir.0.join("t.db");
        let x = writer(&db)?;
        // A cache of 10 pages: the transactions below spill frames to the WAL before they
        // commit, and then write some of the same pages again (SQLite overwrites those frames
        // in place and rewrites the checksums after the commit frame).
        x.execute_batch("PRAGMA cache_size = 10;")?;
        let insert = |first: char, keys: std::ops::Range<i64>| -> rusqlite::Result<usize> {
            x.execute(
                "INSERT INTO t (k, v) SELECT value, printf('%.*c', 2000, \
                 char(unicode(?3) + value % 26)) FROM (WITH RECURSIVE s(value) AS \
                 (SELECT ?1 UNION ALL SELECT value + 1 FROM s WHERE value + 1 < ?2) \
                 SELECT value FROM s)",
                rusqlite::params![keys.start, keys.end, first.to_string()],
            )
        };
        x.execute_batch("BEGIN")?;
        insert('A', 0..300)?;
        x.execute(
            "UPDATE t SET v = printf('%.*c', 2000, char(97 + k % 26)) WHERE k % 2 = 0",
            [],
        )?;
        x.execute_batch("COMMIT")?;
        // Spilled and rolled back: none of it is ever seen.
        x.execute_batch("BEGIN")?;
        insert('A', 300..600)?;
        x.execute("UPDATE t SET v = 'gone'", [])?;
        x.execute_batch("ROLLBACK")?;
        // And a small commit after it.
        insert('A', 1000..1002)?;

        let check = |c: &Connection| -> anyhow::Result<()> {
            let even = c.query_row(
                "SELECT COUNT(*) FROM t WHERE k < 300 AND k % 2 = 0 \
                 AND v = printf('%.*c', 2000, char(97 + k % 26))",
                [],
                |r| r.get::<_, i64>(0),
            )?;
            let odd = c.query_row(
                "SELECT COUNT(*) FROM t WHERE k < 300 AND k % 2 = 1 \
                 AND v = printf('%.*c', 2000, char(65 + k % 26))",
                [],
                |r| r.get::<_, i64>(0),
            )?;
            assert_eq!((even, odd), (150, 150));
            assert_eq!(matching(c, 'A', 2000, 1000..1002)?, 2);
            assert_eq!(
                c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get::<_, i64>(0))?,
                302
            );
            Ok(())
        };
        check(&Connection::open(&db)?)?;
        check(&x)?;
        check(&crash_copy(&db, &dir.0)?)?;
        Ok(())
    }

    /// A file in memory, as the system's file would hold it.
    fn put(file: &mut Vec<u8>, data: &[u8], at: i64) {
        let at = usize::try_from(at).unwrap_or(0);
        if file.len() < at + data.len() {
            file.resize(at + data.len(), 0);
        }
        file[at..at + data.len()].copy_from_slice(data);
    }

    /// A frame header (`commit` its commit field) or a page-like write of `len` bytes.
    fn bytes(len: usize, commit: u32, fill: u8) -> Vec<u8> {
        let mut b = vec![fill; len];
        if len == FRAME_HEADER {
            b[4..8].copy_from_slice(&commit.to_be_bytes());
        }
        b
    }

    proptest::proptest! {
        /// Whatever SQLite writes in whatever order: the file plus what is gathered always
        /// holds exactly what writing each call at once would; after the write that follows a
        /// commit frame's header (its page: not another header) nothing is left gathered; and a
        /// flush (any other call on the file) leaves nothing gathered.
        #[test]
        fn gathering_never_changes_what_the_file_holds(
            ops in proptest::collection::vec(
                (0i64..3000, proptest::sample::select(vec![24usize, 24, 24, 100, 7, 32]),
                 0u32..3, proptest::bool::weighted(0.1), proptest::prelude::any::<u8>()),
                1..200,
            )
        ) {
            let mut file = Vec::new();
            let mut expected = Vec::new();
            let mut g = Gathered::default();
            let mut after_commit_header = false;
            for (offset, len, commit, other_call, fill) in ops {
                let mut out = |b: &[u8], at: i64| {
                    put(&mut file, b, at);
                    ffi::SQLITE_OK
                };
                if other_call {
                    proptest::prop_assert_eq!(g.flush(&mut out), ffi::SQLITE_OK);
                    proptest::prop_assert!(g.buf.is_empty());
                    after_commit_header = false;
                    continue;
                }
                // Appends more often than not, as SQLite's frames are.
                let offset = if offset % 3 != 0 && !g.buf.is_empty() {
                    g.start + g.buf.len() as i64
                } else {
                    offset
                };
                let data = bytes(len, commit, fill);
                proptest::prop_assert_eq!(g.write(&data, offset, &mut out), ffi::SQLITE_OK);
                put(&mut expected, &data, offset);
                if after_commit_header && len != FRAME_HEADER {
                    let left = g.buf.len();
                    proptest::prop_assert!(left == 0, "a commit frame's page left {} bytes", left);
                }
                after_commit_header = len == FRAME_HEADER && commit != 0;
                let mut seen = file.clone();
                put(&mut seen, &g.buf, g.start);
                let n = expected.len().max(seen.len());
                seen.resize(n, 0);
                let mut want = expected.clone();
                want.resize(n, 0);
                proptest::prop_assert_eq!(seen, want);
            }
        }
    }

    #[test]
    fn a_large_commit_is_written_in_chunks_the_system_takes() {
        // 100 frames of 4,096-byte pages: ≈ 412 KB, more than one of unixWrite's calls takes.
        let (mut g, mut writes) = (Gathered::default(), Vec::new());
        let mut out = |b: &[u8], at: i64| {
            writes.push((at, b.len()));
            ffi::SQLITE_OK
        };
        let frame = (FRAME_HEADER + 4096) as i64;
        for k in 0..100i64 {
            let commit = if k == 99 { 100 } else { 0 };
            let at = 32 + k * frame;
            assert_eq!(
                g.write(&bytes(FRAME_HEADER, commit, 1), at, &mut out),
                ffi::SQLITE_OK
            );
            assert_eq!(
                g.write(&bytes(4096, 0, 2), at + 24, &mut out),
                ffi::SQLITE_OK
            );
        }
        assert!(g.buf.is_empty());
        let total: usize = writes.iter().map(|w| w.1).sum();
        assert_eq!(total, 100 * (FRAME_HEADER + 4096));
        assert_eq!(writes.len(), total.div_ceil(CHUNK));
        assert!(writes.iter().all(|w| w.1 < 0x1ffff));
        assert_eq!(writes[0].0, 32);
        assert!(writes.windows(2).all(|w| w[0].0 + w[0].1 as i64 == w[1].0));
    }
}

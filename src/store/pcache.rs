//! SQLite's own page cache, without the scan of every hash bucket at the end of a transaction.
//!
//! When a B-tree balance puts its new sibling pages in page-number order, SQLite swaps two
//! pages' numbers through a temporary one: the number of the locking page, which no database
//! uses (`PENDING_BYTE / page size + 1`: 262,145 for pages of 4 KiB). Its page cache (`pcache1`)
//! then remembers that number as the largest it holds, and the truncation at the end of that
//! transaction, which drops the pages past the end of the file, can no longer shave a few hash
//! slots: it walks every bucket of the cache (about one per page held: up to 16,384 with the
//! 64 MiB cache). On the swipe writer that was 4.7–4.9 % of its time (BENCHMARKS.md, session 16).
//!
//! This cache is SQLite's `pcache1`, called through, with one change: the swap's temporary
//! number is kept in the inner cache under key 0, which SQLite never uses for a page (pages
//! count from 1). A page holds that number only between two calls of the same swap
//! ([`rekey`]); SQLite's lookup of the number before it moves a page there ([`fetch`]) is mapped
//! the same way, and every other call and key passes through unchanged.
//!
//! A page cache can only be chosen before SQLite initializes, once per process: [`install`] runs
//! before the first SQLite connection is opened (see [`super::Db::connect`]). If SQLite was
//! already initialized (something opened a connection first), the default cache stays: correct,
//! only slower. Should another thread initialize SQLite while `install` runs (only tests open
//! connections outside `Db::connect`), nothing mixes: `install` first asks for the default
//! methods, which sets them, so SQLite's initialization never writes the methods itself, and no
//! page cache exists before it has finished.

use rusqlite::ffi;
use std::ffi::{c_int, c_uint};
use std::sync::OnceLock;

/// Where SQLite's locking bytes start (`sqlite3PendingByte`; only SQLite's own test builds move
/// it).
const PENDING_BYTE: c_uint = 0x4000_0000;

/// SQLite's default page cache methods, which this one calls through.
struct Inner(ffi::sqlite3_pcache_methods2);
// SAFETY: a table of function pointers and SQLite's `pArg` (null for pcache1), set once before
// SQLite initializes and only read afterwards.
unsafe impl Send for Inner {}
unsafe impl Sync for Inner {}
static INNER: OnceLock<Inner> = OnceLock::new();

/// Installs the page cache (once; later calls return the first outcome). An error says why
/// SQLite's default cache stays.
pub fn install() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        // SAFETY: sqlite3_config is called with the argument type each option documents (a
        // pointer to a sqlite3_pcache_methods2 to fill, then to copy); both fail with
        // SQLITE_MISUSE once SQLite is initialized, and nothing is installed then.
        unsafe {
            let mut inner: ffi::sqlite3_pcache_methods2 = std::mem::zeroed();
            let rc = ffi::sqlite3_config(
                ffi::SQLITE_CONFIG_GETPCACHE2,
                &mut inner as *mut ffi::sqlite3_pcache_methods2,
            );
            if rc != ffi::SQLITE_OK {
                return Err(format!(
                    "SQLite is already initialized (sqlite3_config {rc})"
                ));
            }
            if inner.xCreate.is_none() || inner.xRekey.is_none() || inner.xFetch.is_none() {
                return Err("SQLite's default page cache is incomplete".into());
            }
            let mut methods = inner;
            methods.xCreate = Some(create);
            methods.xCachesize = Some(cachesize);
            methods.xPagecount = Some(pagecount);
            methods.xFetch = Some(fetch);
            methods.xUnpin = Some(unpin);
            methods.xRekey = Some(rekey);
            methods.xTruncate = Some(truncate);
            methods.xDestroy = Some(destroy);
            methods.xShrink = Some(shrink);
            INNER
                .set(Inner(inner))
                .map_err(|_| "installed twice".to_owned())?;
            // SQLite copies the methods.
            let rc = ffi::sqlite3_config(
                ffi::SQLITE_CONFIG_PCACHE2,
                &methods as *const ffi::sqlite3_pcache_methods2,
            );
            if rc != ffi::SQLITE_OK {
                return Err(format!("sqlite3_config(PCACHE2) failed ({rc})"));
            }
        }
        Ok(())
    })
    .clone()
}

/// One cache (opaque to SQLite): the inner cache and the temporary page number of its page size.
struct Cache {
    inner: *mut ffi::sqlite3_pcache,
    temporary: c_uint,
}

/// SQLite's default methods (always set: `install` sets them before registering this cache).
fn methods() -> Option<&'static ffi::sqlite3_pcache_methods2> {
    INNER.get().map(|i| &i.0)
}

/// # Safety
/// `p` is a cache [`create`] returned and [`destroy`] has not freed.
unsafe fn cache<'a>(p: *mut ffi::sqlite3_pcache) -> &'a Cache {
    // SAFETY: as the function's contract says.
    unsafe { &*(p as *const Cache) }
}

/// The inner cache's key for `key`: the swap's temporary number is kept under 0.
fn inner_key(c: &Cache, key: c_uint) -> c_uint {
    if key == c.temporary { 0 } else { key }
}

unsafe extern "C" fn create(
    page_size: c_int,
    extra: c_int,
    purgeable: c_int,
) -> *mut ffi::sqlite3_pcache {
    let Some(create) = methods().and_then(|m| m.xCreate) else {
        return std::ptr::null_mut();
    };
    // SAFETY: SQLite's own arguments, passed on.
    let inner = unsafe { create(page_size, extra, purgeable) };
    if inner.is_null() {
        return inner;
    }
    let temporary = PENDING_BYTE / c_uint::try_from(page_size.max(1)).unwrap_or(1) + 1;
    Box::into_raw(Box::new(Cache { inner, temporary })) as *mut ffi::sqlite3_pcache
}

unsafe extern "C" fn cachesize(p: *mut ffi::sqlite3_pcache, n: c_int) {
    if let Some(f) = methods().and_then(|m| m.xCachesize) {
        // SAFETY: `p` is ours (SQLite's contract), its inner cache is pcache1's.
        unsafe { f(cache(p).inner, n) }
    }
}

unsafe extern "C" fn pagecount(p: *mut ffi::sqlite3_pcache) -> c_int {
    match methods().and_then(|m| m.xPagecount) {
        // SAFETY: as in `cachesize`.
        Some(f) => unsafe { f(cache(p).inner) },
        None => 0,
    }
}

unsafe extern "C" fn fetch(
    p: *mut ffi::sqlite3_pcache,
    key: c_uint,
    create: c_int,
) -> *mut ffi::sqlite3_pcache_page {
    let Some(f) = methods().and_then(|m| m.xFetch) else {
        return std::ptr::null_mut();
    };
    // SAFETY: as in `cachesize`.
    unsafe {
        let c = cache(p);
        f(c.inner, inner_key(c, key), create)
    }
}

unsafe extern "C" fn unpin(
    p: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    discard: c_int,
) {
    if let Some(f) = methods().and_then(|m| m.xUnpin) {
        // SAFETY: as in `cachesize`; the page is the inner cache's.
        unsafe { f(cache(p).inner, page, discard) }
    }
}

unsafe extern "C" fn rekey(
    p: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    old: c_uint,
    new: c_uint,
) {
    if let Some(f) = methods().and_then(|m| m.xRekey) {
        // SAFETY: as in `unpin`.
        unsafe {
            let c = cache(p);
            #[cfg(test)]
            if new == c.temporary {
                tests::TEMPORARY_REKEYS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            f(c.inner, page, inner_key(c, old), inner_key(c, new))
        }
    }
}

unsafe extern "C" fn truncate(p: *mut ffi::sqlite3_pcache, limit: c_uint) {
    if let Some(f) = methods().and_then(|m| m.xTruncate) {
        // SAFETY: as in `cachesize`.
        unsafe { f(cache(p).inner, limit) }
    }
}

unsafe extern "C" fn destroy(p: *mut ffi::sqlite3_pcache) {
    // SAFETY: `p` came from `create` (Box::into_raw) and SQLite destroys it once.
    let c = unsafe { Box::from_raw(p as *mut Cache) };
    if let Some(f) = methods().and_then(|m| m.xDestroy) {
        // SAFETY: the inner cache, destroyed once with its outer one.
        unsafe { f(c.inner) }
    }
}

unsafe extern "C" fn shrink(p: *mut ffi::sqlite3_pcache) {
    if let Some(f) = methods().and_then(|m| m.xShrink) {
        // SAFETY: as in `cachesize`.
        unsafe { f(cache(p).inner) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TempDir;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Swaps through the temporary number, counted.
    pub static TEMPORARY_REKEYS: AtomicU64 = AtomicU64::new(0);

    /// Installs the cache; false when this process's SQLite is already initialized (`cargo test`
    /// runs every test in one process), after running `test` alone in a fresh process of its
    /// own, where it installs (`cargo nextest run` gives each test one anyway).
    fn installed_here(test: &str) -> anyhow::Result<bool> {
        if install().is_ok() {
            return Ok(true);
        }
        anyhow::ensure!(
            std::env::var_os("MEDSETTLE_PCACHE_ALONE").is_none(),
            "a fresh test process could not install the page cache: {:?}",
            install()
        );
        let out = std::process::Command::new(std::env::current_exe()?)
            .args([test, "--exact", "--test-threads=1"])
            .env("MEDSETTLE_PCACHE_ALONE", "1")
            .output()?;
        let said = String::from_utf8_lossy(&out.stdout);
        anyhow::ensure!(
            out.status.success() && said.contains("1 passed"),
            "{test} in a fresh process: {}\n{said}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(false)
    }

    /// pcache1 itself, through the installed methods: a page rekeyed to the temporary number is
    /// held under key 0 (the inner cache has nothing under the temporary number), and comes back
    /// under the number it is given next.
    #[test]
    fn the_temporary_number_is_kept_under_key_zero() -> anyhow::Result<()> {
        if !installed_here("store::pcache::tests::the_temporary_number_is_kept_under_key_zero")? {
            return Ok(());
        }
        let inner = methods().ok_or_else(|| anyhow::anyhow!("no inner methods"))?;
        let (Some(inner_fetch), Some(inner_rekey)) = (inner.xFetch, inner.xRekey) else {
            anyhow::bail!("pcache1 without xFetch or xRekey");
        };
        // SAFETY: SQLite initialized (pcache1 sets itself up then); the cache is created, used
        // with pages it returned, and destroyed here; the inner cache is read only while the
        // outer one lives.
        unsafe {
            anyhow::ensure!(ffi::sqlite3_initialize() == ffi::SQLITE_OK, "SQLite init");
            let p = create(4096, 64, 1);
            anyhow::ensure!(!p.is_null(), "no cache");
            let c = cache(p);
            assert_eq!(c.temporary, 262_145, "the locking page of 4 KiB pages");
            let page = fetch(p, 7, 2);
            anyhow::ensure!(!page.is_null(), "no page 7");
            let other = fetch(p, 9, 2);
            anyhow::ensure!(!other.is_null(), "no page 9");
            // As balance_nonroot swaps 7 and 9: 7 → temporary, 9 → 7, temporary → 9.
            rekey(p, page, 7, 262_145);
            assert!(inner_fetch(c.inner, 262_145, 0).is_null());
            assert_eq!(inner_fetch(c.inner, 0, 0), page, "held under key 0");
            assert_eq!(fetch(p, 262_145, 0), page, "found by SQLite's number");
            rekey(p, other, 9, 7);
            rekey(p, page, 262_145, 9);
            assert!(inner_fetch(c.inner, 0, 0).is_null());
            assert_eq!(fetch(p, 9, 0), page);
            assert_eq!(fetch(p, 7, 0), other);
            // Any other number passes through as it is.
            inner_rekey(c.inner, other, 7, 11);
            assert_eq!(fetch(p, 11, 0), other);
            unpin(p, page, 0);
            unpin(p, other, 0);
            truncate(p, 1);
            assert_eq!(pagecount(p), 0);
            destroy(p);
        }
        Ok(())
    }

    /// A database that B-tree balances swap pages of all the time (an index of random keys), on
    /// the installed cache: swaps go through the temporary number, and what the writer's cache
    /// holds is what a fresh connection reads from the file.
    #[test]
    fn balances_through_it_keep_the_data() -> anyhow::Result<()> {
        if !installed_here("store::pcache::tests::balances_through_it_keep_the_data")? {
            return Ok(());
        }
        let dir = TempDir::new("pcache")?;
        let file = dir.0.join("t.db");
        let x = rusqlite::Connection::open(&file)?;
        x.execute_batch(
            "PRAGMA journal_mode = WAL; \
             CREATE TABLE t (k TEXT NOT NULL, v INTEGER NOT NULL); \
             CREATE INDEX t_k ON t (k);",
        )?;
        let before = TEMPORARY_REKEYS.load(Ordering::Relaxed);
        let (mut rows, mut sum) = (0i64, 0i64);
        for batch in 0..200i64 {
            let tx = x.unchecked_transaction()?;
            {
                let mut insert = tx.prepare_cached("INSERT INTO t (k, v) VALUES (?1, ?2)")?;
                for _ in 0..50 {
                    let v = i64::from(rand::random::<u32>());
                    insert.execute(rusqlite::params![format!("{v:010}-{batch}"), v])?;
                    rows += 1;
                    sum += v;
                }
            }
            // Every tenth transaction rolls back: pages the balances swapped are dropped again.
            if batch % 10 == 9 {
                tx.rollback()?;
                let undo: (i64, i64) =
                    x.query_row("SELECT COUNT(*), COALESCE(SUM(v), 0) FROM t", [], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })?;
                (rows, sum) = undo;
            } else {
                tx.commit()?;
            }
        }
        let swaps = TEMPORARY_REKEYS.load(Ordering::Relaxed) - before;
        assert!(swaps > 0, "no balance swapped pages");
        let seen = |c: &rusqlite::Connection| -> rusqlite::Result<(i64, i64, String)> {
            let (n, s) = c.query_row(
                "SELECT COUNT(*), SUM(v) FROM t INDEXED BY t_k WHERE k > ''",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let ok = c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
            Ok((n, s, ok))
        };
        assert_eq!(seen(&x)?, (rows, sum, "ok".to_owned()));
        let fresh = rusqlite::Connection::open(&file)?;
        assert_eq!(seen(&fresh)?, (rows, sum, "ok".to_owned()));
        Ok(())
    }
}

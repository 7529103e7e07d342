//! A treatment region's catalogue: effective-dated items, versioned per upsert call.

use super::cache::CatalogueSnapshot;
use super::query::{One, Query};
use super::{Conn, StoreResult};
use crate::domain::adjudication::CatalogueTerms;
use crate::domain::kinds::CatalogueClass;
use crate::domain::money::{Ratio, UnitPrice};
use crate::on_conn;
use chrono::NaiveDate;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CatalogueRow {
    pub region: String,
    pub code: String,
    pub effective_from: NaiveDate,
    pub name: String,
    /// proto CatalogueKind.
    pub kind: i64,
    /// proto CatalogueClass.
    pub class: i64,
    /// Class-B first self-paid ratio in basis points.
    pub b_ratio_bp: Option<i64>,
    /// Price cap per unit in micro-yuan.
    pub cap_micros: Option<i64>,
    pub version: i64,
}

crate::direct_row!(CatalogueRow {
    region,
    code,
    effective_from,
    name,
    kind,
    class,
    b_ratio_bp,
    cap_micros,
    version,
});

const COLS: &str =
    "region, code, effective_from, name, kind, class, b_ratio_bp, cap_micros, version";

/// Rows per INSERT statement: 9 parameters each stays under both engines' parameter limits.
const CHUNK: usize = 1000;

/// Bumps the region's catalogue version (locking its row) and returns the new version.
pub async fn next_version(c: &mut Conn, region: &str) -> StoreResult<i64> {
    let sql = "INSERT INTO catalogue_version (region, version) VALUES ($1, 1) \
               ON CONFLICT (region) DO UPDATE SET version = catalogue_version.version + 1 \
               RETURNING version";
    let One(v) = Query::new(sql).bind(region).fetch_one(c).await?;
    Ok(v)
}

/// Inserts or replaces items by (region, code, effective_from), set-based in chunks.
pub async fn upsert_items(c: &mut Conn, rows: &[CatalogueRow]) -> StoreResult<()> {
    for chunk in rows.chunks(CHUNK) {
        let mut sql = format!(
            "INSERT INTO catalogue_item ({COLS}) VALUES {}",
            super::values(c.engine(), chunk.len(), 9, 1)
        );
        sql.push_str(
            " ON CONFLICT (region, code, effective_from) DO UPDATE SET name = excluded.name, \
             kind = excluded.kind, class = excluded.class, b_ratio_bp = excluded.b_ratio_bp, \
             cap_micros = excluded.cap_micros, version = excluded.version",
        );
        on_conn!(c, x => {
            let mut q = sqlx::query(&sql);
            for r in chunk {
                q = q.bind(&r.region).bind(&r.code).bind(r.effective_from).bind(&r.name)
                    .bind(r.kind).bind(r.class).bind(r.b_ratio_bp).bind(r.cap_micros)
                    .bind(r.version);
            }
            q.execute(x).await.map(|r| r.rows_affected())
        })?;
    }
    Ok(())
}

/// The entry of `code` in force on `on`: the latest effective_from ≤ on.
pub async fn item_on(
    c: &mut Conn,
    region: &str,
    code: &str,
    on: NaiveDate,
) -> StoreResult<Option<CatalogueRow>> {
    let sql = format!(
        "SELECT {COLS} FROM catalogue_item WHERE region = $1 AND code = $2 \
         AND effective_from <= $3 ORDER BY effective_from DESC LIMIT 1"
    );
    Query::new(&sql)
        .bind(region)
        .bind(code)
        .bind(on)
        .fetch_optional(c)
        .await
}

/// Entries in force on `on` whose code starts with `query` or whose name contains it, after
/// code `after`, in code order.
pub async fn search(
    c: &mut Conn,
    region: &str,
    query: &str,
    on: NaiveDate,
    after: &str,
    limit: i64,
) -> StoreResult<Vec<CatalogueRow>> {
    let cols = COLS
        .split(", ")
        .map(|col| format!("i.{col}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {cols} FROM catalogue_item i WHERE i.region = $1 AND i.code > $4 \
         AND i.effective_from = (SELECT MAX(j.effective_from) FROM catalogue_item j \
             WHERE j.region = i.region AND j.code = i.code AND j.effective_from <= $3) \
         AND ($2 = '' OR i.code LIKE $5 OR i.name LIKE $6) \
         ORDER BY i.code LIMIT $7"
    );
    let escaped = query
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    let prefix = format!("{escaped}%");
    let contains = format!("%{escaped}%");
    let sql = sql
        .replace("LIKE $5", "LIKE $5 ESCAPE '\\'")
        .replace("LIKE $6", "LIKE $6 ESCAPE '\\'");
    Query::new(&sql)
        .bind(region)
        .bind(query)
        .bind(on)
        .bind(after)
        .bind(&prefix)
        .bind(&contains)
        .bind(limit)
        .fetch_all(c)
        .await
}

/// The region's current catalogue version (0 = no catalogue yet).
pub async fn current_version(c: &mut Conn, region: &str) -> StoreResult<i64> {
    // On SQLite on the handle (every swipe batch asks; see `super::query`).
    let sql = "SELECT version FROM catalogue_version WHERE region = $1";
    let v: Option<One<i64>> = Query::new(sql).bind(region).fetch_optional(c).await?;
    Ok(v.map_or(0, |One(v)| v))
}

/// The region's catalogue as of this transaction: from the cache when the cached version is
/// current, else loaded whole (one query) and cached.
pub async fn snapshot(c: &mut Conn, region: &str) -> StoreResult<Arc<CatalogueSnapshot>> {
    let version = current_version(c, region).await?;
    let caches = c.caches();
    if let Some(s) = caches.catalogue(region, version) {
        return Ok(s);
    }
    let sql = format!(
        "SELECT {COLS} FROM catalogue_item WHERE region = $1 ORDER BY code, effective_from"
    );
    // On SQLite on the handle (a swipe batch loads a catalogue it has not cached on the swipe
    // writer's own connection, see `super::Writer`).
    let rows: Vec<CatalogueRow> = Query::new(&sql).bind(region).fetch_all(c).await?;
    let mut by_code: HashMap<String, Vec<CatalogueRow>> = HashMap::new();
    for r in rows {
        by_code.entry(r.code.clone()).or_default().push(r);
    }
    let snap = Arc::new(CatalogueSnapshot { version, by_code });
    caches.put_catalogue(region, snap.clone());
    Ok(snap)
}

impl CatalogueRow {
    /// What adjudication needs from this entry (None if its class is unknown).
    pub fn terms(&self) -> Option<CatalogueTerms> {
        Some(CatalogueTerms {
            class: CatalogueClass::from_code(self.class)?,
            b_ratio: self.b_ratio_bp.and_then(|bp| Ratio::from_bp(bp).ok()),
            cap: self.cap_micros.and_then(|m| UnitPrice::from_micros(m).ok()),
        })
    }
}

impl CatalogueSnapshot {
    /// The entry of `code` in force on `on`.
    pub fn in_force(&self, code: &str, on: NaiveDate) -> Option<&CatalogueRow> {
        self.by_code
            .get(code)?
            .iter()
            .filter(|e| e.effective_from <= on)
            .max_by_key(|e| e.effective_from)
    }
}

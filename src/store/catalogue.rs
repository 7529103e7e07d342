//! A treatment region's catalogue: effective-dated items, versioned per upsert call.

use super::{Conn, StoreResult};
use crate::on_conn;
use chrono::NaiveDate;

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

const COLS: &str =
    "region, code, effective_from, name, kind, class, b_ratio_bp, cap_micros, version";

/// Rows per INSERT statement: 9 parameters each stays under both engines' parameter limits.
const CHUNK: usize = 1000;

/// Bumps the region's catalogue version (locking its row) and returns the new version.
pub async fn next_version(c: &mut Conn, region: &str) -> StoreResult<i64> {
    let sql = "INSERT INTO catalogue_version (region, version) VALUES ($1, 1) \
               ON CONFLICT (region) DO UPDATE SET version = catalogue_version.version + 1 \
               RETURNING version";
    Ok(on_conn!(c, x => sqlx::query_scalar(sql).bind(region).fetch_one(x).await)?)
}

/// Inserts or replaces items by (region, code, effective_from), set-based in chunks.
pub async fn upsert_items(c: &mut Conn, rows: &[CatalogueRow]) -> StoreResult<()> {
    for chunk in rows.chunks(CHUNK) {
        let mut sql = format!("INSERT INTO catalogue_item ({COLS}) VALUES ");
        for i in 0..chunk.len() {
            let b = i * 9;
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "(${},${},${},${},${},${},${},${},${})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6,
                b + 7,
                b + 8,
                b + 9
            ));
        }
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
    Ok(
        on_conn!(c, x => sqlx::query_as(&sql).bind(region).bind(code).bind(on)
        .fetch_optional(x).await)?,
    )
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
    Ok(
        on_conn!(c, x => sqlx::query_as(&sql).bind(region).bind(query).bind(on).bind(after)
        .bind(&prefix).bind(&contains).bind(limit).fetch_all(x).await)?,
    )
}

/// Every entry of the given codes effective on or before `until` (callers pick the one in force
/// on each line's date): one query for a whole batch of fee lines.
pub async fn entries_for_codes(
    c: &mut Conn,
    region: &str,
    codes: &[&str],
    until: NaiveDate,
) -> StoreResult<Vec<CatalogueRow>> {
    if codes.is_empty() {
        return Ok(Vec::new());
    }
    let list: Vec<String> = (0..codes.len()).map(|i| format!("${}", i + 3)).collect();
    let sql = format!(
        "SELECT {COLS} FROM catalogue_item WHERE region = $1 AND effective_from <= $2 \
         AND code IN ({}) ORDER BY code, effective_from",
        list.join(",")
    );
    Ok(on_conn!(c, x => {
        let mut q = sqlx::query_as(&sql).bind(region).bind(until);
        for code in codes {
            q = q.bind(*code);
        }
        q.fetch_all(x).await
    })?)
}

/// The entry of `code` in force on `on` among `entries` (sorted by code, effective_from).
pub fn in_force<'a>(
    entries: &'a [CatalogueRow],
    code: &str,
    on: NaiveDate,
) -> Option<&'a CatalogueRow> {
    entries
        .iter()
        .filter(|e| e.code == code && e.effective_from <= on)
        .max_by_key(|e| e.effective_from)
}

//! Regions (bureaus) and institutions.

use super::query::Query;
use super::query::Row as _;
use super::{Conn, StoreResult};
use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::OptionalExtension;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RegionRow {
    pub code: String,
    pub name: String,
    pub province_code: String,
    pub bureau_name: String,
}

crate::direct_row!(RegionRow {
    code,
    name,
    province_code,
    bureau_name,
});

pub async fn insert_region(c: &mut Conn, r: &RegionRow, now: DateTime<Utc>) -> StoreResult<()> {
    let sql = "INSERT INTO region (code, name, province_code, bureau_name, created_at) \
               VALUES ($1, $2, $3, $4, $5)";
    Query::new(sql)
        .bind(&r.code)
        .bind(&r.name)
        .bind(&r.province_code)
        .bind(&r.bureau_name)
        .bind(now)
        .execute(c)
        .await?;
    Ok(())
}

pub async fn get_region(c: &mut Conn, code: &str) -> StoreResult<Option<RegionRow>> {
    region_row(c, code, false).await
}

/// The region row, locked for the rest of the transaction: serializes per-region changes
/// that must see each other (policy versions).
pub async fn lock_region(c: &mut Conn, code: &str) -> StoreResult<Option<RegionRow>> {
    region_row(c, code, true).await
}

async fn region_row(c: &mut Conn, code: &str, lock: bool) -> StoreResult<Option<RegionRow>> {
    let lock = if lock { c.for_update() } else { "" };
    let sql =
        format!("SELECT code, name, province_code, bureau_name FROM region WHERE code = $1{lock}");
    Query::new(&sql).bind(code).fetch_optional(c).await
}

/// Regions after `after` in code order, optionally of one province.
pub async fn list_regions(
    c: &mut Conn,
    province: Option<&str>,
    after: &str,
    limit: i64,
) -> StoreResult<Vec<RegionRow>> {
    let sql = "SELECT code, name, province_code, bureau_name FROM region \
               WHERE code > $1 AND ($2 = '' OR province_code = $2) ORDER BY code LIMIT $3";
    let p = province.unwrap_or("");
    Query::new(sql)
        .bind(after)
        .bind(p)
        .bind(limit)
        .fetch_all(c)
        .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InstitutionRow {
    pub code: String,
    pub name: String,
    pub region: String,
    /// 1 hospital, 2 pharmacy (proto InstitutionKind).
    pub kind: i64,
    pub level: i64,
    pub cross_region_enabled: bool,
    /// 1 active, 2 suspended (proto InstitutionStatus).
    pub status: i64,
    pub valid_from: NaiveDate,
    pub valid_until: Option<NaiveDate>,
}

crate::direct_row!(InstitutionRow {
    code,
    name,
    region,
    kind,
    level,
    cross_region_enabled,
    status,
    valid_from,
    valid_until,
});

const INSTITUTION_COLS: &str =
    "code, name, region, kind, level, cross_region_enabled, status, valid_from, valid_until";

pub async fn insert_institution(c: &mut Conn, r: &InstitutionRow) -> StoreResult<()> {
    let sql = format!(
        "INSERT INTO institution ({INSTITUTION_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    );
    Query::new(&sql)
        .bind(&r.code)
        .bind(&r.name)
        .bind(&r.region)
        .bind(r.kind)
        .bind(r.level)
        .bind(r.cross_region_enabled)
        .bind(r.status)
        .bind(r.valid_from)
        .bind(r.valid_until)
        .execute(c)
        .await?;
    Ok(())
}

pub async fn update_institution(c: &mut Conn, r: &InstitutionRow) -> StoreResult<()> {
    let sql = "UPDATE institution SET name = $2, cross_region_enabled = $3, status = $4, \
               valid_until = $5 WHERE code = $1";
    Query::new(sql)
        .bind(&r.code)
        .bind(&r.name)
        .bind(r.cross_region_enabled)
        .bind(r.status)
        .bind(r.valid_until)
        .execute(c)
        .await?;
    Ok(())
}

pub async fn get_institution(
    c: &mut Conn,
    code: &str,
    lock: bool,
) -> StoreResult<Option<InstitutionRow>> {
    let lock = if lock { c.for_update() } else { "" };
    let sql = format!("SELECT {INSTITUTION_COLS} FROM institution WHERE code = $1{lock}");
    Query::new(&sql).bind(code).fetch_optional(c).await
}

/// Institutions after `after` in code order; `region` "" = all; `kind` 0 = all.
pub async fn list_institutions(
    c: &mut Conn,
    region: &str,
    kind: i64,
    after: &str,
    limit: i64,
) -> StoreResult<Vec<InstitutionRow>> {
    let sql = format!(
        "SELECT {INSTITUTION_COLS} FROM institution WHERE code > $1 AND ($2 = '' OR region = $2) \
         AND ($3 = 0 OR kind = $3) ORDER BY code LIMIT $4"
    );
    Query::new(&sql)
        .bind(after)
        .bind(region)
        .bind(kind)
        .bind(limit)
        .fetch_all(c)
        .await
}

/// Institutions with these codes.
pub async fn institutions_by_codes(
    c: &mut Conn,
    codes: &[String],
) -> StoreResult<Vec<InstitutionRow>> {
    if codes.is_empty() {
        return Ok(Vec::new());
    }
    // SQLite: one prepared lookup per code (see `super::direct`).
    let on_sqlite = c
        .with_sqlite(|x| {
            let mut st = x.prepare_cached(&format!(
                "SELECT {INSTITUTION_COLS} FROM institution WHERE code = ?1"
            ))?;
            let mut out = Vec::new();
            for code in codes {
                let row = st.query_row([code], InstitutionRow::direct).optional()?;
                out.extend(row);
            }
            out.sort_unstable_by(|a, b| a.code.cmp(&b.code));
            out.dedup_by(|a, b| a.code == b.code);
            Ok(out)
        })
        .await?;
    if let Some(found) = on_sqlite {
        return Ok(found);
    }
    // PostgreSQL: the codes as one array (one statement text for any number of codes).
    let sql = format!("SELECT {INSTITUTION_COLS} FROM institution WHERE code = ANY($1)");
    Ok(sqlx::query_as(&sql).bind(codes).fetch_all(c.pg()?).await?)
}

//! Home-region policy versions: immutable, effective-dated; the body is JSON of
//! `domain::policy::Policy` (amounts as strings, never floats).

use super::query::{One, Query};
use super::{Conn, StoreResult};
use crate::on_conn;
use chrono::{DateTime, NaiveDate, Utc};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PolicyRow {
    pub region: String,
    pub version: i64,
    pub effective_from: NaiveDate,
    pub body: String,
}

crate::direct_row!(PolicyRow {
    region,
    version,
    effective_from,
    body,
});

/// The newest version of a region, if any (callers that add a version lock the region first).
pub async fn latest(c: &mut Conn, region: &str) -> StoreResult<Option<PolicyRow>> {
    let sql = "SELECT region, version, effective_from, body FROM policy_version WHERE region = $1 \
               ORDER BY version DESC LIMIT 1";
    Query::new(sql).bind(region).fetch_optional(c).await
}

pub async fn insert(c: &mut Conn, p: &PolicyRow, now: DateTime<Utc>) -> StoreResult<()> {
    let sql = "INSERT INTO policy_version (region, version, effective_from, body, created_at) \
               VALUES ($1, $2, $3, $4, $5)";
    Query::new(sql)
        .bind(&p.region)
        .bind(p.version)
        .bind(p.effective_from)
        .bind(&p.body)
        .bind(now)
        .execute(c)
        .await?;
    Ok(())
}

/// The number of the version in force on `on` (no body).
pub async fn in_force_version(
    c: &mut Conn,
    region: &str,
    on: NaiveDate,
) -> StoreResult<Option<i64>> {
    let sql = "SELECT version FROM policy_version WHERE region = $1 AND effective_from <= $2 \
               ORDER BY effective_from DESC LIMIT 1";
    // On SQLite on the handle (every swipe batch asks; see `super::query`).
    let v: Option<One<i64>> = Query::new(sql)
        .bind(region)
        .bind(on)
        .fetch_optional(c)
        .await?;
    Ok(v.map(|One(v)| v))
}

/// The version in force on `on`.
pub async fn in_force(c: &mut Conn, region: &str, on: NaiveDate) -> StoreResult<Option<PolicyRow>> {
    let sql = "SELECT region, version, effective_from, body FROM policy_version \
               WHERE region = $1 AND effective_from <= $2 ORDER BY effective_from DESC LIMIT 1";
    Query::new(sql)
        .bind(region)
        .bind(on)
        .fetch_optional(c)
        .await
}

pub async fn by_version(
    c: &mut Conn,
    region: &str,
    version: i64,
) -> StoreResult<Option<PolicyRow>> {
    let sql = "SELECT region, version, effective_from, body FROM policy_version \
               WHERE region = $1 AND version = $2";
    // On SQLite on the handle (a swipe batch loads a policy it has not cached on the swipe
    // writer's own connection, see `super::Writer`).
    Query::new(sql)
        .bind(region)
        .bind(version)
        .fetch_optional(c)
        .await
}

/// All versions of a region, newest first, without bodies.
pub async fn versions(c: &mut Conn, region: &str) -> StoreResult<Vec<PolicyRow>> {
    let sql = "SELECT region, version, effective_from, '' AS body FROM policy_version \
               WHERE region = $1 ORDER BY version DESC";
    Ok(on_conn!(c, x => sqlx::query_as(sql).bind(region).fetch_all(x).await)?)
}

//! Home-region policies: immutable effective-dated versions.

use super::auth::Principal;
use super::error::{AppError, AppResult};
use crate::domain::ids::RegionCode;
use crate::domain::policy::Policy;
use crate::store::Conn;
use crate::store::policies::{self, PolicyRow};
use chrono::{DateTime, NaiveDate, Utc};
use std::sync::Arc;

/// A stored version with its body decoded.
#[derive(Debug, Clone)]
pub struct Version {
    pub region: String,
    pub version: i64,
    pub effective_from: NaiveDate,
    /// None when listed without bodies.
    pub policy: Option<Policy>,
}

fn decode(row: PolicyRow) -> AppResult<Version> {
    let policy = if row.body.is_empty() {
        None
    } else {
        Some(serde_json::from_str(&row.body).map_err(|e| {
            AppError::Internal(anyhow::anyhow!(
                "stored policy {}/{} does not decode: {e}",
                row.region,
                row.version
            ))
        })?)
    };
    Ok(Version {
        region: row.region,
        version: row.version,
        effective_from: row.effective_from,
        policy,
    })
}

/// Adds a version from `effective_from` on; history is never rewritten, so it must be later
/// than every existing version.
pub async fn put(
    conn: &mut Conn,
    who: &Principal,
    region: &RegionCode,
    effective_from: NaiveDate,
    policy: Policy,
    now: DateTime<Utc>,
) -> AppResult<Version> {
    who.require_region(region.as_str())?;
    policy.validate()?;
    // The region row lock orders concurrent puts: each sees the versions committed before it.
    crate::store::registry::lock_region(conn, region.as_str())
        .await?
        .ok_or_else(|| AppError::not_found(format!("region {region} is not registered")))?;
    let latest = policies::latest(conn, region.as_str()).await?;
    if let Some(l) = &latest
        && effective_from <= l.effective_from
    {
        return Err(AppError::precondition(
            "policy_history_immutable",
            format!(
                "version {} is in force from {}; a new version must start later",
                l.version, l.effective_from
            ),
        ));
    }
    let body = serde_json::to_string(&policy)
        .map_err(|e| AppError::Internal(anyhow::anyhow!("encoding policy: {e}")))?;
    let row = PolicyRow {
        region: region.as_str().to_owned(),
        version: latest.map_or(1, |l| l.version + 1),
        effective_from,
        body,
    };
    policies::insert(conn, &row, now).await?;
    decode(row)
}

/// The version in force on a date and its body (cached by version); FAILED_PRECONDITION
/// "policy_missing" when the region has none (the settlement path).
pub async fn in_force(
    conn: &mut Conn,
    region: &RegionCode,
    on: NaiveDate,
) -> AppResult<(i64, Arc<Policy>)> {
    let version = policies::in_force_version(conn, region.as_str(), on)
        .await?
        .ok_or_else(|| {
            AppError::precondition(
                "policy_missing",
                format!("home region {region} has no policy in force on {on}"),
            )
        })?;
    let caches = conn.caches();
    if let Some(p) = caches.policy(region.as_str(), version) {
        return Ok((version, p));
    }
    let row = policies::by_version(conn, region.as_str(), version)
        .await?
        .ok_or_else(|| {
            AppError::Internal(anyhow::anyhow!("policy {region} v{version} vanished"))
        })?;
    let policy = decode(row)?.policy.map(Arc::new).ok_or_else(|| {
        AppError::Internal(anyhow::anyhow!("policy {region} v{version} has no body"))
    })?;
    caches.put_policy(region.as_str(), version, policy.clone());
    Ok((version, policy))
}

/// The version in force on a date, or a given version. Operators and bureaus (policies are
/// published rules).
pub async fn get(
    conn: &mut Conn,
    who: &Principal,
    region: &RegionCode,
    on: NaiveDate,
    version: Option<i64>,
) -> AppResult<Version> {
    who.require_bureau_or_operator()?;
    let row = match version {
        Some(v) => policies::by_version(conn, region.as_str(), v).await?,
        None => policies::in_force(conn, region.as_str(), on).await?,
    };
    let row = row.ok_or_else(|| match version {
        Some(v) => AppError::not_found(format!("region {region} has no policy version {v}")),
        None => AppError::not_found(format!("region {region} has no policy in force on {on}")),
    })?;
    decode(row)
}

pub async fn versions(
    conn: &mut Conn,
    who: &Principal,
    region: &RegionCode,
) -> AppResult<Vec<Version>> {
    who.require_bureau_or_operator()?;
    policies::versions(conn, region.as_str())
        .await?
        .into_iter()
        .map(decode)
        .collect()
}

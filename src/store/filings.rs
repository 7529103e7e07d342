//! Out-of-region filings.

use super::query::Query;
use super::{Conn, StoreResult};
use chrono::{DateTime, NaiveDate, Utc};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FilingRow {
    pub filing_id: String,
    pub psn_no: String,
    pub home_region: String,
    /// proto FilingType.
    pub filing_type: i64,
    /// A 6-digit region or a 2-digit province.
    pub destination: String,
    pub valid_from: NaiveDate,
    pub valid_until: Option<NaiveDate>,
    pub referring_institution: Option<String>,
    /// proto FilingStatus.
    pub status: i64,
    pub revoked_on: Option<NaiveDate>,
    pub revoke_reason: Option<String>,
}

crate::direct_row!(FilingRow {
    filing_id,
    psn_no,
    home_region,
    filing_type,
    destination,
    valid_from,
    valid_until,
    referring_institution,
    status,
    revoked_on,
    revoke_reason,
});

const COLS: &str = "filing_id, psn_no, home_region, filing_type, destination, valid_from, \
                    valid_until, referring_institution, status, revoked_on, revoke_reason";

pub async fn insert(c: &mut Conn, f: &FilingRow, now: DateTime<Utc>) -> StoreResult<()> {
    let sql = format!(
        "INSERT INTO filing ({COLS}, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
    );
    Query::new(&sql)
        .bind(&f.filing_id)
        .bind(&f.psn_no)
        .bind(&f.home_region)
        .bind(f.filing_type)
        .bind(&f.destination)
        .bind(f.valid_from)
        .bind(f.valid_until)
        .bind(&f.referring_institution)
        .bind(f.status)
        .bind(f.revoked_on)
        .bind(&f.revoke_reason)
        .bind(now)
        .execute(c)
        .await?;
    Ok(())
}

pub async fn get(c: &mut Conn, filing_id: &str, lock: bool) -> StoreResult<Option<FilingRow>> {
    let lock = if lock { c.for_update() } else { "" };
    let sql = format!("SELECT {COLS} FROM filing WHERE filing_id = $1{lock}");
    Query::new(&sql).bind(filing_id).fetch_optional(c).await
}

/// A person's filings, newest first.
pub async fn for_person(
    c: &mut Conn,
    psn_no: &str,
    include_revoked: bool,
) -> StoreResult<Vec<FilingRow>> {
    let sql = format!(
        "SELECT {COLS} FROM filing WHERE psn_no = $1 AND ($2 OR status = 1) \
         ORDER BY valid_from DESC, filing_id DESC"
    );
    Query::new(&sql)
        .bind(psn_no)
        .bind(include_revoked)
        .fetch_all(c)
        .await
}

pub async fn revoke(c: &mut Conn, filing_id: &str, on: NaiveDate, reason: &str) -> StoreResult<()> {
    let sql = "UPDATE filing SET status = 2, revoked_on = $2, revoke_reason = $3 \
               WHERE filing_id = $1";
    Query::new(sql)
        .bind(filing_id)
        .bind(on)
        .bind(reason)
        .execute(c)
        .await?;
    Ok(())
}

//! Clearing periods and statements. Closing a period aggregates in the database with set-based
//! SQL: no row goes through Rust.

use super::{Conn, StoreResult};
use crate::on_conn;
use chrono::{DateTime, NaiveDate, Utc};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PeriodRow {
    pub period: String,
    /// proto PeriodStatus.
    pub status: i64,
    pub closed_at: DateTime<Utc>,
    pub confirm_deadline: NaiveDate,
}

pub async fn get_period(c: &mut Conn, period: &str, lock: bool) -> StoreResult<Option<PeriodRow>> {
    let lock = if lock { c.for_update() } else { "" };
    let sql = format!(
        "SELECT period, status, closed_at, confirm_deadline FROM clearing_period WHERE period = $1{lock}"
    );
    Ok(on_conn!(c, x => sqlx::query_as(&sql).bind(period).fetch_optional(x).await)?)
}

pub async fn insert_period(c: &mut Conn, p: &PeriodRow) -> StoreResult<()> {
    let sql = "INSERT INTO clearing_period (period, status, closed_at, confirm_deadline) VALUES ($1, $2, $3, $4)";
    on_conn!(c, x => sqlx::query(sql).bind(&p.period).bind(p.status).bind(p.closed_at).bind(p.confirm_deadline)
        .execute(x).await.map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn set_period_status(c: &mut Conn, period: &str, status: i64) -> StoreResult<()> {
    let sql = "UPDATE clearing_period SET status = $2 WHERE period = $1";
    on_conn!(c, x => sqlx::query(sql).bind(period).bind(status).execute(x).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// The clearing type (NHSA clr_type) of a settlement's care type, in SQL.
const CLR: &str = "CASE care_type WHEN 1 THEN 11 WHEN 2 THEN 21 WHEN 3 THEN 41 ELSE 51 END";

/// The deterministic statement id of a settlement row, in SQL.
fn statement_id_sql() -> String {
    format!(
        "'ST' || clearing_period || '-' || home_region || '-' || treatment_region || '-' || CAST({CLR} AS TEXT)"
    )
}

/// Produces the statements and lines of a period from its settlements (two set-based
/// statements); returns the number of statements.
pub async fn generate_statements(c: &mut Conn, period: &str) -> StoreResult<u64> {
    let id = statement_id_sql();
    let sql = format!(
        "INSERT INTO statement (statement_id, period, home_region, treatment_region, clearing_type, status, confirmed_at) \
         SELECT {id}, clearing_period, home_region, treatment_region, {CLR}, 1, NULL FROM settlement \
         WHERE clearing_period = $1 GROUP BY clearing_period, home_region, treatment_region, {CLR}"
    );
    let n = on_conn!(c, x => sqlx::query(&sql).bind(period).execute(x).await.map(|r| r.rows_affected()))?;
    let sql = format!(
        "INSERT INTO statement_line (statement_id, setl_id, reverses, medfee_fen, fund_fen, acct_fen, disputed, dispute_reason) \
         SELECT {id}, setl_id, reverses, medfee_fen, fund_fen, acct_fen, false, NULL FROM settlement \
         WHERE clearing_period = $1"
    );
    on_conn!(c, x => sqlx::query(&sql).bind(period).execute(x).await.map(|r| r.rows_affected()))?;
    Ok(n)
}

/// (statements, confirmed statements) of a period.
pub async fn period_counts(c: &mut Conn, period: &str) -> StoreResult<(i64, i64)> {
    let sql = "SELECT COUNT(*), CAST(COALESCE(SUM(CASE WHEN status = 2 THEN 1 ELSE 0 END), 0) AS BIGINT) \
               FROM statement WHERE period = $1";
    Ok(on_conn!(c, x => sqlx::query_as(sql).bind(period).fetch_one(x).await)?)
}

/// A statement with its figures (amounts in fen; sums over the undisputed lines).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StatementRow {
    pub statement_id: String,
    pub period: String,
    pub home_region: String,
    pub treatment_region: String,
    pub clearing_type: i64,
    /// 1 pending, 2 confirmed.
    pub status: i64,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub line_count: i64,
    pub medfee_fen: i64,
    pub fund_fen: i64,
    pub acct_fen: i64,
    pub disputed_count: i64,
    pub disputed_due_fen: i64,
    pub due_fen: i64,
}

const SUMMARY: &str = "SELECT s.statement_id, s.period, s.home_region, s.treatment_region, s.clearing_type, \
    s.status, s.confirmed_at, COUNT(l.setl_id) AS line_count, \
    CAST(COALESCE(SUM(CASE WHEN l.disputed THEN 0 ELSE l.medfee_fen END), 0) AS BIGINT) AS medfee_fen, \
    CAST(COALESCE(SUM(CASE WHEN l.disputed THEN 0 ELSE l.fund_fen END), 0) AS BIGINT) AS fund_fen, \
    CAST(COALESCE(SUM(CASE WHEN l.disputed THEN 0 ELSE l.acct_fen END), 0) AS BIGINT) AS acct_fen, \
    CAST(COALESCE(SUM(CASE WHEN l.disputed THEN 1 ELSE 0 END), 0) AS BIGINT) AS disputed_count, \
    CAST(COALESCE(SUM(CASE WHEN l.disputed THEN l.fund_fen + l.acct_fen ELSE 0 END), 0) AS BIGINT) AS disputed_due_fen, \
    CAST(COALESCE(SUM(CASE WHEN l.disputed THEN 0 ELSE l.fund_fen + l.acct_fen END), 0) AS BIGINT) AS due_fen \
    FROM statement s LEFT JOIN statement_line l ON l.statement_id = s.statement_id";
const GROUP: &str = "GROUP BY s.statement_id, s.period, s.home_region, s.treatment_region, s.clearing_type, \
    s.status, s.confirmed_at";

pub async fn get_statement(c: &mut Conn, statement_id: &str) -> StoreResult<Option<StatementRow>> {
    let sql = format!("{SUMMARY} WHERE s.statement_id = $1 {GROUP}");
    Ok(on_conn!(c, x => sqlx::query_as(&sql).bind(statement_id).fetch_optional(x).await)?)
}

/// Locks a statement's row (inside a write transaction); returns its status, if it exists.
pub async fn lock_statement(c: &mut Conn, statement_id: &str) -> StoreResult<Option<i64>> {
    let lock = c.for_update();
    let sql = format!("SELECT status FROM statement WHERE statement_id = $1{lock}");
    Ok(on_conn!(c, x => sqlx::query_scalar(&sql).bind(statement_id).fetch_optional(x).await)?)
}

/// Statements of a period after `after` in id order; `region` "" = all, else where it is a party.
pub async fn list_statements(
    c: &mut Conn,
    period: &str,
    region: &str,
    after: &str,
    limit: i64,
) -> StoreResult<Vec<StatementRow>> {
    let sql = format!(
        "{SUMMARY} WHERE s.period = $1 AND ($2 = '' OR s.home_region = $2 OR s.treatment_region = $2) \
         AND s.statement_id > $3 {GROUP} ORDER BY s.statement_id LIMIT $4"
    );
    Ok(
        on_conn!(c, x => sqlx::query_as(&sql).bind(period).bind(region).bind(after).bind(limit).fetch_all(x).await)?,
    )
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LineRow {
    pub setl_id: String,
    pub reverses: Option<String>,
    pub medfee_fen: i64,
    pub fund_fen: i64,
    pub acct_fen: i64,
    pub disputed: bool,
    pub dispute_reason: Option<String>,
}

pub async fn lines(
    c: &mut Conn,
    statement_id: &str,
    after: &str,
    limit: i64,
) -> StoreResult<Vec<LineRow>> {
    let sql = "SELECT setl_id, reverses, medfee_fen, fund_fen, acct_fen, disputed, dispute_reason \
               FROM statement_line WHERE statement_id = $1 AND setl_id > $2 ORDER BY setl_id LIMIT $3";
    Ok(
        on_conn!(c, x => sqlx::query_as(sql).bind(statement_id).bind(after).bind(limit).fetch_all(x).await)?,
    )
}

pub async fn confirm(c: &mut Conn, statement_id: &str, now: DateTime<Utc>) -> StoreResult<()> {
    let sql = "UPDATE statement SET status = 2, confirmed_at = $2 WHERE statement_id = $1";
    on_conn!(c, x => sqlx::query(sql).bind(statement_id).bind(now).execute(x).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Marks a line disputed; returns false when the statement has no such line.
pub async fn dispute(
    c: &mut Conn,
    statement_id: &str,
    setl_id: &str,
    reason: &str,
) -> StoreResult<bool> {
    let sql = "UPDATE statement_line SET disputed = true, dispute_reason = $3 \
               WHERE statement_id = $1 AND setl_id = $2";
    let n = on_conn!(c, x => sqlx::query(sql).bind(statement_id).bind(setl_id).bind(reason).execute(x).await
        .map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Statement lines that differ from the settlement they point at (or point at none).
pub async fn line_mismatches(c: &mut Conn, limit: i64) -> StoreResult<Vec<String>> {
    let sql = "SELECT l.setl_id FROM statement_line l LEFT JOIN settlement s ON s.setl_id = l.setl_id \
               WHERE s.setl_id IS NULL OR l.medfee_fen <> s.medfee_fen OR l.fund_fen <> s.fund_fen \
               OR l.acct_fen <> s.acct_fen ORDER BY l.setl_id LIMIT $1";
    Ok(on_conn!(c, x => sqlx::query_scalar(sql).bind(limit).fetch_all(x).await)?)
}

/// Settlements of closed periods that no statement line carries.
pub async fn unstated_settlements(c: &mut Conn, limit: i64) -> StoreResult<Vec<String>> {
    let sql = "SELECT s.setl_id FROM settlement s JOIN clearing_period p ON p.period = s.clearing_period \
               LEFT JOIN statement_line l ON l.setl_id = s.setl_id WHERE l.setl_id IS NULL \
               ORDER BY s.setl_id LIMIT $1";
    Ok(on_conn!(c, x => sqlx::query_scalar(sql).bind(limit).fetch_all(x).await)?)
}

//! Reconciliation reads: an institution's totals by group, and the comparison of its detail
//! rows (held in a per-call temporary table) with our settlements.

use super::{Conn, StoreError, StoreResult};
use crate::on_conn;
use chrono::NaiveDate;

/// Our totals of one (insurance type, care type) group; amounts in fen.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TotalsRow {
    pub insurance_type: i64,
    pub care_type: i64,
    pub count: i64,
    pub medfee_fen: i64,
    pub fund_fen: i64,
    pub acct_fen: i64,
    pub cash_fen: i64,
}

/// An institution's settlements in [from, to] by group: reversals and refunds count −1.
pub async fn totals(
    c: &mut Conn,
    institution: &str,
    from: NaiveDate,
    to: NaiveDate,
) -> StoreResult<Vec<TotalsRow>> {
    let sql = "SELECT insurance_type, care_type, \
               CAST(SUM(CASE WHEN kind = 1 THEN 1 ELSE -1 END) AS BIGINT) AS count, \
               CAST(SUM(medfee_fen) AS BIGINT) AS medfee_fen, CAST(SUM(fund_fen) AS BIGINT) AS fund_fen, \
               CAST(SUM(acct_fen) AS BIGINT) AS acct_fen, CAST(SUM(cash_fen) AS BIGINT) AS cash_fen \
               FROM settlement WHERE setl_id IN (SELECT setl_id FROM settlement_by_institution \
               WHERE institution = $1 AND business_date >= $2 AND business_date <= $3) \
               GROUP BY insurance_type, care_type ORDER BY insurance_type, care_type";
    Ok(
        on_conn!(c, x => sqlx::query_as(sql).bind(institution).bind(from).bind(to).fetch_all(x).await)?,
    )
}

/// One detail row (theirs or ours); amounts in fen.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DetailRow {
    pub setl_id: String,
    pub request_id: String,
    pub medfee_fen: i64,
    pub fund_fen: i64,
    pub acct_fen: i64,
    pub cash_fen: i64,
    pub refund: bool,
}

/// A compared pair: ours and/or theirs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compared {
    pub setl_id: String,
    pub ours: Option<DetailRow>,
    pub theirs: Option<DetailRow>,
}

/// Creates the call's temporary table (on a plain connection: no write lock on the database).
pub async fn create_detail_table(c: &mut Conn, table: &str) -> StoreResult<()> {
    let sql = format!(
        "CREATE TEMP TABLE {table} (setl_id TEXT PRIMARY KEY, request_id TEXT NOT NULL, \
         medfee_fen BIGINT NOT NULL, fund_fen BIGINT NOT NULL, acct_fen BIGINT NOT NULL, \
         cash_fen BIGINT NOT NULL, refund BOOLEAN NOT NULL)"
    );
    on_conn!(c, x => sqlx::query(&sql).execute(x).await.map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn drop_detail_table(c: &mut Conn, table: &str) -> StoreResult<()> {
    let sql = format!("DROP TABLE IF EXISTS {table}");
    on_conn!(c, x => sqlx::query(&sql).execute(x).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Adds their rows; a setl_id sent twice is `StoreError::Unique`.
pub async fn add_detail_rows(c: &mut Conn, table: &str, rows: &[DetailRow]) -> StoreResult<()> {
    for chunk in rows.chunks(super::chunk_rows(7)) {
        let sql = format!(
            "INSERT INTO {table} (setl_id, request_id, medfee_fen, fund_fen, acct_fen, cash_fen, refund) VALUES {}",
            super::values(c.engine(), chunk.len(), 7, 1)
        );
        on_conn!(c, x => {
            let mut q = sqlx::query(&sql);
            for r in chunk {
                q = q.bind(&r.setl_id).bind(&r.request_id).bind(r.medfee_fen).bind(r.fund_fen)
                    .bind(r.acct_fen).bind(r.cash_fen).bind(r.refund);
            }
            q.execute(x).await.map(|r| r.rows_affected())
        })?;
    }
    Ok(())
}

#[derive(sqlx::FromRow)]
struct Joined {
    setl_id: String,
    t_request_id: Option<String>,
    t_medfee: Option<i64>,
    t_fund: Option<i64>,
    t_acct: Option<i64>,
    t_cash: Option<i64>,
    t_refund: Option<bool>,
    o_request_id: Option<String>,
    o_medfee: Option<i64>,
    o_fund: Option<i64>,
    o_acct: Option<i64>,
    o_cash: Option<i64>,
    o_kind: Option<i64>,
}

impl Joined {
    fn split(self) -> Compared {
        let theirs = match (
            self.t_medfee,
            self.t_fund,
            self.t_acct,
            self.t_cash,
            self.t_refund,
        ) {
            (Some(m), Some(f), Some(a), Some(c), Some(r)) => Some(DetailRow {
                setl_id: self.setl_id.clone(),
                request_id: self.t_request_id.unwrap_or_default(),
                medfee_fen: m,
                fund_fen: f,
                acct_fen: a,
                cash_fen: c,
                refund: r,
            }),
            _ => None,
        };
        let ours = match (
            self.o_medfee,
            self.o_fund,
            self.o_acct,
            self.o_cash,
            self.o_kind,
        ) {
            (Some(m), Some(f), Some(a), Some(c), Some(k)) => Some(DetailRow {
                setl_id: self.setl_id.clone(),
                request_id: self.o_request_id.unwrap_or_default(),
                medfee_fen: m,
                fund_fen: f,
                acct_fen: a,
                cash_fen: c,
                refund: k != 1,
            }),
            _ => None,
        };
        Compared {
            setl_id: self.setl_id,
            ours,
            theirs,
        }
    }
}

/// Both sides have the row with the same amounts and refund flag (request ids are informational).
fn agree(c: &Compared) -> bool {
    match (&c.ours, &c.theirs) {
        (Some(o), Some(t)) => {
            (o.medfee_fen, o.fund_fen, o.acct_fen, o.cash_fen, o.refund)
                == (t.medfee_fen, t.fund_fen, t.acct_fen, t.cash_fen, t.refund)
        }
        _ => false,
    }
}

/// Their rows after `after` (in setl_id order) that we lack or that differ, at most `limit`
/// examined per page; returns (differences, last setl_id examined or None at the end).
pub async fn compare_theirs(
    c: &mut Conn,
    table: &str,
    institution: &str,
    from: NaiveDate,
    to: NaiveDate,
    after: &str,
    limit: i64,
) -> StoreResult<(Vec<Compared>, Option<String>)> {
    let sql = format!(
        "SELECT t.setl_id, t.request_id AS t_request_id, t.medfee_fen AS t_medfee, t.fund_fen AS t_fund, \
         t.acct_fen AS t_acct, t.cash_fen AS t_cash, t.refund AS t_refund, s.request_id AS o_request_id, \
         s.medfee_fen AS o_medfee, s.fund_fen AS o_fund, s.acct_fen AS o_acct, s.cash_fen AS o_cash, \
         s.kind AS o_kind FROM {table} t LEFT JOIN settlement s ON s.setl_id = t.setl_id \
         AND s.institution = $1 AND s.business_date >= $2 AND s.business_date <= $3 \
         WHERE t.setl_id > $4 ORDER BY t.setl_id LIMIT $5"
    );
    let rows: Vec<Joined> = on_conn!(c, x => sqlx::query_as(&sql).bind(institution).bind(from).bind(to)
        .bind(after).bind(limit).fetch_all(x).await)?;
    let last = if i64::try_from(rows.len()).unwrap_or(i64::MAX) < limit {
        None
    } else {
        rows.last().map(|r| r.setl_id.clone())
    };
    let diffs = rows
        .into_iter()
        .map(Joined::split)
        .filter(|c| !agree(c))
        .collect();
    Ok((diffs, last))
}

/// Our settlements after `after` that they did not send, at most `limit` examined per page.
pub async fn missing_theirs(
    c: &mut Conn,
    table: &str,
    institution: &str,
    from: NaiveDate,
    to: NaiveDate,
    after: &str,
    limit: i64,
) -> StoreResult<(Vec<Compared>, Option<String>)> {
    let sql = format!(
        "SELECT s.setl_id, NULL AS t_request_id, NULL AS t_medfee, NULL AS t_fund, NULL AS t_acct, \
         NULL AS t_cash, NULL AS t_refund, s.request_id AS o_request_id, s.medfee_fen AS o_medfee, \
         s.fund_fen AS o_fund, s.acct_fen AS o_acct, s.cash_fen AS o_cash, s.kind AS o_kind, \
         t.setl_id AS t_key FROM settlement s LEFT JOIN {table} t ON t.setl_id = s.setl_id \
         WHERE s.setl_id IN (SELECT setl_id FROM settlement_by_institution WHERE institution = $1 \
         AND business_date >= $2 AND business_date <= $3 AND setl_id > $4) \
         ORDER BY s.setl_id LIMIT $5"
    );
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        joined: Joined,
        t_key: Option<String>,
    }
    let rows: Vec<Row> = on_conn!(c, x => sqlx::query_as(&sql).bind(institution).bind(from).bind(to)
        .bind(after).bind(limit).fetch_all(x).await)?;
    let last = if i64::try_from(rows.len()).unwrap_or(i64::MAX) < limit {
        None
    } else {
        rows.last().map(|r| r.joined.setl_id.clone())
    };
    let diffs = rows
        .into_iter()
        .filter(|r| r.t_key.is_none())
        .map(|r| r.joined.split())
        .collect();
    Ok((diffs, last))
}

/// Whether a store error is a duplicate key (their setl_id sent twice).
pub fn is_duplicate(e: &StoreError) -> bool {
    matches!(e, StoreError::Unique { .. })
}

//! The event stream: rows written in the same transaction as what they report, read in commit
//! order by a cursor (see migrations/*/0006_events.sql for how each engine keeps that order).

use super::cells::{Cell, Cells};
use super::query::{One, Query};
use super::{Conn, Engine, StoreResult, settlement::SettlementRow};
use crate::on_conn;
use chrono::{DateTime, Utc};

/// Event kinds as stored (proto EventKind).
pub mod kind {
    pub const SETTLEMENT_BOOKED: i64 = 1;
    pub const SETTLEMENT_REVERSED: i64 = 2;
    pub const PERIOD_CLOSED: i64 = 3;
    pub const STATEMENT_CONFIRMED: i64 = 4;
    pub const STATEMENT_OVERDUE: i64 = 5;
    pub const LINES_DISPUTED: i64 = 6;
    pub const DISPUTE_RESOLVED: i64 = 7;
    pub const PERIOD_NETTED: i64 = 8;
    pub const TRANSFER_RECORDED: i64 = 9;
    pub const PERIOD_SETTLED: i64 = 10;
    pub const PREPAYMENT_DEPOSITED: i64 = 11;
}

#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct EventRow {
    pub event_id: String,
    pub kind: i64,
    pub occurred_at: DateTime<Utc>,
    pub home_region: String,
    pub treatment_region: String,
    pub reference: String,
    pub period: String,
    pub amount_fen: i64,
    pub institution: String,
    pub reverses: String,
    pub medfee_fen: i64,
    pub fund_fen: i64,
    pub acct_fen: i64,
    pub detail: String,
}

impl EventRow {
    /// An event about a whole period (every bureau sees it).
    pub fn period(kind: i64, period: &str, at: DateTime<Utc>, detail: String) -> EventRow {
        EventRow {
            event_id: super::new_id("E", at),
            kind,
            occurred_at: at,
            reference: period.to_owned(),
            period: period.to_owned(),
            detail,
            ..EventRow::default()
        }
    }

    /// An event between two bureaus (`treatment` may equal `home` for one-bureau events).
    #[allow(clippy::too_many_arguments)]
    pub fn between(
        kind: i64,
        home: &str,
        treatment: &str,
        reference: &str,
        period: &str,
        amount_fen: i64,
        at: DateTime<Utc>,
        detail: String,
    ) -> EventRow {
        EventRow {
            event_id: super::new_id("E", at),
            kind,
            occurred_at: at,
            home_region: home.to_owned(),
            treatment_region: treatment.to_owned(),
            reference: reference.to_owned(),
            period: period.to_owned(),
            amount_fen,
            detail,
            ..EventRow::default()
        }
    }

    /// The event of a booked settlement, reversal or refund.
    pub fn settlement(s: &SettlementRow) -> EventRow {
        let reversed = s.reverses.is_some();
        EventRow {
            event_id: format!("S{}", s.setl_id),
            kind: if reversed {
                kind::SETTLEMENT_REVERSED
            } else {
                kind::SETTLEMENT_BOOKED
            },
            occurred_at: s.settled_at,
            home_region: s.home_region.clone(),
            treatment_region: s.treatment_region.clone(),
            reference: s.setl_id.clone(),
            period: s.clearing_period.clone(),
            amount_fen: s.fund_fen + s.acct_fen,
            institution: s.institution.clone(),
            reverses: s.reverses.clone().unwrap_or_default(),
            medfee_fen: s.medfee_fen,
            fund_fen: s.fund_fen,
            acct_fen: s.acct_fen,
            detail: String::new(),
        }
    }
}

const COLS: &str = "event_id, kind, occurred_at, home_region, treatment_region, reference, period, \
    amount_fen, institution, reverses, medfee_fen, fund_fen, acct_fen, detail";

/// Writes events inside the caller's transaction.
pub async fn insert(c: &mut Conn, rows: &[EventRow]) -> StoreResult<()> {
    super::cells::insert(c, rows, "").await?;
    Ok(())
}

impl Cells for EventRow {
    const TABLE: &'static str = "event";
    const COLUMNS: &'static str = COLS;
    const N: usize = 14;
    fn cells<'a>(&'a self, out: &mut dyn FnMut(Cell<'a>)) {
        out(Cell::Text(&self.event_id));
        out(Cell::Int(self.kind));
        out(Cell::Time(self.occurred_at));
        out(Cell::Text(&self.home_region));
        out(Cell::Text(&self.treatment_region));
        out(Cell::Text(&self.reference));
        out(Cell::Text(&self.period));
        out(Cell::Int(self.amount_fen));
        out(Cell::Text(&self.institution));
        out(Cell::Text(&self.reverses));
        out(Cell::Int(self.medfee_fen));
        out(Cell::Int(self.fund_fen));
        out(Cell::Int(self.acct_fen));
        out(Cell::Text(&self.detail));
    }
}

/// Events of every statement of `period` matching `filter` (SQL on `statement s`), set-based.
pub async fn insert_for_statements(
    c: &mut Conn,
    kind: i64,
    period: &str,
    filter: &str,
    detail: &str,
    at: DateTime<Utc>,
) -> StoreResult<u64> {
    let sql = format!(
        "INSERT INTO event ({COLS}) SELECT 'E' || $2 || '-' || CAST($5 AS TEXT) || '-' || s.statement_id, $5, $3, \
         s.home_region, s.treatment_region, s.statement_id, s.period, \
         {}, '', '', 0, 0, 0, $4 FROM statement s WHERE s.period = $1 AND {filter}",
        super::clearing::live_due_sql("s")
    );
    let stamp = super::new_id("", at);
    Query::new(&sql)
        .bind(period)
        .bind(&stamp)
        .bind(at)
        .bind(detail)
        .bind(kind)
        .execute(c)
        .await
}

/// A position in the stream: (seq, "") on SQLite; (txid, event_id) on PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cursor {
    pub k1: i64,
    pub k2: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        format!("{}:{}", self.k1, self.k2)
    }

    /// Parses an encoded cursor ("" = the beginning).
    pub fn decode(s: &str) -> Option<Cursor> {
        if s.is_empty() {
            return Some(Cursor::default());
        }
        let (a, b) = s.split_once(':')?;
        let k1 = a.parse().ok().filter(|v: &i64| *v >= 0)?;
        if b.len() > 64 || !b.bytes().all(|ch| ch.is_ascii_alphanumeric() || ch == b'-') {
            return None;
        }
        Some(Cursor {
            k1,
            k2: b.to_owned(),
        })
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredEvent {
    pub k1: i64,
    pub k2: String,
    #[sqlx(flatten)]
    pub event: EventRow,
}

impl StoredEvent {
    /// The stream position just after this event.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            k1: self.k1,
            k2: self.k2.clone(),
        }
    }
}

/// Events after `after` in commit order that `region` may see ("" = all), at most `limit`.
pub async fn after(
    c: &mut Conn,
    after: &Cursor,
    region: &str,
    limit: i64,
) -> StoreResult<Vec<StoredEvent>> {
    let visible = "($3 = '' OR home_region = $3 OR treatment_region = $3 \
                   OR (home_region = '' AND treatment_region = ''))";
    let sql = match c.engine() {
        Engine::Sqlite => format!(
            "SELECT seq AS k1, '' AS k2, {COLS} FROM event WHERE seq > $1 AND $2 = $2 AND {visible} \
             ORDER BY seq LIMIT $4"
        ),
        Engine::Postgres => format!(
            "SELECT txid AS k1, event_id AS k2, {COLS} FROM event \
             WHERE (txid > $1 OR (txid = $1 AND event_id > $2)) \
             AND txid < CAST(CAST(pg_snapshot_xmin(pg_current_snapshot()) AS TEXT) AS BIGINT) \
             AND {visible} ORDER BY txid, event_id LIMIT $4"
        ),
    };
    Ok(
        on_conn!(c, x => sqlx::query_as(&sql).bind(after.k1).bind(&after.k2).bind(region).bind(limit)
        .fetch_all(x).await)?,
    )
}

/// Number of events (for tests and operators).
pub async fn count(c: &mut Conn) -> StoreResult<i64> {
    let sql = "SELECT COUNT(*) FROM event";
    let One(n) = Query::new(sql).fetch_one(c).await?;
    Ok(n)
}

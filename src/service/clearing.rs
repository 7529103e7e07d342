//! Clearing periods (first part): close a month into statements; the home bureau confirms a
//! statement or disputes lines. Netting, prepayments and transfers follow.

use super::auth::Principal;
use super::error::{AppError, AppResult};
use super::{Page, page_after};
use crate::domain::time::business_date;
use crate::store::clearing::{self, LineRow, PeriodRow, StatementRow};
use crate::store::{self, Conn, StoreError};
use chrono::{DateTime, Days, NaiveDate, Utc};

/// Period statuses as stored (proto PeriodStatus).
pub const CLOSED: i64 = 2;
pub const CONFIRMED: i64 = 3;
/// Statement statuses as stored.
pub const PENDING: i64 = 1;
pub const STATEMENT_CONFIRMED: i64 = 2;

/// A period's state and counts; `row` None = still open (never closed).
#[derive(Debug, Clone)]
pub struct Period {
    pub period: String,
    pub row: Option<PeriodRow>,
    pub statements: i64,
    pub confirmed: i64,
}

/// Parses YYYYMM into the first day of the month.
pub fn parse_period(field: &str, s: &str) -> AppResult<NaiveDate> {
    let ok = s.len() == 6 && s.bytes().all(|b| b.is_ascii_digit());
    let first = ok
        .then(|| {
            let y = s[..4].parse::<i32>().ok()?;
            let m = s[4..].parse::<u32>().ok()?;
            NaiveDate::from_ymd_opt(y, m, 1)
        })
        .flatten();
    first.ok_or_else(|| AppError::invalid(field, "expected a month YYYYMM"))
}

async fn period(conn: &mut Conn, period: &str) -> AppResult<Period> {
    let row = clearing::get_period(conn, period, false).await?;
    let (statements, confirmed) = clearing::period_counts(conn, period).await?;
    Ok(Period {
        period: period.to_owned(),
        row,
        statements,
        confirmed,
    })
}

/// Closes an ended month (operators; idempotent). The month must have ended a day ago (UTC+8),
/// so no settlement transaction begun in it can still be committing.
pub async fn close(
    conn: &mut Conn,
    who: &Principal,
    period_s: &str,
    confirm_days: u32,
    now: DateTime<Utc>,
) -> AppResult<Period> {
    who.require_operator()?;
    let first = parse_period("period", period_s)?;
    let days = match confirm_days {
        0 => 10,
        d @ 1..=90 => d,
        _ => return Err(AppError::invalid("confirm_days", "1..90 days")),
    };
    let today = business_date(now);
    let next_month = first
        .checked_add_months(chrono::Months::new(1))
        .unwrap_or(first);
    if today < next_month + Days::new(1) {
        return Err(AppError::precondition(
            "period_not_ended",
            format!(
                "{period_s} can close from {} on (UTC+8)",
                next_month + Days::new(1)
            ),
        ));
    }
    if clearing::get_period(conn, period_s, true).await?.is_some() {
        return period(conn, period_s).await;
    }
    let row = PeriodRow {
        period: period_s.to_owned(),
        status: CLOSED,
        closed_at: now,
        confirm_deadline: today + Days::new(u64::from(days)),
    };
    clearing::insert_period(conn, &row)
        .await
        .map_err(|e| match e {
            // A concurrent close won: run again and answer its period.
            StoreError::Unique { .. } => AppError::Retry("period closed concurrently".into()),
            other => other.into(),
        })?;
    let statements = clearing::generate_statements(conn, period_s).await?;
    if statements == 0 {
        clearing::set_period_status(conn, period_s, CONFIRMED).await?;
    }
    period(conn, period_s).await
}

pub async fn get(conn: &mut Conn, who: &Principal, period_s: &str) -> AppResult<Period> {
    who.require_bureau_or_operator()?;
    parse_period("period", period_s)?;
    period(conn, period_s).await
}

/// A statement `who` may read: operators, or a bureau that is a party.
fn may_read(who: &Principal, s: &StatementRow) -> bool {
    match who {
        Principal::Operator { .. } => true,
        Principal::Bureau { region } => *region == s.home_region || *region == s.treatment_region,
        Principal::Institution { .. } => false,
    }
}

pub async fn list(
    conn: &mut Conn,
    who: &Principal,
    period_s: &str,
    page_size: u32,
    page_token: &str,
) -> AppResult<Page<StatementRow>> {
    who.require_bureau_or_operator()?;
    parse_period("period", period_s)?;
    let region = match who {
        Principal::Bureau { region } => region.clone(),
        _ => String::new(),
    };
    let after = page_after(page_token)?;
    let size = store::page_size(page_size);
    let rows = clearing::list_statements(conn, period_s, &region, &after, size + 1).await?;
    let (items, next_page_token) = store::page(rows, size, |s| s.statement_id.clone());
    Ok(Page {
        items,
        next_page_token,
    })
}

/// A statement and a page of its lines.
pub async fn get_statement(
    conn: &mut Conn,
    who: &Principal,
    statement_id: &str,
    page_size: u32,
    page_token: &str,
) -> AppResult<(StatementRow, Page<LineRow>)> {
    let s = clearing::get_statement(conn, statement_id)
        .await?
        .ok_or_else(|| AppError::not_found(format!("statement {statement_id} does not exist")))?;
    if !may_read(who, &s) {
        return Err(AppError::denied(format!(
            "{} is not a party to {statement_id}",
            who.key()
        )));
    }
    let after = page_after(page_token)?;
    let size = store::page_size(page_size);
    let rows = clearing::lines(conn, statement_id, &after, size + 1).await?;
    let (items, next_page_token) = store::page(rows, size, |l| l.setl_id.clone());
    Ok((
        s,
        Page {
            items,
            next_page_token,
        },
    ))
}

/// Locks a pending statement of `who`'s home region.
async fn pending_for_home(
    conn: &mut Conn,
    who: &Principal,
    statement_id: &str,
) -> AppResult<StatementRow> {
    let status = clearing::lock_statement(conn, statement_id)
        .await?
        .ok_or_else(|| AppError::not_found(format!("statement {statement_id} does not exist")))?;
    let s = clearing::get_statement(conn, statement_id)
        .await?
        .ok_or_else(|| AppError::not_found(format!("statement {statement_id} does not exist")))?;
    match who {
        Principal::Bureau { region } if *region == s.home_region => {}
        _ => {
            return Err(AppError::denied(format!(
                "only the home bureau {} confirms or disputes {statement_id}",
                s.home_region
            )));
        }
    }
    if status != PENDING {
        return Err(AppError::precondition(
            "statement_not_pending",
            format!("{statement_id} is already confirmed"),
        ));
    }
    Ok(s)
}

pub async fn confirm(
    conn: &mut Conn,
    who: &Principal,
    statement_id: &str,
    now: DateTime<Utc>,
) -> AppResult<StatementRow> {
    let s = pending_for_home(conn, who, statement_id).await?;
    clearing::get_period(conn, &s.period, true).await?;
    clearing::confirm(conn, statement_id, now).await?;
    let (all, confirmed) = clearing::period_counts(conn, &s.period).await?;
    if all == confirmed {
        clearing::set_period_status(conn, &s.period, CONFIRMED).await?;
    }
    clearing::get_statement(conn, statement_id)
        .await?
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("statement {statement_id} vanished")))
}

/// Disputes lines (setl_id, reason) of a pending statement.
pub async fn dispute(
    conn: &mut Conn,
    who: &Principal,
    statement_id: &str,
    lines: &[(String, String)],
) -> AppResult<StatementRow> {
    if lines.is_empty() || lines.len() > 1000 {
        return Err(AppError::invalid("lines", "1..1000 lines"));
    }
    pending_for_home(conn, who, statement_id).await?;
    for (i, (setl_id, reason)) in lines.iter().enumerate() {
        if !clearing::dispute(conn, statement_id, setl_id, reason).await? {
            return Err(AppError::not_found(format!(
                "lines[{i}].setl_id: {setl_id} is not on {statement_id}"
            )));
        }
    }
    clearing::get_statement(conn, statement_id)
        .await?
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("statement {statement_id} vanished")))
}

//! Clearing between bureaus (DESIGN §5): close a month into statements; the home bureau
//! confirms a statement or disputes lines; the treatment bureau resolves disputes; a deadline
//! auto-confirms or flags; netting turns confirmed statements into net positions and transfer
//! instructions, drawing prepayments first; recorded transfers settle the period.
//!
//! The period state machine: OPEN → CLOSED (ClosePeriod) → CONFIRMED (every statement confirmed,
//! by its home bureau or by the deadline) → NETTED (NetPeriod) → SETTLED (every bank transfer
//! recorded). Any other move is FAILED_PRECONDITION naming the rule.

use super::auth::Principal;
use super::error::{AppError, AppResult};
use super::{Page, page_after};
use crate::domain::ids::RegionCode;
use crate::domain::money::Amount;
use crate::domain::netting::{self, Obligation};
use crate::domain::time::business_date;
use crate::ledger::{self, Account, Posting};
use crate::store::clearing::{
    self, DepositRow, InstructionRow, LineRow, NetPositionRow, PeriodRow, StatementRow,
};
use crate::store::events::{self, EventRow, kind};
use crate::store::{self, Conn, StoreError};
use chrono::{DateTime, Days, NaiveDate, Utc};
use std::collections::BTreeMap;

/// Period statuses as stored (proto PeriodStatus).
pub const CLOSED: i64 = 2;
pub const CONFIRMED: i64 = 3;
pub const NETTED: i64 = 4;
pub const SETTLED: i64 = 5;
/// Deadline rules (proto DeadlineAction).
pub const AUTO_CONFIRM: i64 = 1;
pub const FLAG: i64 = 2;
/// Dispute states of a line.
pub const DISPUTED: i64 = 1;
pub const ACCEPTED: i64 = 2;
pub const REJECTED: i64 = 3;

/// Server-wide clearing settings (`medsettle serve` flags).
#[derive(Debug, Clone, Copy)]
pub struct ClearingConfig {
    /// Days after closing the home bureaus have to confirm, when ClosePeriod does not say.
    pub confirm_days: u32,
    /// What a statement still pending after the deadline becomes, when ClosePeriod does not say.
    pub deadline_action: i64,
    /// Prepayment warning line: this share (basis points) of the bureau's average net payable
    /// over its last `warning_periods` netted periods.
    pub warning_share_bp: i64,
    pub warning_periods: i64,
}

impl Default for ClearingConfig {
    fn default() -> Self {
        ClearingConfig {
            confirm_days: 10,
            deadline_action: AUTO_CONFIRM,
            warning_share_bp: 5_000,
            warning_periods: 3,
        }
    }
}
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
    deadline_action: i64,
    cfg: &ClearingConfig,
    now: DateTime<Utc>,
) -> AppResult<Period> {
    who.require_operator()?;
    let first = parse_period("period", period_s)?;
    let days = match confirm_days {
        0 => cfg.confirm_days,
        d @ 1..=90 => d,
        _ => return Err(AppError::invalid("confirm_days", "1..90 days")),
    };
    let deadline_action = match deadline_action {
        0 => cfg.deadline_action,
        AUTO_CONFIRM | FLAG => deadline_action,
        _ => {
            return Err(AppError::invalid(
                "deadline_action",
                "AUTO_CONFIRM or FLAG (or unspecified for the server default)",
            ));
        }
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
        deadline_action,
        netted_at: None,
        settled_at: None,
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
    let deadline = crate::domain::time::fmt_date(row.confirm_deadline);
    events::insert(
        conn,
        &[EventRow::period(
            kind::PERIOD_CLOSED,
            period_s,
            now,
            format!("{statements} statements; confirm by {deadline}"),
        )],
    )
    .await?;
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

/// Applies the confirmation deadline of a closed period (inside a write transaction): past it,
/// pending statements are auto-confirmed (the period becomes CONFIRMED) or flagged overdue, as
/// the period's rule says. Returns the period row after.
pub async fn enforce_deadline(
    conn: &mut Conn,
    period_s: &str,
    now: DateTime<Utc>,
) -> AppResult<Option<PeriodRow>> {
    Ok(apply_deadline(conn, period_s, now).await?.0)
}

/// [`enforce_deadline`], also telling how many statements it changed.
async fn apply_deadline(
    conn: &mut Conn,
    period_s: &str,
    now: DateTime<Utc>,
) -> AppResult<(Option<PeriodRow>, u64)> {
    let Some(row) = clearing::get_period(conn, period_s, true).await? else {
        return Ok((None, 0));
    };
    if row.status != CLOSED || business_date(now) <= row.confirm_deadline {
        return Ok((Some(row), 0));
    }
    let changed = if row.deadline_action == AUTO_CONFIRM {
        events::insert_for_statements(
            conn,
            kind::STATEMENT_CONFIRMED,
            period_s,
            "s.status = 1",
            "auto-confirmed at the deadline",
            now,
        )
        .await?;
        let n = clearing::auto_confirm(conn, period_s, now).await?;
        clearing::set_period_status(conn, period_s, CONFIRMED).await?;
        tracing::info!(
            period = period_s,
            statements = n,
            "confirmation deadline passed: auto-confirmed"
        );
        n.max(1)
    } else {
        events::insert_for_statements(
            conn,
            kind::STATEMENT_OVERDUE,
            period_s,
            "s.status = 1 AND NOT s.overdue",
            "pending past the confirmation deadline",
            now,
        )
        .await?;
        let n = clearing::flag_overdue(conn, period_s).await?;
        if n > 0 {
            tracing::warn!(
                period = period_s,
                statements = n,
                "confirmation deadline passed: flagged overdue"
            );
        }
        n
    };
    Ok((clearing::get_period(conn, period_s, true).await?, changed))
}

/// Applies the deadline of every closed period whose deadline has passed; returns the periods
/// where something changed (the server runs this once a minute; confirm, dispute and netting
/// also apply it to their own period first, so nothing depends on the timer).
pub async fn enforce_deadlines(conn: &mut Conn, now: DateTime<Utc>) -> AppResult<Vec<String>> {
    let periods = clearing::periods_past_deadline(conn, CLOSED, business_date(now)).await?;
    let mut changed = Vec::new();
    for p in periods {
        if apply_deadline(conn, &p, now).await?.1 > 0 {
            changed.push(p);
        }
    }
    Ok(changed)
}

/// One run of the deadline timer in its own transaction, audited as principal "system".
pub async fn run_deadlines(app: &super::App) -> AppResult<Vec<String>> {
    let now = app.clock.now();
    let mut conn = app.db.begin().await?;
    let changed = enforce_deadlines(&mut conn, now).await?;
    if !changed.is_empty() {
        let row = crate::store::access::AuditRow {
            audit_id: store::new_id("A", now),
            principal: "system".into(),
            rpc: "deadline-timer".into(),
            request_id: String::new(),
            outcome: "OK".into(),
            detail: format!("confirmation deadline applied to {}", changed.join(", ")),
            at: now,
        };
        crate::store::access::insert_audit(&mut conn, &row).await?;
    }
    conn.commit().await?;
    Ok(changed)
}

/// The server's deadline timer: [`run_deadlines`] once a minute until the process ends.
pub async fn deadline_timer(app: std::sync::Arc<super::App>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tick.tick().await;
        if let Err(e) = run_deadlines(&app).await {
            tracing::warn!(error = %e, "deadline timer: will retry at the next tick");
        }
    }
}

/// Locks a pending statement `who` may confirm or dispute: its home bureau; an operator only
/// when the statement is overdue (flagged past the deadline).
async fn pending_for_home(
    conn: &mut Conn,
    who: &Principal,
    statement_id: &str,
    now: DateTime<Utc>,
) -> AppResult<StatementRow> {
    let missing = || AppError::not_found(format!("statement {statement_id} does not exist"));
    let (_, period_s) = clearing::lock_statement(conn, statement_id)
        .await?
        .ok_or_else(missing)?;
    enforce_deadline(conn, &period_s, now).await?;
    let s = clearing::get_statement(conn, statement_id)
        .await?
        .ok_or_else(missing)?;
    match who {
        Principal::Bureau { region } if *region == s.home_region => {}
        Principal::Operator { .. } if s.overdue => {}
        _ => {
            return Err(AppError::denied(format!(
                "only the home bureau {} confirms or disputes {statement_id} (operators only once it is overdue)",
                s.home_region
            )));
        }
    }
    if s.status != PENDING {
        let how = if s.auto_confirmed {
            "auto-confirmed at the deadline"
        } else {
            "already confirmed"
        };
        return Err(AppError::precondition(
            "statement_not_pending",
            format!("{statement_id} is {how}"),
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
    let s = pending_for_home(conn, who, statement_id, now).await?;
    clearing::confirm(conn, statement_id, now).await?;
    let (all, confirmed) = clearing::period_counts(conn, &s.period).await?;
    if all == confirmed {
        clearing::set_period_status(conn, &s.period, CONFIRMED).await?;
    }
    let by = if who.is_operator() {
        "confirmed by an operator (overdue)"
    } else {
        "confirmed by the home bureau"
    };
    events::insert(
        conn,
        &[EventRow::between(
            kind::STATEMENT_CONFIRMED,
            &s.home_region,
            &s.treatment_region,
            statement_id,
            &s.period,
            s.due_fen,
            now,
            by.into(),
        )],
    )
    .await?;
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
    now: DateTime<Utc>,
) -> AppResult<StatementRow> {
    if lines.is_empty() || lines.len() > 1000 {
        return Err(AppError::invalid("lines", "1..1000 lines"));
    }
    pending_for_home(conn, who, statement_id, now).await?;
    for (i, (setl_id, reason)) in lines.iter().enumerate() {
        let line = clearing::get_line(conn, statement_id, setl_id)
            .await?
            .ok_or_else(|| {
                AppError::not_found(format!(
                    "lines[{i}].setl_id: {setl_id} is not on {statement_id}"
                ))
            })?;
        if line.follows.is_some() || line.dispute_state > DISPUTED {
            return Err(AppError::precondition(
                "line_dispute_settled",
                format!("lines[{i}].setl_id: {setl_id} already follows a dispute or was resolved"),
            ));
        }
        // Reversals and refunds of it already stated follow the dispute, so the statement does
        // not credit a reversal of what it no longer charges. One already confirmed was cleared
        // against the settlement: disputing the settlement now would count that credit twice.
        for (st, rev, status, stored) in clearing::undisputed_reversal_lines(conn, setl_id).await? {
            if status != PENDING {
                return Err(AppError::precondition(
                    "reversal_already_cleared",
                    format!(
                        "lines[{i}].setl_id: {setl_id} was reversed by {rev}, already confirmed on {st}"
                    ),
                ));
            }
            let why = format!("follows the dispute of {setl_id}");
            clearing::mark_disputed(conn, &st, &rev, &why, Some(setl_id), stored).await?;
        }
        clearing::mark_disputed(conn, statement_id, setl_id, reason, None, line.is_stored())
            .await?;
    }
    let s = clearing::get_statement(conn, statement_id)
        .await?
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("statement {statement_id} vanished")))?;
    events::insert(
        conn,
        &[EventRow::between(
            kind::LINES_DISPUTED,
            &s.home_region,
            &s.treatment_region,
            statement_id,
            &s.period,
            s.disputed_due_fen,
            now,
            format!(
                "{} lines disputed now; {} in all",
                lines.len(),
                s.disputed_count
            ),
        )],
    )
    .await?;
    Ok(s)
}

/// The treatment bureau (or an operator) resolves a disputed line: accepted → it joins the next
/// period to close; rejected → it stays out and the institution must reverse the settlement.
/// Reversals and refunds that follow the dispute share the resolution.
pub async fn resolve(
    conn: &mut Conn,
    who: &Principal,
    statement_id: &str,
    setl_id: &str,
    accept: bool,
    note: &str,
    now: DateTime<Utc>,
) -> AppResult<(StatementRow, LineRow, u64)> {
    let missing = || AppError::not_found(format!("statement {statement_id} does not exist"));
    clearing::lock_statement(conn, statement_id)
        .await?
        .ok_or_else(missing)?;
    let s = clearing::get_statement(conn, statement_id)
        .await?
        .ok_or_else(missing)?;
    match who {
        Principal::Operator { .. } => {}
        Principal::Bureau { region } if *region == s.treatment_region => {}
        _ => {
            return Err(AppError::denied(format!(
                "only the treatment bureau {} or an operator resolves disputes on {statement_id}",
                s.treatment_region
            )));
        }
    }
    let line = clearing::get_line(conn, statement_id, setl_id)
        .await?
        .ok_or_else(|| {
            AppError::not_found(format!("setl_id: {setl_id} is not on {statement_id}"))
        })?;
    if let Some(original) = &line.follows {
        return Err(AppError::precondition(
            "line_follows_dispute",
            format!("{setl_id} follows the dispute of {original}: resolve that line"),
        ));
    }
    match line.dispute_state {
        DISPUTED => {}
        0 => {
            return Err(AppError::precondition(
                "line_not_disputed",
                format!("{setl_id} on {statement_id} is not disputed"),
            ));
        }
        _ => {
            return Err(AppError::precondition(
                "dispute_already_resolved",
                format!("the dispute of {setl_id} on {statement_id} is already resolved"),
            ));
        }
    }
    let state = if accept { ACCEPTED } else { REJECTED };
    let n = clearing::resolve(conn, statement_id, setl_id, state, note, now).await?;
    events::insert(
        conn,
        &[EventRow::between(
            kind::DISPUTE_RESOLVED,
            &s.home_region,
            &s.treatment_region,
            setl_id,
            &s.period,
            line.fund_fen + line.acct_fen,
            now,
            format!(
                "{} on {statement_id} ({n} lines): {note}",
                if accept { "accepted" } else { "rejected" }
            ),
        )],
    )
    .await?;
    let line = clearing::get_line(conn, statement_id, setl_id)
        .await?
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("line {setl_id} vanished")))?;
    Ok((s, line, n))
}

/// Disputes in one state (for the parties to follow): (statement_id, setl_id, reason).
pub async fn disputes(
    conn: &mut Conn,
    who: &Principal,
    state: i64,
    page_size: u32,
    page_token: &str,
) -> AppResult<Page<(String, String, String)>> {
    who.require_bureau_or_operator()?;
    if !(DISPUTED..=REJECTED).contains(&state) {
        return Err(AppError::invalid("state", "DISPUTED, ACCEPTED or REJECTED"));
    }
    let region = match who {
        Principal::Bureau { region } => region.clone(),
        _ => String::new(),
    };
    let after = page_after(page_token)?;
    let (st, setl) = after.split_once('/').unwrap_or(("", ""));
    let size = store::page_size(page_size);
    let rows = clearing::lines_in_state(conn, &region, state, (st, setl), size + 1).await?;
    let (items, next_page_token) = store::page(rows, size, |r| format!("{}/{}", r.0, r.1));
    Ok(Page {
        items,
        next_page_token,
    })
}

// ------------------------------------------------------------------------------ netting

/// A period's netting: positions and instructions.
#[derive(Debug, Clone)]
pub struct Netting {
    pub period: Period,
    pub positions: Vec<NetPositionRow>,
    pub instructions: Vec<InstructionRow>,
}

async fn netting_of(conn: &mut Conn, who: &Principal, period_s: &str) -> AppResult<Netting> {
    let p = period(conn, period_s).await?;
    let mut positions = clearing::positions(conn, period_s).await?;
    let mut instructions = clearing::instructions(conn, period_s).await?;
    if let Principal::Bureau { region } = who {
        positions.retain(|x| x.region == *region);
        instructions.retain(|x| x.payer == *region || x.receiver == *region);
    }
    Ok(Netting {
        period: p,
        positions,
        instructions,
    })
}

pub async fn get_netting(conn: &mut Conn, who: &Principal, period_s: &str) -> AppResult<Netting> {
    who.require_bureau_or_operator()?;
    parse_period("period", period_s)?;
    netting_of(conn, who, period_s).await
}

/// Nets a confirmed period (operators; idempotent: netting a netted period answers it).
pub async fn net(
    conn: &mut Conn,
    who: &Principal,
    period_s: &str,
    cfg: &ClearingConfig,
    now: DateTime<Utc>,
) -> AppResult<Netting> {
    who.require_operator()?;
    parse_period("period", period_s)?;
    let row = enforce_deadline(conn, period_s, now)
        .await?
        .ok_or_else(|| {
            AppError::precondition("period_not_closed", format!("{period_s} is not closed"))
        })?;
    match row.status {
        CLOSED => {
            let (all, confirmed) = clearing::period_counts(conn, period_s).await?;
            return Err(AppError::precondition(
                "statements_pending",
                format!(
                    "{} of {all} statements of {period_s} are not confirmed (deadline {})",
                    all - confirmed,
                    crate::domain::time::fmt_date(row.confirm_deadline)
                ),
            ));
        }
        CONFIRMED => {}
        _ => return netting_of(conn, who, period_s).await,
    }
    if let Some(earlier) = clearing::earlier_unnetted(conn, period_s).await?.first() {
        return Err(AppError::precondition(
            "earlier_period_not_netted",
            format!("{earlier} is closed but not netted: net it first"),
        ));
    }
    let obligations: Vec<Obligation> = clearing::obligations(conn, period_s)
        .await?
        .into_iter()
        .map(|(home, treatment, due_fen)| Obligation {
            home,
            treatment,
            due_fen,
        })
        .collect();
    // Lock the prepayment of every party (region order) before reading it.
    let mut regions: Vec<&str> = obligations
        .iter()
        .flat_map(|o| [o.home.as_str(), o.treatment.as_str()])
        .collect();
    regions.sort_unstable();
    regions.dedup();
    let mut prepay = BTreeMap::new();
    for r in &regions {
        prepay.insert(
            (*r).to_owned(),
            clearing::prepay_balance(conn, r, true).await?,
        );
    }
    let plan = netting::net(&obligations, &prepay)
        .map_err(|e| AppError::Internal(anyhow::anyhow!("netting {period_s}: {e}")))?;
    let mut positions = Vec::with_capacity(plan.positions.len());
    for p in &plan.positions {
        let mut recent =
            clearing::recent_payables(conn, &p.region, period_s, cfg.warning_periods - 1).await?;
        recent.push((-p.net_fen).max(0));
        positions.push(NetPositionRow {
            period: period_s.to_owned(),
            region: p.region.clone(),
            payable_fen: p.payable_fen,
            receivable_fen: p.receivable_fen,
            net_fen: p.net_fen,
            prepay_before_fen: p.prepay_before_fen,
            prepay_drawn_fen: p.prepay_drawn_fen,
            warning_line_fen: netting::warning_line(&recent, cfg.warning_share_bp),
        });
    }
    let instructions: Vec<InstructionRow> = plan
        .instructions
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let seq = i64::try_from(i + 1).unwrap_or(i64::MAX);
            InstructionRow {
                instruction_id: format!("TR{period_s}-{seq:03}"),
                period: period_s.to_owned(),
                seq,
                payer: x.payer.clone(),
                receiver: x.receiver.clone(),
                amount_fen: x.amount_fen,
                prepay_fen: x.prepay_fen,
                bank_fen: x.bank_fen,
                recorded_at: None,
                bank_reference: None,
                value_date: None,
                journal_id: None,
            }
        })
        .collect();
    // The ledger: each statement's due moves into the home bureau's net position and the
    // treatment bureau's advance is filled from its own; draw-downs pay receivers from the
    // prepayment (the payer keeps the equivalent in its bank).
    let mut legs: BTreeMap<Account, i64> = BTreeMap::new();
    let mut add = |a: Account, fen: i64| *legs.entry(a).or_insert(0) += fen;
    for o in &obligations {
        add(
            Account::Due {
                home: o.home.clone(),
                treat: o.treatment.clone(),
            },
            -o.due_fen,
        );
        add(Account::Net(o.home.clone()), o.due_fen);
        add(Account::Net(o.treatment.clone()), -o.due_fen);
        add(Account::Advance(o.treatment.clone()), o.due_fen);
    }
    for x in &plan.instructions {
        add(Account::Prepay(x.payer.clone()), -x.prepay_fen);
        add(Account::Net(x.receiver.clone()), x.prepay_fen);
        add(Account::Net(x.payer.clone()), -x.prepay_fen);
        add(Account::Bank(x.payer.clone()), x.prepay_fen);
    }
    let mut posting = Posting::new("clearing_netting", period_s, business_date(now))
        .memo(format!("netting of {period_s}"));
    posting.legs = legs.into_iter().filter(|(_, fen)| *fen != 0).collect();
    if !posting.legs.is_empty() {
        ledger::post(conn, &posting, now).await?;
    }
    for p in &positions {
        if p.prepay_drawn_fen > 0 {
            clearing::draw_prepay(conn, &p.region, p.prepay_drawn_fen).await?;
        }
    }
    clearing::insert_positions(conn, &positions).await?;
    clearing::insert_instructions(conn, &instructions).await?;
    clearing::set_netted(conn, period_s, now).await?;
    let mut evs = vec![EventRow::period(
        kind::PERIOD_NETTED,
        period_s,
        now,
        format!(
            "{} positions, {} instructions",
            positions.len(),
            instructions.len()
        ),
    )];
    if clearing::unrecorded_count(conn, period_s).await? == 0 {
        clearing::set_settled(conn, period_s, now).await?;
        evs.push(EventRow::period(
            kind::PERIOD_SETTLED,
            period_s,
            now,
            "nothing to transfer by bank".into(),
        ));
    }
    events::insert(conn, &evs).await?;
    netting_of(conn, who, period_s).await
}

/// Records the bank transfer of an instruction (the paying bureau or an operator): posts it
/// net:{payer} → net:{receiver}; the period is settled when every instruction is recorded.
pub async fn record_transfer(
    conn: &mut Conn,
    who: &Principal,
    instruction_id: &str,
    amount_fen: i64,
    bank_reference: &str,
    value_date: NaiveDate,
    now: DateTime<Utc>,
) -> AppResult<(InstructionRow, Period)> {
    let missing = || AppError::not_found(format!("instruction {instruction_id} does not exist"));
    let ins = clearing::get_instruction(conn, instruction_id, true)
        .await?
        .ok_or_else(missing)?;
    who.require_region(&ins.payer)?;
    clearing::get_period(conn, &ins.period, true).await?;
    if ins.recorded_at.is_some() {
        return Err(AppError::precondition(
            "transfer_already_recorded",
            format!(
                "{instruction_id} was recorded with bank reference {}",
                ins.bank_reference.as_deref().unwrap_or("")
            ),
        ));
    }
    if ins.bank_fen == 0 {
        return Err(AppError::precondition(
            "no_transfer_due",
            format!("{instruction_id} was paid entirely from prepayment at netting"),
        ));
    }
    if amount_fen != ins.bank_fen {
        return Err(AppError::precondition(
            "transfer_amount_differs",
            format!(
                "{instruction_id} calls for {} by bank transfer, not {}",
                Amount::from_fen(ins.bank_fen),
                Amount::from_fen(amount_fen)
            ),
        ));
    }
    let posting = Posting::new("clearing_transfer", instruction_id, business_date(now))
        .memo(format!(
            "transfer {} → {} ref {bank_reference}",
            ins.payer, ins.receiver
        ))
        .transfer(
            Account::Net(ins.payer.clone()),
            Account::Net(ins.receiver.clone()),
            ins.bank_fen,
        );
    let posted = ledger::post(conn, &posting, now).await?;
    clearing::record_transfer(
        conn,
        instruction_id,
        bank_reference,
        value_date,
        &posted.journal_id,
        now,
    )
    .await?;
    let mut evs = vec![EventRow::between(
        kind::TRANSFER_RECORDED,
        &ins.payer,
        &ins.receiver,
        instruction_id,
        &ins.period,
        ins.bank_fen,
        now,
        format!("bank reference {bank_reference}, value date {value_date}"),
    )];
    if clearing::unrecorded_count(conn, &ins.period).await? == 0 {
        clearing::set_settled(conn, &ins.period, now).await?;
        evs.push(EventRow::period(
            kind::PERIOD_SETTLED,
            &ins.period,
            now,
            "every transfer recorded".into(),
        ));
    }
    events::insert(conn, &evs).await?;
    let ins = clearing::get_instruction(conn, instruction_id, false)
        .await?
        .ok_or_else(missing)?;
    let p = period(conn, &ins.period).await?;
    Ok((ins, p))
}

// ------------------------------------------------------------------------------ prepayments

/// A bureau's prepayment: balance, warning line, whether it should top up.
#[derive(Debug, Clone)]
pub struct Prepayment {
    pub region: String,
    pub balance_fen: i64,
    pub warning_line_fen: i64,
    pub top_up: bool,
    pub deposit: Option<DepositRow>,
}

async fn prepayment_of(conn: &mut Conn, region: &str, lock: bool) -> AppResult<Prepayment> {
    let balance_fen = clearing::prepay_balance(conn, region, lock).await?;
    let warning_line_fen = clearing::latest_position(conn, region)
        .await?
        .map_or(0, |p| p.warning_line_fen);
    Ok(Prepayment {
        region: region.to_owned(),
        balance_fen,
        warning_line_fen,
        top_up: balance_fen < warning_line_fen,
        deposit: None,
    })
}

pub async fn get_prepayment(
    conn: &mut Conn,
    who: &Principal,
    region: &str,
) -> AppResult<Prepayment> {
    RegionCode::parse("region", region)?;
    who.require_region(region)?;
    prepayment_of(conn, region, false).await
}

/// A home bureau deposits prepayment with the platform: bank:{region} → prepay:{region}.
pub async fn deposit_prepayment(
    conn: &mut Conn,
    who: &Principal,
    region: &str,
    amount_fen: i64,
    bank_reference: &str,
    value_date: NaiveDate,
    now: DateTime<Utc>,
) -> AppResult<Prepayment> {
    RegionCode::parse("region", region)?;
    who.require_region(region)?;
    if amount_fen <= 0 {
        return Err(AppError::invalid("amount", "must be greater than 0.00"));
    }
    if crate::store::registry::get_region(conn, region)
        .await?
        .is_none()
    {
        return Err(AppError::not_found(format!(
            "region {region} is not registered"
        )));
    }
    let posting = Posting::new("prepay_deposit", bank_reference, business_date(now))
        .memo(format!("prepayment deposit of {region}"))
        .transfer(
            Account::Bank(region.to_owned()),
            Account::Prepay(region.to_owned()),
            amount_fen,
        );
    let posted = ledger::post(conn, &posting, now).await?;
    clearing::add_prepay(conn, region, amount_fen).await?;
    let deposit = DepositRow {
        deposit_id: store::new_id("PD", now),
        region: region.to_owned(),
        amount_fen,
        bank_reference: bank_reference.to_owned(),
        value_date,
        journal_id: posted.journal_id,
        created_at: now,
    };
    clearing::insert_deposit(conn, &deposit).await?;
    events::insert(
        conn,
        &[EventRow::between(
            kind::PREPAYMENT_DEPOSITED,
            region,
            region,
            &deposit.deposit_id,
            "",
            amount_fen,
            now,
            format!("bank reference {bank_reference}"),
        )],
    )
    .await?;
    let mut p = prepayment_of(conn, region, false).await?;
    p.deposit = Some(deposit);
    Ok(p)
}

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
    /// What a statement still pending after the deadline becomes: 1 auto-confirmed, 2 flagged.
    pub deadline_action: i64,
    pub netted_at: Option<DateTime<Utc>>,
    pub settled_at: Option<DateTime<Utc>>,
}

const PERIOD_COLS: &str =
    "period, status, closed_at, confirm_deadline, deadline_action, netted_at, settled_at";

pub async fn get_period(c: &mut Conn, period: &str, lock: bool) -> StoreResult<Option<PeriodRow>> {
    let lock = if lock { c.for_update() } else { "" };
    let sql = format!("SELECT {PERIOD_COLS} FROM clearing_period WHERE period = $1{lock}");
    Ok(on_conn!(c, x => sqlx::query_as(&sql).bind(period).fetch_optional(x).await)?)
}

pub async fn insert_period(c: &mut Conn, p: &PeriodRow) -> StoreResult<()> {
    let sql = "INSERT INTO clearing_period (period, status, closed_at, confirm_deadline, deadline_action) \
               VALUES ($1, $2, $3, $4, $5)";
    on_conn!(c, x => sqlx::query(sql).bind(&p.period).bind(p.status).bind(p.closed_at).bind(p.confirm_deadline)
        .bind(p.deadline_action).execute(x).await.map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn set_period_status(c: &mut Conn, period: &str, status: i64) -> StoreResult<()> {
    let sql = "UPDATE clearing_period SET status = $2 WHERE period = $1";
    on_conn!(c, x => sqlx::query(sql).bind(period).bind(status).execute(x).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// The clearing type (NHSA clr_type) of a settlement's care type, in SQL.
const CLR: &str = "CASE care_type WHEN 1 THEN 11 WHEN 2 THEN 21 WHEN 3 THEN 41 ELSE 51 END";

/// The care type whose settlements a statement of `clearing_type` states (the inverse of CLR).
fn care_type_of(clearing_type: i64) -> i64 {
    match clearing_type {
        11 => 1,
        21 => 2,
        41 => 3,
        _ => 4,
    }
}

/// The deterministic statement id of a settlement row (columns prefixed by `t`, e.g. "st."),
/// in SQL.
fn statement_id_sql(t: &str) -> String {
    let clr = CLR.replace("care_type", &format!("{t}care_type"));
    format!(
        "'ST' || {t}clearing_period || '-' || {t}home_region || '-' || {t}treatment_region || '-' || CAST({clr} AS TEXT)"
    )
}

/// Produces the statements of a period (set-based; no row passes through Rust); returns how
/// many. A statement's lines are the period's settlements and reversals for its parties: they
/// are not copied, the close stores their base figures (one GROUP BY over the period's
/// settlements, which no longer change: later reversals land in the open month). Stored lines
/// are the exceptions: reversals and refunds of a settlement whose line is disputed (pending)
/// or rejected follow that dispute (stated but kept out of the figures, sharing the dispute's
/// resolution), and disputed lines of earlier periods accepted since are carried in as copies
/// pointing at their origin.
pub async fn generate_statements(c: &mut Conn, period: &str) -> StoreResult<u64> {
    // The inner grouping follows the period index's order (no sort); the outer one maps care
    // types to clearing types over a few dozen rows.
    let sql = format!(
        "INSERT INTO statement (statement_id, period, home_region, treatment_region, clearing_type, status, confirmed_at, \
         b_line_count, b_medfee_fen, b_fund_fen, b_acct_fen) \
         SELECT 'ST' || $1 || '-' || home_region || '-' || treatment_region || '-' || CAST({CLR} AS TEXT), $1, \
         home_region, treatment_region, {CLR}, 1, NULL, CAST(SUM(n) AS BIGINT), CAST(SUM(m) AS BIGINT), \
         CAST(SUM(f) AS BIGINT), CAST(SUM(a) AS BIGINT) \
         FROM (SELECT home_region, treatment_region, care_type, COUNT(*) AS n, SUM(medfee_fen) AS m, \
         SUM(fund_fen) AS f, SUM(acct_fen) AS a FROM settlement WHERE clearing_period = $1 \
         GROUP BY home_region, treatment_region, care_type) g \
         GROUP BY home_region, treatment_region, {CLR}"
    );
    let mut n = on_conn!(c, x => sqlx::query(&sql).bind(period).execute(x).await.map(|r| r.rows_affected()))?;
    let to_carry = "FROM statement_line l JOIN statement s ON s.statement_id = l.statement_id \
                    WHERE l.dispute_state = 2 AND l.carried_into IS NULL AND s.period < $1";
    let new_id = "'ST' || $1 || '-' || s.home_region || '-' || s.treatment_region || '-' || CAST(s.clearing_type AS TEXT)";
    // Parties with only carried lines this month.
    let sql = format!(
        "INSERT INTO statement (statement_id, period, home_region, treatment_region, clearing_type, status) \
         SELECT DISTINCT {new_id}, $1, s.home_region, s.treatment_region, s.clearing_type, 1 {to_carry} \
         AND NOT EXISTS (SELECT 1 FROM statement x WHERE x.statement_id = {new_id})"
    );
    n += on_conn!(c, x => sqlx::query(&sql).bind(period).execute(x).await.map(|r| r.rows_affected()))?;
    // Followers: driven from the few lines in dispute to their reversals in this month.
    let id = statement_id_sql("st.");
    let sql = format!(
        "INSERT INTO statement_line (statement_id, setl_id, reverses, medfee_fen, fund_fen, acct_fen, disputed, \
         dispute_reason, dispute_state, follows, resolved_at, resolution_note) \
         SELECT {id}, st.setl_id, st.reverses, st.medfee_fen, st.fund_fen, st.acct_fen, true, \
         'follows the dispute of ' || st.reverses, o.dispute_state, st.reverses, o.resolved_at, o.resolution_note \
         FROM statement_line o JOIN settlement st ON st.reverses = o.setl_id \
         WHERE o.dispute_state IN (1, 3) AND st.clearing_period = $1"
    );
    on_conn!(c, x => sqlx::query(&sql).bind(period).execute(x).await.map(|r| r.rows_affected()))?;
    let sql = format!(
        "INSERT INTO statement_line (statement_id, setl_id, reverses, medfee_fen, fund_fen, acct_fen, disputed, \
         dispute_reason, dispute_state, carried_from) \
         SELECT {new_id}, l.setl_id, l.reverses, l.medfee_fen, l.fund_fen, l.acct_fen, false, NULL, 0, l.statement_id \
         {to_carry}"
    );
    on_conn!(c, x => sqlx::query(&sql).bind(period).execute(x).await.map(|r| r.rows_affected()))?;
    let sql = "UPDATE statement_line SET carried_into = (SELECT 'ST' || $1 || '-' || s.home_region || '-' \
         || s.treatment_region || '-' || CAST(s.clearing_type AS TEXT) FROM statement s \
         WHERE s.statement_id = statement_line.statement_id) \
         WHERE dispute_state = 2 AND carried_into IS NULL AND EXISTS (SELECT 1 FROM statement s \
         WHERE s.statement_id = statement_line.statement_id AND s.period < $1)";
    on_conn!(c, x => sqlx::query(sql).bind(period).execute(x).await.map(|r| r.rows_affected()))?;
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
    /// Confirmed by the deadline rule rather than by the home bureau.
    pub auto_confirmed: bool,
    /// Still pending after the deadline (periods whose deadline rule flags).
    pub overdue: bool,
    pub line_count: i64,
    pub medfee_fen: i64,
    pub fund_fen: i64,
    pub acct_fen: i64,
    pub disputed_count: i64,
    pub disputed_due_fen: i64,
    pub due_fen: i64,
}

/// A statement's live figures as (name, SQL aggregate over its stored lines `l`): the base
/// figures of its settlements (`{s}.b_*`, stored at close) adjusted by the stored lines —
/// an override (a settlement of the statement in or following a dispute) leaves the figures,
/// a carried copy joins them unless disputed; disputed lines are counted apart. A confirmed
/// statement freezes these (verify checks the frozen figures and the base figures).
fn figures(s: &str) -> [(&'static str, String); 7] {
    let adj = |x: &str| {
        format!(
            "(CASE WHEN l.disputed THEN 0 ELSE {x} END) - (CASE WHEN l.carried_from IS NULL THEN {x} ELSE 0 END)"
        )
    };
    let total = |base: String, e: String| format!("CAST({base} + COALESCE(SUM({e}), 0) AS BIGINT)");
    [
        (
            "line_count",
            format!("CAST({s}.b_line_count + COUNT(l.carried_from) AS BIGINT)"),
        ),
        (
            "medfee_fen",
            total(format!("{s}.b_medfee_fen"), adj("l.medfee_fen")),
        ),
        ("fund_fen", total(format!("{s}.b_fund_fen"), adj("l.fund_fen"))),
        ("acct_fen", total(format!("{s}.b_acct_fen"), adj("l.acct_fen"))),
        (
            "disputed_count",
            "CAST(COALESCE(SUM(CASE WHEN l.disputed THEN 1 ELSE 0 END), 0) AS BIGINT)".into(),
        ),
        (
            "disputed_due_fen",
            "CAST(COALESCE(SUM(CASE WHEN l.disputed THEN l.fund_fen + l.acct_fen ELSE 0 END), 0) AS BIGINT)"
                .into(),
        ),
        (
            "due_fen",
            total(
                format!("{s}.b_fund_fen + {s}.b_acct_fen"),
                adj("(l.fund_fen + l.acct_fen)"),
            ),
        ),
    ]
}

/// The live figures of `s` as a select list (`expr AS name, …`).
fn figures_select() -> String {
    figures("s")
        .iter()
        .map(|(name, e)| format!("{e} AS {name}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A statement's live amount due (fund + account, fen) as a scalar subquery on `{s}`, for
/// statements read without grouping (events).
pub fn live_due_sql(s: &str) -> String {
    let [.., (_, due)] = figures(s);
    format!("(SELECT {due} FROM statement_line l WHERE l.statement_id = {s}.statement_id)")
}

const SUMMARY_HEAD: &str = "SELECT s.statement_id, s.period, s.home_region, s.treatment_region, s.clearing_type, \
    s.status, s.confirmed_at, s.auto_confirmed, s.overdue, ";
const SUMMARY_FROM: &str =
    " FROM statement s LEFT JOIN statement_line l ON l.statement_id = s.statement_id";
const GROUP: &str = "GROUP BY s.statement_id, s.period, s.home_region, s.treatment_region, s.clearing_type, \
    s.status, s.confirmed_at, s.auto_confirmed, s.overdue, s.b_line_count, s.b_medfee_fen, s.b_fund_fen, s.b_acct_fen";

fn summary() -> String {
    format!("{SUMMARY_HEAD}{}{SUMMARY_FROM}", figures_select())
}

pub async fn get_statement(c: &mut Conn, statement_id: &str) -> StoreResult<Option<StatementRow>> {
    let sql = format!("{} WHERE s.statement_id = $1 {GROUP}", summary());
    Ok(on_conn!(c, x => sqlx::query_as(&sql).bind(statement_id).fetch_optional(x).await)?)
}

/// Locks a statement's row (inside a write transaction); returns (status, period), if it
/// exists.
pub async fn lock_statement(
    c: &mut Conn,
    statement_id: &str,
) -> StoreResult<Option<(i64, String)>> {
    let lock = c.for_update();
    let sql = format!("SELECT status, period FROM statement WHERE statement_id = $1{lock}");
    Ok(on_conn!(c, x => sqlx::query_as(&sql).bind(statement_id).fetch_optional(x).await)?)
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
        "{} WHERE s.period = $1 AND ($2 = '' OR s.home_region = $2 OR s.treatment_region = $2) \
         AND s.statement_id > $3 {GROUP} ORDER BY s.statement_id LIMIT $4",
        summary()
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
    /// 0 none, 1 disputed, 2 accepted, 3 rejected.
    pub dispute_state: i64,
    pub follows: Option<String>,
    pub carried_from: Option<String>,
    pub carried_into: Option<String>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolution_note: Option<String>,
}

impl LineRow {
    /// Whether the line is a stored row: a carried copy, or a settlement in or following a
    /// dispute (a settlement's plain line is derived and has neither).
    pub fn is_stored(&self) -> bool {
        self.carried_from.is_some() || self.dispute_state != 0
    }
}

const LINE_COLS: &str = "setl_id, reverses, medfee_fen, fund_fen, acct_fen, disputed, dispute_reason, \
    dispute_state, follows, carried_from, carried_into, resolved_at, resolution_note";

/// A settlement `st` as a line of statement `$sid`, with its stored state `l` if any.
const DERIVED_COLS: &str = "st.setl_id, st.reverses, st.medfee_fen, st.fund_fen, st.acct_fen, \
    COALESCE(l.disputed, false) AS disputed, l.dispute_reason, COALESCE(l.dispute_state, 0) AS dispute_state, \
    l.follows, l.carried_from, l.carried_into, l.resolved_at, l.resolution_note";

/// The parties of a statement: (period, home, treatment, clearing type).
type StatementKey = (String, String, String, i64);

async fn statement_key(c: &mut Conn, statement_id: &str) -> StoreResult<Option<StatementKey>> {
    let sql = "SELECT period, home_region, treatment_region, clearing_type FROM statement WHERE statement_id = $1";
    Ok(on_conn!(c, x => sqlx::query_as(sql).bind(statement_id).fetch_optional(x).await)?)
}

/// A statement's lines after `after` in setl_id order: its settlements (read in order from the
/// period index) with their stored state, and the lines carried into it.
pub async fn lines(
    c: &mut Conn,
    statement_id: &str,
    after: &str,
    limit: i64,
) -> StoreResult<Vec<LineRow>> {
    let Some((period, home, treat, clr)) = statement_key(c, statement_id).await? else {
        return Ok(Vec::new());
    };
    let sql = format!(
        "SELECT * FROM (SELECT * FROM (SELECT {DERIVED_COLS} FROM settlement st \
         LEFT JOIN statement_line l ON l.statement_id = $1 AND l.setl_id = st.setl_id \
         WHERE st.clearing_period = $2 AND st.home_region = $3 AND st.treatment_region = $4 AND st.care_type = $5 \
         AND st.setl_id > $6 ORDER BY st.setl_id LIMIT $7) b \
         UNION ALL SELECT * FROM (SELECT {LINE_COLS} FROM statement_line \
         WHERE statement_id = $1 AND carried_from IS NOT NULL AND setl_id > $6 ORDER BY setl_id LIMIT $7) k) u \
         ORDER BY setl_id LIMIT $7"
    );
    Ok(
        on_conn!(c, x => sqlx::query_as(&sql).bind(statement_id).bind(&period).bind(&home).bind(&treat)
        .bind(care_type_of(clr)).bind(after).bind(limit).fetch_all(x).await)?,
    )
}

/// The `SET` assignment freezing a statement's figures (correlated on `statement`): one
/// row-valued subquery over its stored lines.
fn freeze_sets() -> String {
    let f = figures("statement");
    let names: Vec<String> = f.iter().map(|(name, _)| format!("f_{name}")).collect();
    let exprs: Vec<&str> = f.iter().map(|(_, e)| e.as_str()).collect();
    format!(
        "({}) = (SELECT {} FROM statement_line l WHERE l.statement_id = statement.statement_id)",
        names.join(", "),
        exprs.join(", ")
    )
}

/// Confirms a statement by its home bureau, freezing its figures.
pub async fn confirm(c: &mut Conn, statement_id: &str, now: DateTime<Utc>) -> StoreResult<()> {
    let sql = format!(
        "UPDATE statement SET status = 2, confirmed_at = $2, overdue = false, {} WHERE statement_id = $1",
        freeze_sets()
    );
    on_conn!(c, x => sqlx::query(&sql).bind(statement_id).bind(now).execute(x).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Past the deadline: confirms every pending statement of the period (auto-confirmed, figures
/// frozen); returns how many.
pub async fn auto_confirm(c: &mut Conn, period: &str, now: DateTime<Utc>) -> StoreResult<u64> {
    let sql = format!(
        "UPDATE statement SET status = 2, confirmed_at = $2, auto_confirmed = true, overdue = false, {} \
         WHERE period = $1 AND status = 1",
        freeze_sets()
    );
    Ok(
        on_conn!(c, x => sqlx::query(&sql).bind(period).bind(now).execute(x).await.map(|r| r.rows_affected()))?,
    )
}

/// Past the deadline: flags every pending statement of the period; returns how many changed.
pub async fn flag_overdue(c: &mut Conn, period: &str) -> StoreResult<u64> {
    let sql =
        "UPDATE statement SET overdue = true WHERE period = $1 AND status = 1 AND NOT overdue";
    Ok(on_conn!(c, x => sqlx::query(sql).bind(period).execute(x).await.map(|r| r.rows_affected()))?)
}

/// Closed periods (status `status`) whose confirmation deadline is before `today`.
pub async fn periods_past_deadline(
    c: &mut Conn,
    status: i64,
    today: NaiveDate,
) -> StoreResult<Vec<String>> {
    let sql = "SELECT period FROM clearing_period WHERE status = $1 AND confirm_deadline < $2 ORDER BY period";
    Ok(on_conn!(c, x => sqlx::query_scalar(sql).bind(status).bind(today).fetch_all(x).await)?)
}

/// Puts a line of a statement in dispute (state 1): a stored line (`stored`, e.g. a carried
/// copy) is updated, a settlement of the statement gets its stored override. `follows`: the
/// settlement whose dispute a reversal or refund follows. Returns false when the statement has
/// no such line.
pub async fn mark_disputed(
    c: &mut Conn,
    statement_id: &str,
    setl_id: &str,
    reason: &str,
    follows: Option<&str>,
    stored: bool,
) -> StoreResult<bool> {
    let sql = if stored {
        "UPDATE statement_line SET disputed = true, dispute_state = 1, dispute_reason = $3, follows = $4 \
         WHERE statement_id = $1 AND setl_id = $2"
            .to_owned()
    } else {
        format!(
            "INSERT INTO statement_line (statement_id, setl_id, reverses, medfee_fen, fund_fen, acct_fen, disputed, \
             dispute_reason, dispute_state, follows) \
             SELECT s.statement_id, st.setl_id, st.reverses, st.medfee_fen, st.fund_fen, st.acct_fen, true, $3, 1, $4 \
             FROM statement s JOIN settlement st ON st.setl_id = $2 AND {} = s.statement_id \
             WHERE s.statement_id = $1",
            statement_id_sql("st.")
        )
    };
    let n = on_conn!(c, x => sqlx::query(&sql).bind(statement_id).bind(setl_id).bind(reason).bind(follows)
        .execute(x).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// One line of a statement (a stored one locked for update).
pub async fn get_line(
    c: &mut Conn,
    statement_id: &str,
    setl_id: &str,
) -> StoreResult<Option<LineRow>> {
    let lock = c.for_update();
    let sql = format!(
        "SELECT {LINE_COLS} FROM statement_line WHERE statement_id = $1 AND setl_id = $2{lock}"
    );
    let stored: Option<LineRow> = on_conn!(c, x => sqlx::query_as(&sql).bind(statement_id).bind(setl_id)
        .fetch_optional(x).await)?;
    if stored.is_some() {
        return Ok(stored);
    }
    let sql = format!(
        "SELECT {DERIVED_COLS} FROM statement s JOIN settlement st ON st.setl_id = $2 AND {} = s.statement_id \
         LEFT JOIN statement_line l ON l.statement_id = s.statement_id AND l.setl_id = st.setl_id \
         WHERE s.statement_id = $1",
        statement_id_sql("st.")
    );
    Ok(
        on_conn!(c, x => sqlx::query_as(&sql).bind(statement_id).bind(setl_id).fetch_optional(x).await)?,
    )
}

/// Resolves a disputed line (state 2 accepted or 3 rejected) together with the reversals and
/// refunds that follow its dispute; returns the number of lines resolved.
pub async fn resolve(
    c: &mut Conn,
    statement_id: &str,
    setl_id: &str,
    state: i64,
    note: &str,
    now: DateTime<Utc>,
) -> StoreResult<u64> {
    let sql = "UPDATE statement_line SET dispute_state = $3, resolution_note = $4, resolved_at = $5 \
               WHERE dispute_state = 1 AND ((statement_id = $1 AND setl_id = $2) OR follows = $2)";
    Ok(
        on_conn!(c, x => sqlx::query(sql).bind(statement_id).bind(setl_id).bind(state).bind(note).bind(now)
        .execute(x).await.map(|r| r.rows_affected()))?,
    )
}

/// Lines of a period's statements in a given dispute state (paged by statement then setl_id),
/// for operators and bureaus following disputes: (statement_id, line). Lines in a dispute are
/// always stored.
pub async fn lines_in_state(
    c: &mut Conn,
    region: &str,
    state: i64,
    after: (&str, &str),
    limit: i64,
) -> StoreResult<Vec<(String, String, String)>> {
    let sql = "SELECT l.statement_id, l.setl_id, COALESCE(l.dispute_reason, '') FROM statement_line l \
               JOIN statement s ON s.statement_id = l.statement_id \
               WHERE l.dispute_state = $1 AND ($2 = '' OR s.home_region = $2 OR s.treatment_region = $2) \
               AND (l.statement_id > $3 OR (l.statement_id = $3 AND l.setl_id > $4)) \
               ORDER BY l.statement_id, l.setl_id LIMIT $5";
    Ok(
        on_conn!(c, x => sqlx::query_as(sql).bind(state).bind(region).bind(after.0).bind(after.1).bind(limit)
        .fetch_all(x).await)?,
    )
}

// ------------------------------------------------------------------------------ netting

/// The frozen figures of a period's confirmed statements: (home, treatment, due fen).
pub async fn obligations(c: &mut Conn, period: &str) -> StoreResult<Vec<(String, String, i64)>> {
    let sql = "SELECT home_region, treatment_region, CAST(COALESCE(f_due_fen, 0) AS BIGINT) FROM statement \
               WHERE period = $1 AND status = 2 ORDER BY statement_id";
    Ok(on_conn!(c, x => sqlx::query_as(sql).bind(period).fetch_all(x).await)?)
}

/// Periods before `period` that are closed or confirmed but not netted yet.
pub async fn earlier_unnetted(c: &mut Conn, period: &str) -> StoreResult<Vec<String>> {
    let sql =
        "SELECT period FROM clearing_period WHERE period < $1 AND status IN (2, 3) ORDER BY period";
    Ok(on_conn!(c, x => sqlx::query_scalar(sql).bind(period).fetch_all(x).await)?)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NetPositionRow {
    pub period: String,
    pub region: String,
    pub payable_fen: i64,
    pub receivable_fen: i64,
    pub net_fen: i64,
    pub prepay_before_fen: i64,
    pub prepay_drawn_fen: i64,
    pub warning_line_fen: i64,
}

impl NetPositionRow {
    /// The prepayment left after this period's draw-down.
    pub fn prepay_after_fen(&self) -> i64 {
        self.prepay_before_fen - self.prepay_drawn_fen
    }

    /// The prepayment left is under the warning line: the bureau should top up.
    pub fn top_up(&self) -> bool {
        self.prepay_after_fen() < self.warning_line_fen
    }
}

pub async fn insert_positions(c: &mut Conn, rows: &[NetPositionRow]) -> StoreResult<()> {
    for chunk in rows.chunks(super::chunk_rows(8)) {
        let sql = format!(
            "INSERT INTO net_position (period, region, payable_fen, receivable_fen, net_fen, \
             prepay_before_fen, prepay_drawn_fen, warning_line_fen) VALUES {}",
            super::values(c.engine(), chunk.len(), 8, 1)
        );
        on_conn!(c, x => {
            let mut q = sqlx::query(&sql);
            for r in chunk {
                q = q.bind(&r.period).bind(&r.region).bind(r.payable_fen).bind(r.receivable_fen)
                    .bind(r.net_fen).bind(r.prepay_before_fen).bind(r.prepay_drawn_fen).bind(r.warning_line_fen);
            }
            q.execute(x).await.map(|r| r.rows_affected())
        })?;
    }
    Ok(())
}

pub async fn positions(c: &mut Conn, period: &str) -> StoreResult<Vec<NetPositionRow>> {
    let sql = "SELECT period, region, payable_fen, receivable_fen, net_fen, prepay_before_fen, \
               prepay_drawn_fen, warning_line_fen FROM net_position WHERE period = $1 ORDER BY region";
    Ok(on_conn!(c, x => sqlx::query_as(sql).bind(period).fetch_all(x).await)?)
}

/// A region's net payable (fen) in the latest netted periods before `period`, newest first (0
/// for a period where it received or had no position).
pub async fn recent_payables(
    c: &mut Conn,
    region: &str,
    period: &str,
    n: i64,
) -> StoreResult<Vec<i64>> {
    let sql = "SELECT CAST(CASE WHEN n.net_fen < 0 THEN -n.net_fen ELSE 0 END AS BIGINT) \
               FROM clearing_period p LEFT JOIN net_position n ON n.period = p.period AND n.region = $1 \
               WHERE p.status >= 4 AND p.period < $2 ORDER BY p.period DESC LIMIT $3";
    Ok(
        on_conn!(c, x => sqlx::query_scalar(sql).bind(region).bind(period).bind(n).fetch_all(x).await)?,
    )
}

/// The latest net position of a region (for its warning line).
pub async fn latest_position(c: &mut Conn, region: &str) -> StoreResult<Option<NetPositionRow>> {
    let sql = "SELECT period, region, payable_fen, receivable_fen, net_fen, prepay_before_fen, \
               prepay_drawn_fen, warning_line_fen FROM net_position WHERE region = $1 \
               ORDER BY period DESC LIMIT 1";
    Ok(on_conn!(c, x => sqlx::query_as(sql).bind(region).fetch_optional(x).await)?)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InstructionRow {
    pub instruction_id: String,
    pub period: String,
    pub seq: i64,
    pub payer: String,
    pub receiver: String,
    pub amount_fen: i64,
    pub prepay_fen: i64,
    pub bank_fen: i64,
    pub recorded_at: Option<DateTime<Utc>>,
    pub bank_reference: Option<String>,
    pub value_date: Option<NaiveDate>,
    pub journal_id: Option<String>,
}

const INSTRUCTION_COLS: &str = "instruction_id, period, seq, payer, receiver, amount_fen, prepay_fen, \
    bank_fen, recorded_at, bank_reference, value_date, journal_id";

pub async fn insert_instructions(c: &mut Conn, rows: &[InstructionRow]) -> StoreResult<()> {
    for chunk in rows.chunks(super::chunk_rows(12)) {
        let sql = format!(
            "INSERT INTO transfer_instruction ({INSTRUCTION_COLS}) VALUES {}",
            super::values(c.engine(), chunk.len(), 12, 1)
        );
        on_conn!(c, x => {
            let mut q = sqlx::query(&sql);
            for r in chunk {
                q = q.bind(&r.instruction_id).bind(&r.period).bind(r.seq).bind(&r.payer).bind(&r.receiver)
                    .bind(r.amount_fen).bind(r.prepay_fen).bind(r.bank_fen).bind(r.recorded_at)
                    .bind(&r.bank_reference).bind(r.value_date).bind(&r.journal_id);
            }
            q.execute(x).await.map(|r| r.rows_affected())
        })?;
    }
    Ok(())
}

pub async fn instructions(c: &mut Conn, period: &str) -> StoreResult<Vec<InstructionRow>> {
    let sql = format!(
        "SELECT {INSTRUCTION_COLS} FROM transfer_instruction WHERE period = $1 ORDER BY seq"
    );
    Ok(on_conn!(c, x => sqlx::query_as(&sql).bind(period).fetch_all(x).await)?)
}

pub async fn get_instruction(
    c: &mut Conn,
    instruction_id: &str,
    lock: bool,
) -> StoreResult<Option<InstructionRow>> {
    let lock = if lock { c.for_update() } else { "" };
    let sql = format!(
        "SELECT {INSTRUCTION_COLS} FROM transfer_instruction WHERE instruction_id = $1{lock}"
    );
    Ok(on_conn!(c, x => sqlx::query_as(&sql).bind(instruction_id).fetch_optional(x).await)?)
}

pub async fn record_transfer(
    c: &mut Conn,
    instruction_id: &str,
    bank_reference: &str,
    value_date: NaiveDate,
    journal_id: &str,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let sql = "UPDATE transfer_instruction SET recorded_at = $2, bank_reference = $3, value_date = $4, \
               journal_id = $5 WHERE instruction_id = $1";
    on_conn!(c, x => sqlx::query(sql).bind(instruction_id).bind(now).bind(bank_reference).bind(value_date)
        .bind(journal_id).execute(x).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Instructions of a period whose bank part is still to be recorded.
pub async fn unrecorded_count(c: &mut Conn, period: &str) -> StoreResult<i64> {
    let sql = "SELECT COUNT(*) FROM transfer_instruction WHERE period = $1 AND bank_fen > 0 \
               AND recorded_at IS NULL";
    Ok(on_conn!(c, x => sqlx::query_scalar(sql).bind(period).fetch_one(x).await)?)
}

pub async fn set_netted(c: &mut Conn, period: &str, now: DateTime<Utc>) -> StoreResult<()> {
    let sql = "UPDATE clearing_period SET status = 4, netted_at = $2 WHERE period = $1";
    on_conn!(c, x => sqlx::query(sql).bind(period).bind(now).execute(x).await.map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn set_settled(c: &mut Conn, period: &str, now: DateTime<Utc>) -> StoreResult<()> {
    let sql = "UPDATE clearing_period SET status = 5, settled_at = $2 WHERE period = $1";
    on_conn!(c, x => sqlx::query(sql).bind(period).bind(now).execute(x).await.map(|r| r.rows_affected()))?;
    Ok(())
}

// ------------------------------------------------------------------------------ prepayments

/// A region's prepayment balance (fen), locked when `lock`; 0 when it never deposited.
pub async fn prepay_balance(c: &mut Conn, region: &str, lock: bool) -> StoreResult<i64> {
    let lock = if lock { c.for_update() } else { "" };
    let sql = format!("SELECT balance_fen FROM prepayment_account WHERE region = $1{lock}");
    let b: Option<i64> =
        on_conn!(c, x => sqlx::query_scalar(&sql).bind(region).fetch_optional(x).await)?;
    Ok(b.unwrap_or(0))
}

/// Adds a deposit (`fen` > 0) to a region's prepayment balance, creating the row; returns the
/// new balance.
pub async fn add_prepay(c: &mut Conn, region: &str, fen: i64) -> StoreResult<i64> {
    let sql = "INSERT INTO prepayment_account (region, balance_fen) VALUES ($1, $2) \
               ON CONFLICT (region) DO UPDATE SET balance_fen = prepayment_account.balance_fen + $2 \
               RETURNING balance_fen";
    Ok(on_conn!(c, x => sqlx::query_scalar(sql).bind(region).bind(fen).fetch_one(x).await)?)
}

/// Draws `fen` (> 0) from a region's prepayment (locked by the caller); the CHECK constraint
/// refuses a negative balance. Returns the new balance.
pub async fn draw_prepay(c: &mut Conn, region: &str, fen: i64) -> StoreResult<i64> {
    let sql = "UPDATE prepayment_account SET balance_fen = balance_fen - $2 WHERE region = $1 \
               RETURNING balance_fen";
    Ok(on_conn!(c, x => sqlx::query_scalar(sql).bind(region).bind(fen).fetch_one(x).await)?)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DepositRow {
    pub deposit_id: String,
    pub region: String,
    pub amount_fen: i64,
    pub bank_reference: String,
    pub value_date: NaiveDate,
    pub journal_id: String,
    pub created_at: DateTime<Utc>,
}

pub async fn insert_deposit(c: &mut Conn, d: &DepositRow) -> StoreResult<()> {
    let sql = "INSERT INTO prepayment_deposit (deposit_id, region, amount_fen, bank_reference, value_date, \
               journal_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)";
    on_conn!(c, x => sqlx::query(sql).bind(&d.deposit_id).bind(&d.region).bind(d.amount_fen)
        .bind(&d.bank_reference).bind(d.value_date).bind(&d.journal_id).bind(d.created_at)
        .execute(x).await.map(|r| r.rows_affected()))?;
    Ok(())
}

// ------------------------------------------------------------------------------ verify

/// Confirmed statements whose frozen figures differ from their live figures.
pub async fn frozen_mismatches(c: &mut Conn, limit: i64) -> StoreResult<Vec<String>> {
    let sql = format!(
        "SELECT q.statement_id FROM (SELECT s.statement_id, s.f_line_count, s.f_medfee_fen, s.f_fund_fen, \
         s.f_acct_fen, s.f_disputed_count, s.f_disputed_due_fen, s.f_due_fen, {}{SUMMARY_FROM} \
         WHERE s.status = 2 GROUP BY s.statement_id, s.f_line_count, s.f_medfee_fen, s.f_fund_fen, s.f_acct_fen, \
         s.f_disputed_count, s.f_disputed_due_fen, s.f_due_fen, s.b_line_count, s.b_medfee_fen, s.b_fund_fen, \
         s.b_acct_fen) q \
         WHERE q.f_line_count IS NULL OR q.f_line_count <> q.line_count OR q.f_medfee_fen <> q.medfee_fen \
         OR q.f_fund_fen <> q.fund_fen OR q.f_acct_fen <> q.acct_fen OR q.f_disputed_count <> q.disputed_count \
         OR q.f_disputed_due_fen <> q.disputed_due_fen OR q.f_due_fen <> q.due_fen \
         ORDER BY q.statement_id LIMIT $1",
        figures_select()
    );
    Ok(on_conn!(c, x => sqlx::query_scalar(&sql).bind(limit).fetch_all(x).await)?)
}

/// Statements whose base figures differ from the settlements of their period and parties,
/// and parties of a closed period with settlements but no statement (recomputed from the
/// settlements: one pass over those of closed periods).
pub async fn base_mismatches(c: &mut Conn, limit: i64) -> StoreResult<Vec<String>> {
    let sql = format!(
        "SELECT u.sid FROM (SELECT {} AS sid, 1 AS n, st.medfee_fen AS m, st.fund_fen AS f, st.acct_fen AS a \
         FROM settlement st JOIN clearing_period p ON p.period = st.clearing_period \
         UNION ALL SELECT statement_id, -b_line_count, -b_medfee_fen, -b_fund_fen, -b_acct_fen FROM statement) u \
         GROUP BY u.sid HAVING SUM(u.n) <> 0 OR SUM(u.m) <> 0 OR SUM(u.f) <> 0 OR SUM(u.a) <> 0 \
         ORDER BY u.sid LIMIT $1",
        statement_id_sql("st.")
    );
    Ok(on_conn!(c, x => sqlx::query_scalar(&sql).bind(limit).fetch_all(x).await)?)
}

/// Stored statement lines whose statement does not exist.
pub async fn orphan_lines(c: &mut Conn, limit: i64) -> StoreResult<Vec<String>> {
    let sql = "SELECT l.statement_id || '/' || l.setl_id FROM statement_line l \
               LEFT JOIN statement s ON s.statement_id = l.statement_id WHERE s.statement_id IS NULL \
               ORDER BY l.statement_id, l.setl_id LIMIT $1";
    Ok(on_conn!(c, x => sqlx::query_scalar(sql).bind(limit).fetch_all(x).await)?)
}

/// Stored statement lines that differ from the settlement they point at (or point at none),
/// and overrides on a statement other than their settlement's.
pub async fn line_mismatches(c: &mut Conn, limit: i64) -> StoreResult<Vec<String>> {
    let sql = format!(
        "SELECT l.statement_id || '/' || l.setl_id FROM statement_line l LEFT JOIN settlement st ON st.setl_id = l.setl_id \
         WHERE st.setl_id IS NULL OR l.medfee_fen <> st.medfee_fen OR l.fund_fen <> st.fund_fen \
         OR l.acct_fen <> st.acct_fen OR (l.carried_from IS NULL AND l.statement_id <> {}) \
         ORDER BY l.statement_id, l.setl_id LIMIT $1",
        statement_id_sql("st.")
    );
    Ok(on_conn!(c, x => sqlx::query_scalar(&sql).bind(limit).fetch_all(x).await)?)
}

/// Per (home, treatment): Σ fund + account of every settlement and reversal (fen).
pub async fn settled_due(c: &mut Conn) -> StoreResult<Vec<(String, String, i64)>> {
    let sql = "SELECT home_region, treatment_region, CAST(SUM(fund_fen + acct_fen) AS BIGINT) FROM settlement \
               GROUP BY home_region, treatment_region";
    Ok(on_conn!(c, x => sqlx::query_as(sql).fetch_all(x).await)?)
}

/// Per (home, treatment): Σ frozen due of the statements of netted or settled periods (fen).
pub async fn netted_due(c: &mut Conn) -> StoreResult<Vec<(String, String, i64)>> {
    let sql = "SELECT s.home_region, s.treatment_region, CAST(SUM(s.f_due_fen) AS BIGINT) FROM statement s \
               JOIN clearing_period p ON p.period = s.period WHERE p.status >= 4 \
               GROUP BY s.home_region, s.treatment_region";
    Ok(on_conn!(c, x => sqlx::query_as(sql).fetch_all(x).await)?)
}

/// Per region: Σ bank parts not yet recorded as payer minus as receiver (fen).
pub async fn unrecorded_by_region(c: &mut Conn) -> StoreResult<Vec<(String, i64)>> {
    let sql = "SELECT region, CAST(SUM(fen) AS BIGINT) FROM (\
               SELECT payer AS region, bank_fen AS fen FROM transfer_instruction WHERE recorded_at IS NULL \
               UNION ALL SELECT receiver, -bank_fen FROM transfer_instruction WHERE recorded_at IS NULL) u \
               GROUP BY region";
    Ok(on_conn!(c, x => sqlx::query_as(sql).fetch_all(x).await)?)
}

pub async fn prepay_accounts(c: &mut Conn) -> StoreResult<Vec<(String, i64)>> {
    let sql = "SELECT region, balance_fen FROM prepayment_account ORDER BY region";
    Ok(on_conn!(c, x => sqlx::query_as(sql).fetch_all(x).await)?)
}

/// Periods in a state other than what their instructions say: netted with nothing left to
/// record, or settled with something unrecorded.
pub async fn period_state_breaks(c: &mut Conn, limit: i64) -> StoreResult<Vec<String>> {
    let sql = "SELECT p.period FROM clearing_period p WHERE \
               (p.status = 5 AND EXISTS (SELECT 1 FROM transfer_instruction t WHERE t.period = p.period \
                AND t.bank_fen > 0 AND t.recorded_at IS NULL)) \
               OR (p.status = 4 AND NOT EXISTS (SELECT 1 FROM transfer_instruction t WHERE t.period = p.period \
                AND t.bank_fen > 0 AND t.recorded_at IS NULL)) \
               OR (p.status >= 3 AND EXISTS (SELECT 1 FROM statement s WHERE s.period = p.period AND s.status = 1)) \
               ORDER BY p.period LIMIT $1";
    Ok(on_conn!(c, x => sqlx::query_scalar(sql).bind(limit).fetch_all(x).await)?)
}

/// Lines of a period's statements after (statement_id, setl_id), where `region` is a party
/// ("" = all), for exports: (statement_id, line). Statement by statement, each read in order
/// from the period index.
pub async fn period_lines(
    c: &mut Conn,
    period: &str,
    region: &str,
    after: (&str, &str),
    limit: i64,
) -> StoreResult<Vec<(String, LineRow)>> {
    let sql = "SELECT statement_id FROM statement WHERE period = $1 \
               AND ($2 = '' OR home_region = $2 OR treatment_region = $2) AND statement_id >= $3 \
               ORDER BY statement_id";
    let ids: Vec<String> = on_conn!(c, x => sqlx::query_scalar(sql).bind(period).bind(region).bind(after.0)
        .fetch_all(x).await)?;
    let mut out = Vec::new();
    for id in ids {
        let left = limit - out.len() as i64;
        if left <= 0 {
            break;
        }
        let from = if id == after.0 { after.1 } else { "" };
        let rows = lines(c, &id, from, left).await?;
        out.extend(rows.into_iter().map(|l| (id.clone(), l)));
    }
    Ok(out)
}

/// Lines of reversals and refunds of `setl_id` not yet part of a dispute, on any statement:
/// (statement_id, setl_id, statement status, stored). Settlements of closed months are lines of
/// their statement unless stored with a state; carried copies are stored.
pub async fn undisputed_reversal_lines(
    c: &mut Conn,
    setl_id: &str,
) -> StoreResult<Vec<(String, String, i64, bool)>> {
    let sql = format!(
        "SELECT s.statement_id, st.setl_id, s.status, false FROM settlement st JOIN statement s ON s.statement_id = {} \
         WHERE st.reverses = $1 AND NOT EXISTS (SELECT 1 FROM statement_line l \
         WHERE l.statement_id = s.statement_id AND l.setl_id = st.setl_id) \
         UNION ALL SELECT l.statement_id, l.setl_id, s.status, true FROM statement_line l \
         JOIN statement s ON s.statement_id = l.statement_id \
         WHERE l.reverses = $1 AND l.dispute_state = 0 ORDER BY 1, 2",
        statement_id_sql("st.")
    );
    Ok(on_conn!(c, x => sqlx::query_as(&sql).bind(setl_id).fetch_all(x).await)?)
}

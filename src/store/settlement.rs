//! Visits, fee lines, settlements and accumulators.

use super::cells::{Cell, Cells, Together};
use super::query::Row as _;
use super::query::{One, Query};
use super::{Conn, StoreResult};
use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::OptionalExtension;
use sqlx::Arguments as _;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct VisitRow {
    pub mdtrt_id: String,
    pub institution: String,
    pub treatment_region: String,
    pub visit_no: String,
    pub psn_no: String,
    pub home_region: String,
    pub insurance_type: i64,
    pub care_type: i64,
    /// Comma-separated ICD-10 codes, main diagnosis first.
    pub diagnoses: String,
    pub begin_date: NaiveDate,
    pub end_date: Option<NaiveDate>,
    /// proto VisitStatus.
    pub status: i64,
    pub filing_id: Option<String>,
    pub setl_id: Option<String>,
}

crate::direct_row!(VisitRow {
    mdtrt_id,
    institution,
    treatment_region,
    visit_no,
    psn_no,
    home_region,
    insurance_type,
    care_type,
    diagnoses,
    begin_date,
    end_date,
    status,
    filing_id,
    setl_id,
});

const VISIT_COLS: &str = "mdtrt_id, institution, treatment_region, visit_no, psn_no, home_region, \
    insurance_type, care_type, diagnoses, begin_date, end_date, status, filing_id, setl_id";

pub async fn insert_visit(c: &mut Conn, v: &VisitRow, now: DateTime<Utc>) -> StoreResult<()> {
    let sql = format!(
        "INSERT INTO visit ({VISIT_COLS}, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
    );
    Query::new(&sql)
        .bind(&v.mdtrt_id)
        .bind(&v.institution)
        .bind(&v.treatment_region)
        .bind(&v.visit_no)
        .bind(&v.psn_no)
        .bind(&v.home_region)
        .bind(v.insurance_type)
        .bind(v.care_type)
        .bind(&v.diagnoses)
        .bind(v.begin_date)
        .bind(v.end_date)
        .bind(v.status)
        .bind(&v.filing_id)
        .bind(&v.setl_id)
        .bind(now)
        .execute(c)
        .await?;
    Ok(())
}

pub async fn get_visit(c: &mut Conn, mdtrt_id: &str, lock: bool) -> StoreResult<Option<VisitRow>> {
    let lock = if lock { c.for_update() } else { "" };
    let sql = format!("SELECT {VISIT_COLS} FROM visit WHERE mdtrt_id = $1{lock}");
    Query::new(&sql).bind(mdtrt_id).fetch_optional(c).await
}

/// Writes a visit's mutable fields.
pub async fn update_visit(c: &mut Conn, v: &VisitRow) -> StoreResult<()> {
    let sql = "UPDATE visit SET diagnoses = $2, end_date = $3, status = $4, filing_id = $5, \
               setl_id = $6 WHERE mdtrt_id = $1";
    Query::new(sql)
        .bind(&v.mdtrt_id)
        .bind(&v.diagnoses)
        .bind(v.end_date)
        .bind(v.status)
        .bind(&v.filing_id)
        .bind(&v.setl_id)
        .execute(c)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct FeeLineRow {
    pub mdtrt_id: String,
    pub line_no: String,
    pub code: String,
    pub name: String,
    pub qty_scaled: i64,
    pub price_micros: i64,
    pub fee_date: NaiveDate,
    pub refund_of: Option<String>,
    /// proto CatalogueClass; 0 = not in the catalogue.
    pub class: i64,
    pub cap_micros: Option<i64>,
    pub b_ratio_bp: Option<i64>,
    pub catalogue_version: i64,
    pub amount_fen: i64,
    pub fulamt_fen: i64,
    pub overlmt_fen: i64,
    pub preself_fen: i64,
    pub inscp_fen: i64,
    pub setl_id: Option<String>,
}

crate::direct_row!(FeeLineRow {
    mdtrt_id,
    line_no,
    code,
    name,
    qty_scaled,
    price_micros,
    fee_date,
    refund_of,
    class,
    cap_micros,
    b_ratio_bp,
    catalogue_version,
    amount_fen,
    fulamt_fen,
    overlmt_fen,
    preself_fen,
    inscp_fen,
    setl_id,
});

impl super::cells::Cells for FeeLineRow {
    const TABLE: &'static str = "fee_line";
    const COLUMNS: &'static str = LINE_COLS;
    const N: usize = 18;
    fn cells<'a>(&'a self, out: &mut dyn FnMut(super::cells::Cell<'a>)) {
        use super::cells::Cell;
        out(Cell::Text(&self.mdtrt_id));
        out(Cell::Text(&self.line_no));
        out(Cell::Text(&self.code));
        out(Cell::Text(&self.name));
        out(Cell::Int(self.qty_scaled));
        out(Cell::Int(self.price_micros));
        out(Cell::Date(self.fee_date));
        out(Cell::OptText(self.refund_of.as_deref()));
        out(Cell::Int(self.class));
        out(Cell::OptInt(self.cap_micros));
        out(Cell::OptInt(self.b_ratio_bp));
        out(Cell::Int(self.catalogue_version));
        out(Cell::Int(self.amount_fen));
        out(Cell::Int(self.fulamt_fen));
        out(Cell::Int(self.overlmt_fen));
        out(Cell::Int(self.preself_fen));
        out(Cell::Int(self.inscp_fen));
        out(Cell::OptText(self.setl_id.as_deref()));
    }
}

const LINE_COLS: &str = "mdtrt_id, line_no, code, name, qty_scaled, price_micros, fee_date, \
    refund_of, class, cap_micros, b_ratio_bp, catalogue_version, amount_fen, fulamt_fen, \
    overlmt_fen, preself_fen, inscp_fen, setl_id";

/// All lines of a visit in line_no order.
pub async fn lines(c: &mut Conn, mdtrt_id: &str) -> StoreResult<Vec<FeeLineRow>> {
    let sql = format!("SELECT {LINE_COLS} FROM fee_line WHERE mdtrt_id = $1 ORDER BY line_no");
    Query::new(&sql).bind(mdtrt_id).fetch_all(c).await
}

/// Inserts new lines.
pub async fn insert_lines(c: &mut Conn, rows: &[FeeLineRow]) -> StoreResult<()> {
    super::cells::insert(c, rows, "").await?;
    Ok(())
}

/// Deletes one unsettled line (or all unsettled lines when `line_no` is None); returns the count.
pub async fn delete_lines(c: &mut Conn, mdtrt_id: &str, line_no: Option<&str>) -> StoreResult<u64> {
    let sql = "DELETE FROM fee_line WHERE mdtrt_id = $1 AND setl_id IS NULL \
               AND ($2 = '' OR line_no = $2)";
    Query::new(sql)
        .bind(mdtrt_id)
        .bind(line_no.unwrap_or(""))
        .execute(c)
        .await
}

/// Marks every unsettled line of a visit as covered by `setl_id`.
pub async fn assign_lines(c: &mut Conn, mdtrt_id: &str, setl_id: &str) -> StoreResult<u64> {
    let sql = "UPDATE fee_line SET setl_id = $2 WHERE mdtrt_id = $1 AND setl_id IS NULL";
    Query::new(sql)
        .bind(mdtrt_id)
        .bind(setl_id)
        .execute(c)
        .await
}

/// Frees the lines a reversed settlement covered, so the visit can be corrected and settled again.
pub async fn release_lines(c: &mut Conn, setl_id: &str) -> StoreResult<u64> {
    let sql = "UPDATE fee_line SET setl_id = NULL WHERE setl_id = $1";
    Query::new(sql).bind(setl_id).execute(c).await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SettlementRow {
    pub setl_id: String,
    /// 1 settlement, 2 reversal.
    pub kind: i64,
    pub reverses: Option<String>,
    pub reversed_by: Option<String>,
    pub mdtrt_id: Option<String>,
    pub psn_no: String,
    pub home_region: String,
    pub treatment_region: String,
    pub institution: String,
    pub insurance_type: i64,
    pub care_type: i64,
    pub settled_at: DateTime<Utc>,
    pub business_date: NaiveDate,
    /// YYYYMM.
    pub clearing_period: String,
    pub service_year: i64,
    pub medfee_fen: i64,
    pub fulamt_fen: i64,
    pub overlmt_fen: i64,
    pub preself_fen: i64,
    pub inscp_fen: i64,
    pub dedc_fen: i64,
    pub hifp_fen: i64,
    pub hifmi_fen: i64,
    pub maf_fen: i64,
    pub fund_fen: i64,
    pub psn_part_fen: i64,
    pub acct_fen: i64,
    pub cash_fen: i64,
    pub balance_after_fen: Option<i64>,
    pub d_annual_ded_fen: i64,
    pub d_burden_fen: i64,
    pub d_admissions: i64,
    pub line_count: i64,
    /// JSON of `service::settlement::Explanation`.
    pub explanation: String,
    pub journal_id: String,
    pub request_id: String,
}

crate::direct_row!(SettlementRow {
    setl_id,
    kind,
    reverses,
    reversed_by,
    mdtrt_id,
    psn_no,
    home_region,
    treatment_region,
    institution,
    insurance_type,
    care_type,
    settled_at,
    business_date,
    clearing_period,
    service_year,
    medfee_fen,
    fulamt_fen,
    overlmt_fen,
    preself_fen,
    inscp_fen,
    dedc_fen,
    hifp_fen,
    hifmi_fen,
    maf_fen,
    fund_fen,
    psn_part_fen,
    acct_fen,
    cash_fen,
    balance_after_fen,
    d_annual_ded_fen,
    d_burden_fen,
    d_admissions,
    line_count,
    explanation,
    journal_id,
    request_id,
});

const SETL_COLS: &str = "setl_id, kind, reverses, reversed_by, mdtrt_id, psn_no, home_region, \
    treatment_region, institution, insurance_type, care_type, settled_at, business_date, \
    clearing_period, service_year, medfee_fen, fulamt_fen, overlmt_fen, preself_fen, inscp_fen, \
    dedc_fen, hifp_fen, hifmi_fen, maf_fen, fund_fen, psn_part_fen, acct_fen, cash_fen, \
    balance_after_fen, d_annual_ded_fen, d_burden_fen, d_admissions, line_count, explanation, \
    journal_id, request_id";

/// Inserts a settlement and the event bureaus follow, in the caller's transaction.
pub async fn insert_settlement(c: &mut Conn, s: &SettlementRow) -> StoreResult<()> {
    insert_settlements(c, std::slice::from_ref(s)).await
}

impl Cells for SettlementRow {
    const TABLE: &'static str = "settlement";
    const COLUMNS: &'static str = SETL_COLS;
    const N: usize = 36;
    fn cells<'a>(&'a self, out: &mut dyn FnMut(Cell<'a>)) {
        out(Cell::Text(&self.setl_id));
        out(Cell::Int(self.kind));
        out(Cell::OptText(self.reverses.as_deref()));
        out(Cell::OptText(self.reversed_by.as_deref()));
        out(Cell::OptText(self.mdtrt_id.as_deref()));
        out(Cell::Text(&self.psn_no));
        out(Cell::Text(&self.home_region));
        out(Cell::Text(&self.treatment_region));
        out(Cell::Text(&self.institution));
        out(Cell::Int(self.insurance_type));
        out(Cell::Int(self.care_type));
        out(Cell::Time(self.settled_at));
        out(Cell::Date(self.business_date));
        out(Cell::Text(&self.clearing_period));
        for v in [
            self.service_year,
            self.medfee_fen,
            self.fulamt_fen,
            self.overlmt_fen,
            self.preself_fen,
            self.inscp_fen,
            self.dedc_fen,
            self.hifp_fen,
            self.hifmi_fen,
            self.maf_fen,
            self.fund_fen,
            self.psn_part_fen,
            self.acct_fen,
            self.cash_fen,
        ] {
            out(Cell::Int(v));
        }
        out(Cell::OptInt(self.balance_after_fen));
        for v in [
            self.d_annual_ded_fen,
            self.d_burden_fen,
            self.d_admissions,
            self.line_count,
        ] {
            out(Cell::Int(v));
        }
        out(Cell::Text(&self.explanation));
        out(Cell::Text(&self.journal_id));
        out(Cell::Text(&self.request_id));
    }
}

pub async fn get_settlement(
    c: &mut Conn,
    setl_id: &str,
    lock: bool,
) -> StoreResult<Option<SettlementRow>> {
    let lock = if lock { c.for_update() } else { "" };
    let sql = format!("SELECT {SETL_COLS} FROM settlement WHERE setl_id = $1{lock}");
    Query::new(&sql).bind(setl_id).fetch_optional(c).await
}

/// The settlement a caller (`principal`: its key, as in the idempotency table) booked under one
/// of its request ids — found through the idempotency row of that call, which names it: the
/// request ids are indexed once, by that row's key (settlements keep theirs unindexed).
pub async fn settlement_by_request(
    c: &mut Conn,
    principal: &str,
    request_id: &str,
) -> StoreResult<Option<SettlementRow>> {
    let sql = format!(
        "SELECT {SETL_COLS} FROM settlement WHERE setl_id = \
         (SELECT setl_id FROM idempotency_by_key WHERE principal = $1 AND request_id = $2)"
    );
    Query::new(&sql)
        .bind(principal)
        .bind(request_id)
        .fetch_optional(c)
        .await
}

pub async fn set_reversed_by(c: &mut Conn, setl_id: &str, reversal: &str) -> StoreResult<()> {
    let sql = "UPDATE settlement SET reversed_by = $2 WHERE setl_id = $1";
    Query::new(sql)
        .bind(setl_id)
        .bind(reversal)
        .execute(c)
        .await?;
    Ok(())
}

/// Which settlements to list.
#[derive(Debug, Clone)]
pub enum SettlementFilter {
    Visit(String),
    Person(String),
    InstitutionDay(String, NaiveDate),
}

pub async fn list_settlements(
    c: &mut Conn,
    filter: &SettlementFilter,
    after: &str,
    limit: i64,
) -> StoreResult<Vec<SettlementRow>> {
    let (cond, key, day) = match filter {
        SettlementFilter::Visit(v) => ("mdtrt_id = $1 AND $2 = $2", v.as_str(), None),
        // Through the view: on SQLite a person's settlements are indexed in batches (see
        // `store::derived`).
        SettlementFilter::Person(p) => (
            "setl_id IN (SELECT setl_id FROM settlement_by_person WHERE psn_no = $1) AND $2 = $2",
            p.as_str(),
            None,
        ),
        // Likewise an institution's by day.
        SettlementFilter::InstitutionDay(i, d) => (
            "setl_id IN (SELECT setl_id FROM settlement_by_institution \
             WHERE institution = $1 AND business_date = $2)",
            i.as_str(),
            Some(*d),
        ),
    };
    let day = day.unwrap_or_default();
    let sql = format!(
        "SELECT {SETL_COLS} FROM settlement WHERE {cond} AND setl_id > $3 ORDER BY setl_id LIMIT $4"
    );
    Query::new(&sql)
        .bind(key)
        .bind(day)
        .bind(after)
        .bind(limit)
        .fetch_all(c)
        .await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, sqlx::FromRow)]
pub struct AccumulatorRow {
    pub annual_ded_fen: i64,
    pub fund_fen: i64,
    pub burden_fen: i64,
    pub ci_fen: i64,
    pub maf_fen: i64,
    pub admissions: i64,
}

crate::direct_row!(AccumulatorRow {
    annual_ded_fen,
    fund_fen,
    burden_fen,
    ci_fen,
    maf_fen,
    admissions,
});

/// The accumulator row of (person, insurance type, year), created at zero when missing and
/// locked for the rest of the transaction ([`lock_accumulators`] of one key: on SQLite one loan
/// of the connection, not two statements through the driver).
pub async fn lock_accumulator(
    c: &mut Conn,
    psn_no: &str,
    insurance_type: i64,
    year: i64,
) -> StoreResult<AccumulatorRow> {
    let key = (psn_no.to_owned(), insurance_type, year);
    Ok(lock_accumulators(c, std::slice::from_ref(&key))
        .await?
        .into_iter()
        .next()
        .map(|(_, row)| row)
        .unwrap_or_default())
}

/// The accumulator row, if any (`lock` inside a write transaction).
pub async fn read_accumulator(
    c: &mut Conn,
    psn_no: &str,
    insurance_type: i64,
    year: i64,
    lock: bool,
) -> StoreResult<Option<AccumulatorRow>> {
    let lock = if lock { c.for_update() } else { "" };
    let sql = format!(
        "SELECT annual_ded_fen, fund_fen, burden_fen, ci_fen, maf_fen, admissions FROM accumulator \
         WHERE psn_no = $1 AND insurance_type = $2 AND year = $3{lock}"
    );
    Query::new(&sql)
        .bind(psn_no)
        .bind(insurance_type)
        .bind(year)
        .fetch_optional(c)
        .await
}

/// Adds a settlement's (or reversal's) contribution.
pub async fn add_to_accumulator(
    c: &mut Conn,
    psn_no: &str,
    insurance_type: i64,
    year: i64,
    d: &AccumulatorRow,
) -> StoreResult<()> {
    let sql = "UPDATE accumulator SET annual_ded_fen = annual_ded_fen + $4, fund_fen = fund_fen + $5, \
               burden_fen = burden_fen + $6, ci_fen = ci_fen + $7, maf_fen = maf_fen + $8, \
               admissions = admissions + $9 WHERE psn_no = $1 AND insurance_type = $2 AND year = $3";
    Query::new(sql)
        .bind(psn_no)
        .bind(insurance_type)
        .bind(year)
        .bind(d.annual_ded_fen)
        .bind(d.fund_fen)
        .bind(d.burden_fen)
        .bind(d.ci_fen)
        .bind(d.maf_fen)
        .bind(d.admissions)
        .execute(c)
        .await?;
    Ok(())
}

/// Accumulators that differ from the sum of their settlements and reversals:
/// (psn_no, insurance_type, year).
pub async fn accumulator_mismatches(
    c: &mut Conn,
    limit: i64,
) -> StoreResult<Vec<(String, i64, i64)>> {
    let sql = "SELECT a.psn_no, a.insurance_type, a.year FROM accumulator a LEFT JOIN ( \
                 SELECT psn_no, insurance_type, service_year, SUM(d_annual_ded_fen) AS ded, \
                   SUM(hifp_fen) AS fund, SUM(d_burden_fen) AS burden, SUM(hifmi_fen) AS ci, \
                   SUM(maf_fen) AS maf, SUM(d_admissions) AS adm \
                 FROM settlement GROUP BY psn_no, insurance_type, service_year) s \
               ON s.psn_no = a.psn_no AND s.insurance_type = a.insurance_type \
                 AND s.service_year = a.year \
               WHERE a.annual_ded_fen <> COALESCE(s.ded, 0) OR a.fund_fen <> COALESCE(s.fund, 0) \
                 OR a.burden_fen <> COALESCE(s.burden, 0) OR a.ci_fen <> COALESCE(s.ci, 0) \
                 OR a.maf_fen <> COALESCE(s.maf, 0) OR a.admissions <> COALESCE(s.adm, 0) \
               ORDER BY a.psn_no LIMIT $1";
    Query::new(sql).bind(limit).fetch_all(c).await
}

/// Settlements whose journal postings differ from their breakdown: the legs on due:* must sum to
/// fund + account, on pacct:* to −account, on inst:* to fund + account, on fund/ci/maf:* to
/// −fund.
pub async fn posting_mismatches(c: &mut Conn, limit: i64) -> StoreResult<Vec<String>> {
    let sql = "SELECT s.setl_id FROM settlement s LEFT JOIN ( \
                 SELECT journal_id, \
                   SUM(CASE WHEN account LIKE 'due:%' THEN amount_fen ELSE 0 END) AS due, \
                   SUM(CASE WHEN account LIKE 'pacct:%' THEN amount_fen ELSE 0 END) AS pacct, \
                   SUM(CASE WHEN account LIKE 'inst:%' THEN amount_fen ELSE 0 END) AS inst, \
                   SUM(CASE WHEN account LIKE 'fund:%' OR account LIKE 'ci:%' \
                       OR account LIKE 'maf:%' THEN amount_fen ELSE 0 END) AS funds \
                 FROM journal_entry GROUP BY journal_id) j ON j.journal_id = s.journal_id \
               WHERE COALESCE(j.due, 0) <> s.fund_fen + s.acct_fen \
                 OR COALESCE(j.pacct, 0) <> -s.acct_fen \
                 OR COALESCE(j.inst, 0) <> s.fund_fen + s.acct_fen \
                 OR COALESCE(j.funds, 0) <> -s.fund_fen \
               ORDER BY s.setl_id LIMIT $1";
    let rows: Vec<One<String>> = Query::new(sql).bind(limit).fetch_all(c).await?;
    Ok(rows.into_iter().map(|One(id)| id).collect())
}

/// Settlements whose amounts break an identity of DESIGN §3.
pub async fn identity_breaks(c: &mut Conn, limit: i64) -> StoreResult<Vec<String>> {
    let sql = "SELECT setl_id FROM settlement WHERE \
                 medfee_fen <> fulamt_fen + overlmt_fen + preself_fen + inscp_fen \
                 OR fund_fen <> hifp_fen + hifmi_fen + maf_fen \
                 OR medfee_fen <> fund_fen + psn_part_fen \
                 OR psn_part_fen <> acct_fen + cash_fen \
               ORDER BY setl_id LIMIT $1";
    let rows: Vec<One<String>> = Query::new(sql).bind(limit).fetch_all(c).await?;
    Ok(rows.into_iter().map(|One(id)| id).collect())
}

/// An accumulator's key: (psn_no, insurance type, year).
pub type AccumulatorKey = (String, i64, i64);

/// Locks (creating at zero when missing) many accumulator rows, in key order.
pub async fn lock_accumulators(
    c: &mut Conn,
    keys: &[AccumulatorKey],
) -> StoreResult<Vec<(AccumulatorKey, AccumulatorRow)>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    // SQLite: one prepared lookup per key, and an insert only for a missing one (see
    // `super::direct`); the write lock of the transaction is the lock.
    let on_sqlite = c
        .with_sqlite(|x| {
            let mut find = x.prepare_cached(
                "SELECT annual_ded_fen, fund_fen, burden_fen, ci_fen, maf_fen, admissions \
                 FROM accumulator WHERE psn_no = ?1 AND insurance_type = ?2 AND year = ?3",
            )?;
            let mut create = x.prepare_cached(
                "INSERT INTO accumulator (psn_no, insurance_type, year, annual_ded_fen, fund_fen, \
                 burden_fen, ci_fen, maf_fen, admissions) VALUES (?1, ?2, ?3, 0, 0, 0, 0, 0, 0)",
            )?;
            let mut out = Vec::new();
            for key in keys {
                let (p, t, y) = key;
                let found = find
                    .query_row(rusqlite::params![p, t, y], AccumulatorRow::direct)
                    .optional()?;
                let row = match found {
                    Some(row) => row,
                    None => {
                        create.execute(rusqlite::params![p, t, y])?;
                        AccumulatorRow::default()
                    }
                };
                out.push((key.clone(), row));
            }
            out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            out.dedup_by(|a, b| a.0 == b.0);
            Ok(out)
        })
        .await?;
    if let Some(found) = on_sqlite {
        return Ok(found);
    }
    // PostgreSQL: the keys as three arrays (one statement text for any number of keys).
    let psn: Vec<&str> = keys.iter().map(|(p, _, _)| p.as_str()).collect();
    let types: Vec<i64> = keys.iter().map(|(_, t, _)| *t).collect();
    let years: Vec<i64> = keys.iter().map(|(_, _, y)| *y).collect();
    let sql = "INSERT INTO accumulator (psn_no, insurance_type, year, annual_ded_fen, fund_fen, \
               burden_fen, ci_fen, maf_fen, admissions) SELECT v.p, v.t, v.y, 0, 0, 0, 0, 0, 0 \
               FROM UNNEST($1::text[], $2::int8[], $3::int8[]) AS v(p, t, y) \
               ON CONFLICT (psn_no, insurance_type, year) DO NOTHING";
    sqlx::query(sql)
        .bind(&psn)
        .bind(&types)
        .bind(&years)
        .execute(c.pg()?)
        .await?;
    let lock = c.for_update();
    let sql = format!(
        "SELECT psn_no, insurance_type, year, annual_ded_fen, fund_fen, burden_fen, ci_fen, \
         maf_fen, admissions FROM accumulator WHERE (psn_no, insurance_type, year) IN \
         (SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[])) \
         ORDER BY psn_no, insurance_type, year{lock}"
    );
    type Row = (String, i64, i64, i64, i64, i64, i64, i64, i64);
    let rows: Vec<Row> = sqlx::query_as(&sql)
        .bind(&psn)
        .bind(&types)
        .bind(&years)
        .fetch_all(c.pg()?)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(p, t, y, d, f, b, ci, m, a)| {
            (
                (p, t, y),
                AccumulatorRow {
                    annual_ded_fen: d,
                    fund_fen: f,
                    burden_fen: b,
                    ci_fen: ci,
                    maf_fen: m,
                    admissions: a,
                },
            )
        })
        .collect())
}

/// Adds many settlements' contributions on PostgreSQL, as a part of a batch's statement (see
/// [`Together`]): the deltas as one array per column (one statement text for any number).
/// SQLite: [`add_to_accumulators_direct`].
pub fn add_to_accumulators_in(
    t: &mut Together,
    deltas: &HashMap<AccumulatorKey, AccumulatorRow>,
) -> StoreResult<()> {
    if deltas.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&AccumulatorRow) -> i64| -> Vec<i64> { deltas.values().map(f).collect() };
    let psn: Vec<&str> = deltas.keys().map(|(p, _, _)| p.as_str()).collect();
    let types: Vec<i64> = deltas.keys().map(|(_, t, _)| *t).collect();
    let years: Vec<i64> = deltas.keys().map(|(_, _, y)| *y).collect();
    let sql = "UPDATE accumulator SET annual_ded_fen = accumulator.annual_ded_fen + v.d, \
               fund_fen = accumulator.fund_fen + v.f, burden_fen = accumulator.burden_fen + v.b, \
               ci_fen = accumulator.ci_fen + v.ci, maf_fen = accumulator.maf_fen + v.m, \
               admissions = accumulator.admissions + v.a \
               FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], \
               $7::int8[], $8::int8[], $9::int8[]) AS v(p, t, y, d, f, b, ci, m, a) \
               WHERE accumulator.psn_no = v.p AND accumulator.insurance_type = v.t \
               AND accumulator.year = v.y";
    t.statement(sql, |args| {
        args.add(&psn)?;
        args.add(&types)?;
        args.add(&years)?;
        args.add(col(|d| d.annual_ded_fen))?;
        args.add(col(|d| d.fund_fen))?;
        args.add(col(|d| d.burden_fen))?;
        args.add(col(|d| d.ci_fen))?;
        args.add(col(|d| d.maf_fen))?;
        args.add(col(|d| d.admissions))
    })?;
    Ok(())
}

/// [`add_to_accumulators_in`] on SQLite's handle (see [`super::direct`]): one prepared
/// single-row UPDATE.
pub fn add_to_accumulators_direct(
    c: &rusqlite::Connection,
    deltas: &HashMap<AccumulatorKey, AccumulatorRow>,
) -> StoreResult<()> {
    if deltas.is_empty() {
        return Ok(());
    }
    let mut st = c.prepare_cached(
        "UPDATE accumulator SET annual_ded_fen = annual_ded_fen + ?4, fund_fen = fund_fen + ?5, \
         burden_fen = burden_fen + ?6, ci_fen = ci_fen + ?7, maf_fen = maf_fen + ?8, \
         admissions = admissions + ?9 WHERE psn_no = ?1 AND insurance_type = ?2 AND year = ?3",
    )?;
    for ((p, t, y), d) in deltas {
        st.execute(rusqlite::params![
            p,
            t,
            y,
            d.annual_ded_fen,
            d.fund_fen,
            d.burden_fen,
            d.ci_fen,
            d.maf_fen,
            d.admissions
        ])?;
    }
    Ok(())
}

/// Inserts many settlements and the events bureaus follow, set-based.
pub async fn insert_settlements(c: &mut Conn, rows: &[SettlementRow]) -> StoreResult<()> {
    super::cells::insert(c, rows, "").await?;
    super::events::insert(c, &events_of(rows)).await?;
    Ok(())
}

/// [`insert_settlements`] as parts of a PostgreSQL statement (see [`Together`]).
pub fn insert_settlements_in(t: &mut Together, rows: &[SettlementRow]) -> StoreResult<()> {
    t.insert(rows, "")?;
    t.insert(&events_of(rows), "")?;
    Ok(())
}

/// The event bureaus follow of each settlement.
pub(super) fn events_of(rows: &[SettlementRow]) -> Vec<super::events::EventRow> {
    rows.iter()
        .map(super::events::EventRow::settlement)
        .collect()
}

//! Institution reconciliation (NHSA 3201/3202): totals by group, and the row-by-row comparison
//! of an institution's detail with ours. Reads only.

use super::auth::Principal;
use super::error::{AppError, AppResult};
use crate::domain::money::Amount;
use crate::store::reconciliation::{self as store, Compared, DetailRow, TotalsRow};
use crate::store::{Conn, Db};
use chrono::NaiveDate;
use std::collections::BTreeMap;

/// Longest range one call may cover, in days.
pub const MAX_DAYS: i64 = 366;
/// Rows compared per page of the detail comparison.
const PAGE: i64 = 1000;

/// NHSA clr_type of a care type: outpatient 11, inpatient 21, pharmacy 41, maternity 51.
pub fn clearing_type(care_type: i64) -> i64 {
    match care_type {
        1 => 11,
        2 => 21,
        3 => 41,
        _ => 51,
    }
}

/// One group's totals: (count, medfee, fund, account, cash), amounts in fen.
pub type Figures = (i64, i64, i64, i64, i64);

/// A compared group: (insurance type, clearing type) → (ours, theirs).
pub type Comparison = BTreeMap<(i64, i64), (Figures, Figures)>;

fn institution_of(who: &Principal) -> AppResult<&str> {
    match who {
        Principal::Institution { code } => Ok(code),
        _ => Err(AppError::denied(
            "reconciliation is for institutions, of their own settlements",
        )),
    }
}

/// Checks a date range: ordered and at most [`MAX_DAYS`] long.
pub fn check_range(from: NaiveDate, to: NaiveDate) -> AppResult<()> {
    if to < from {
        return Err(AppError::invalid("to_date", "must not be before from_date"));
    }
    if (to - from).num_days() >= MAX_DAYS {
        return Err(AppError::invalid(
            "to_date",
            format!("a range covers at most {MAX_DAYS} days"),
        ));
    }
    Ok(())
}

/// Our totals beside theirs for every group either side has.
pub async fn totals(
    conn: &mut Conn,
    who: &Principal,
    from: NaiveDate,
    to: NaiveDate,
    theirs: &BTreeMap<(i64, i64), Figures>,
) -> AppResult<Comparison> {
    let institution = institution_of(who)?;
    check_range(from, to)?;
    let mut out: Comparison = BTreeMap::new();
    for r in store::totals(conn, institution, from, to).await? {
        let TotalsRow {
            insurance_type,
            care_type,
            count,
            medfee_fen,
            fund_fen,
            acct_fen,
            cash_fen,
        } = r;
        let entry = out
            .entry((insurance_type, clearing_type(care_type)))
            .or_default();
        let o = &mut entry.0;
        *o = (
            o.0 + count,
            o.1 + medfee_fen,
            o.2 + fund_fen,
            o.3 + acct_fen,
            o.4 + cash_fen,
        );
    }
    for (key, figures) in theirs {
        out.entry(*key).or_default().1 = *figures;
    }
    Ok(out)
}

/// A detail comparison in progress: their rows in a temporary table on one connection.
pub struct Detail {
    conn: Conn,
    table: String,
    institution: String,
    from: NaiveDate,
    to: NaiveDate,
}

/// One difference of the detail comparison.
pub type Difference = Compared;

impl Detail {
    pub async fn open(
        db: &Db,
        who: &Principal,
        from: NaiveDate,
        to: NaiveDate,
    ) -> AppResult<Detail> {
        let institution = institution_of(who)?.to_owned();
        check_range(from, to)?;
        let mut conn = db.read().await?;
        let table = format!("recon_{:016x}", rand::random::<u64>());
        store::create_detail_table(&mut conn, &table).await?;
        Ok(Detail {
            conn,
            table,
            institution,
            from,
            to,
        })
    }

    /// Adds a batch of their rows.
    pub async fn add(&mut self, rows: &[DetailRow]) -> AppResult<()> {
        store::add_detail_rows(&mut self.conn, &self.table, rows)
            .await
            .map_err(|e| {
                if store::is_duplicate(&e) {
                    AppError::invalid("rows", "a setl_id was sent twice")
                } else {
                    e.into()
                }
            })
    }

    /// Streams every difference, a page at a time, to `emit`.
    pub async fn differences<F, Fut>(&mut self, mut emit: F) -> AppResult<()>
    where
        F: FnMut(Difference) -> Fut,
        Fut: std::future::Future<Output = AppResult<()>>,
    {
        let (inst, from, to) = (self.institution.clone(), self.from, self.to);
        let mut after = String::new();
        loop {
            let (diffs, last) =
                store::compare_theirs(&mut self.conn, &self.table, &inst, from, to, &after, PAGE)
                    .await?;
            for d in diffs {
                emit(d).await?;
            }
            match last {
                Some(l) => after = l,
                None => break,
            }
        }
        let mut after = String::new();
        loop {
            let (diffs, last) =
                store::missing_theirs(&mut self.conn, &self.table, &inst, from, to, &after, PAGE)
                    .await?;
            for d in diffs {
                emit(d).await?;
            }
            match last {
                Some(l) => after = l,
                None => break,
            }
        }
        Ok(())
    }

    /// Drops the temporary table (the connection goes back to the pool clean).
    pub async fn close(mut self) {
        if let Err(e) = store::drop_detail_table(&mut self.conn, &self.table).await {
            tracing::warn!(error = %e, "could not drop a reconciliation table");
        }
    }
}

/// Parses an amount of a reconciliation row or group into fen.
pub fn fen(field: &str, s: &str) -> AppResult<i64> {
    Ok(Amount::parse(field, s)?.to_fen())
}

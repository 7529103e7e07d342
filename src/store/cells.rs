//! Rows as typed cells, so that a row type names its table, its columns and their values once,
//! and every writer binds them the same way: the set-based multi-row statements on either engine
//! ([`insert`], sqlx) and the SQLite batch writer's prepared single-row statements
//! ([`super::direct`], rusqlite).

use super::{Conn, Raw, StoreError, StoreResult};
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::error::BoxDynError;
use sqlx::{Arguments, Database, Encode, Postgres, Sqlite, Type};

/// One value of a row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell<'a> {
    Text(&'a str),
    OptText(Option<&'a str>),
    Int(i64),
    OptInt(Option<i64>),
    Bytes(&'a [u8]),
    Time(DateTime<Utc>),
    Date(NaiveDate),
}

/// A row type written by [`insert`] and [`super::direct::insert`].
pub trait Cells {
    /// The table the rows go to.
    const TABLE: &'static str;
    /// Its columns, in the order [`Cells::cells`] yields the values.
    const COLUMNS: &'static str;
    /// How many columns.
    const N: usize;
    /// Hands every value of the row to `out`, in column order.
    fn cells<'a>(&'a self, out: &mut dyn FnMut(Cell<'a>));
}

/// Inserts rows, one multi-row statement per chunk; `suffix` follows the VALUES list (e.g. an
/// ON CONFLICT clause). Returns the rows inserted.
pub async fn insert<T: Cells>(c: &mut Conn, rows: &[T], suffix: &str) -> StoreResult<u64> {
    let mut n = 0;
    for chunk in rows.chunks(super::chunk_rows(T::N)) {
        let sql = format!(
            "INSERT INTO {} ({}) VALUES {}{suffix}",
            T::TABLE,
            T::COLUMNS,
            super::values(c.engine(), chunk.len(), T::N, 1)
        );
        n += match c.raw() {
            Raw::Sqlite(x) => sqlx::query_with(&sql, arguments::<Sqlite, T>(chunk)?)
                .execute(x)
                .await?
                .rows_affected(),
            Raw::Pg(x) => sqlx::query_with(&sql, arguments::<Postgres, T>(chunk)?)
                .execute(x)
                .await?
                .rows_affected(),
        };
    }
    Ok(n)
}

/// The bound values of `rows`, in order.
fn arguments<'q, DB: Database, T: Cells>(rows: &'q [T]) -> StoreResult<DB::Arguments<'q>>
where
    &'q str: Encode<'q, DB> + Type<DB>,
    Option<&'q str>: Encode<'q, DB> + Type<DB>,
    i64: Encode<'q, DB> + Type<DB>,
    Option<i64>: Encode<'q, DB> + Type<DB>,
    &'q [u8]: Encode<'q, DB> + Type<DB>,
    DateTime<Utc>: Encode<'q, DB> + Type<DB>,
    NaiveDate: Encode<'q, DB> + Type<DB>,
{
    let mut args = DB::Arguments::default();
    let mut failed: Option<BoxDynError> = None;
    for row in rows {
        row.cells(&mut |cell| {
            let added = match cell {
                Cell::Text(v) => args.add(v),
                Cell::OptText(v) => args.add(v),
                Cell::Int(v) => args.add(v),
                Cell::OptInt(v) => args.add(v),
                Cell::Bytes(v) => args.add(v),
                Cell::Time(v) => args.add(v),
                Cell::Date(v) => args.add(v),
            };
            if let Err(e) = added {
                failed.get_or_insert(e);
            }
        });
    }
    match failed {
        Some(e) => Err(StoreError::Other(anyhow::anyhow!("binding a value: {e}"))),
        None => Ok(args),
    }
}

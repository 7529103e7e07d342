//! Rows as typed cells, so that a row type names its table, its columns and their values once,
//! and every writer binds them the same way: PostgreSQL's set-based statements (one array per
//! column, sqlx) and SQLite's prepared single-row statements on the lent handle
//! ([`super::direct`], rusqlite).

use super::{Conn, StoreError, StoreResult};
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::Arguments;
use sqlx::postgres::PgArguments;

/// One value of a row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell<'a> {
    Text(&'a str),
    OptText(Option<&'a str>),
    Int(i64),
    OptInt(Option<i64>),
    Bool(bool),
    Bytes(&'a [u8]),
    Time(DateTime<Utc>),
    Date(NaiveDate),
    OptDate(Option<NaiveDate>),
}

/// Adds a cell to a statement's arguments as sqlx binds the Rust value it holds.
pub fn add<'q, DB>(args: &mut DB::Arguments<'q>, cell: Cell<'q>) -> StoreResult<()>
where
    DB: sqlx::Database,
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    bool: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    &'q [u8]: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    DateTime<Utc>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    NaiveDate: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<NaiveDate>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let added = match cell {
        Cell::Text(v) => args.add(v),
        Cell::OptText(v) => args.add(v),
        Cell::Int(v) => args.add(v),
        Cell::OptInt(v) => args.add(v),
        Cell::Bool(v) => args.add(v),
        Cell::Bytes(v) => args.add(v),
        Cell::Time(v) => args.add(v),
        Cell::Date(v) => args.add(v),
        Cell::OptDate(v) => args.add(v),
    };
    added.map_err(|e| StoreError::Other(anyhow::anyhow!("binding a value: {e}")))
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

/// Inserts rows; `suffix` follows the rows (e.g. an ON CONFLICT clause). Returns the rows
/// inserted. SQLite: one prepared statement run row by row on the calling thread
/// ([`super::direct::insert`]); PostgreSQL: one array per column (see [`unnest`]).
pub async fn insert<T: Cells>(c: &mut Conn, rows: &[T], suffix: &str) -> StoreResult<u64> {
    if let Some(n) = c
        .with_sqlite(|x| super::direct::insert(x, rows, suffix))
        .await?
    {
        return Ok(n as u64);
    }
    let x = c.pg()?;
    let mut n = 0;
    for chunk in rows.chunks(PG_ROWS) {
        let (sql, args) = unnest(chunk, suffix)?;
        n += sqlx::query_with(&sql, args)
            .execute(&mut *x)
            .await?
            .rows_affected();
    }
    Ok(n)
}

/// Rows per PostgreSQL statement (bounds the arrays a statement carries).
const PG_ROWS: usize = 10_000;

/// PostgreSQL: the rows as one array per column, inserted from `UNNEST` — the same statement text
/// for every number of rows, so PostgreSQL parses and plans it once per connection (a multi-row
/// VALUES list of each size is a new statement).
fn unnest<'q, T: Cells>(rows: &'q [T], suffix: &str) -> StoreResult<(String, PgArguments)> {
    let mut columns: Vec<Column<'q>> = Vec::with_capacity(T::N);
    let mut mismatch = false;
    for (r, row) in rows.iter().enumerate() {
        let mut j = 0;
        row.cells(&mut |cell| {
            if r == 0 {
                columns.push(Column::new(cell, rows.len()));
            }
            match columns.get_mut(j) {
                Some(col) => mismatch |= !col.push(cell),
                None => mismatch = true,
            }
            j += 1;
        });
        mismatch |= j != columns.len();
    }
    if mismatch || columns.len() != T::N {
        return Err(StoreError::Other(anyhow::anyhow!(
            "{}: rows of differing shapes",
            T::TABLE
        )));
    }
    let casts: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("${}::{}", i + 1, c.array_type()))
        .collect();
    let sql = format!(
        "INSERT INTO {} ({}) SELECT * FROM UNNEST({}){suffix}",
        T::TABLE,
        T::COLUMNS,
        casts.join(", ")
    );
    let mut args = PgArguments::default();
    for col in columns {
        let added = match col {
            Column::Text(v) => args.add(v),
            Column::Int(v) => args.add(v),
            Column::Bool(v) => args.add(v),
            Column::Bytes(v) => args.add(v),
            Column::Time(v) => args.add(v),
            Column::Date(v) => args.add(v),
        };
        added.map_err(|e| StoreError::Other(anyhow::anyhow!("binding a column: {e}")))?;
    }
    Ok((sql, args))
}

/// One column of rows, for [`unnest`].
enum Column<'a> {
    Text(Vec<Option<&'a str>>),
    Int(Vec<Option<i64>>),
    Bool(Vec<bool>),
    Bytes(Vec<&'a [u8]>),
    Time(Vec<DateTime<Utc>>),
    Date(Vec<Option<NaiveDate>>),
}

impl<'a> Column<'a> {
    fn new(first: Cell<'a>, rows: usize) -> Column<'a> {
        match first {
            Cell::Text(_) | Cell::OptText(_) => Column::Text(Vec::with_capacity(rows)),
            Cell::Int(_) | Cell::OptInt(_) => Column::Int(Vec::with_capacity(rows)),
            Cell::Bool(_) => Column::Bool(Vec::with_capacity(rows)),
            Cell::Bytes(_) => Column::Bytes(Vec::with_capacity(rows)),
            Cell::Time(_) => Column::Time(Vec::with_capacity(rows)),
            Cell::Date(_) | Cell::OptDate(_) => Column::Date(Vec::with_capacity(rows)),
        }
    }

    /// Appends a value; false when it is not of this column's type.
    fn push(&mut self, cell: Cell<'a>) -> bool {
        match (self, cell) {
            (Column::Text(v), Cell::Text(x)) => v.push(Some(x)),
            (Column::Text(v), Cell::OptText(x)) => v.push(x),
            (Column::Int(v), Cell::Int(x)) => v.push(Some(x)),
            (Column::Int(v), Cell::OptInt(x)) => v.push(x),
            (Column::Bool(v), Cell::Bool(x)) => v.push(x),
            (Column::Bytes(v), Cell::Bytes(x)) => v.push(x),
            (Column::Time(v), Cell::Time(x)) => v.push(x),
            (Column::Date(v), Cell::Date(x)) => v.push(Some(x)),
            (Column::Date(v), Cell::OptDate(x)) => v.push(x),
            _ => return false,
        }
        true
    }

    fn array_type(&self) -> &'static str {
        match self {
            Column::Text(_) => "text[]",
            Column::Int(_) => "int8[]",
            Column::Bool(_) => "bool[]",
            Column::Bytes(_) => "bytea[]",
            Column::Time(_) => "timestamptz[]",
            Column::Date(_) => "date[]",
        }
    }
}

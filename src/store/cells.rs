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
        let mut args = PgArguments::default();
        let sql = unnest(chunk, suffix, 1, &mut args)?;
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
/// VALUES list of each size is a new statement). The arrays are parameters `$first` on, added
/// to `args`.
fn unnest<'q, T: Cells>(
    rows: &'q [T],
    suffix: &str,
    first: usize,
    args: &mut PgArguments,
) -> StoreResult<String> {
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
        .map(|(i, c)| format!("${}::{}", first + i, c.array_type()))
        .collect();
    let sql = format!(
        "INSERT INTO {} ({}) SELECT * FROM UNNEST({}){suffix}",
        T::TABLE,
        T::COLUMNS,
        casts.join(", ")
    );
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
    Ok(sql)
}

/// PostgreSQL: data-modifying statements sent as one, each a part of its `WITH` — one round trip
/// for all of them (a swipe batch's writes, `store::batch`). Every part runs to completion on
/// the statement's one snapshot whatever the others do, so no two parts may touch the same
/// rows; references between them hold (the foreign keys are checked at the statement's end).
#[derive(Default)]
pub struct Together {
    parts: Vec<String>,
    args: PgArguments,
}

impl Together {
    /// Adds the insert of `rows` (nothing when there are none); `suffix` follows the rows.
    /// Returns the part's name, for [`Together::run`] to count what it returns.
    pub fn insert<T: Cells>(&mut self, rows: &[T], suffix: &str) -> StoreResult<Option<String>> {
        if rows.is_empty() {
            return Ok(None);
        }
        let sql = unnest(rows, suffix, self.args.len() + 1, &mut self.args)?;
        Ok(Some(self.push(sql)))
    }

    /// Adds a statement whose parameters `$1`, `$2`, … are bound by `bind` in that order.
    /// Returns the part's name.
    pub fn statement(
        &mut self,
        sql: &str,
        bind: impl FnOnce(&mut PgArguments) -> Result<(), sqlx::error::BoxDynError>,
    ) -> StoreResult<String> {
        let sql = renumber(sql, self.args.len());
        bind(&mut self.args)
            .map_err(|e| StoreError::Other(anyhow::anyhow!("binding a parameter: {e}")))?;
        Ok(self.push(sql))
    }

    fn push(&mut self, sql: String) -> String {
        let name = format!("w{}", self.parts.len());
        self.parts.push(sql);
        name
    }

    /// Runs every part in one statement; returns how many rows the part `counted` returned (0
    /// without it). Nothing is sent when there are no parts.
    pub async fn run(self, c: &mut Conn, counted: Option<&str>) -> StoreResult<i64> {
        if self.parts.is_empty() {
            return Ok(0);
        }
        let with: Vec<String> = self
            .parts
            .iter()
            .enumerate()
            .map(|(i, sql)| format!("w{i} AS ({sql})"))
            .collect();
        let count = counted.map_or("0::int8".to_owned(), |p| {
            format!("(SELECT count(*) FROM {p})")
        });
        let sql = format!("WITH {} SELECT {count}", with.join(", "));
        let (n,): (i64,) = sqlx::query_as_with(&sql, self.args)
            .fetch_one(c.pg()?)
            .await?;
        Ok(n)
    }
}

/// `sql` with every parameter `$n` as `$(n + by)` (no `$` in it stands for anything else).
fn renumber(sql: &str, by: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        match rest[..digits].parse::<usize>() {
            Ok(n) => out.push_str(&(n + by).to_string()),
            Err(_) => out.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
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

#[cfg(test)]
mod tests {
    use super::renumber;

    /// Every `$n` moves by the offset, multi-digit ones whole; casts and text around stay.
    #[test]
    fn parameters_are_renumbered_after_the_parts_before() {
        assert_eq!(
            renumber(
                "UPDATE t SET a = a + v.d FROM UNNEST($1::text[], $2::int8[]) AS v",
                9
            ),
            "UPDATE t SET a = a + v.d FROM UNNEST($10::text[], $11::int8[]) AS v"
        );
        assert_eq!(renumber("$9, $10, $123", 100), "$109, $110, $223");
        assert_eq!(renumber("no parameters", 5), "no parameters");
        assert_eq!(renumber("$1", 0), "$1");
    }
}

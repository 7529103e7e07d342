//! One statement for both engines: its text and its values as [`Cell`]s, run on SQLite on the
//! lent handle (on the calling thread, see [`super::direct::Loan`]) and on PostgreSQL through
//! sqlx. A write transaction whose statements all go this way hands the SQLite connection over
//! once, instead of making a round trip to the driver's thread for each statement while it
//! holds the file's write lock.
//!
//! Rows are read by column name on both engines: a row type derives `sqlx::FromRow` (for
//! PostgreSQL) and names its fields once more in [`crate::direct_row!`] (for SQLite), where a
//! field left out does not compile. SQLite values are read as sqlx-sqlite reads them.

use super::cells::Cell;
use super::direct::Bound;
use super::{Conn, StoreError, StoreResult};
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use rusqlite::types::ValueRef;
use sqlx::postgres::{PgArguments, PgRow};

/// A statement and its values (`$1`, `$2`, … in the text, in any order).
pub struct Query<'a> {
    sql: &'a str,
    args: Vec<Cell<'a>>,
}

impl<'a> Query<'a> {
    pub fn new(sql: &'a str) -> Self {
        Query {
            sql,
            args: Vec::new(),
        }
    }

    /// The next value (`$n` for the n-th bound).
    pub fn bind(mut self, v: impl Into<Cell<'a>>) -> Self {
        self.args.push(v.into());
        self
    }

    /// Runs the statement; the rows it changed.
    pub async fn execute(&self, c: &mut Conn) -> StoreResult<u64> {
        if let Some(n) = c
            .with_sqlite(|x| {
                let mut st = self.prepare(x)?;
                Ok(st.raw_execute()? as u64)
            })
            .await?
        {
            return Ok(n);
        }
        let r = sqlx::query_with(self.sql, self.pg_args()?)
            .execute(c.pg()?)
            .await?;
        Ok(r.rows_affected())
    }

    /// The first row, if any.
    pub async fn fetch_optional<T: Row>(&self, c: &mut Conn) -> StoreResult<Option<T>> {
        if let Some(row) = c
            .with_sqlite(|x| {
                let mut st = self.prepare(x)?;
                let mut rows = st.raw_query();
                match rows.next()? {
                    Some(r) => Ok(Some(T::direct(r)?)),
                    None => Ok(None),
                }
            })
            .await?
        {
            return Ok(row);
        }
        Ok(sqlx::query_as_with(self.sql, self.pg_args()?)
            .fetch_optional(c.pg()?)
            .await?)
    }

    /// The first row; an error when there is none (sqlx's `RowNotFound`, as `fetch_one`
    /// through the driver gives it).
    pub async fn fetch_one<T: Row>(&self, c: &mut Conn) -> StoreResult<T> {
        self.fetch_optional(c)
            .await?
            .ok_or_else(|| StoreError::from(sqlx::Error::RowNotFound))
    }

    /// Every row.
    pub async fn fetch_all<T: Row>(&self, c: &mut Conn) -> StoreResult<Vec<T>> {
        if let Some(rows) = c
            .with_sqlite(|x| {
                let mut st = self.prepare(x)?;
                let mut rows = st.raw_query();
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    out.push(T::direct(r)?);
                }
                Ok(out)
            })
            .await?
        {
            return Ok(rows);
        }
        Ok(sqlx::query_as_with(self.sql, self.pg_args()?)
            .fetch_all(c.pg()?)
            .await?)
    }

    /// The statement prepared (kept for the loan) with its values bound, as sqlx-sqlite binds
    /// them: each parameter `$n` (or `?n`) takes the n-th value.
    fn prepare<'x>(
        &self,
        x: &'x rusqlite::Connection,
    ) -> StoreResult<rusqlite::CachedStatement<'x>> {
        let mut st = x.prepare_cached(self.sql)?;
        for i in 1..=st.parameter_count() {
            let n = match st.parameter_name(i) {
                Some(name) => name
                    .strip_prefix(['$', '?'])
                    .and_then(|n| n.parse::<usize>().ok())
                    .ok_or_else(|| unsupported(name))?,
                None => i,
            };
            let cell = n
                .checked_sub(1)
                .and_then(|k| self.args.get(k))
                .ok_or_else(|| StoreError::Other(anyhow::anyhow!("no value for ${n}")))?;
            st.raw_bind_parameter(i, Bound(*cell))?;
        }
        Ok(st)
    }

    fn pg_args(&self) -> StoreResult<PgArguments> {
        let mut args = PgArguments::default();
        for cell in &self.args {
            super::cells::add::<sqlx::Postgres>(&mut args, *cell)?;
        }
        Ok(args)
    }
}

fn unsupported(name: &str) -> StoreError {
    StoreError::Other(anyhow::anyhow!("unsupported SQL parameter {name}"))
}

/// A row type read by [`Query`]: sqlx's `FromRow` on PostgreSQL, [`Row::direct`] on SQLite
/// (see [`crate::direct_row!`]).
pub trait Row: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin {
    fn direct(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self>;
}

/// Implements [`Row`] for a struct deriving `sqlx::FromRow`, naming every field (its column):
/// `direct_row!(VisitRow { mdtrt_id, institution, … })`.
#[macro_export]
macro_rules! direct_row {
    ($t:ty { $($f:ident),* $(,)? }) => {
        impl $crate::store::query::Row for $t {
            #[allow(unused_assignments)]
            fn direct(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
                let mut i = 0usize;
                Ok(Self {
                    $($f: {
                        let at = i;
                        i += 1;
                        $crate::store::query::named(r, at, stringify!($f))?
                    },)*
                })
            }
        }
    };
}

/// Column `name` of a row, looked for first where the field's position puts it (a SELECT lists
/// its columns in the struct's order, as a rule), else by name: a lookup by name alone compares
/// every column's name, for every field of every row.
pub fn named<T: Col>(r: &rusqlite::Row<'_>, at: usize, name: &str) -> rusqlite::Result<T> {
    let st = r.as_ref();
    let i = match st.column_name(at) {
        Ok(n) if n.eq_ignore_ascii_case(name) => at,
        _ => st.column_index(name)?,
    };
    T::col(r, i)
}

/// A single-column row: `SELECT balance_fen …`.
#[derive(Debug, sqlx::FromRow)]
pub struct One<T>(pub T);

impl<T> Row for One<T>
where
    T: Col + Send + Unpin + for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    fn direct(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        T::col(r, 0usize).map(One)
    }
}

/// A row of two columns read by position, as sqlx reads a tuple: `SELECT account, SUM(…)`.
impl<A, B> Row for (A, B)
where
    A: Col + Send + Unpin + for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    B: Col + Send + Unpin + for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    fn direct(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok((A::col(r, 0usize)?, B::col(r, 1usize)?))
    }
}

/// A row of three columns read by position (see the two-column one).
impl<A, B, C> Row for (A, B, C)
where
    A: Col + Send + Unpin + for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    B: Col + Send + Unpin + for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    C: Col + Send + Unpin + for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    fn direct(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok((A::col(r, 0usize)?, B::col(r, 1usize)?, C::col(r, 2usize)?))
    }
}

/// A value of a SQLite column, read as sqlx-sqlite reads it.
pub trait Col: Sized {
    fn value(v: ValueRef<'_>) -> Result<Self, String>;

    fn col<I: rusqlite::RowIndex + Copy + std::fmt::Debug>(
        r: &rusqlite::Row<'_>,
        i: I,
    ) -> rusqlite::Result<Self> {
        let v = r.get_ref(i)?;
        Self::value(v).map_err(|why| {
            rusqlite::Error::FromSqlConversionFailure(
                0,
                v.data_type(),
                format!("column {i:?}: {why}").into(),
            )
        })
    }
}

impl Col for i64 {
    fn value(v: ValueRef<'_>) -> Result<Self, String> {
        match v {
            ValueRef::Integer(n) => Ok(n),
            other => Err(format!("{:?} is not an integer", other.data_type())),
        }
    }
}

impl Col for bool {
    fn value(v: ValueRef<'_>) -> Result<Self, String> {
        i64::value(v).map(|n| n != 0)
    }
}

impl Col for String {
    fn value(v: ValueRef<'_>) -> Result<Self, String> {
        match v {
            ValueRef::Text(t) => String::from_utf8(t.to_vec()).map_err(|e| e.to_string()),
            other => Err(format!("{:?} is not text", other.data_type())),
        }
    }
}

impl Col for Vec<u8> {
    fn value(v: ValueRef<'_>) -> Result<Self, String> {
        match v {
            ValueRef::Blob(b) | ValueRef::Text(b) => Ok(b.to_vec()),
            other => Err(format!("{:?} is not a blob", other.data_type())),
        }
    }
}

impl Col for NaiveDate {
    fn value(v: ValueRef<'_>) -> Result<Self, String> {
        let text = String::value(v)?;
        NaiveDate::parse_from_str(&text, "%F").map_err(|e| format!("{text:?}: {e}"))
    }
}

impl Col for DateTime<Utc> {
    fn value(v: ValueRef<'_>) -> Result<Self, String> {
        match v {
            ValueRef::Integer(secs) => Utc
                .timestamp_opt(secs, 0)
                .single()
                .ok_or_else(|| format!("{secs} is out of range")),
            _ => {
                let text = String::value(v)?;
                time_text(&text).ok_or_else(|| format!("{text:?} is not a time"))
            }
        }
    }
}

impl<T: Col> Col for Option<T> {
    fn value(v: ValueRef<'_>) -> Result<Self, String> {
        match v {
            ValueRef::Null => Ok(None),
            v => T::value(v).map(Some),
        }
    }
}

/// A time as sqlx-sqlite decodes text: RFC 3339, else SQLite's own formats (UTC unless an
/// offset is given).
fn time_text(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    const FORMATS: [&str; 12] = [
        "%F %T%.f",
        "%F %R",
        "%F %RZ",
        "%F %R%:z",
        "%F %T%.fZ",
        "%F %T%.f%:z",
        "%FT%R",
        "%FT%RZ",
        "%FT%R%:z",
        "%FT%T%.f",
        "%FT%T%.fZ",
        "%FT%T%.f%:z",
    ];
    FORMATS.iter().find_map(|f| {
        DateTime::parse_from_str(text, f)
            .map(|t| t.with_timezone(&Utc))
            .ok()
            .or_else(|| {
                NaiveDateTime::parse_from_str(text, f)
                    .ok()
                    .map(|t| t.and_utc())
            })
    })
}

impl<'a> From<&'a str> for Cell<'a> {
    fn from(v: &'a str) -> Self {
        Cell::Text(v)
    }
}

impl<'a> From<&'a String> for Cell<'a> {
    fn from(v: &'a String) -> Self {
        Cell::Text(v)
    }
}

impl<'a> From<Option<&'a str>> for Cell<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Cell::OptText(v)
    }
}

impl<'a> From<&'a Option<String>> for Cell<'a> {
    fn from(v: &'a Option<String>) -> Self {
        Cell::OptText(v.as_deref())
    }
}

impl From<i64> for Cell<'_> {
    fn from(v: i64) -> Self {
        Cell::Int(v)
    }
}

impl From<Option<i64>> for Cell<'_> {
    fn from(v: Option<i64>) -> Self {
        Cell::OptInt(v)
    }
}

impl From<bool> for Cell<'_> {
    fn from(v: bool) -> Self {
        Cell::Bool(v)
    }
}

impl<'a> From<&'a [u8]> for Cell<'a> {
    fn from(v: &'a [u8]) -> Self {
        Cell::Bytes(v)
    }
}

impl<'a> From<&'a Vec<u8>> for Cell<'a> {
    fn from(v: &'a Vec<u8>) -> Self {
        Cell::Bytes(v)
    }
}

impl From<DateTime<Utc>> for Cell<'_> {
    fn from(v: DateTime<Utc>) -> Self {
        Cell::Time(v)
    }
}

impl From<NaiveDate> for Cell<'_> {
    fn from(v: NaiveDate) -> Self {
        Cell::Date(v)
    }
}

impl From<Option<NaiveDate>> for Cell<'_> {
    fn from(v: Option<NaiveDate>) -> Self {
        Cell::OptDate(v)
    }
}

#[cfg(test)]
mod tests {
    use super::super::settlement::{self, VisitRow};
    use super::super::tests::file_db;
    use super::{Col, One, Query};
    use chrono::{DateTime, NaiveDate, TimeZone, Utc};
    use rusqlite::types::ValueRef;

    fn visit(id: &str, end_date: Option<NaiveDate>, setl_id: Option<&str>) -> VisitRow {
        VisitRow {
            mdtrt_id: id.into(),
            institution: "H15030000001".into(),
            treatment_region: "150300".into(),
            visit_no: format!("住院-{id}"),
            psn_no: "P1".into(),
            home_region: "150600".into(),
            insurance_type: 310,
            care_type: 2,
            diagnoses: "J18.9,I10".into(),
            begin_date: NaiveDate::from_ymd_opt(2026, 11, 2).unwrap_or_default(),
            end_date,
            status: 3,
            filing_id: None,
            setl_id: setl_id.map(str::to_owned),
        }
    }

    /// A row written on the lent handle reads back the same through sqlx, and one written
    /// through sqlx the same on the lent handle: every column type of a visit, None and Some.
    #[tokio::test]
    async fn rows_read_the_same_on_the_lent_handle_and_through_the_driver() -> anyhow::Result<()> {
        let (_dir, db) = file_db("query-rows").await?;
        let mut c = db.begin().await?;
        // References (person, institution, settlement) checked only at a commit, never made.
        c.with_sqlite(|x| Ok(x.execute_batch("PRAGMA defer_foreign_keys = ON")?))
            .await?;
        let now = Utc
            .with_ymd_and_hms(2026, 11, 2, 8, 0, 0)
            .single()
            .unwrap_or_default();
        let a = visit("M1", NaiveDate::from_ymd_opt(2026, 11, 9), Some("S1"));
        settlement::insert_visit(&mut c, &a, now).await?;
        let through_sqlx: VisitRow = crate::on_conn!(&mut c, x => sqlx::query_as(
            "SELECT mdtrt_id, institution, treatment_region, visit_no, psn_no, home_region, \
             insurance_type, care_type, diagnoses, begin_date, end_date, status, filing_id, \
             setl_id FROM visit WHERE mdtrt_id = 'M1'"
        ).fetch_one(x).await)?;
        assert_eq!(through_sqlx, a);
        let b = visit("M2", None, None);
        crate::on_conn!(&mut c, x => sqlx::query(
            "INSERT INTO visit (mdtrt_id, institution, treatment_region, visit_no, psn_no, \
             home_region, insurance_type, care_type, diagnoses, begin_date, end_date, status, \
             filing_id, setl_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
        ).bind(&b.mdtrt_id).bind(&b.institution).bind(&b.treatment_region).bind(&b.visit_no)
            .bind(&b.psn_no).bind(&b.home_region).bind(b.insurance_type).bind(b.care_type)
            .bind(&b.diagnoses).bind(b.begin_date).bind(b.end_date).bind(b.status)
            .bind(&b.filing_id).bind(&b.setl_id).bind(now).execute(x).await.map(|_| ()))?;
        for (id, expected) in [("M1", &a), ("M2", &b)] {
            let read = settlement::get_visit(&mut c, id, true).await?;
            assert_eq!(read.as_ref(), Some(expected));
        }
        assert_eq!(settlement::get_visit(&mut c, "M3", false).await?, None);
        // Columns in another order than the fields' are found by name.
        let shuffled: Option<VisitRow> = Query::new(
            "SELECT setl_id, filing_id, status, end_date, begin_date, diagnoses, care_type, \
             insurance_type, home_region, psn_no, visit_no, treatment_region, institution, \
             mdtrt_id FROM visit WHERE mdtrt_id = $1",
        )
        .bind("M1")
        .fetch_optional(&mut c)
        .await?;
        assert_eq!(shuffled.as_ref(), Some(&a));
        c.rollback().await?;
        Ok(())
    }

    /// `$n` takes the n-th value wherever it stands in the text, as sqlx-sqlite binds it.
    #[tokio::test]
    async fn parameters_bind_by_their_number() -> anyhow::Result<()> {
        let (_dir, db) = file_db("query-params").await?;
        let mut c = db.read().await?;
        let q = Query::new("SELECT $2 || '-' || $1 || '-' || $2 || '-' || ?3")
            .bind("a")
            .bind("b")
            .bind(3i64);
        let One(s): One<String> = q
            .fetch_optional(&mut c)
            .await?
            .ok_or_else(|| anyhow::anyhow!("a row"))?;
        assert_eq!(s, "b-a-b-3");
        let missing = Query::new("SELECT $2").bind("a");
        assert!(missing.fetch_optional::<One<String>>(&mut c).await.is_err());
        Ok(())
    }

    /// Times stored as text decode as sqlx-sqlite decodes them (RFC 3339 as sqlx writes them,
    /// SQLite's own `YYYY-MM-DD HH:MM:SS`, an offset) and as Unix seconds.
    #[tokio::test]
    async fn times_decode_as_sqlx_decodes_them() -> anyhow::Result<()> {
        let (_dir, db) = file_db("query-times").await?;
        let mut c = db.read().await?;
        for text in [
            "2026-11-28T01:02:03.123456+00:00",
            "2026-11-28T01:02:03+00:00",
            "2026-11-28 01:02:03",
            "2026-11-28 01:02:03.5",
            "2026-11-28T09:02:03+08:00",
            "2026-11-28T01:02",
        ] {
            let by_sqlx: DateTime<Utc> = crate::on_conn!(&mut c, x =>
                sqlx::query_scalar("SELECT $1").bind(text).fetch_one(x).await)?;
            let here = DateTime::<Utc>::value(ValueRef::Text(text.as_bytes()));
            assert_eq!(here, Ok(by_sqlx), "{text}");
        }
        let secs = 1_764_291_723i64;
        let by_sqlx: DateTime<Utc> = crate::on_conn!(&mut c, x =>
            sqlx::query_scalar("SELECT $1").bind(secs).fetch_one(x).await)?;
        assert_eq!(DateTime::<Utc>::value(ValueRef::Integer(secs)), Ok(by_sqlx));
        assert!(DateTime::<Utc>::value(ValueRef::Text(b"28/11/2026")).is_err());
        assert_eq!(
            NaiveDate::value(ValueRef::Text(b"2026-11-28")),
            Ok(NaiveDate::from_ymd_opt(2026, 11, 28).unwrap_or_default())
        );
        assert_eq!(Option::<i64>::value(ValueRef::Null), Ok(None));
        assert_eq!(bool::value(ValueRef::Integer(2)), Ok(true));
        assert!(i64::value(ValueRef::Text(b"7")).is_err());
        Ok(())
    }
}

#[cfg(test)]
mod lent_tests {
    use super::super::access::{self, AuditRow};
    use super::super::tests::file_db;
    use super::{One, Query};
    use chrono::Utc;

    fn audit(id: &str) -> AuditRow {
        AuditRow {
            audit_id: id.into(),
            principal: "test".into(),
            rpc: "/test/Dropped".into(),
            request_id: id.into(),
            outcome: "OK".into(),
            detail: String::new(),
            at: Utc::now(),
        }
    }

    /// A write transaction dropped unfinished — its handle lent, or given back to the driver
    /// by a statement through sqlx — is rolled back when dropped: nothing it wrote stays, and
    /// another connection takes the file's write lock at once (no busy wait allowed).
    #[tokio::test]
    async fn a_transaction_dropped_unfinished_leaves_nothing_and_frees_the_lock()
    -> anyhow::Result<()> {
        let (dir, db) = file_db("lent-drop").await?;
        let other = rusqlite::Connection::open(dir.0.join("t.db"))?;
        for handed_back in [false, true] {
            let id = format!("A-dropped-{handed_back}");
            let mut c = db.begin().await?;
            access::insert_audit(&mut c, &audit(&id)).await?;
            if handed_back {
                let n: i64 = crate::on_conn!(&mut c, x =>
                    sqlx::query_scalar("SELECT count(*) FROM audit_log").fetch_one(x).await)?;
                assert_eq!(n, 1, "the transaction sees its own row");
            }
            drop(c);
            other.execute_batch("BEGIN IMMEDIATE; ROLLBACK;")?;
            let mut r = db.read().await?;
            let n: Option<One<i64>> =
                Query::new("SELECT count(*) FROM audit_log WHERE audit_id = $1")
                    .bind(id.as_str())
                    .fetch_optional(&mut r)
                    .await?;
            assert_eq!(n.map(|One(n)| n), Some(0), "{id}");
        }
        // And a committed one stays.
        let mut c = db.begin().await?;
        access::insert_audit(&mut c, &audit("A-kept")).await?;
        c.commit().await?;
        let kept: i64 = other.query_row("SELECT count(*) FROM audit_log", [], |r| r.get(0))?;
        assert_eq!(kept, 1);
        Ok(())
    }
}

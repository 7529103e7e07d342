//! Persons, their insurance types and personal accounts.

use super::cells::{self, Cell, Cells, Together};
use super::query::Row as _;
use super::query::{One, Query};
use super::{Conn, StoreResult};
use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::OptionalExtension;
use sqlx::Arguments as _;
use std::collections::{HashMap, HashSet};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PersonRow {
    pub psn_no: String,
    pub home_region: String,
    pub national_id: String,
    pub name: String,
    pub birth_date: NaiveDate,
    /// proto PersonStatus.
    pub status: i64,
    pub card_no: Option<String>,
    /// proto CardStatus.
    pub card_status: i64,
    pub evoucher_token: Option<String>,
    pub assistance_recipient: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct InsuranceRow {
    pub psn_no: String,
    /// proto InsuranceType (310, 390, 510).
    pub insurance_type: i64,
    /// proto PersonCategory.
    pub category: i64,
    /// proto PersonStatus.
    pub status: i64,
}

/// A person with everything the registry returns about them.
#[derive(Debug, Clone)]
pub struct PersonRecord {
    pub person: PersonRow,
    pub insurances: Vec<InsuranceRow>,
    /// Personal account balance in fen; None when the person has no account.
    pub balance_fen: Option<i64>,
}

crate::direct_row!(PersonRow {
    psn_no,
    home_region,
    national_id,
    name,
    birth_date,
    status,
    card_no,
    card_status,
    evoucher_token,
    assistance_recipient,
});

crate::direct_row!(InsuranceRow {
    psn_no,
    insurance_type,
    category,
    status,
});

const PERSON_COLS: &str = "psn_no, home_region, national_id, name, birth_date, status, card_no, \
                           card_status, evoucher_token, assistance_recipient";

/// The rows of persons enrolled together: the persons, their insurance types, their personal
/// accounts (each opened with its balance) and the journal transactions of the opening balances.
#[derive(Debug, Default)]
pub struct Enrolments {
    pub persons: Vec<PersonRow>,
    pub insurances: Vec<InsuranceRow>,
    pub accounts: Vec<AccountRow>,
    pub txs: Vec<super::journal::JournalTxRow>,
    pub entries: Vec<super::journal::EntryRow>,
}

/// Writes enrolments, created `now`, in the caller's transaction. EnrolPersons of a thousand
/// persons holds SQLite's one write lock — every pharmacy's swipes wait behind it —, so on
/// SQLite every row goes in on the calling thread in one loan of the connection (see
/// [`super::direct`]) rather than a dozen round trips to the driver's thread a person, each
/// queued behind the server's other tasks; on PostgreSQL one multi-row statement a table. A
/// person whose national ID, card or e-voucher is taken fails it (StoreError::Unique).
pub async fn insert_enrolments(
    c: &mut Conn,
    e: &Enrolments,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let persons: Vec<NewPerson<'_>> = e
        .persons
        .iter()
        .map(|person| NewPerson { person, now })
        .collect();
    let on_sqlite = c
        .with_sqlite(|x| {
            super::direct::insert(x, &persons, "")?;
            super::direct::insert(x, &e.insurances, "")?;
            super::direct::insert(x, &e.accounts, "")?;
            super::direct::insert(x, &e.txs, "")?;
            super::direct::insert(x, &e.entries, "")?;
            Ok(())
        })
        .await?;
    if on_sqlite.is_none() {
        cells::insert(c, &persons, "").await?;
        cells::insert(c, &e.insurances, "").await?;
        cells::insert(c, &e.accounts, "").await?;
        super::journal::insert_many(c, &e.txs, &e.entries).await?;
    }
    Ok(())
}

/// A person row as enrolment inserts it, created `now`.
struct NewPerson<'a> {
    person: &'a PersonRow,
    now: DateTime<Utc>,
}

impl Cells for NewPerson<'_> {
    const TABLE: &'static str = "person";
    const COLUMNS: &'static str = "psn_no, home_region, national_id, name, birth_date, status, \
                                   card_no, card_status, evoucher_token, assistance_recipient, \
                                   created_at";
    const N: usize = 11;
    fn cells<'a>(&'a self, out: &mut dyn FnMut(Cell<'a>)) {
        let p = self.person;
        out(Cell::Text(&p.psn_no));
        out(Cell::Text(&p.home_region));
        out(Cell::Text(&p.national_id));
        out(Cell::Text(&p.name));
        out(Cell::Date(p.birth_date));
        out(Cell::Int(p.status));
        out(Cell::OptText(p.card_no.as_deref()));
        out(Cell::Int(p.card_status));
        out(Cell::OptText(p.evoucher_token.as_deref()));
        out(Cell::Bool(p.assistance_recipient));
        out(Cell::Time(self.now));
    }
}

impl Cells for InsuranceRow {
    const TABLE: &'static str = "person_insurance";
    const COLUMNS: &'static str = "psn_no, insurance_type, category, status";
    const N: usize = 4;
    fn cells<'a>(&'a self, out: &mut dyn FnMut(Cell<'a>)) {
        out(Cell::Text(&self.psn_no));
        out(Cell::Int(self.insurance_type));
        out(Cell::Int(self.category));
        out(Cell::Int(self.status));
    }
}

/// A personal account as it is opened: its balance is its opening balance's journal entry.
#[derive(Debug, Clone)]
pub struct AccountRow {
    pub psn_no: String,
    pub balance_fen: i64,
}

impl Cells for AccountRow {
    const TABLE: &'static str = "personal_account";
    const COLUMNS: &'static str = "psn_no, balance_fen";
    const N: usize = 2;
    fn cells<'a>(&'a self, out: &mut dyn FnMut(Cell<'a>)) {
        out(Cell::Text(&self.psn_no));
        out(Cell::Int(self.balance_fen));
    }
}

/// Which column identifies the person in a lookup.
#[derive(Debug, Clone, Copy)]
pub enum PersonKey {
    PsnNo,
    NationalId,
    CardNo,
    EVoucher,
}

pub async fn find_person(
    c: &mut Conn,
    key: PersonKey,
    value: &str,
    lock: bool,
) -> StoreResult<Option<PersonRow>> {
    let col = match key {
        PersonKey::PsnNo => "psn_no",
        PersonKey::NationalId => "national_id",
        PersonKey::CardNo => "card_no",
        PersonKey::EVoucher => "evoucher_token",
    };
    let lock = if lock { c.for_update() } else { "" };
    let sql = format!("SELECT {PERSON_COLS} FROM person WHERE {col} = $1{lock}");
    Query::new(&sql).bind(value).fetch_optional(c).await
}

/// Which of these national IDs a person holds.
pub async fn enrolled_national_ids(c: &mut Conn, ids: &[String]) -> StoreResult<HashSet<String>> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    // SQLite: one prepared lookup per ID (see `super::direct`).
    let on_sqlite = c
        .with_sqlite(|x| {
            let mut st = x.prepare_cached("SELECT 1 FROM person WHERE national_id = ?1")?;
            let mut held = HashSet::new();
            for id in ids {
                if st.exists([id])? {
                    held.insert(id.clone());
                }
            }
            Ok(held)
        })
        .await?;
    if let Some(held) = on_sqlite {
        return Ok(held);
    }
    // PostgreSQL: the IDs as one array (one statement text for any number).
    let sql = "SELECT national_id FROM person WHERE national_id = ANY($1)";
    let held: Vec<String> = sqlx::query_scalar(sql).bind(ids).fetch_all(c.pg()?).await?;
    Ok(held.into_iter().collect())
}

/// SQLite: whether the log of person changes holds rows (see [`PersonCache`]); false on
/// PostgreSQL.
pub async fn changes_logged(c: &mut Conn) -> StoreResult<bool> {
    let logged = c
        .with_sqlite(|x| {
            let mut st = x.prepare_cached("SELECT 1 FROM person_change LIMIT 1")?;
            Ok(st.exists([])?)
        })
        .await?;
    Ok(logged.unwrap_or(false))
}

pub async fn insurances(c: &mut Conn, psn_no: &str) -> StoreResult<Vec<InsuranceRow>> {
    let sql = "SELECT psn_no, insurance_type, category, status FROM person_insurance \
               WHERE psn_no = $1 ORDER BY insurance_type";
    Query::new(sql).bind(psn_no).fetch_all(c).await
}

/// Balance in fen, None when the person has no personal account. `lock` takes the row lock.
pub async fn account_balance(c: &mut Conn, psn_no: &str, lock: bool) -> StoreResult<Option<i64>> {
    let lock = if lock { c.for_update() } else { "" };
    let sql = format!("SELECT balance_fen FROM personal_account WHERE psn_no = $1{lock}");
    let found: Option<One<i64>> = Query::new(&sql).bind(psn_no).fetch_optional(c).await?;
    Ok(found.map(|One(b)| b))
}

/// Adds `delta_fen` to a maintained personal-account balance unless that would take it below
/// zero, and returns the new balance; None (nothing changed) when the account is missing or the
/// balance too small. The row stays locked for the rest of the transaction (PostgreSQL
/// re-checks the condition on the locked row). One statement: no read of the balance first.
pub async fn add_to_account(
    c: &mut Conn,
    psn_no: &str,
    delta_fen: i64,
) -> StoreResult<Option<i64>> {
    let sql = "UPDATE personal_account SET balance_fen = balance_fen + $2 \
               WHERE psn_no = $1 AND balance_fen + $2 >= 0 RETURNING balance_fen";
    let after: Option<One<i64>> = Query::new(sql)
        .bind(psn_no)
        .bind(delta_fen)
        .fetch_optional(c)
        .await?;
    Ok(after.map(|One(b)| b))
}

pub async fn record(c: &mut Conn, person: PersonRow) -> StoreResult<PersonRecord> {
    let insurances = insurances(c, &person.psn_no).await?;
    let balance_fen = account_balance(c, &person.psn_no, false).await?;
    Ok(PersonRecord {
        person,
        insurances,
        balance_fen,
    })
}

/// Records of a page of persons of one home region (rows in psn_no order): two queries for the
/// whole page, bounded by the page's first and last psn_no.
pub async fn records(c: &mut Conn, rows: Vec<PersonRow>) -> StoreResult<Vec<PersonRecord>> {
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Ok(Vec::new());
    };
    let (home, lo, hi) = (
        first.home_region.clone(),
        first.psn_no.clone(),
        last.psn_no.clone(),
    );
    let sql = "SELECT i.psn_no, i.insurance_type, i.category, i.status FROM person_insurance i \
               JOIN person p ON p.psn_no = i.psn_no WHERE p.home_region = $1 \
               AND i.psn_no >= $2 AND i.psn_no <= $3 ORDER BY i.psn_no, i.insurance_type";
    let insurances: Vec<InsuranceRow> = Query::new(sql)
        .bind(&home)
        .bind(&lo)
        .bind(&hi)
        .fetch_all(c)
        .await?;
    let sql = "SELECT a.psn_no, a.balance_fen FROM personal_account a \
               JOIN person p ON p.psn_no = a.psn_no WHERE p.home_region = $1 \
               AND a.psn_no >= $2 AND a.psn_no <= $3";
    let balances: Vec<(String, i64)> = Query::new(sql)
        .bind(&home)
        .bind(&lo)
        .bind(&hi)
        .fetch_all(c)
        .await?;
    let balances: std::collections::HashMap<String, i64> = balances.into_iter().collect();
    Ok(rows
        .into_iter()
        .map(|person| PersonRecord {
            insurances: insurances
                .iter()
                .filter(|i| i.psn_no == person.psn_no)
                .cloned()
                .collect(),
            balance_fen: balances.get(&person.psn_no).copied(),
            person,
        })
        .collect())
}

/// Persons of a home region after `after` in psn_no order.
pub async fn list_persons(
    c: &mut Conn,
    home_region: &str,
    after: &str,
    limit: i64,
) -> StoreResult<Vec<PersonRow>> {
    let sql = format!(
        "SELECT {PERSON_COLS} FROM person WHERE home_region = $1 AND psn_no > $2 \
         ORDER BY psn_no LIMIT $3"
    );
    Query::new(&sql)
        .bind(home_region)
        .bind(after)
        .bind(limit)
        .fetch_all(c)
        .await
}

pub async fn set_person_status(c: &mut Conn, psn_no: &str, status: i64) -> StoreResult<()> {
    let sql = "UPDATE person SET status = $2 WHERE psn_no = $1";
    Query::new(sql).bind(psn_no).bind(status).execute(c).await?;
    Ok(())
}

pub async fn set_insurance_status(
    c: &mut Conn,
    psn_no: &str,
    insurance_type: i64,
    status: i64,
) -> StoreResult<()> {
    let sql = "UPDATE person_insurance SET status = $3 WHERE psn_no = $1 AND insurance_type = $2";
    Query::new(sql)
        .bind(psn_no)
        .bind(insurance_type)
        .bind(status)
        .execute(c)
        .await?;
    Ok(())
}

pub async fn set_card(
    c: &mut Conn,
    psn_no: &str,
    card_no: Option<&str>,
    card_status: i64,
) -> StoreResult<()> {
    let sql = "UPDATE person SET card_no = $2, card_status = $3 WHERE psn_no = $1";
    Query::new(sql)
        .bind(psn_no)
        .bind(card_no)
        .bind(card_status)
        .execute(c)
        .await?;
    Ok(())
}

/// Persons holding any of these cards or e-voucher tokens, in psn_no order (the lock order of
/// a batch), locked when `lock`.
pub async fn find_by_credentials(
    c: &mut Conn,
    cards: &[String],
    evouchers: &[String],
    lock: bool,
) -> StoreResult<Vec<PersonRow>> {
    if cards.is_empty() && evouchers.is_empty() {
        return Ok(Vec::new());
    }
    // SQLite: one prepared lookup per credential (see `super::direct`); the write lock of the
    // transaction is the lock.
    let on_sqlite = c
        .with_sqlite(|x| {
            let mut out = Vec::new();
            for (credential, values) in
                [(Credential::Card, cards), (Credential::EVoucher, evouchers)]
            {
                for v in values {
                    out.extend(person_by_direct(x, credential, v)?);
                }
            }
            out.sort_unstable_by(|a, b| a.psn_no.cmp(&b.psn_no));
            out.dedup_by(|a, b| a.psn_no == b.psn_no);
            Ok(out)
        })
        .await?;
    if let Some(found) = on_sqlite {
        return Ok(found);
    }
    // PostgreSQL: the credentials as two arrays (one statement text for any number), the rows
    // locked in psn_no order when `lock`.
    let lock = if lock { c.for_update() } else { "" };
    let sql = format!(
        "SELECT {PERSON_COLS} FROM person WHERE card_no = ANY($1) OR evoucher_token = ANY($2) \
         ORDER BY psn_no{lock}"
    );
    Ok(sqlx::query_as(&sql)
        .bind(cards)
        .bind(evouchers)
        .fetch_all(c.pg()?)
        .await?)
}

/// PostgreSQL, the swipe writer's read of its batch's persons: [`find_by_credentials`] (locked)
/// and the insurances of the persons found (by person; a person without any has no entry), in
/// one round trip: the persons locked in psn_no order (as [`find_by_credentials`] locks them),
/// joined to their insurances.
pub async fn lock_with_insurances_pg(
    c: &mut Conn,
    cards: &[String],
    evouchers: &[String],
) -> StoreResult<(Vec<PersonRow>, Insurances)> {
    #[derive(sqlx::FromRow)]
    struct Found {
        #[sqlx(flatten)]
        person: PersonRow,
        insurance_type: Option<i64>,
        category: Option<i64>,
        insurance_status: Option<i64>,
    }
    if cards.is_empty() && evouchers.is_empty() {
        return Ok((Vec::new(), Insurances::new()));
    }
    // A row per person and insurance (one with NULLs for a person without any).
    let sql = format!(
        "WITH p AS MATERIALIZED (SELECT {PERSON_COLS} FROM person \
         WHERE card_no = ANY($1) OR evoucher_token = ANY($2) ORDER BY psn_no FOR UPDATE) \
         SELECT p.*, i.insurance_type, i.category, i.status AS insurance_status \
         FROM p LEFT JOIN person_insurance i ON i.psn_no = p.psn_no \
         ORDER BY p.psn_no, i.insurance_type"
    );
    let found: Vec<Found> = sqlx::query_as(&sql)
        .bind(cards)
        .bind(evouchers)
        .fetch_all(c.pg()?)
        .await?;
    let mut people: Vec<PersonRow> = Vec::new();
    let mut held = Insurances::new();
    for f in found {
        if let (Some(insurance_type), Some(category), Some(status)) =
            (f.insurance_type, f.category, f.insurance_status)
        {
            held.entry(f.person.psn_no.clone())
                .or_default()
                .push(InsuranceRow {
                    psn_no: f.person.psn_no.clone(),
                    insurance_type,
                    category,
                    status,
                });
        }
        if people.last().is_none_or(|p| p.psn_no != f.person.psn_no) {
            people.push(f.person);
        }
    }
    Ok((people, held))
}

/// What a card swipe presents: a card number or an e-voucher token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Credential {
    Card,
    EVoucher,
}

/// SQLite: the person holding this card number or e-voucher token.
fn person_by_direct(
    x: &rusqlite::Connection,
    credential: Credential,
    value: &str,
) -> StoreResult<Option<PersonRow>> {
    let col = match credential {
        Credential::Card => "card_no",
        Credential::EVoucher => "evoucher_token",
    };
    Ok(x.prepare_cached(&format!(
        "SELECT {PERSON_COLS} FROM person WHERE {col} = ?1"
    ))?
    .query_row([value], PersonRow::direct)
    .optional()?)
}

/// SQLite: a person's insurance rows in insurance_type order.
fn insurances_direct(x: &rusqlite::Connection, psn_no: &str) -> StoreResult<Vec<InsuranceRow>> {
    let mut st = x.prepare_cached(
        "SELECT psn_no, insurance_type, category, status FROM person_insurance \
         WHERE psn_no = ?1 ORDER BY insurance_type",
    )?;
    let rows = st.query_map([psn_no], InsuranceRow::direct)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Persons the [`PersonCache`] holds at most (≈ 0.5 KB each). When a batch finds it full, an
/// eighth of them, drawn at random, make room. (It used to start again empty at 100,000 entries —
/// 50,000 persons —: with 100,000 persons swiping, those lookups took 8 % of the writer's time
/// instead of 3 %, BENCHMARKS.md session 24.)
const PERSON_CACHE_PERSONS: usize = 200_000;

/// The swipe writer's persons by credential, and their insurances (SQLite only). Triggers log
/// the psn_no of every change to `person` and `person_insurance`, by any connection, in
/// `person_change` (sqlite/0021); each lookup first reads the log inside the writer's
/// transaction, forgets the persons it names (so they are read again) and deletes what it read.
/// Swipe batches write neither table. Credentials no person holds are not kept (they are looked
/// up every time).
#[derive(Debug, Default)]
pub struct PersonCache {
    /// The last `person_change` row read (None: nothing read yet, and nothing kept).
    seen: Option<i64>,
    persons: HashMap<(Credential, String), PersonRow>,
    insurances: HashMap<String, Vec<InsuranceRow>>,
}

impl PersonCache {
    /// [`find_by_credentials`] (on SQLite the transaction's write lock is the lock) and
    /// the insurances of the persons found, from the cache where it holds them; None on
    /// PostgreSQL (whose batches lock the persons they read: [`lock_with_insurances_pg`]).
    pub async fn find(
        &mut self,
        c: &mut Conn,
        cards: &[String],
        evouchers: &[String],
    ) -> StoreResult<Option<(Vec<PersonRow>, Insurances)>> {
        c.with_sqlite(|x| self.find_direct(x, cards, evouchers))
            .await
    }

    fn find_direct(
        &mut self,
        x: &rusqlite::Connection,
        cards: &[String],
        evouchers: &[String],
    ) -> StoreResult<(Vec<PersonRow>, Insurances)> {
        self.catch_up(x)?;
        self.make_room(PERSON_CACHE_PERSONS);
        let mut people = Vec::new();
        for (credential, values) in [(Credential::Card, cards), (Credential::EVoucher, evouchers)] {
            for v in values {
                let key = (credential, v.clone());
                if let Some(p) = self.persons.get(&key) {
                    people.push(p.clone());
                } else if let Some(p) = person_by_direct(x, credential, v)? {
                    self.persons.insert(key, p.clone());
                    people.push(p);
                }
            }
        }
        people.sort_unstable_by(|a, b| a.psn_no.cmp(&b.psn_no));
        people.dedup_by(|a, b| a.psn_no == b.psn_no);
        let mut held = Insurances::new();
        for p in &people {
            let rows = match self.insurances.get(&p.psn_no) {
                Some(rows) => rows.clone(),
                None => {
                    let rows = insurances_direct(x, &p.psn_no)?;
                    self.insurances.insert(p.psn_no.clone(), rows.clone());
                    rows
                }
            };
            held.insert(p.psn_no.clone(), rows);
        }
        Ok((people, held))
    }

    /// Reads the log of person changes now, as every lookup does first: the swipe writer's idle
    /// moments, so that enrolments while no swipe comes leave no backlog for the next swipe's
    /// batch to delete. Nothing on PostgreSQL.
    pub async fn catch_up_now(&mut self, c: &mut Conn) -> StoreResult<()> {
        c.with_sqlite(|x| self.catch_up(x)).await.map(|_| ())
    }

    /// Forgets the persons `person_change` names past the last row read, and deletes the rows
    /// read. Everyone is forgotten the first time, and whenever rows this cache never read are
    /// gone (another reader deleted them: their numbers, which AUTOINCREMENT never reuses, are
    /// missing).
    fn catch_up(&mut self, x: &rusqlite::Connection) -> StoreResult<()> {
        let last: i64 = x
            .prepare_cached(
                "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'person_change'), 0)",
            )?
            .query_row([], |r| r.get(0))?;
        let seen = self.seen.filter(|s| *s <= last);
        if seen == Some(last) {
            return Ok(());
        }
        let changed = match seen {
            Some(seen) => {
                let rows = x
                    .prepare_cached(
                        "SELECT psn_no FROM person_change WHERE seq > ?1 AND seq <= ?2",
                    )?
                    .query_map([seen, last], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                // Every row numbered past `seen` still there: none was deleted unread.
                (i64::try_from(rows.len()) == Ok(last - seen)).then_some(rows)
            }
            None => None,
        };
        match changed {
            Some(psn_nos) => {
                let psn_nos: HashSet<String> = psn_nos.into_iter().collect();
                self.persons.retain(|_, p| !psn_nos.contains(&p.psn_no));
                self.insurances
                    .retain(|psn_no, _| !psn_nos.contains(psn_no));
            }
            None => {
                self.persons.clear();
                self.insurances.clear();
            }
        }
        x.prepare_cached("DELETE FROM person_change WHERE seq <= ?1")?
            .execute([last])?;
        self.seen = Some(last);
        Ok(())
    }

    /// With `max` persons or more held, forgets an eighth of them, drawn at random (the same
    /// persons from both maps).
    fn make_room(&mut self, max: usize) {
        if self.insurances.len() < max && self.persons.len() < 2 * max {
            return;
        }
        use std::hash::BuildHasher;
        let draw = std::collections::hash_map::RandomState::new();
        let forgotten = |psn_no: &str| draw.hash_one(psn_no).is_multiple_of(8);
        self.persons.retain(|_, p| !forgotten(&p.psn_no));
        self.insurances.retain(|psn_no, _| !forgotten(psn_no));
    }
}

/// Insurance rows by person: each person's in insurance_type order.
pub type Insurances = HashMap<String, Vec<InsuranceRow>>;

/// Personal-account balances of many persons in psn_no order, locked when `lock`.
pub async fn balances_of(
    c: &mut Conn,
    psn_nos: &[String],
    lock: bool,
) -> StoreResult<Vec<(String, i64)>> {
    if psn_nos.is_empty() {
        return Ok(Vec::new());
    }
    // SQLite: one prepared lookup per person (see `super::direct`).
    let on_sqlite = c
        .with_sqlite(|x| {
            let mut st =
                x.prepare_cached("SELECT balance_fen FROM personal_account WHERE psn_no = ?1")?;
            let mut out = Vec::new();
            for p in psn_nos {
                if let Some(b) = st.query_row([p], |r| r.get::<_, i64>(0)).optional()? {
                    out.push((p.clone(), b));
                }
            }
            out.sort_unstable();
            out.dedup();
            Ok(out)
        })
        .await?;
    if let Some(found) = on_sqlite {
        return Ok(found);
    }
    // PostgreSQL: the persons as one array (one statement text for any number), locked in
    // psn_no order when `lock`.
    let lock = if lock { c.for_update() } else { "" };
    let sql = format!(
        "SELECT psn_no, balance_fen FROM personal_account WHERE psn_no = ANY($1) \
         ORDER BY psn_no{lock}"
    );
    Ok(sqlx::query_as(&sql)
        .bind(psn_nos)
        .fetch_all(c.pg()?)
        .await?)
}

/// Adds deltas to many maintained balances on PostgreSQL, as a part of a batch's statement (see
/// [`Together`]; the CHECK keeps each ≥ 0; zero deltas are skipped): the deltas as two arrays (one
/// statement text for any number). SQLite: [`add_to_accounts_direct`].
pub fn add_to_accounts_in(t: &mut Together, deltas: &HashMap<String, i64>) -> StoreResult<()> {
    let changed = || deltas.iter().filter(|(_, d)| **d != 0);
    let psn: Vec<&str> = changed().map(|(p, _)| p.as_str()).collect();
    if psn.is_empty() {
        return Ok(());
    }
    let amounts: Vec<i64> = changed().map(|(_, d)| *d).collect();
    let sql = "UPDATE personal_account SET balance_fen = personal_account.balance_fen + v.d \
               FROM UNNEST($1::text[], $2::int8[]) AS v(p, d) WHERE personal_account.psn_no = v.p";
    t.statement(sql, |args| {
        args.add(&psn)?;
        args.add(&amounts)
    })?;
    Ok(())
}

/// [`add_to_accounts_in`] on SQLite's handle (see [`super::direct`]): one prepared single-row
/// UPDATE (the CHECK keeps each balance ≥ 0).
pub fn add_to_accounts_direct(
    c: &rusqlite::Connection,
    deltas: &HashMap<String, i64>,
) -> StoreResult<()> {
    if deltas.values().all(|d| *d == 0) {
        return Ok(());
    }
    let mut st = c.prepare_cached(
        "UPDATE personal_account SET balance_fen = balance_fen + ?2 WHERE psn_no = ?1",
    )?;
    for (p, d) in deltas.iter().filter(|(_, d)| **d != 0) {
        st.execute(rusqlite::params![p, d])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(i: usize) -> PersonRow {
        PersonRow {
            psn_no: format!("P{i:06}"),
            home_region: "150300".into(),
            national_id: String::new(),
            name: String::new(),
            birth_date: NaiveDate::default(),
            status: 0,
            card_no: Some(format!("K{i:06}")),
            card_status: 0,
            evoucher_token: None,
            assistance_recipient: false,
        }
    }

    /// A full cache forgets an eighth of its persons, the same ones from both maps, and keeps
    /// the rest; below the bound it forgets nothing.
    #[test]
    fn a_full_person_cache_forgets_an_eighth() {
        let mut cache = PersonCache::default();
        for i in 0..8_000 {
            let p = person(i);
            cache.insurances.insert(p.psn_no.clone(), Vec::new());
            cache
                .persons
                .insert((Credential::Card, format!("K{i:06}")), p);
        }
        cache.make_room(8_001);
        assert_eq!(cache.insurances.len(), 8_000);
        cache.make_room(8_000);
        let kept = cache.insurances.len();
        // 1,000 expected (standard deviation 30): ±250 is more than eight of them.
        assert!((750..=1_250).contains(&(8_000 - kept)), "{kept} kept");
        assert_eq!(cache.persons.len(), kept);
        for p in cache.persons.values() {
            assert!(cache.insurances.contains_key(&p.psn_no), "{}", p.psn_no);
        }
    }

    /// Region 150300 (Wuhai), home of the persons these tests enrol.
    async fn insert_wuhai(c: &mut Conn, now: DateTime<Utc>) -> anyhow::Result<()> {
        let wuhai = crate::store::registry::RegionRow {
            code: "150300".into(),
            name: "乌海市".into(),
            province_code: "150000".into(),
            bureau_name: "乌海市医疗保障局".into(),
        };
        crate::store::registry::insert_region(c, &wuhai, now).await?;
        Ok(())
    }

    /// A personal account is debited down to zero and no further: an overdraft, or an account
    /// that does not exist, changes nothing and answers None (the ledger then refuses the
    /// posting); a credit is added. Balance 5.00 here.
    #[tokio::test]
    async fn an_account_is_debited_down_to_zero_and_no_further() -> anyhow::Result<()> {
        let (_dir, db) = crate::store::tests::file_db("account-debits").await?;
        let now = Utc::now();
        let mut c = db.begin().await?;
        insert_wuhai(&mut c, now).await?;
        let rows = Enrolments {
            persons: vec![PersonRow {
                national_id: "N1".into(),
                ..person(1)
            }],
            accounts: vec![AccountRow {
                psn_no: "P000001".into(),
                balance_fen: 500,
            }],
            ..Enrolments::default()
        };
        insert_enrolments(&mut c, &rows, now).await?;
        assert_eq!(add_to_account(&mut c, "P000001", -700).await?, None);
        assert_eq!(account_balance(&mut c, "P000001", false).await?, Some(500));
        assert_eq!(add_to_account(&mut c, "P000001", -500).await?, Some(0));
        assert_eq!(add_to_account(&mut c, "P000001", -1).await?, None);
        assert_eq!(add_to_account(&mut c, "P000001", 300).await?, Some(300));
        assert_eq!(add_to_account(&mut c, "P999999", 100).await?, None);
        c.commit().await?;
        assert_eq!(
            account_balance(&mut db.read().await?, "P000001", false).await?,
            Some(300)
        );
        Ok(())
    }

    /// The persons holding cards `K{id:06}`, looked up through `cache` in a writer's transaction.
    async fn lookup(
        writer: &crate::store::Writer,
        cache: &mut PersonCache,
        ids: &[usize],
    ) -> anyhow::Result<Vec<PersonRow>> {
        let cards: Vec<String> = ids.iter().map(|i| format!("K{i:06}")).collect();
        let mut c = writer.begin().await?;
        let found = cache.find(&mut c, &cards, &[]).await?;
        writer.commit(c).await?.durable().await;
        Ok(found.map(|(people, _)| people).unwrap_or_default())
    }

    /// The cache forgets just the persons changed since its last lookup, by any connection, and
    /// then reads them afresh; rows of the log it never read being gone, it forgets everyone.
    #[tokio::test]
    async fn the_person_cache_forgets_just_the_persons_changed() -> anyhow::Result<()> {
        let (_dir, db) = crate::store::tests::file_db("person-changes").await?;
        let now = Utc::now();
        let mut c = db.begin().await?;
        insert_wuhai(&mut c, now).await?;
        let enrolled: Vec<PersonRow> = (1..=3)
            .map(|i| PersonRow {
                national_id: format!("N{i}"),
                ..person(i)
            })
            .collect();
        let held: Vec<InsuranceRow> = enrolled
            .iter()
            .map(|p| InsuranceRow {
                psn_no: p.psn_no.clone(),
                insurance_type: 310,
                category: 1,
                status: 0,
            })
            .collect();
        let rows = Enrolments {
            persons: enrolled,
            insurances: held,
            ..Enrolments::default()
        };
        insert_enrolments(&mut c, &rows, now).await?;
        c.commit().await?;

        let (writer, mut cache) = (db.writer(), PersonCache::default());
        assert_eq!(lookup(&writer, &mut cache, &[1, 2, 3]).await?.len(), 3);
        let kept = |cache: &PersonCache| {
            let mut kept: Vec<String> = cache.insurances.keys().cloned().collect();
            kept.sort();
            (kept, cache.persons.len())
        };
        assert_eq!(kept(&cache).1, 3);

        // Person 2 suspended by another connection: only they are forgotten, and read afresh.
        let mut c = db.begin().await?;
        set_person_status(&mut c, "P000002", 1).await?;
        c.commit().await?;
        let found = lookup(&writer, &mut cache, &[]).await?;
        assert!(found.is_empty());
        assert_eq!(
            kept(&cache),
            (vec!["P000001".to_owned(), "P000003".to_owned()], 2)
        );
        let found = lookup(&writer, &mut cache, &[2]).await?;
        assert_eq!((found.len(), found[0].status), (1, 1));
        assert_eq!(kept(&cache).1, 3);
        // What it read is deleted.
        let mut r = db.read().await?;
        let left = r
            .with_sqlite(|x| {
                Ok(x.query_row("SELECT COUNT(*) FROM person_change", [], |r| {
                    r.get::<_, i64>(0)
                })?)
            })
            .await?;
        assert_eq!(left, Some(0));
        drop(r);

        // A change another reader took from the log unread by this cache: everyone forgotten.
        let mut c = db.begin().await?;
        set_person_status(&mut c, "P000003", 1).await?;
        c.with_sqlite(|x| Ok(x.execute("DELETE FROM person_change", [])?))
            .await?;
        c.commit().await?;
        lookup(&writer, &mut cache, &[]).await?;
        assert_eq!(kept(&cache), (Vec::new(), 0));
        let found = lookup(&writer, &mut cache, &[3]).await?;
        assert_eq!((found.len(), found[0].status), (1, 1));
        Ok(())
    }
}

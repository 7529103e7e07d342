//! Insured persons: enrolment, lookup, status, cards, personal-account deposits.

use super::auth::Principal;
use super::error::{AppError, AppResult};
use super::{Page, page_after, regions};
use crate::domain::ids::{CardNo, EVoucherToken, NationalId, PersonName, RegionCode};
use crate::domain::kinds::{CardStatus, InsuranceType, PersonCategory, PersonStatus};
use crate::domain::money::Amount;
use crate::domain::time::business_date;
use crate::ledger::{self, Account, Posting};
use crate::store::journal;
use crate::store::persons::{
    self, AccountRow, Enrolments, InsuranceRow, PersonKey, PersonRecord, PersonRow,
};
use crate::store::{self, Conn, StoreError};
use chrono::{DateTime, Utc};

#[derive(Debug, Clone)]
pub struct Enrol {
    pub national_id: NationalId,
    pub name: PersonName,
    pub home_region: RegionCode,
    pub insurances: Vec<(InsuranceType, PersonCategory)>,
    pub card_no: Option<CardNo>,
    pub evoucher: Option<EVoucherToken>,
    pub assistance_recipient: bool,
    pub opening_balance: Amount,
}

/// Most persons per batch enrolment (EnrolPersons).
pub const MAX_BATCH: usize = 5_000;

/// Enrol a person: their home-region bureau, or an operator. The opening personal-account
/// balance is booked bank:{home} → pacct:{psn_no}.
pub async fn enrol(
    conn: &mut Conn,
    who: &Principal,
    cmd: Enrol,
    now: DateTime<Utc>,
) -> AppResult<PersonRecord> {
    who.require_region(cmd.home_region.as_str())?;
    check(&cmd)?;
    regions::get(conn, cmd.home_region.as_str()).await?;
    let person = insert(conn, &cmd, now, person_unique).await?;
    Ok(persons::record(conn, person).await?)
}

/// The rules of an enrolment that need no database: at least one insurance type, each once,
/// with a category it allows; an opening balance only with a personal account.
pub fn check(cmd: &Enrol) -> AppResult<()> {
    if cmd.insurances.is_empty() {
        return Err(AppError::invalid(
            "insurances",
            "at least one insurance type is required",
        ));
    }
    for (i, (t, c)) in cmd.insurances.iter().enumerate() {
        if cmd.insurances[..i].iter().any(|(u, _)| u == t) {
            return Err(AppError::invalid(
                format!("insurances[{i}].insurance_type"),
                "listed twice",
            ));
        }
        if !t.allows(*c) {
            return Err(AppError::invalid(
                format!("insurances[{i}].category"),
                format!("{c:?} is not a category of {t:?} insurance"),
            ));
        }
    }
    if !has_account(cmd) && !cmd.opening_balance.is_zero() {
        return Err(AppError::invalid(
            "opening_balance",
            "only employee-scheme (310) members have a personal account",
        ));
    }
    Ok(())
}

fn has_account(cmd: &Enrol) -> bool {
    cmd.insurances.iter().any(|(t, _)| t.has_personal_account())
}

/// Writes a checked enrolment into an existing home region (see [`Enrolled`]). `taken` maps the
/// failure to insert the person row (a national ID, card or e-voucher already taken is
/// StoreError::Unique).
async fn insert(
    conn: &mut Conn,
    cmd: &Enrol,
    now: DateTime<Utc>,
    taken: impl FnOnce(StoreError) -> AppError,
) -> AppResult<PersonRow> {
    let mut enrolled = Enrolled::default();
    let person = enrolled.add(cmd, now)?;
    enrolled.write(conn, now, taken).await?;
    Ok(person)
}

/// Checked enrolments, written together ([`persons::insert_enrolments`]).
#[derive(Default)]
struct Enrolled(Enrolments);

impl Enrolled {
    /// Adds a checked enrolment under a new psn_no: the person, their insurance types, their
    /// personal account and its opening balance, booked bank:{home} → pacct:{psn_no}. Its person
    /// row.
    fn add(&mut self, cmd: &Enrol, now: DateTime<Utc>) -> AppResult<PersonRow> {
        let rows = &mut self.0;
        let home = cmd.home_region.as_str();
        let psn_no = format!("{home}{:020}", rand::random::<u64>());
        let person = PersonRow {
            psn_no: psn_no.clone(),
            home_region: home.to_owned(),
            national_id: cmd.national_id.as_str().to_owned(),
            name: cmd.name.as_str().to_owned(),
            birth_date: cmd.national_id.birth_date(),
            status: PersonStatus::Active.code(),
            card_no: cmd.card_no.as_ref().map(|c| c.as_str().to_owned()),
            card_status: CardStatus::Active.code(),
            evoucher_token: cmd.evoucher.as_ref().map(|e| e.as_str().to_owned()),
            assistance_recipient: cmd.assistance_recipient,
        };
        rows.insurances
            .extend(cmd.insurances.iter().map(|(t, c)| InsuranceRow {
                psn_no: psn_no.clone(),
                insurance_type: t.code(),
                category: c.code(),
                status: PersonStatus::Active.code(),
            }));
        if has_account(cmd) {
            let opening = cmd.opening_balance.to_fen();
            if opening != 0 {
                let posting = Posting::new(journal::OPENING_BALANCE, &psn_no, business_date(now))
                    .transfer(
                        Account::Bank(home.to_owned()),
                        Account::PersonalAccount(psn_no.clone()),
                        opening,
                    );
                let (tx, entries) = ledger::journal_rows(&posting, now)?;
                rows.txs.push(tx);
                rows.entries.extend(entries);
            }
            rows.accounts.push(AccountRow {
                psn_no,
                balance_fen: opening,
            });
        }
        rows.persons.push(person.clone());
        Ok(person)
    }

    /// Writes them in the caller's transaction; `taken` maps the failure to insert them.
    async fn write(
        &self,
        conn: &mut Conn,
        now: DateTime<Utc>,
        taken: impl FnOnce(StoreError) -> AppError,
    ) -> AppResult<()> {
        if self.0.persons.is_empty() {
            return Ok(());
        }
        persons::insert_enrolments(conn, &self.0, now)
            .await
            .map_err(taken)
    }
}

/// What became of one item of a batch call (EnrolPersons, RegisterInstitutions).
#[derive(Debug)]
pub enum BatchItem {
    /// Written by this call; the new key (psn_no, institution code).
    Created(String),
    /// Already there (same national ID, same institution code) and left unchanged.
    Exists { field: String, reason: String },
    /// Refused, nothing written for it: the item's field at fault and the error the
    /// single-item call would have answered with.
    Rejected { field: String, error: AppError },
}

impl BatchItem {
    /// A refusal; an INVALID_ARGUMENT names its own field, any other error is put on `field`.
    pub fn rejected(field: &str, error: AppError) -> BatchItem {
        let field = match &error {
            AppError::Invalid { field, .. } => field.clone(),
            _ => field.to_owned(),
        };
        BatchItem::Rejected { field, error }
    }
}

/// The first item of a batch that used each value of a unique column.
#[derive(Default)]
pub struct FirstUse(std::collections::HashMap<(&'static str, String), usize>);

impl FirstUse {
    /// The first of `values` (column, value) that an earlier item used, with that item's index;
    /// when there is none, the values are claimed for `item`.
    pub fn claim(
        &mut self,
        values: &[(&'static str, Option<&str>)],
        item: usize,
    ) -> Option<(&'static str, usize)> {
        for (column, value) in values {
            if let Some(v) = value
                && let Some(j) = self.0.get(&(*column, (*v).to_owned()))
            {
                return Some((column, *j));
            }
        }
        for (column, value) in values {
            if let Some(v) = value {
                self.0.insert((column, (*v).to_owned()), item);
            }
        }
        None
    }
}

/// Whether a region is registered, asked once per batch: Err(the NOT_FOUND answer) if not.
#[derive(Default)]
pub struct RegionsSeen(std::collections::HashMap<String, Option<String>>);

impl RegionsSeen {
    pub async fn check(&mut self, conn: &mut Conn, code: &str) -> AppResult<Result<(), AppError>> {
        let missing = match self.0.get(code) {
            Some(m) => m.clone(),
            None => {
                let m = match regions::get(conn, code).await {
                    Ok(_) => None,
                    Err(AppError::NotFound(m)) => Some(m),
                    Err(e) => return Err(e),
                };
                self.0.insert(code.to_owned(), m.clone());
                m
            }
        };
        Ok(match missing {
            None => Ok(()),
            Some(m) => Err(AppError::NotFound(m)),
        })
    }
}

/// Enrols 1..[`MAX_BATCH`] persons in the caller's transaction, each checked as [`enrol`]
/// checks it (the home bureau or an operator, the same rules, an existing home region). An
/// item that fails is Rejected and left out; one whose national ID is already enrolled is
/// Exists, left unchanged; all the others are written together. A national ID, card or
/// e-voucher given twice in the batch rejects the later item. Answers one outcome per item, in
/// order; an error of the call itself (or of the database) writes nothing.
pub async fn enrol_batch(
    conn: &mut Conn,
    who: &Principal,
    items: Vec<AppResult<Enrol>>,
    now: DateTime<Utc>,
) -> AppResult<Vec<BatchItem>> {
    who.require_bureau_or_operator()?;
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(AppError::invalid(
            "persons",
            format!("1..{MAX_BATCH} persons per call"),
        ));
    }
    let mut out: Vec<Option<BatchItem>> = items.iter().map(|_| None).collect();
    let mut todo: Vec<(usize, Enrol)> = Vec::with_capacity(items.len());
    let mut seen = RegionsSeen::default();
    let mut first = FirstUse::default();
    for (i, item) in items.into_iter().enumerate() {
        let cmd = match item {
            Ok(cmd) => cmd,
            Err(e) => {
                out[i] = Some(BatchItem::rejected("", e));
                continue;
            }
        };
        let home = cmd.home_region.as_str().to_owned();
        if let Err(e) = who.require_region(&home) {
            out[i] = Some(BatchItem::rejected("home_region", e));
            continue;
        }
        if let Err(e) = check(&cmd) {
            out[i] = Some(BatchItem::rejected("", e));
            continue;
        }
        if let Err(e) = seen.check(conn, &home).await? {
            out[i] = Some(BatchItem::rejected("home_region", e));
            continue;
        }
        let unique = [
            ("national_id", Some(cmd.national_id.as_str())),
            ("card_no", cmd.card_no.as_ref().map(|c| c.as_str())),
            ("evoucher_token", cmd.evoucher.as_ref().map(|e| e.as_str())),
        ];
        if let Some((column, j)) = first.claim(&unique, i) {
            let e = AppError::invalid(column, format!("the same as item {j} of this call"));
            out[i] = Some(BatchItem::rejected(column, e));
            continue;
        }
        todo.push((i, cmd));
    }
    // Already enrolled (by national ID): left as they are. Cards and e-vouchers held by other
    // persons: refused as EnrolPerson refuses them.
    let ids: Vec<String> = todo
        .iter()
        .map(|(_, cmd)| cmd.national_id.as_str().to_owned())
        .collect();
    let enrolled_ids = persons::enrolled_national_ids(conn, &ids).await?;
    let mut fresh = Vec::with_capacity(todo.len());
    for (i, cmd) in todo {
        if enrolled_ids.contains(cmd.national_id.as_str()) {
            out[i] = Some(BatchItem::Exists {
                field: "national_id".into(),
                reason: taken("national_id"),
            });
        } else {
            fresh.push((i, cmd));
        }
    }
    let cards: Vec<String> = fresh
        .iter()
        .filter_map(|(_, c)| c.card_no.as_ref().map(|c| c.as_str().to_owned()))
        .collect();
    let evouchers: Vec<String> = fresh
        .iter()
        .filter_map(|(_, c)| c.evoucher.as_ref().map(|e| e.as_str().to_owned()))
        .collect();
    let holders = persons::find_by_credentials(conn, &cards, &evouchers, false).await?;
    let taken_cards: std::collections::HashSet<&str> = holders
        .iter()
        .filter_map(|p| p.card_no.as_deref())
        .collect();
    let taken_evouchers: std::collections::HashSet<&str> = holders
        .iter()
        .filter_map(|p| p.evoucher_token.as_deref())
        .collect();
    let mut enrolled = Enrolled::default();
    for (i, cmd) in fresh {
        if cmd
            .card_no
            .as_ref()
            .is_some_and(|c| taken_cards.contains(c.as_str()))
        {
            let e = AppError::AlreadyExists(taken("card_no"));
            out[i] = Some(BatchItem::rejected("card_no", e));
            continue;
        }
        if cmd
            .evoucher
            .as_ref()
            .is_some_and(|e| taken_evouchers.contains(e.as_str()))
        {
            let e = AppError::AlreadyExists(taken("evoucher_token"));
            out[i] = Some(BatchItem::rejected("evoucher_token", e));
            continue;
        }
        out[i] = Some(BatchItem::Created(enrolled.add(&cmd, now)?.psn_no));
    }
    // Checked above in this transaction: a unique violation now means a concurrent enrolment
    // took the value; the whole batch runs again and sees it.
    enrolled
        .write(conn, now, |e| match e {
            StoreError::Unique { constraint } => AppError::Retry(format!(
                "a concurrent enrolment took a unique value ({constraint})"
            )),
            other => other.into(),
        })
        .await?;
    out.into_iter()
        .map(|o| {
            o.ok_or_else(|| AppError::Internal(anyhow::anyhow!("a batch item left unanswered")))
        })
        .collect()
}

/// A person's unique values: (request field, text of its constraint, what a taken one answers).
const UNIQUE: [(&str, &str, &str); 3] = [
    (
        "national_id",
        "national_id",
        "a person with this national ID is already enrolled",
    ),
    (
        "card_no",
        "card_no",
        "this card number belongs to another person",
    ),
    (
        "evoucher_token",
        "evoucher",
        "this e-voucher token belongs to another person",
    ),
];

/// What a taken unique `field` of a person answers.
fn taken(field: &str) -> String {
    UNIQUE
        .iter()
        .find(|(f, _, _)| *f == field)
        .map_or("already taken", |(_, _, what)| what)
        .to_owned()
}

fn person_unique(e: StoreError) -> AppError {
    for (_, column, what) in UNIQUE {
        if matches!(&e, StoreError::Unique { constraint } if constraint.contains(column)) {
            return AppError::AlreadyExists(what.into());
        }
    }
    e.into()
}

/// How a caller identifies a person.
#[derive(Debug, Clone)]
pub enum Lookup {
    PsnNo(String),
    NationalId(NationalId),
    CardNo(CardNo),
    EVoucher(EVoucherToken),
}

/// Finds a person and checks that `who` may act on them (their home bureau or an operator).
pub async fn find(
    conn: &mut Conn,
    who: &Principal,
    key: &Lookup,
    lock: bool,
) -> AppResult<PersonRow> {
    let (k, v) = match key {
        Lookup::PsnNo(p) => (PersonKey::PsnNo, p.as_str()),
        Lookup::NationalId(n) => (PersonKey::NationalId, n.as_str()),
        Lookup::CardNo(c) => (PersonKey::CardNo, c.as_str()),
        Lookup::EVoucher(e) => (PersonKey::EVoucher, e.as_str()),
    };
    let person = persons::find_person(conn, k, v, lock)
        .await?
        .ok_or_else(|| AppError::not_found("no such person"))?;
    who.require_region(&person.home_region)?;
    Ok(person)
}

pub async fn get(conn: &mut Conn, who: &Principal, key: &Lookup) -> AppResult<PersonRecord> {
    let person = find(conn, who, key, false).await?;
    Ok(persons::record(conn, person).await?)
}

pub async fn list(
    conn: &mut Conn,
    who: &Principal,
    home_region: &RegionCode,
    page_size: u32,
    page_token: &str,
) -> AppResult<Page<PersonRecord>> {
    who.require_region(home_region.as_str())?;
    let after = page_after(page_token)?;
    let size = store::page_size(page_size);
    let rows = persons::list_persons(conn, home_region.as_str(), &after, size + 1).await?;
    let (rows, next_page_token) = store::page(rows, size, |r| r.psn_no.clone());
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        items.push(persons::record(conn, row).await?);
    }
    Ok(Page {
        items,
        next_page_token,
    })
}

/// Suspend, reinstate or terminate a person, or one of their insurance types.
pub async fn set_status(
    conn: &mut Conn,
    who: &Principal,
    psn_no: &str,
    status: PersonStatus,
    insurance_type: Option<InsuranceType>,
) -> AppResult<PersonRecord> {
    let person = find(conn, who, &Lookup::PsnNo(psn_no.to_owned()), true).await?;
    if person.status == PersonStatus::Terminated.code() {
        return Err(AppError::precondition(
            "person_terminated",
            "a terminated person cannot change status",
        ));
    }
    match insurance_type {
        None => persons::set_person_status(conn, psn_no, status.code()).await?,
        Some(t) => {
            let held = persons::insurances(conn, psn_no).await?;
            let current = held
                .iter()
                .find(|i| i.insurance_type == t.code())
                .ok_or_else(|| {
                    AppError::not_found(format!(
                        "the person holds no {t:?} ({}) insurance",
                        t.code()
                    ))
                })?;
            if current.status == PersonStatus::Terminated.code() {
                return Err(AppError::precondition(
                    "insurance_terminated",
                    "a terminated insurance type cannot change status",
                ));
            }
            persons::set_insurance_status(conn, psn_no, t.code(), status.code()).await?;
        }
    }
    let person = find(conn, who, &Lookup::PsnNo(psn_no.to_owned()), false).await?;
    Ok(persons::record(conn, person).await?)
}

/// Set a card's status, optionally replacing its number (a re-issued card).
pub async fn set_card(
    conn: &mut Conn,
    who: &Principal,
    psn_no: &str,
    status: CardStatus,
    new_card_no: Option<CardNo>,
) -> AppResult<PersonRecord> {
    let person = find(conn, who, &Lookup::PsnNo(psn_no.to_owned()), true).await?;
    let card = match new_card_no {
        Some(c) => c.as_str().to_owned(),
        None => person.card_no.clone().ok_or_else(|| {
            AppError::precondition("no_card", "the person has no card: give new_card_no")
        })?,
    };
    persons::set_card(conn, psn_no, Some(&card), status.code())
        .await
        .map_err(person_unique)?;
    let person = find(conn, who, &Lookup::PsnNo(psn_no.to_owned()), false).await?;
    Ok(persons::record(conn, person).await?)
}

/// Deposit into a personal account: bank:{home} → pacct:{psn_no}. Returns (balance fen,
/// journal id).
pub async fn deposit(
    conn: &mut Conn,
    who: &Principal,
    psn_no: &str,
    amount: Amount,
    memo: String,
    now: DateTime<Utc>,
) -> AppResult<(i64, String)> {
    if amount.is_negative() || amount.is_zero() {
        return Err(AppError::invalid("amount", "must be greater than 0.00"));
    }
    let person = find(conn, who, &Lookup::PsnNo(psn_no.to_owned()), true).await?;
    if person.status == PersonStatus::Terminated.code() {
        return Err(AppError::precondition(
            "person_terminated",
            "no deposits to a terminated person",
        ));
    }
    if persons::account_balance(conn, psn_no, true)
        .await?
        .is_none()
    {
        return Err(AppError::precondition(
            "no_personal_account",
            "only employee-scheme (310) members have a personal account",
        ));
    }
    let posting = Posting::new(journal::PACCT_DEPOSIT, psn_no, business_date(now))
        .memo(memo)
        .transfer(
            Account::Bank(person.home_region.clone()),
            Account::PersonalAccount(psn_no.to_owned()),
            amount.to_fen(),
        );
    let posted = ledger::post(conn, &posting, now).await?;
    let balance = posted
        .personal_balances
        .first()
        .map(|(_, b)| *b)
        .unwrap_or_default();
    Ok((balance, posted.journal_id))
}

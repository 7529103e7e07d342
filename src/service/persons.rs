//! Insured persons: enrolment, lookup, status, cards, personal-account deposits.

use super::auth::Principal;
use super::error::{AppError, AppResult};
use super::{Page, page_after, regions};
use crate::domain::ids::{CardNo, EVoucherToken, NationalId, PersonName, RegionCode};
use crate::domain::kinds::{CardStatus, InsuranceType, PersonCategory, PersonStatus};
use crate::domain::money::Amount;
use crate::domain::time::business_date;
use crate::ledger::{self, Account, Posting};
use crate::store::persons::{self, InsuranceRow, PersonKey, PersonRecord, PersonRow};
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

/// Enrol a person: their home-region bureau, or an operator. The opening personal-account
/// balance is booked bank:{home} → pacct:{psn_no}.
pub async fn enrol(
    conn: &mut Conn,
    who: &Principal,
    cmd: Enrol,
    now: DateTime<Utc>,
) -> AppResult<PersonRecord> {
    let home = cmd.home_region.as_str();
    who.require_region(home)?;
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
    let has_account = cmd.insurances.iter().any(|(t, _)| t.has_personal_account());
    if !has_account && !cmd.opening_balance.is_zero() {
        return Err(AppError::invalid(
            "opening_balance",
            "only employee-scheme (310) members have a personal account",
        ));
    }
    regions::get(conn, home).await?;
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
    persons::insert_person(conn, &person, now)
        .await
        .map_err(person_unique)?;
    for (t, c) in &cmd.insurances {
        let row = InsuranceRow {
            psn_no: psn_no.clone(),
            insurance_type: t.code(),
            category: c.code(),
            status: PersonStatus::Active.code(),
        };
        persons::insert_insurance(conn, &row).await?;
    }
    if has_account {
        persons::insert_account(conn, &psn_no).await?;
        if !cmd.opening_balance.is_zero() {
            let posting = Posting::new("opening_balance", &psn_no, business_date(now)).transfer(
                Account::Bank(home.to_owned()),
                Account::PersonalAccount(psn_no.clone()),
                cmd.opening_balance.to_fen(),
            );
            ledger::post(conn, &posting, now).await?;
        }
    }
    Ok(persons::record(conn, person).await?)
}

fn person_unique(e: StoreError) -> AppError {
    for (column, what) in [
        (
            "national_id",
            "a person with this national ID is already enrolled",
        ),
        ("card_no", "this card number belongs to another person"),
        ("evoucher", "this e-voucher token belongs to another person"),
    ] {
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
    let posting = Posting::new("pacct_deposit", psn_no, business_date(now))
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

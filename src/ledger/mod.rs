//! The double-entry ledger: a chart of named accounts, balanced immutable journal transactions,
//! balances derived from the journal, and verification.
//!
//! Sign convention: an entry's amount is what flows INTO its account (negative = out of it); a
//! transfer of X from A to B is A −X, B +X. Every transaction's entries sum to exactly zero, so
//! the whole journal (the trial balance) does too.

pub mod verify;

use crate::store::journal::{self, EntryRow, JournalTxRow};
use crate::store::{Conn, StoreError, persons};
use chrono::{DateTime, NaiveDate, Utc};
use std::fmt;

/// An account of the chart (DESIGN §4).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Account {
    /// `bank:{bureau}` a bureau's cash.
    Bank(String),
    /// `fund:{home}` the pooled fund of a home bureau.
    Fund(String),
    /// `ci:{home}` the critical-illness (大病保险) fund of a home region.
    CriticalIllness(String),
    /// `maf:{home}` the medical-assistance (医疗救助) fund of a home region.
    Assistance(String),
    /// `pacct:{psn_no}` a personal account; may not go negative (maintained, locked balance).
    PersonalAccount(String),
    /// `due:{home}->{treat}` what a home bureau owes a treatment bureau for advances.
    Due { home: String, treat: String },
    /// `advance:{treat}` what a treatment bureau advanced to its institutions, not yet recovered.
    Advance(String),
    /// `inst:{code}` what a treatment bureau owes an institution.
    Institution(String),
    /// `prepay:{home}` a home bureau's prepayment held for clearing.
    Prepay(String),
    /// `net:{bureau}` a bureau's position in netted, not yet settled clearing: netting moves
    /// each statement's due:{home}->{treat} into net:{home} and fills advance:{treat} from
    /// net:{treat}; draw-downs and recorded transfers bring every net account back to zero.
    /// Positive = money it still has to pay; negative = money it is still to receive.
    Net(String),
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Account::Bank(r) => write!(f, "bank:{r}"),
            Account::Fund(r) => write!(f, "fund:{r}"),
            Account::CriticalIllness(r) => write!(f, "ci:{r}"),
            Account::Assistance(r) => write!(f, "maf:{r}"),
            Account::PersonalAccount(p) => write!(f, "pacct:{p}"),
            Account::Due { home, treat } => write!(f, "due:{home}->{treat}"),
            Account::Advance(r) => write!(f, "advance:{r}"),
            Account::Institution(c) => write!(f, "inst:{c}"),
            Account::Prepay(r) => write!(f, "prepay:{r}"),
            Account::Net(r) => write!(f, "net:{r}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// A transaction that does not balance is a bug: the write stops, loudly.
    #[error("unbalanced journal transaction {kind}/{reference}: entries sum to {sum_fen} fen")]
    Unbalanced {
        kind: &'static str,
        reference: String,
        sum_fen: i64,
    },
    /// A bounded account (personal account) would go below zero.
    #[error("insufficient balance on {account}: balance {balance_fen} fen, debit {debit_fen} fen")]
    Insufficient {
        account: String,
        balance_fen: i64,
        debit_fen: i64,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A journal transaction being built: legs of (account, signed fen).
#[derive(Debug, Clone)]
pub struct Posting {
    pub kind: &'static str,
    pub reference: String,
    /// Free text for people reading the journal.
    pub memo: String,
    pub business_date: NaiveDate,
    pub legs: Vec<(Account, i64)>,
}

impl Posting {
    pub fn new(kind: &'static str, reference: impl Into<String>, business_date: NaiveDate) -> Self {
        Posting {
            kind,
            reference: reference.into(),
            memo: String::new(),
            business_date,
            legs: Vec::new(),
        }
    }

    pub fn memo(mut self, memo: impl Into<String>) -> Self {
        self.memo = memo.into();
        self
    }

    /// Moves `fen` from `from` to `to` (no legs for zero).
    pub fn transfer(mut self, from: Account, to: Account, fen: i64) -> Self {
        if fen != 0 {
            self.legs.push((from, -fen));
            self.legs.push((to, fen));
        }
        self
    }

    fn sum_fen(&self) -> i64 {
        self.legs.iter().map(|(_, f)| *f).sum()
    }
}

/// What posting a transaction did.
#[derive(Debug, Clone)]
pub struct Posted {
    pub journal_id: String,
    /// New balances (fen) of the personal accounts it touched.
    pub personal_balances: Vec<(String, i64)>,
}

/// Books a balanced transaction inside the caller's database transaction: journal rows, and the
/// maintained balance of every personal account it touches (refusing an overdraft).
pub async fn post(conn: &mut Conn, p: &Posting, now: DateTime<Utc>) -> Result<Posted, LedgerError> {
    // Refuses an unbalanced transaction before anything is written.
    let (tx, entries) = journal_rows(p, now)?;
    let mut personal_balances = Vec::new();
    for (account, fen) in &p.legs {
        if let Account::PersonalAccount(psn_no) = account {
            let Some(after) = persons::add_to_account(conn, psn_no, *fen).await? else {
                // Refused (the balance too small, or no account): read what it is, to say so.
                let balance = persons::account_balance(conn, psn_no, false).await?;
                return Err(LedgerError::Insufficient {
                    account: account.to_string(),
                    balance_fen: balance.unwrap_or(0),
                    debit_fen: -fen,
                });
            };
            personal_balances.push((psn_no.clone(), after));
        }
    }
    let journal_id = tx.journal_id.clone();
    journal::insert_tx(conn, &tx, &entries).await?;
    Ok(Posted {
        journal_id,
        personal_balances,
    })
}

/// The rows of a balanced transaction (refusing an unbalanced one), for callers that write many
/// transactions at once.
pub fn journal_rows(
    p: &Posting,
    now: DateTime<Utc>,
) -> Result<(JournalTxRow, Vec<EntryRow>), LedgerError> {
    let sum_fen = p.sum_fen();
    if sum_fen != 0 || p.legs.len() < 2 {
        tracing::error!(kind = p.kind, reference = %p.reference, sum_fen, "unbalanced posting refused");
        return Err(LedgerError::Unbalanced {
            kind: p.kind,
            reference: p.reference.clone(),
            sum_fen,
        });
    }
    let journal_id = crate::store::new_id("J", now);
    let tx = JournalTxRow {
        journal_id: journal_id.clone(),
        kind: p.kind.to_owned(),
        reference: p.reference.clone(),
        memo: p.memo.clone(),
        business_date: p.business_date,
        booked_at: now,
    };
    let entries: Vec<EntryRow> = p
        .legs
        .iter()
        .enumerate()
        .map(|(i, (account, fen))| EntryRow {
            journal_id: journal_id.clone(),
            seq: i64::try_from(i).unwrap_or(i64::MAX),
            account: account.to_string(),
            amount_fen: *fen,
        })
        .collect();
    Ok((tx, entries))
}

/// Balance (fen) and entry count of an account, derived from the journal.
pub async fn balance(conn: &mut Conn, account: &str) -> Result<(i64, i64), LedgerError> {
    Ok(journal::account_sum(conn, account).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_legs_balance_and_zero_is_skipped() {
        let d = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
        let p = Posting::new("t", "r", d)
            .transfer(
                Account::Bank("150300".into()),
                Account::PersonalAccount("p1".into()),
                12345,
            )
            .transfer(
                Account::Fund("150300".into()),
                Account::Advance("150600".into()),
                0,
            );
        assert_eq!(p.legs.len(), 2);
        assert_eq!(p.sum_fen(), 0);
        assert_eq!(p.legs[0].0.to_string(), "bank:150300");
        assert_eq!(p.legs[1].0.to_string(), "pacct:p1");
        let due = Account::Due {
            home: "150300".into(),
            treat: "640200".into(),
        };
        assert_eq!(due.to_string(), "due:150300->640200");
    }
}

//! Proves the books: trial balance zero, every transaction balanced, maintained balances equal
//! to the journal, no personal account below zero.

use crate::store::{Conn, StoreResult, clearing, derived, journal, settlement};

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// The report of a verification run.
#[derive(Debug, Clone)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }
}

/// Discrepancies listed per check at most.
const SHOW: i64 = 10;

pub async fn run(conn: &mut Conn) -> StoreResult<Report> {
    let mut checks = Vec::new();
    let trial = journal::trial_balance(conn).await?;
    checks.push(Check {
        name: "trial_balance_zero",
        ok: trial == 0,
        detail: format!("sum of all journal entries = {trial} fen"),
    });
    let unbalanced = journal::unbalanced(conn, SHOW).await?;
    checks.push(Check {
        name: "transactions_balanced",
        ok: unbalanced.is_empty(),
        detail: if unbalanced.is_empty() {
            "every journal transaction sums to 0 with at least two legs".into()
        } else {
            format!("unbalanced: {unbalanced:?}")
        },
    });
    let mismatches = journal::account_mismatches(conn, SHOW).await?;
    let orphans = journal::orphan_pacct_entries(conn).await?;
    checks.push(Check {
        name: "personal_accounts_match_journal",
        ok: mismatches.is_empty() && orphans == 0,
        detail: if mismatches.is_empty() && orphans == 0 {
            "every personal account balance equals its journal sum and is ≥ 0".into()
        } else {
            format!("(psn_no, maintained fen, journal fen): {mismatches:?}; orphan legs: {orphans}")
        },
    });
    let unlisted = journal::unlisted_pacct_legs(conn, SHOW).await?;
    checks.push(listed(
        "personal_account_legs_listed",
        &unlisted,
        "every personal-account leg is a settlement's of that person or an opening balance or deposit of that person's account (how SQLite lists an account's journal)",
    ));
    let derived = derived::mismatches(conn, SHOW).await?;
    checks.push(listed(
        "indexes_match_sources",
        &derived,
        "SQLite's batch-maintained indexes (settlements by person and by institution, every account's totals, audit records by principal, request ids by caller) hold exactly their sources' merged rows",
    ));
    let breaks = settlement::identity_breaks(conn, SHOW).await?;
    checks.push(listed(
        "settlement_identities",
        &breaks,
        "every settlement: total = self-paid parts + in scope = fund + personal; personal = account + cash",
    ));
    let postings = settlement::posting_mismatches(conn, SHOW).await?;
    checks.push(listed(
        "settlement_postings_match",
        &postings,
        "every settlement's journal legs equal its fund and account amounts",
    ));
    let accumulators = settlement::accumulator_mismatches(conn, SHOW).await?;
    checks.push(listed(
        "accumulators_match_settlements",
        &accumulators,
        "every accumulator equals the sum of its settlements and reversals",
    ));
    let orphans = clearing::orphan_lines(conn, SHOW).await?;
    checks.push(listed(
        "statement_lines_have_statements",
        &orphans,
        "every stored statement line (dispute, follower, carried copy) belongs to a statement",
    ));
    let lines = clearing::line_mismatches(conn, SHOW).await?;
    checks.push(listed(
        "statement_lines_match_settlements",
        &lines,
        "every stored statement line equals the settlement it points at, and a settlement's own line is on its statement",
    ));
    let base = clearing::base_mismatches(conn, SHOW).await?;
    checks.push(listed(
        "statement_totals_match_settlements",
        &base,
        "every statement's count and sums equal the settlements of its month and parties, and every settlement of a closed month has its statement",
    ));
    let frozen = clearing::frozen_mismatches(conn, SHOW).await?;
    checks.push(listed(
        "statement_totals_match_lines",
        &frozen,
        "every confirmed statement's frozen figures equal its lines (its settlements adjusted by disputes and carried lines)",
    ));
    let breaks = clearing_account_breaks(conn).await?;
    checks.push(listed(
        "clearing_accounts_match_unsettled",
        &breaks,
        "due:{home}->{treat} and advance:{treat} equal the settlements not yet netted; net:{bureau} equals its unrecorded transfers; prepay:{home} equals its maintained balance (≥ 0)",
    ));
    let references = crate::store::reference_breaks(conn, SHOW).await?;
    checks.push(listed(
        "references_hold",
        &references,
        "every stored reference (a settlement's person, a line's settlement, an entry's journal transaction, …) points at a row",
    ));
    let states = clearing::period_state_breaks(conn, SHOW).await?;
    checks.push(listed(
        "period_states_consistent",
        &states,
        "confirmed periods have no pending statement; netted periods have transfers to record, settled ones none",
    ));
    Ok(Report { checks })
}

/// Compares the clearing accounts of the journal with the clearing tables; returns the
/// discrepancies as "account: journal X fen, expected Y fen".
async fn clearing_account_breaks(conn: &mut Conn) -> StoreResult<Vec<String>> {
    use std::collections::BTreeMap;
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for (h, t, fen) in clearing::settled_due(conn).await? {
        *expected.entry(format!("due:{h}->{t}")).or_default() += fen;
        *expected.entry(format!("advance:{t}")).or_default() -= fen;
    }
    for (h, t, fen) in clearing::netted_due(conn).await? {
        *expected.entry(format!("due:{h}->{t}")).or_default() -= fen;
        *expected.entry(format!("advance:{t}")).or_default() += fen;
    }
    for (r, fen) in clearing::unrecorded_by_region(conn).await? {
        *expected.entry(format!("net:{r}")).or_default() += fen;
    }
    let mut negative = Vec::new();
    for (r, fen) in clearing::prepay_accounts(conn).await? {
        if fen < 0 {
            negative.push(format!("prepay:{r}: maintained balance {fen} fen < 0"));
        }
        *expected.entry(format!("prepay:{r}")).or_default() += fen;
    }
    let mut journal: BTreeMap<String, i64> = BTreeMap::new();
    for prefix in ["due:", "advance:", "net:", "prepay:"] {
        journal.extend(journal::sums_with_prefix(conn, prefix).await?);
    }
    let mut out = negative;
    let keys: std::collections::BTreeSet<&String> = expected.keys().chain(journal.keys()).collect();
    for k in keys {
        let (j, e) = (
            journal.get(k).copied().unwrap_or(0),
            expected.get(k).copied().unwrap_or(0),
        );
        if j != e {
            out.push(format!("{k}: journal {j} fen, expected {e} fen"));
            if out.len() >= SHOW as usize {
                break;
            }
        }
    }
    Ok(out)
}

fn listed<T: std::fmt::Debug>(name: &'static str, found: &[T], ok_detail: &str) -> Check {
    Check {
        name,
        ok: found.is_empty(),
        detail: if found.is_empty() {
            ok_detail.to_owned()
        } else {
            format!("discrepancies: {found:?}")
        },
    }
}

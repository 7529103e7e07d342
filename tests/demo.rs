//! `medsettle demo` end to end: the binary starts its own server on a fresh temporary SQLite file
//! (and, in the PostgreSQL variant, on a fresh database given with `--demo-database-url`), seeds
//! its world, walks through, clears the month and verifies. It must exit 0, and its tables must
//! show what the walk-through promises: the breakdown, the refused swipe's rule, the reversal, the
//! dispute, net positions summing to zero with a prepayment drawn, SETTLED, and verify ok.

use sqlx::Connection;
use std::process::Command;

/// Runs `medsettle demo ARGS`; its stdout, after asserting exit code 0.
fn demo(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_medsettle"))
        .arg("demo")
        .args(args)
        .env_remove("MEDSETTLE_TOKEN")
        .env_remove("RUST_LOG")
        .output()
        .expect("running medsettle demo");
    let stdout = String::from_utf8(out.stdout).expect("UTF-8 output");
    assert!(
        out.status.success(),
        "medsettle demo exited with {:?}\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Strictly parses "-12.30" into fen.
fn fen(s: &str) -> i64 {
    let (neg, digits) = s.strip_prefix('-').map_or((false, s), |d| (true, d));
    let (yuan, cents) = digits
        .split_once('.')
        .unwrap_or_else(|| panic!("not an amount: {s:?}"));
    assert_eq!(cents.len(), 2, "not an amount: {s:?}");
    let v = yuan.parse::<i64>().expect("yuan") * 100 + cents.parse::<i64>().expect("fen");
    if neg { -v } else { v }
}

/// The rows of the table titled `title` (after its header and rule), split on whitespace.
fn rows<'a>(out: &'a str, title: &str) -> Vec<Vec<&'a str>> {
    out.lines()
        .skip_while(|l| !l.starts_with(title))
        .skip(3)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect()
}

/// A line containing every one of `parts`.
fn has_line(out: &str, parts: &[&str]) -> bool {
    out.lines().any(|l| parts.iter().all(|p| l.contains(p)))
}

fn assert_walk_through(out: &str) {
    for title in [
        "### 1. Eligibility (2001)",
        "### 2. Inpatient stay",
        "### 3. Pharmacy inside the province",
        "### 4. Pharmacy outside the province",
        "### 5. Across provinces",
        "### 6. Reversal",
        "### 7. Refund",
        "### 9. Monthly clearing",
        "### Verify: the books",
    ] {
        assert!(out.contains(title), "no {title:?} in\n{out}");
    }
    assert!(has_line(out, &["allowed", "true"]), "{out}");
    for field in [
        "medfee_sumamt",
        "inscp_scp_amt",
        "act_pay_dedc",
        "hifp_pay",
        "hifmi_pay",
        "maf_pay",
        "acct_pay",
        "psn_cash_pay",
    ] {
        assert!(out.contains(field), "no {field} in\n{out}");
    }
    assert!(
        has_line(out, &["policy", "150300 v1 (home region)"]),
        "{out}"
    );
    assert!(
        has_line(out, &["catalogue", "150600 v1 (treatment region)"]),
        "{out}"
    );
    // The same Wuhai card, refused in Ningxia by the rule the home policy sets.
    assert!(
        has_line(
            out,
            &[
                "SettlePurchase",
                "FAILED_PRECONDITION",
                "pharmacy_out_of_province"
            ]
        ),
        "{out}"
    );
    assert!(has_line(
        out,
        &["LookupCard", "allowed=false", "pharmacy_out_of_province"]
    ));
    assert!(
        has_line(out, &["kind", "SETTLEMENT", "REVERSAL", "SETTLEMENT"]),
        "{out}"
    );
}

fn assert_month_cleared(out: &str) {
    assert!(out.contains("(demo: business time moved to "), "{out}");
    assert!(has_line(out, &["ClosePeriod: period", "CLOSED"]), "{out}");
    assert!(
        has_line(out, &["ACCEPTED", "admission papers missing"]),
        "{out}"
    );
    assert!(has_line(out, &["NetPeriod: period", "NETTED"]), "{out}");
    // Net positions: region payable receivable net before drawn after warning top_up.
    let positions = rows(out, "Net positions");
    assert!(positions.len() >= 2, "{out}");
    let net: i64 = positions.iter().map(|r| fen(r[3])).sum();
    assert_eq!(net, 0, "net positions do not sum to 0.00:\n{out}");
    assert!(
        positions.iter().any(|r| fen(r[5]) > 0),
        "no prepayment drawn:\n{out}"
    );
    let transfers = rows(out, "RecordTransfer by each paying bureau");
    assert!(!transfers.is_empty(), "{out}");
    assert!(transfers.iter().all(|r| r[6] == "true"), "{out}");
    assert!(has_line(out, &["period", "SETTLED", "settled at"]), "{out}");
}

fn assert_verified(out: &str) {
    assert!(out.contains("verify: ok, every check passed"), "{out}");
    let checks = rows(out, "LedgerService.Verify");
    assert!(checks.len() >= 5, "{out}");
    assert!(checks.iter().all(|r| r[1] == "ok"), "{out}");
}

#[test]
fn demo_on_a_temporary_sqlite_file() {
    let out = demo(&[]);
    assert!(
        out.contains("Sqlite, a fresh temporary SQLite file"),
        "{out}"
    );
    // Six regions, 300 insured each by default.
    let regions = rows(&out, "Regions and their insured");
    assert_eq!(regions.len(), 6, "{out}");
    for r in &regions {
        let persons: u32 = r[2..5]
            .iter()
            .map(|n| n.parse::<u32>().expect("count"))
            .sum();
        assert_eq!(persons, 300, "{r:?}");
    }
    assert_eq!(rows(&out, "Designated institutions").len(), 24, "{out}");
    assert_walk_through(&out);
    assert_month_cleared(&out);
    assert_verified(&out);
}

/// `url` with its database name replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let start = base.find("://").map_or(0, |i| i + 3);
    let end = base[start..].find('/').map_or(base.len(), |i| start + i);
    match query {
        Some(q) => format!("{}/{db}?{q}", &base[..end]),
        None => format!("{}/{db}", &base[..end]),
    }
}

#[tokio::test]
async fn demo_on_a_fresh_postgres_database() {
    let admin = std::env::var("MEDSETTLE_TEST_POSTGRES_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into());
    if admin == "skip" {
        println!("skipped: MEDSETTLE_TEST_POSTGRES_URL=skip");
        return;
    }
    let name = format!("ms_demo_{:016x}", rand::random::<u64>());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL is unreachable at {admin} ({e})"));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("CREATE DATABASE");
    let url = with_database(&admin, &name);
    let outcome =
        std::panic::catch_unwind(|| demo(&["--persons", "50", "--demo-database-url", &url]));
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .expect("DROP DATABASE");
    let _ = conn.close().await;
    let out = outcome.unwrap_or_else(|e| std::panic::resume_unwind(e));
    assert!(out.contains("(Postgres, postgres://"), "{out}");
    assert_walk_through(&out);
    assert_month_cleared(&out);
    assert_verified(&out);
}

//! `medsettle bench-close`: how long a month close takes at scale. It starts the server
//! in-process on a fresh database (default: a fresh SQLite file), enrols one person in each of
//! six regions through the API, writes N synthetic settlements of one past month straight into
//! the settlement table with set-based SQL (a generated series: six home and five treatment
//! regions per home, outpatient / inpatient / pharmacy, every 100th row the reversal of the
//! row before), then times over gRPC: ClosePeriod (statements with their figures, one set-based
//! aggregate over the month's settlements; lines are the settlements themselves), reading the
//! first two pages of a statement's lines, disputing one line, every home bureau confirming
//! its statements (figures frozen), and NetPeriod. It checks that the statements state every
//! settlement, and reports the times, the rows, and the process's peak resident memory, as
//! JSON.
//!
//! The synthetic settlements have no journal transactions (only clearing reads them), so run
//! it on a throwaway database: `verify` on it would rightly fail.

use crate::bench::{Auth, national_id, rid, with_token};
use crate::proto::clearing_service_client::ClearingServiceClient;
use crate::proto::registry_service_client::RegistryServiceClient;
use crate::proto::{self as pb};
use crate::service::App;
use crate::service::auth::{self, Grant};
use crate::store::{Db, DbConfig, Engine};
use anyhow::Context;
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// The month the synthetic settlements belong to.
pub const PERIOD: &str = "202001";
const REGIONS: [&str; 6] = ["150300", "150600", "152900", "150100", "640200", "110000"];
/// Rows per generating statement (each its own transaction).
const CHUNK: u64 = 500_000;

#[derive(Debug, Clone, Serialize)]
pub struct CloseResult {
    pub engine: String,
    pub settlements: u64,
    pub seed_ms: u64,
    pub close_ms: u64,
    pub statements: u64,
    /// Settlements stated per second of close.
    pub lines_per_s: u64,
    /// Σ line_count over the statements (must equal `settlements`).
    pub lines_stated: u64,
    /// GetStatement of the first statement, first two pages of 1000 lines.
    pub lines_pages_ms: u64,
    /// DisputeLines of one line of the first statement.
    pub dispute_ms: u64,
    pub confirm_all_ms: u64,
    pub net_ms: u64,
    pub instructions: usize,
    /// Peak resident set size of this process (server and client), KiB, from /proc.
    pub peak_rss_kib: u64,
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn ms(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The INSERT … SELECT writing settlements `from..to` of the synthetic month.
fn generate_sql(engine: Engine, from: u64, to: u64) -> String {
    let series = match engine {
        Engine::Sqlite => format!(
            "WITH RECURSIVE g(i) AS (SELECT {from} UNION ALL SELECT i + 1 FROM g WHERE i + 1 < {to})"
        ),
        Engine::Postgres => {
            format!("WITH g(i) AS (SELECT generate_series({from}::bigint, {to}::bigint - 1))")
        }
    };
    let pad = |e: &str| match engine {
        Engine::Sqlite => format!("printf('%010d', {e})"),
        Engine::Postgres => format!("lpad(CAST({e} AS TEXT), 10, '0')"),
    };
    let regions: Vec<String> = REGIONS
        .iter()
        .enumerate()
        .map(|(k, r)| format!("({k}, '{r}')"))
        .collect();
    // j: the settlement a row describes (a reversal repeats the row before, negated).
    format!(
        "{series}, r(k, code) AS (VALUES {regions}), \
         x AS (SELECT i, i - CASE WHEN i % 100 = 99 THEN 1 ELSE 0 END AS j, \
               CASE WHEN i % 100 = 99 THEN -1 ELSE 1 END AS sgn FROM g), \
         y AS (SELECT i, j, sgn, j % 6 AS kh, (j % 6 + 1 + (j / 6) % 5) % 6 AS kt, 1 + j % 3 AS care, \
               10000 + (j * 7919) % 90000 AS medfee FROM x) \
         INSERT INTO settlement (setl_id, kind, reverses, reversed_by, mdtrt_id, psn_no, home_region, \
           treatment_region, institution, insurance_type, care_type, settled_at, business_date, \
           clearing_period, service_year, medfee_fen, fulamt_fen, overlmt_fen, preself_fen, inscp_fen, \
           dedc_fen, hifp_fen, hifmi_fen, maf_fen, fund_fen, psn_part_fen, acct_fen, cash_fen, \
           balance_after_fen, d_annual_ded_fen, d_burden_fen, d_admissions, line_count, explanation, \
           journal_id, request_id) \
         SELECT 'SB{PERIOD}' || {pi}, CASE WHEN sgn < 0 THEN 2 ELSE 1 END, \
           CASE WHEN sgn < 0 THEN 'SB{PERIOD}' || {pj} ELSE NULL END, NULL, NULL, p.psn_no, h.code, t.code, \
           'BENCH' || t.code, 310, care, '2020-01-15T02:00:00Z', '2020-01-15', '{PERIOD}', 2020, \
           sgn * medfee, 0, 0, 0, sgn * medfee, 0, sgn * (medfee * 7 / 10), 0, 0, sgn * (medfee * 7 / 10), \
           sgn * (medfee - medfee * 7 / 10), sgn * (CASE WHEN care = 3 THEN (medfee - medfee * 7 / 10) / 2 ELSE 0 END), \
           sgn * (medfee - medfee * 7 / 10 - CASE WHEN care = 3 THEN (medfee - medfee * 7 / 10) / 2 ELSE 0 END), \
           NULL, 0, 0, 0, 1, '{{}}', 'JBENCH', 'RB' || {pi} \
         FROM y JOIN r h ON h.k = y.kh JOIN r t ON t.k = y.kt \
         JOIN person p ON p.home_region = h.code",
        regions = regions.join(", "),
        pi = pad("i"),
        pj = pad("j"),
    )
}

/// Every statement of the month the client may read (all pages).
async fn statements(
    client: &mut ClearingServiceClient<InterceptedService<Channel, Auth>>,
) -> anyhow::Result<Vec<pb::Statement>> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_statements(pb::ListStatementsRequest {
                period: PERIOD.into(),
                page_size: 1000,
                page_token,
            })
            .await?
            .into_inner();
        all.extend(page.statements);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        page_token = page.next_page_token;
    }
}

/// Runs the close benchmark; `database_url` None = a fresh SQLite file in the temp directory.
pub async fn run(
    database_url: Option<String>,
    max_connections: u32,
    settlements: u64,
) -> anyhow::Result<CloseResult> {
    let temp_dir =
        std::env::temp_dir().join(format!("medsettle-close-{:016x}", rand::random::<u64>()));
    let url = match &database_url {
        Some(u) => u.clone(),
        None => {
            std::fs::create_dir_all(&temp_dir)?;
            format!("sqlite://{}", temp_dir.join("close.db").display())
        }
    };
    let db = Db::open(&DbConfig {
        url,
        max_connections,
    })
    .await?;
    let result = async {
        let server = crate::server::Local::start(Arc::new(App::new(db.clone()))).await?;
        let channel = Channel::from_shared(format!("http://{}", server.addr))?
            .connect()
            .await?;
        let (_, operator) = auth::issue(&db, &Grant::Operator, "bench-close").await?;
        let mut reg = RegistryServiceClient::new(with_token(channel.clone(), &operator)?);
        let mut clr = ClearingServiceClient::new(with_token(channel.clone(), &operator)?);
        if clr
            .get_period(pb::GetPeriodRequest {
                period: PERIOD.into(),
            })
            .await?
            .into_inner()
            .status
            != pb::PeriodStatus::Open as i32
        {
            anyhow::bail!("{PERIOD} is already closed in this database: use a fresh one");
        }
        for (k, code) in REGIONS.iter().enumerate() {
            reg.create_region(pb::CreateRegionRequest {
                request_id: rid(),
                code: (*code).into(),
                ..Default::default()
            })
            .await
            .context("creating regions")?;
            reg.enrol_person(pb::EnrolPersonRequest {
                request_id: rid(),
                national_id: national_id(k),
                name: "基准".into(),
                home_region: (*code).into(),
                insurances: vec![pb::PersonInsurance {
                    insurance_type: pb::InsuranceType::Employee as i32,
                    category: pb::PersonCategory::Active as i32,
                    status: pb::PersonStatus::Active as i32,
                }],
                ..Default::default()
            })
            .await
            .context("enrolling")?;
        }

        let t = Instant::now();
        let mut from = 0;
        while from < settlements {
            let to = (from + CHUNK).min(settlements);
            let sql = generate_sql(db.engine(), from, to);
            let mut conn = db.begin().await?;
            crate::on_conn!(&mut conn, x => sqlx::query(&sql).execute(x).await.map(|r| r.rows_affected()))?;
            conn.commit().await?;
            from = to;
            tracing::info!(written = to, "synthetic settlements");
        }
        if db.engine() == Engine::Postgres {
            // What autovacuum does after a month of inserts: planner statistics for the close.
            let mut conn = db.begin().await?;
            crate::on_conn!(&mut conn, x => sqlx::query("ANALYZE settlement").execute(x).await.map(|r| r.rows_affected()))?;
            conn.commit().await?;
        }
        let seed_ms = ms(t);

        let t = Instant::now();
        let closed = clr
            .close_period(pb::ClosePeriodRequest {
                request_id: rid(),
                period: PERIOD.into(),
                confirm_days: 10,
                deadline_action: 0,
            })
            .await?
            .into_inner();
        let close_ms = ms(t);

        let all = statements(&mut clr).await?;
        let lines_stated: u64 = all.iter().map(|s| s.line_count).sum();
        if lines_stated != settlements {
            anyhow::bail!("statements state {lines_stated} lines for {settlements} settlements");
        }
        let first = all.first().context("no statement")?;
        let t = Instant::now();
        let mut page_token = String::new();
        let mut disputed = String::new();
        for _ in 0..2 {
            let got = clr
                .get_statement(pb::GetStatementRequest {
                    statement_id: first.statement_id.clone(),
                    page_size: 1000,
                    page_token: page_token.clone(),
                })
                .await?
                .into_inner();
            if let Some(l) = got.lines.last() {
                disputed.clone_from(&l.setl_id);
            }
            page_token = got.next_page_token;
        }
        let lines_pages_ms = ms(t);
        let region = crate::domain::ids::RegionCode::parse("region", &first.home_region)?;
        let (_, token) = auth::issue(&db, &Grant::Bureau(region), "bench-close").await?;
        let t = Instant::now();
        ClearingServiceClient::new(with_token(channel.clone(), &token)?)
            .dispute_lines(pb::DisputeLinesRequest {
                request_id: rid(),
                statement_id: first.statement_id.clone(),
                lines: vec![pb::DisputedLine {
                    setl_id: disputed,
                    reason: "bench: one disputed line".into(),
                }],
            })
            .await?;
        let dispute_ms = ms(t);

        let t = Instant::now();
        for code in REGIONS {
            let region = crate::domain::ids::RegionCode::parse("region", code)?;
            let (_, token) = auth::issue(&db, &Grant::Bureau(region), "bench-close").await?;
            let mut bureau = ClearingServiceClient::new(with_token(channel.clone(), &token)?);
            for s in statements(&mut bureau).await? {
                if s.home_region == code {
                    bureau
                        .confirm_statement(pb::ConfirmStatementRequest {
                            request_id: rid(),
                            statement_id: s.statement_id,
                        })
                        .await?;
                }
            }
        }
        let confirm_all_ms = ms(t);

        let t = Instant::now();
        let netting = clr
            .net_period(pb::NetPeriodRequest {
                request_id: rid(),
                period: PERIOD.into(),
            })
            .await?
            .into_inner();
        let net_ms = ms(t);

        server.stop().await?;
        Ok(CloseResult {
            engine: format!("{:?}", db.engine()),
            settlements,
            seed_ms,
            close_ms,
            statements: u64::from(closed.statements),
            lines_per_s: settlements * 1000 / close_ms.max(1),
            lines_stated,
            lines_pages_ms,
            dispute_ms,
            confirm_all_ms,
            net_ms,
            instructions: netting.instructions.len(),
            peak_rss_kib: peak_rss_kib(),
        })
    }
    .await;
    db.close().await;
    if database_url.is_none() {
        let _ = std::fs::remove_dir_all(&temp_dir);
    }
    result
}

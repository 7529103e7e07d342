//! The `medsettle` command: serve, migrate, tokens, verify.

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use medsettle::domain::ids::{InstitutionCode, RegionCode};
use medsettle::service::App;
use medsettle::service::auth::{self, Grant};
use medsettle::service::clearing::ClearingConfig;
use medsettle::store::{Db, DbConfig};
use std::sync::Arc;

/// mimalloc for Rust's allocations; with its `override` feature it also serves C's malloc, so
/// SQLite's allocations too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "medsettle",
    version,
    about = "Cross-region direct medical-insurance settlement (gRPC)"
)]
struct Cli {
    #[command(flatten)]
    db: DbArgs,
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "MEDSETTLE_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct DbArgs {
    /// Database: sqlite://FILE (created when missing) or postgres://USER@HOST:PORT/DB.
    #[arg(
        long,
        global = true,
        env = "MEDSETTLE_DATABASE_URL",
        default_value = "sqlite://medsettle.db"
    )]
    database_url: String,
    /// Database connection pool size.
    #[arg(
        long,
        global = true,
        env = "MEDSETTLE_DB_MAX_CONNECTIONS",
        default_value_t = 16
    )]
    db_max_connections: u32,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gRPC API (migrates the database first).
    Serve {
        /// Address to listen on.
        #[arg(long, env = "MEDSETTLE_LISTEN", default_value = "127.0.0.1:50051")]
        listen: String,
        /// Serve Prometheus metrics (GET /metrics over HTTP) on this address, e.g.
        /// 127.0.0.1:9464; off when not given.
        #[arg(long, env = "MEDSETTLE_METRICS_LISTEN")]
        metrics_listen: Option<String>,
        #[command(flatten)]
        clearing: ClearingArgs,
    },
    /// Clearing from the command line (a gRPC client of a running server).
    #[command(subcommand)]
    Clearing(ClearingCommand),
    /// Import persons, catalogue items or institutions from a CSV file into a running server (a
    /// gRPC client: batches of one transaction each, rejected rows reported by line, re-runs
    /// idempotent); exits 1 when a row was rejected.
    #[command(after_help = medsettle::import::help())]
    Import(medsettle::import::ImportArgs),
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Load generator: start the server in-process on this database (default: a fresh SQLite
    /// file), seed a world over gRPC, drive swipes and hospital flows, print throughput and
    /// latency percentiles.
    Bench(BenchArgs),
    /// Month-close benchmark: N synthetic settlements of one past month written straight into a
    /// fresh database (default a fresh SQLite file), then ClosePeriod, every home bureau's
    /// confirmation and NetPeriod timed over gRPC; JSON on stdout.
    BenchClose {
        /// Database for the run (must not hold period 202001 closed); default a fresh SQLite
        /// file, removed afterwards.
        #[arg(long = "bench-database-url")]
        bench_database_url: Option<String>,
        /// Synthetic settlements to write.
        #[arg(long, default_value_t = 1_000_000)]
        settlements: u64,
    },
    /// Verify the books (trial balance, balanced transactions, maintained balances); exits 1 on
    /// any failed check.
    Verify,
    /// See it work in a minute: seed a small realistic world and walk through eligibility,
    /// settlements, pharmacy swipes, a reversal, a refund, a month's clearing and verify,
    /// printing tables (default: an in-process server on a fresh temporary SQLite file).
    Demo(medsettle::demo::DemoArgs),
}

#[derive(Args)]
struct BenchArgs {
    /// Database for the run; default a fresh SQLite file (removed afterwards).
    #[arg(long = "bench-database-url")]
    bench_database_url: Option<String>,
    /// Insured persons to seed.
    #[arg(long, default_value_t = 1000)]
    persons: usize,
    /// Closed loop: requests in flight (ignored with --rate).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Open loop: offered requests per second, latency from the intended send time.
    #[arg(long)]
    rate: Option<u64>,
    /// Seconds measured (after the warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds of warm-up, not measured.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Share of operations (percent) that are full hospital flows instead of pharmacy swipes.
    #[arg(long, default_value_t = 0)]
    hospital_percent: u8,
    /// New persons a bureau enrols each second while the load runs (one EnrolPersons call a
    /// second, at most 5,000), as bureaus enrol during the day.
    #[arg(long, default_value_t = 0)]
    enrol_per_s: usize,
    /// gRPC connections the load spreads over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Also write the result as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Run the server as a child process (`medsettle serve`) rather than in this process, and
    /// report each process's CPU time.
    #[arg(long)]
    server_process: bool,
    /// Pharmacies the swipes spread over (each with its own token and request ids).
    #[arg(long, default_value_t = 20)]
    pharmacies: usize,
    /// Swipe request ids: `msgid` (institution code + local time + the institution's sequence,
    /// as NHSA callers make them) or `random` (128 random bits, the worst case for the indexes).
    #[arg(long, default_value = "msgid")]
    request_ids: BenchRequestIds,
}

#[derive(Clone, Copy, ValueEnum)]
enum BenchRequestIds {
    Msgid,
    Random,
}

#[derive(Args)]
struct ClearingArgs {
    /// Days after a month close the home bureaus have to confirm their statements (1..90), when
    /// ClosePeriod does not say.
    #[arg(long, env = "MEDSETTLE_CONFIRM_DAYS", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=90))]
    confirm_days: u32,
    /// What a statement still pending after the deadline becomes, when ClosePeriod does not say.
    #[arg(
        long,
        env = "MEDSETTLE_DEADLINE_ACTION",
        default_value = "auto-confirm"
    )]
    deadline_action: DeadlineAction,
    /// Prepayment warning line: this percentage of a bureau's average monthly net payable.
    #[arg(long, env = "MEDSETTLE_PREPAY_WARNING_PERCENT", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(0..=1000))]
    prepay_warning_percent: u32,
    /// How many netted periods (the current one included) the warning line averages over.
    #[arg(long, env = "MEDSETTLE_PREPAY_WARNING_PERIODS", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=24))]
    prepay_warning_periods: u32,
}

#[derive(Clone, Copy, ValueEnum)]
enum DeadlineAction {
    /// Confirm pending statements as they stand.
    AutoConfirm,
    /// Leave them pending, flagged overdue (operators may then confirm).
    Flag,
}

#[derive(Subcommand)]
enum ClearingCommand {
    /// Export a period's statements, lines, net positions or transfer instructions (CSV, or an
    /// aligned table with --format table) from a running server.
    Export {
        /// YYYYMM.
        #[arg(long)]
        period: String,
        #[arg(long, default_value = "statements")]
        kind: medsettle::cli::ExportKind,
        #[arg(long, default_value = "csv")]
        format: medsettle::cli::Format,
        /// Write here instead of stdout.
        #[arg(long)]
        output: Option<std::path::PathBuf>,
        /// The server.
        #[arg(
            long,
            env = "MEDSETTLE_SERVER",
            default_value = "http://127.0.0.1:50051"
        )]
        server: String,
        /// A bureau or operator token.
        #[arg(long, env = "MEDSETTLE_TOKEN", hide_env_values = true)]
        token: String,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Issue a new token and print it (it is shown only once; only its hash is stored).
    Issue {
        /// An operator token (administration, clearing, everything).
        #[arg(long, conflicts_with_all = ["bureau", "institution"])]
        operator: bool,
        /// A bureau token for this region code, e.g. 150300.
        #[arg(long, conflicts_with = "institution")]
        bureau: Option<String>,
        /// An institution token for this fixmedins_code, e.g. H15030200001.
        #[arg(long)]
        institution: Option<String>,
        /// Who holds it (kept with the token).
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Revoke a token by its id (printed at issue).
    Revoke { token_id: String },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let cfg = DbConfig {
        url: cli.db.database_url.clone(),
        max_connections: cli.db.db_max_connections,
    };
    match cli.command {
        Command::Serve {
            listen,
            metrics_listen,
            clearing,
        } => serve(&cfg, &listen, metrics_listen.as_deref(), &clearing).await,
        Command::Clearing(ClearingCommand::Export {
            period,
            kind,
            format,
            output,
            server,
            token,
        }) => {
            medsettle::cli::export(&server, &token, &period, kind, format, output.as_deref()).await
        }
        Command::Import(args) => {
            let summary = medsettle::import::run(args).await?;
            if summary.rejected > 0 || summary.stopped.is_some() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Migrate => {
            Db::open(&cfg).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Token(t) => token(&cfg, t).await,
        Command::Verify => verify(&cfg).await,
        Command::Demo(args) => medsettle::demo::run(args, cfg.max_connections).await,
        Command::Bench(b) => bench(&cfg, b).await,
        Command::BenchClose {
            bench_database_url,
            settlements,
        } => {
            let r =
                medsettle::bench_close::run(bench_database_url, cfg.max_connections, settlements)
                    .await?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            Ok(())
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn serve(
    cfg: &DbConfig,
    listen: &str,
    metrics_listen: Option<&str>,
    clearing: &ClearingArgs,
) -> anyhow::Result<()> {
    let db = Db::open(cfg).await?;
    db.claim_server()?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let metrics_listener = match metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr} (--metrics-listen)"))?,
        ),
        None => None,
    };
    let clearing = ClearingConfig {
        confirm_days: clearing.confirm_days,
        deadline_action: match clearing.deadline_action {
            DeadlineAction::AutoConfirm => medsettle::service::clearing::AUTO_CONFIRM,
            DeadlineAction::Flag => medsettle::service::clearing::FLAG,
        },
        warning_share_bp: i64::from(clearing.prepay_warning_percent) * 100,
        warning_periods: i64::from(clearing.prepay_warning_periods),
    };
    let app = Arc::new(App::new(db.clone()).with_clearing(clearing));
    let timer = tokio::spawn(medsettle::service::clearing::deadline_timer(app.clone()));
    // The metrics server stops once the gRPC server has drained (or failed).
    let (stop_metrics, mut metrics_stopped) = tokio::sync::watch::channel(());
    let metrics = metrics_listener.map(|l| {
        tokio::spawn(medsettle::metrics::serve(
            l,
            app.metrics.clone(),
            db.clone(),
            async move {
                let _ = metrics_stopped.changed().await;
            },
        ))
    });
    let served = medsettle::server::run(listener, app, shutdown_signal()).await;
    drop(stop_metrics);
    if let Some(m) = metrics {
        match m.await {
            Ok(Err(e)) => tracing::error!(error = %e, "metrics server failed"),
            Err(e) => tracing::error!(error = %e, "metrics server task failed"),
            Ok(Ok(())) => {}
        }
    }
    timer.abort();
    db.close().await;
    served
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested; draining in-flight calls");
}

async fn token(cfg: &DbConfig, cmd: TokenCommand) -> anyhow::Result<()> {
    let db = Db::open(cfg).await?;
    match cmd {
        TokenCommand::Issue {
            operator,
            bureau,
            institution,
            label,
        } => {
            let grant = match (operator, bureau, institution) {
                (true, None, None) => Grant::Operator,
                (false, Some(b), None) => Grant::Bureau(RegionCode::parse("--bureau", &b)?),
                (false, None, Some(i)) => {
                    Grant::Institution(InstitutionCode::parse("--institution", &i)?)
                }
                _ => anyhow::bail!(
                    "give exactly one of --operator, --bureau REGION, --institution CODE"
                ),
            };
            let (token_id, token) = auth::issue(&db, &grant, &label).await?;
            eprintln!("token id: {token_id} (use it to revoke)");
            println!("{token}");
        }
        TokenCommand::Revoke { token_id } => {
            if auth::revoke(&db, &token_id).await? {
                println!("revoked {token_id}");
            } else {
                anyhow::bail!("no live token with id {token_id}");
            }
        }
    }
    Ok(())
}

async fn verify(cfg: &DbConfig) -> anyhow::Result<()> {
    let db = Db::open(cfg).await?;
    let mut conn = db.read().await?;
    let report = medsettle::ledger::verify::run(&mut conn).await?;
    for c in &report.checks {
        println!(
            "{:<34} {:<4} {}",
            c.name,
            if c.ok { "ok" } else { "FAIL" },
            c.detail
        );
    }
    if report.ok() {
        println!("verify: all checks passed");
        Ok(())
    } else {
        std::process::exit(1)
    }
}

async fn bench(cfg: &DbConfig, b: BenchArgs) -> anyhow::Result<()> {
    use medsettle::bench::{BenchConfig, Load, ServerMode};
    let config = BenchConfig {
        database_url: b.bench_database_url,
        db_max_connections: cfg.max_connections,
        persons: b.persons,
        load: b.rate.map_or(Load::Concurrency(b.concurrency), Load::Rate),
        warmup: std::time::Duration::from_secs(b.warmup),
        duration: std::time::Duration::from_secs(b.seconds),
        hospital_percent: b.hospital_percent.min(100),
        enrol_per_s: b.enrol_per_s,
        connections: b.connections,
        server: if b.server_process {
            let exe = std::env::current_exe().context("finding this executable")?;
            ServerMode::Child(exe)
        } else {
            ServerMode::InProcess
        },
        pharmacies: b.pharmacies,
        request_ids: match b.request_ids {
            BenchRequestIds::Msgid => medsettle::bench::RequestIds::Msgid,
            BenchRequestIds::Random => medsettle::bench::RequestIds::Random,
        },
    };
    let result = medsettle::bench::run(config).await?;
    if let Some(host) = result
        .host_cpu
        .filter(|h| h.steal_permille > medsettle::bench::STEAL_WARN_PERMILLE)
    {
        eprintln!(
            "warning: the host stole {}.{}% of this machine's CPU during the run (host_cpu); the \
             latencies measured its contention as much as medsettle",
            host.steal_permille / 10,
            host.steal_permille % 10
        );
    }
    let json = serde_json::to_string_pretty(&result)?;
    println!("{json}");
    if let Some(path) = b.json {
        std::fs::write(&path, &json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

//! The load generator end to end (`medsettle bench`): `bench::run` starts the server on an empty
//! database, seeds its world over gRPC (pharmacies with tokens of their own, insured persons, a
//! catalogue, a policy), then drives card swipes — request ids in the NHSA msgid shape — mixed
//! with full hospital flows for a second while the bureau enrols more persons. Every operation
//! must succeed, every completed swipe must be a booked settlement, and the books must verify
//! afterwards. On SQLite and PostgreSQL.
//! (No timing is asserted: performance is what BENCHMARKS.md reports.)

#[macro_use]
mod common;

use common::*;
use medsettle::bench::{BenchConfig, Load, RequestIds, ServerMode};
use medsettle::store::{Db, DbConfig};
use sqlx::Connection;
use std::time::Duration;

async fn load_generator_books_what_it_reports(b: Backend) {
    let on_sqlite = matches!(b, Backend::Sqlite);
    let (url, pg) = match b {
        Backend::Sqlite => {
            let dir = std::env::temp_dir().join(format!(
                "medsettle-bench-test-{:016x}",
                rand::random::<u64>()
            ));
            std::fs::create_dir_all(&dir).expect("temp dir");
            (format!("sqlite://{}/bench.db", dir.display()), None)
        }
        Backend::Postgres => {
            let admin = pg_admin_url();
            let name = format!("ms_bench_{:016x}", rand::random::<u64>());
            let mut c = sqlx::PgConnection::connect(&admin)
                .await
                .expect("PostgreSQL");
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut c)
                .await
                .expect("CREATE DATABASE");
            (with_database(&admin, &name), Some((admin, name)))
        }
    };
    let result = medsettle::bench::run(BenchConfig {
        database_url: Some(url.clone()),
        db_max_connections: 8,
        persons: 40,
        load: Load::Concurrency(16),
        warmup: Duration::ZERO,
        duration: Duration::from_secs(1),
        hospital_percent: 10,
        enrol_per_s: 25,
        connections: 2,
        server: ServerMode::InProcess,
        pharmacies: 3,
        request_ids: RequestIds::Msgid,
    })
    .await
    .expect("bench::run");
    assert!(result.errors.is_empty(), "errors: {:?}", result.errors);
    assert!(result.swipes.count > 0, "no swipe completed: {result:?}");
    assert!(
        result.hospital_flows.count > 0,
        "no hospital flow completed: {result:?}"
    );
    assert_eq!(
        result.completed,
        result.swipes.count + result.hospital_flows.count
    );
    // CPU by thread (Linux /proc): with the server in this process, its SQLite swipe writer (a
    // thread of its own) is among this process's threads, and it books every swipe.
    if cfg!(target_os = "linux") && on_sqlite {
        let writer = result
            .threads
            .iter()
            .find(|t| t.process == "bench" && t.name == "swipe-writer");
        assert!(
            writer.is_some_and(|w| w.threads == 1 && w.run_us_per_op > 0),
            "no swipe writer among the threads: {:?}",
            result.threads
        );
    }
    // The machine's speed, timed before and after (a fixed piece of work: it takes some time).
    assert!(
        result.calibration_us.iter().all(|&us| us > 0),
        "{:?}",
        result.calibration_us
    );
    // The machine's CPU over the window (Linux /proc/stat): the load kept it busy some of the
    // time, and the shares add up to the whole but for rounding (each rounded half up).
    if cfg!(target_os = "linux") {
        let host = result.host_cpu.expect("host_cpu read from /proc/stat");
        let all = host.busy_permille + host.idle_permille + host.steal_permille;
        assert!((999..=1001).contains(&all), "{host:?}");
        assert!(host.busy_permille > 0, "{host:?}");
    }

    let db = Db::open(&DbConfig {
        url: url.clone(),
        max_connections: 2,
    })
    .await
    .expect("reopening the bench database");
    let mut conn = db.read().await.expect("connection");
    let report = medsettle::ledger::verify::run(&mut conn)
        .await
        .expect("verify");
    assert!(report.ok(), "verify failed: {:?}", report.checks);
    // The 40 seeded, and 25 more a second while the load ran (the first call at its start).
    let enrolled: i64 = medsettle::on_conn!(conn, x => sqlx::query_scalar("SELECT COUNT(*) FROM person").fetch_one(x).await)
        .expect("counting persons");
    assert!(enrolled >= 65, "{enrolled} persons");
    let (pharmacies, swipes): (i64, i64) = sqlx_count(&db).await;
    assert_eq!(pharmacies, 3, "each bench pharmacy books its own swipes");
    // Swipes completed during the warm-up-free window, plus those still in flight at its end.
    assert!(swipes >= i64::try_from(result.swipes.count).unwrap());
    drop(conn);
    db.close().await;
    match pg {
        None => {
            let path = url.trim_start_matches("sqlite://");
            let _ = std::fs::remove_dir_all(std::path::Path::new(path).parent().unwrap());
        }
        Some((admin, name)) => {
            let mut c = sqlx::PgConnection::connect(&admin)
                .await
                .expect("PostgreSQL");
            let _ = sqlx::query(&format!("DROP DATABASE {name}"))
                .execute(&mut c)
                .await;
        }
    }
}

/// (distinct pharmacies that booked, pharmacy settlements booked).
async fn sqlx_count(db: &Db) -> (i64, i64) {
    let mut conn = db.read().await.expect("connection");
    let sql =
        "SELECT COUNT(DISTINCT institution), COUNT(*) FROM settlement WHERE institution LIKE 'P%'";
    medsettle::on_conn!(conn, x => sqlx::query_as(sql).fetch_one(x).await).expect("counting")
}

both_engines!(load_generator_books_what_it_reports);

/// At a fixed rate the load generator sends what it offers: 200 swipes a second for a second is
/// 200 intended sends (one fewer if the pacer starts a moment after the window opens), every one
/// of them recorded both as sent (`sends_late`) and as answered. On a temporary SQLite file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offered_rate_is_sent_and_recorded() {
    let dir = std::env::temp_dir().join(format!(
        "medsettle-bench-rate-{:016x}",
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let result = medsettle::bench::run(BenchConfig {
        database_url: Some(format!("sqlite://{}/bench.db", dir.display())),
        db_max_connections: 4,
        persons: 20,
        load: Load::Rate(200),
        warmup: Duration::ZERO,
        duration: Duration::from_secs(1),
        hospital_percent: 0,
        enrol_per_s: 0,
        connections: 1,
        server: ServerMode::InProcess,
        pharmacies: 2,
        request_ids: RequestIds::Msgid,
    })
    .await
    .expect("bench::run");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(result.errors.is_empty(), "errors: {:?}", result.errors);
    assert!(
        (199..=200).contains(&result.swipes.count),
        "200/s for 1 s sent {} swipes: {result:?}",
        result.swipes.count
    );
    assert_eq!(result.completed, result.swipes.count);
    assert_eq!(result.sends_late.count, result.swipes.count);
}

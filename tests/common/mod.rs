//! End-to-end test harness: a real gRPC server on a loopback port, backed by a fresh SQLite file
//! or a fresh PostgreSQL database, and clients that carry a bearer token.
//!
//! Every test function gets its own server and its own database; nothing is shared between
//! tests. PostgreSQL: admin URL from `MEDSETTLE_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); set it to `skip` to skip the PostgreSQL
//! variants.
#![allow(dead_code)]

pub mod clearing_kit;
pub mod kit;

use medsettle::domain::ids::{InstitutionCode, RegionCode, national_id_check_digit};
use medsettle::proto;
use medsettle::proto::filing_service_client::FilingServiceClient;
use medsettle::proto::ledger_service_client::LedgerServiceClient;
use medsettle::proto::registry_service_client::RegistryServiceClient;
use medsettle::service::App;
use medsettle::service::auth::{Grant, issue};
use medsettle::store::{Db, DbConfig};
use sqlx::Connection;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};
use tonic_types::StatusExt;

// ------------------------------------------------------------------------------------ engines

/// The database engine a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub const PG_ENV: &str = "MEDSETTLE_TEST_POSTGRES_URL";
pub const PG_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// True (after printing why) when PostgreSQL tests are to be skipped
/// (`MEDSETTLE_TEST_POSTGRES_URL=skip`).
pub fn skip_postgres() -> bool {
    if std::env::var(PG_ENV).is_ok_and(|v| v == "skip") {
        println!("skipped: {PG_ENV}=skip");
        true
    } else {
        false
    }
}

/// True when a test on `b` must be skipped; call first thing in a test (the
/// [`both_engines!`] macro does it for you).
pub fn skip(b: Backend) -> bool {
    b == Backend::Postgres && skip_postgres()
}

pub fn pg_admin_url() -> String {
    std::env::var(PG_ENV)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| PG_DEFAULT.to_owned())
}

/// `url` with its database name replaced by `db` (query string kept).
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{db}", &base[..authority_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// For each `async fn name(b: Backend)`, generates the tests `name::sqlite` and `name::postgres`
/// (a module named like the function: macro_rules cannot paste identifiers, so the engine is the
/// last path segment; filter with `cargo nextest run sqlite`). The PostgreSQL variant honours
/// `MEDSETTLE_TEST_POSTGRES_URL=skip`.
macro_rules! both_engines {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::common::Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if $crate::common::skip($crate::common::Backend::Postgres) {
                        return;
                    }
                    super::$name($crate::common::Backend::Postgres).await;
                }
            }
        )+
    };
}

/// What a test server must clean up when dropped.
enum Cleanup {
    SqliteDir(PathBuf),
    PostgresDb { admin_url: String, name: String },
}

fn random_hex(bytes: usize) -> String {
    let v: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    hex::encode(v)
}

// ------------------------------------------------------------------------------------ server

/// A running server on its own fresh database.
pub struct TestServer {
    pub backend: Backend,
    pub db: Db,
    pub app: Arc<App>,
    pub addr: SocketAddr,
    pub channel: Channel,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    cleanup: Option<Cleanup>,
}

impl TestServer {
    /// Starts a server on a fresh database of engine `backend`.
    pub async fn start(backend: Backend) -> TestServer {
        let (url, cleanup) = match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(format!("medsettle-test-{}", random_hex(8)));
                std::fs::create_dir_all(&dir).expect("creating the SQLite temp dir");
                (
                    format!("sqlite://{}/t.db", dir.display()),
                    Cleanup::SqliteDir(dir),
                )
            }
            Backend::Postgres => {
                let admin_url = pg_admin_url();
                let name = format!("ms_t_{}", random_hex(8));
                let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL is unreachable at {admin_url} ({e}); start it, point {PG_ENV} at it, \
                         or set {PG_ENV}=skip"
                    )
                });
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .await
                    .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on {admin_url}: {e}"));
                let _ = admin.close().await;
                (
                    with_database(&admin_url, &name),
                    Cleanup::PostgresDb { admin_url, name },
                )
            }
        };
        // From here on, a panic still drops the database / removes the directory.
        let mut guard = CleanupGuard(Some(cleanup));
        let db = Db::open(&DbConfig {
            url: url.clone(),
            max_connections: 8,
        })
        .await
        .unwrap_or_else(|e| panic!("Db::open({url}): {e:#}"));
        let expected = match backend {
            Backend::Sqlite => medsettle::store::Engine::Sqlite,
            Backend::Postgres => medsettle::store::Engine::Postgres,
        };
        assert_eq!(
            db.engine(),
            expected,
            "the test database runs on the wrong engine"
        );
        let app = Arc::new(App::new(db.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(medsettle::server::run(listener, app.clone(), async move {
            let _ = rx.await;
        }));
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .connect_lazy();
        let ts = TestServer {
            backend,
            db,
            app,
            addr,
            channel,
            shutdown: Some(tx),
            handle: Some(handle),
            cleanup: guard.0.take(),
        };
        ts.wait_ready().await;
        ts
    }

    /// Waits until the server answers gRPC (any status that is not a transport failure).
    async fn wait_ready(&self) {
        let mut client = RegistryServiceClient::new(self.channel.clone());
        for _ in 0..200 {
            match client
                .get_region(proto::GetRegionRequest {
                    code: "150300".into(),
                })
                .await
            {
                Err(s) if s.code() == Code::Unavailable || s.code() == Code::Unknown => {
                    if self.handle.as_ref().is_some_and(|h| h.is_finished()) {
                        panic!("the server task ended before serving: {s}");
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                _ => return,
            }
        }
        panic!("the server at {} did not become ready", self.addr);
    }

    /// Stops the server gracefully and returns what `server::run` returned.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.handle.take() {
            Some(h) => tokio::time::timeout(Duration::from_secs(20), h)
                .await
                .map_err(|_| anyhow::anyhow!("server did not stop within 20 s"))?
                .map_err(|e| anyhow::anyhow!("server task: {e}"))?,
            None => Ok(()),
        }
    }

    // ------------------------------------------------------------------ principals

    /// Issues a token straight in the database (as `medsettle token issue` does).
    pub async fn token(&self, grant: Grant) -> String {
        let (_id, token) = issue(&self.db, &grant, "e2e test")
            .await
            .expect("issuing a token");
        token
    }

    /// A new operator.
    pub async fn operator(&self) -> Caller {
        let token = self.token(Grant::Operator).await;
        self.caller(Some(&token))
    }

    /// The bureau of `region` (a 6-digit code).
    pub async fn bureau(&self, region: &str) -> Caller {
        let r = RegionCode::parse("region", region).expect("a valid region code");
        let token = self.token(Grant::Bureau(r)).await;
        self.caller(Some(&token))
    }

    /// The institution `code` ("H…" or "P…").
    pub async fn institution(&self, code: &str) -> Caller {
        let c = InstitutionCode::parse("code", code).expect("a valid institution code");
        let token = self.token(Grant::Institution(c)).await;
        self.caller(Some(&token))
    }

    /// Clients that send `authorization: Bearer <token>` (or nothing for `None`).
    pub fn caller(&self, token: Option<&str>) -> Caller {
        let bearer = Bearer(token.map(|t| {
            format!("Bearer {t}")
                .parse::<MetadataValue<Ascii>>()
                .expect("ASCII token")
        }));
        Caller {
            channel: self.channel.clone(),
            bearer,
        }
    }

    /// Clients sending no authorization at all.
    pub fn anonymous(&self) -> Caller {
        self.caller(None)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.abort();
        }
        drop(CleanupGuard(self.cleanup.take()));
    }
}

/// Removes a test database or directory when dropped (also on panic).
struct CleanupGuard(Option<Cleanup>);

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        match self.0.take() {
            None => {}
            Some(Cleanup::SqliteDir(dir)) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Some(Cleanup::PostgresDb { admin_url, name }) => {
                // Drop is synchronous and may run inside a runtime: use a thread with its own.
                let joined = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build();
                    let Ok(rt) = rt else { return };
                    rt.block_on(async move {
                        if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
                            let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                            if let Err(e) = sqlx::query(&sql).execute(&mut admin).await {
                                eprintln!("warning: {sql}: {e}");
                            }
                            let _ = admin.close().await;
                        }
                    });
                })
                .join();
                if joined.is_err() {
                    eprintln!("warning: dropping the test database panicked");
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------------ clients

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub type Registry = RegistryServiceClient<InterceptedService<Channel, Bearer>>;
pub type Filings = FilingServiceClient<InterceptedService<Channel, Bearer>>;
pub type Ledger = LedgerServiceClient<InterceptedService<Channel, Bearer>>;

/// One principal's clients. `reg()`, `fil()` and `led()` hand out fresh (cheap) clients.
#[derive(Clone)]
pub struct Caller {
    channel: Channel,
    bearer: Bearer,
}

impl Caller {
    pub fn reg(&self) -> Registry {
        RegistryServiceClient::with_interceptor(self.channel.clone(), self.bearer.clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    pub fn fil(&self) -> Filings {
        FilingServiceClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    pub fn led(&self) -> Ledger {
        LedgerServiceClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }
}

// ------------------------------------------------------------------------------------ results

/// Assertions on the result of an RPC.
pub trait RpcExt<T> {
    /// The response message; panics with the status otherwise.
    fn must(self) -> T;
    /// The status, asserting its code; panics if the call succeeded or the code differs.
    fn code_is(self, code: Code) -> Status;
    /// Asserts INVALID_ARGUMENT with a google.rpc.BadRequest violation on exactly `field`.
    fn invalid(self, field: &str) -> Status;
}

impl<T: std::fmt::Debug> RpcExt<T> for Result<Response<T>, Status> {
    #[track_caller]
    fn must(self) -> T {
        match self {
            Ok(r) => r.into_inner(),
            Err(s) => panic!(
                "expected OK, got {:?}: {}{}",
                s.code(),
                s.message(),
                violations(&s)
            ),
        }
    }

    #[track_caller]
    fn code_is(self, code: Code) -> Status {
        match self {
            Ok(r) => panic!("expected {code:?}, got OK: {:?}", r.into_inner()),
            Err(s) => {
                assert_eq!(
                    s.code(),
                    code,
                    "expected {code:?}, got {:?}: {}{}",
                    s.code(),
                    s.message(),
                    violations(&s)
                );
                s
            }
        }
    }

    #[track_caller]
    fn invalid(self, field: &str) -> Status {
        let s = self.code_is(Code::InvalidArgument);
        let fields = violated_fields(&s);
        assert!(
            fields.iter().any(|f| f == field),
            "expected a BadRequest violation on {field:?}, got fields {fields:?} ({})",
            s.message()
        );
        s
    }
}

/// The fields named by a status's google.rpc.BadRequest details.
pub fn violated_fields(s: &Status) -> Vec<String> {
    s.get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

fn violations(s: &Status) -> String {
    let f = violated_fields(s);
    if f.is_empty() {
        String::new()
    } else {
        format!(" (fields {f:?})")
    }
}

// ------------------------------------------------------------------------------------ data

/// A fresh request id.
pub fn rid() -> String {
    format!("t-{}", random_hex(12))
}

/// A valid GB 11643 national ID: 6-digit area + YYYYMMDD + 3-digit sequence + check character.
pub fn national_id(area: &str, birth: &str, seq: u32) -> String {
    let body = format!("{area}{birth}{seq:03}");
    let check = national_id_check_digit(&body).unwrap_or_else(|| panic!("bad ID body {body:?}"));
    format!("{body}{check}")
}

/// The same ID with a wrong check character.
pub fn with_wrong_check_digit(id: &str) -> String {
    let (body, check) = id.split_at(17);
    let wrong = if check == "0" { '1' } else { '0' };
    format!("{body}{wrong}")
}

/// Today's business date (UTC+8), YYYY-MM-DD.
pub fn today() -> chrono::NaiveDate {
    (chrono::Utc::now() + chrono::Duration::hours(8)).date_naive()
}

pub fn ymd(d: chrono::NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

/// Strictly parses a yuan amount as the service formats it ("-12.30") into fen.
#[track_caller]
pub fn fen(s: &str) -> i64 {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s),
    };
    let (int, frac) = digits
        .split_once('.')
        .unwrap_or_else(|| panic!("amount {s:?} has no 2 decimals"));
    assert!(
        !int.is_empty()
            && int.bytes().all(|b| b.is_ascii_digit())
            && frac.len() == 2
            && frac.bytes().all(|b| b.is_ascii_digit()),
        "amount {s:?} is not formatted as yuan with exactly 2 decimals"
    );
    let v = int.parse::<i64>().unwrap() * 100 + frac.parse::<i64>().unwrap();
    if neg { -v } else { v }
}

/// Canonical form of a decimal string (trailing fractional zeros trimmed): "0.10" → "0.1", "3.00" → "3".
pub fn canon(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s.to_owned()
    }
}

// ------------------------------------------------------------------------------------ fixtures

/// Creates a region as an operator (GB/T 2260 default name).
pub async fn create_region(op: &Caller, code: &str) -> proto::Region {
    op.reg()
        .create_region(proto::CreateRegionRequest {
            request_id: rid(),
            code: code.into(),
            name: String::new(),
            bureau_name: String::new(),
        })
        .await
        .must()
}

pub fn hospital(code: &str, region: &str, level: u32) -> proto::RegisterInstitutionRequest {
    proto::RegisterInstitutionRequest {
        request_id: rid(),
        code: code.into(),
        name: format!("测试医院 {code}"),
        region: region.into(),
        kind: proto::InstitutionKind::Hospital as i32,
        level,
        cross_region_enabled: true,
        valid_from: "2026-01-01".into(),
        valid_until: String::new(),
    }
}

pub fn pharmacy(code: &str, region: &str) -> proto::RegisterInstitutionRequest {
    proto::RegisterInstitutionRequest {
        request_id: rid(),
        code: code.into(),
        name: format!("测试药店 {code}"),
        region: region.into(),
        kind: proto::InstitutionKind::Pharmacy as i32,
        level: 0,
        cross_region_enabled: true,
        valid_from: "2026-01-01".into(),
        valid_until: String::new(),
    }
}

pub fn ins(t: proto::InsuranceType, c: proto::PersonCategory) -> proto::PersonInsurance {
    proto::PersonInsurance {
        insurance_type: t as i32,
        category: c as i32,
        status: 0,
    }
}

/// An enrolment of an active employee (310) with an opening balance.
pub fn employee(national_id: &str, home: &str, opening: &str) -> proto::EnrolPersonRequest {
    proto::EnrolPersonRequest {
        request_id: rid(),
        national_id: national_id.into(),
        name: "张三".into(),
        home_region: home.into(),
        insurances: vec![ins(
            proto::InsuranceType::Employee,
            proto::PersonCategory::Active,
        )],
        card_no: String::new(),
        evoucher_token: String::new(),
        assistance_recipient: false,
        opening_balance: opening.into(),
    }
}

/// An enrolment of a resident (390 only), who has no personal account.
pub fn resident(national_id: &str, home: &str) -> proto::EnrolPersonRequest {
    proto::EnrolPersonRequest {
        request_id: rid(),
        national_id: national_id.into(),
        name: "李四".into(),
        home_region: home.into(),
        insurances: vec![ins(
            proto::InsuranceType::Resident,
            proto::PersonCategory::Resident,
        )],
        card_no: String::new(),
        evoucher_token: String::new(),
        assistance_recipient: false,
        opening_balance: String::new(),
    }
}

pub fn deposit(psn_no: &str, amount: &str) -> proto::DepositPersonalAccountRequest {
    proto::DepositPersonalAccountRequest {
        request_id: rid(),
        psn_no: psn_no.into(),
        amount: amount.into(),
        memo: "2026-11 contribution".into(),
    }
}

pub async fn get_person(c: &Caller, psn_no: &str) -> proto::Person {
    c.reg()
        .get_person(proto::GetPersonRequest {
            key: Some(proto::get_person_request::Key::PsnNo(psn_no.into())),
        })
        .await
        .must()
}

pub async fn balance(c: &Caller, account: &str) -> proto::Balance {
    c.led()
        .get_balance(proto::GetBalanceRequest {
            account: account.into(),
        })
        .await
        .must()
}

/// Every item of a paged listing: `page(token)` fetches one page, its items and the next token
/// ("" after the last). Bounded, so a listing that never ends fails rather than hangs.
pub async fn all_pages<T, Fut>(what: &str, mut page: impl FnMut(String) -> Fut) -> Vec<T>
where
    Fut: std::future::Future<Output = (Vec<T>, String)>,
{
    let (mut out, mut token) = (Vec::new(), String::new());
    for _ in 0..10_000 {
        let (items, next) = page(token).await;
        out.extend(items);
        if next.is_empty() {
            return out;
        }
        token = next;
    }
    panic!("{what} never ends");
}

/// Every transaction ListJournal lists for `account` ("" = the whole journal), page by page.
pub async fn journal_pages(
    op: &Caller,
    account: &str,
    page_size: u32,
) -> Vec<proto::JournalTransaction> {
    let what = format!("ListJournal of {account:?} (pages of {page_size})");
    all_pages(&what, |token| async move {
        let page = op
            .led()
            .list_journal(proto::ListJournalRequest {
                account: account.into(),
                page_size,
                page_token: token,
            })
            .await
            .must();
        (page.transactions, page.next_page_token)
    })
    .await
}

/// Runs SQL statements straight on the server's database, in one transaction (as a tamperer or
/// an older version of medsettle would); returns the rows each one changed.
pub async fn raw_sql(ts: &TestServer, sqls: &[&str]) -> Vec<u64> {
    let mut conn = ts.db.begin().await.expect("begin");
    let mut changed = Vec::new();
    for sql in sqls {
        let n = medsettle::on_conn!(&mut conn, x => sqlx::query(sql).execute(x).await.map(|r| r.rows_affected()))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        changed.push(n);
    }
    conn.commit().await.expect("commit");
    changed
}

/// LedgerService/Verify as a fresh operator: every check must pass.
pub async fn verify_ok(ts: &TestServer) {
    let op = ts.operator().await;
    let v = op.led().verify(proto::VerifyRequest {}).await.must();
    if !v.ok || v.checks.is_empty() || v.checks.iter().any(|c| !c.ok) {
        for c in &v.checks {
            eprintln!("verify check {:<40} ok={:<5} {}", c.name, c.ok, c.detail);
        }
        panic!(
            "LedgerService/Verify is not ok (ok={}, {} checks)",
            v.ok,
            v.checks.len()
        );
    }
}

//! `medsettle bench`: a load generator over real gRPC. It starts the server in-process on
//! 127.0.0.1:0 against the given database (default: a fresh SQLite file), seeds a small world
//! through the API (regions, P pharmacies, a hospital, N insured persons with cards and personal
//! accounts, a catalogue, a policy, filings), then drives a mix of pharmacy swipes and full
//! hospital flows either at a fixed concurrency (closed loop) or at a fixed offered rate (open
//! loop, latency measured from the intended send time, so a stall is not hidden), and reports
//! throughput and latency percentiles (HdrHistogram), optionally as JSON.
//!
//! With `--server-process` the server runs as a child `medsettle serve` instead, so the two
//! processes' CPU time can be told apart (read from /proc for the measured window): the
//! server's own cost per swipe, without the load generator's share of the cores.

use crate::domain::ids::{InstitutionCode, national_id_check_digit};
use crate::proto::registry_service_client::RegistryServiceClient;
use crate::proto::settlement_service_client::SettlementServiceClient;
use crate::proto::{self as pb};
use crate::service::App;
use crate::service::auth::{self, Grant};
use crate::store::{Db, DbConfig, Engine};
use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// How load is offered.
#[derive(Debug, Clone, Copy)]
pub enum Load {
    /// Closed loop: this many requests in flight at all times.
    Concurrency(usize),
    /// Open loop: this many requests per second, whatever the latency.
    Rate(u64),
}

#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// None = a fresh SQLite file in the temp directory.
    pub database_url: Option<String>,
    pub db_max_connections: u32,
    pub persons: usize,
    pub load: Load,
    pub warmup: Duration,
    pub duration: Duration,
    /// Share of operations that are full hospital flows (open, upload, settle), 0..=100.
    pub hospital_percent: u8,
    /// Persons a bureau enrols each second while the load runs (new persons, in one EnrolPersons
    /// call a second, as bureaus enrol during the day); 0 for none.
    pub enrol_per_s: usize,
    /// gRPC connections the clients spread over.
    pub connections: usize,
    /// Where the server runs.
    pub server: ServerMode,
    /// Pharmacies the swipes spread over (each with its own token and request-id sequence).
    pub pharmacies: usize,
    /// How swipe request ids are made.
    pub request_ids: RequestIds,
}

/// How the load generator makes its swipes' request ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestIds {
    /// As NHSA callers make a message id (报文ID): the institution code, the local time to the
    /// second and the institution's own sequence number, so each institution's ids ascend.
    Msgid,
    /// 128 random bits: every id lands on a random leaf of the request-id indexes (worst case).
    Random,
}

/// Where the measured server runs.
#[derive(Debug, Clone)]
pub enum ServerMode {
    /// In this process, sharing the runtime with the load generator.
    InProcess,
    /// A child process: this executable's `serve` subcommand.
    Child(std::path::PathBuf),
}

/// The measured outcome.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub engine: String,
    pub load: String,
    pub duration_ms: u64,
    pub completed: u64,
    pub errors: BTreeMap<String, u64>,
    /// Completed operations per second (integer; no floats anywhere in this crate).
    pub throughput_per_s: u64,
    pub swipes: Percentiles,
    pub hospital_flows: Percentiles,
    /// At a fixed rate: how late each request started against its intended send time (its
    /// latency is counted from the intended time, so this much of it is the load generator's).
    pub sends_late: Percentiles,
    /// "in-process" or "child process".
    pub server: String,
    /// CPU time (user + system, ms) over the measured window: the server process (None when it
    /// runs in-process) and this process (the load generator, plus the server when in-process).
    pub server_cpu_ms: Option<u64>,
    pub bench_cpu_ms: Option<u64>,
    /// Server CPU time per swipe (µs), when the server is a child process.
    pub server_cpu_us_per_op: Option<u64>,
    /// Bytes the server's process sent to storage over the measured window (its WAL and
    /// checkpoint writes on SQLite; with the server in-process, this process's, and the load
    /// generator writes nothing), from `write_bytes` in /proc/PID/io; per completed operation.
    /// None where it cannot be read, and on PostgreSQL (the database server writes, not medsettle).
    pub server_disk_bytes_per_op: Option<u64>,
    /// The whole machine's CPU over the measured window (every core), from /proc/stat; None
    /// where it cannot be read. Read it before the latencies: on a virtual machine `steal` is time
    /// its virtual CPUs were ready to run while the host ran someone else's, and a run with much
    /// of it measured the host's contention as much as medsettle.
    pub host_cpu: Option<HostCpu>,
    /// How fast this machine ran a fixed piece of work (µs; [`calibrate`]) just before the
    /// server started and just after the measured window: the same build on a machine (or in a
    /// spell) twice as slow reports twice the time, so rounds of different sittings can be told
    /// apart by it — which `steal` alone does not do, a host's other guests also slow this one
    /// down through the caches and memory they share.
    pub calibration_us: [u64; 2],
    /// CPU by thread over the measured window, per completed operation: the server's threads
    /// (when it is a child process) and this process's (the load generator's, and the server's
    /// when in-process), each kind of thread (by name) summed. Empty where /proc cannot be read.
    pub threads: Vec<ThreadCpu>,
}

/// Times a fixed single-threaded piece of work — 2^19 pseudo-random integers generated, sorted
/// and summed (4 MiB of memory: both the core and its caches count) — three times, and answers
/// the median in µs (11–17 ms on this project's 2-core machine in a slow sitting, release build).
pub fn calibrate() -> u64 {
    let mut times: Vec<u64> = (0..3)
        .map(|_| {
            let started = std::time::Instant::now();
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            let mut v: Vec<u64> = (0..1u32 << 19)
                .map(|_| {
                    // A 64-bit linear congruential generator (Knuth's MMIX constants).
                    x = x
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    x >> 11
                })
                .collect();
            v.sort_unstable();
            std::hint::black_box(v.iter().fold(0u64, |a, b| a.wrapping_add(*b)));
            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
        })
        .collect();
    times.sort_unstable();
    times.get(1).copied().unwrap_or(0)
}

/// Shares of the machine's CPU time over the measured window, in per mille of all of it (they
/// add up to 1,000 but for rounding).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct HostCpu {
    /// User, system and interrupt time: this run's processes and anything else running.
    pub busy_permille: u64,
    /// Idle, or idle waiting for I/O.
    pub idle_permille: u64,
    /// Stolen: runnable, but the hypervisor ran another guest.
    pub steal_permille: u64,
}

/// Above this share stolen by the host (5 %), `bench` warns that its latencies measured a
/// contended machine.
pub const STEAL_WARN_PERMILLE: u64 = 50;

/// What the threads of one name in one process spent over the measured window, per completed
/// operation, from /proc/PID/task/TID/schedstat (Linux): time on a core, and time runnable but
/// waiting for one — on a machine shared with the load generator, the queue every stage of a
/// request stands in.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ThreadCpu {
    /// "server" (the child process) or "bench" (this process).
    pub process: &'static str,
    /// The thread's name (e.g. `swipe-writer`, `tokio-rt-worker`).
    pub name: String,
    /// Threads of that name that ran in the window.
    pub threads: u64,
    pub run_us_per_op: u64,
    pub wait_us_per_op: u64,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Percentiles {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Clone)]
pub(crate) struct Auth(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

pub(crate) fn with_token(
    channel: Channel,
    token: &str,
) -> anyhow::Result<InterceptedService<Channel, Auth>> {
    let value = format!("Bearer {token}")
        .parse()
        .context("token is not ASCII")?;
    Ok(InterceptedService::new(channel, Auth(value)))
}

/// What the load generator reads of a swipe's answer (a `pb::Purchase`): its settlement's id,
/// which must be there. The whole answer still arrives and is parsed, field by field; prost skips
/// the fields not declared here rather than building them — ≈ 100 strings an answer, built to be
/// thrown away, were ≈ 40 % of the load generator's instructions a swipe (BENCHMARKS.md, session
/// 31), CPU taken from the server it shares the machine with.
#[derive(Clone, PartialEq, prost::Message)]
struct PurchaseReceipt {
    #[prost(message, optional, tag = "1")]
    settlement: Option<SettlementReceipt>,
}

/// The part of a `pb::Settlement` the load generator reads.
#[derive(Clone, PartialEq, prost::Message)]
struct SettlementReceipt {
    #[prost(string, tag = "1")]
    setl_id: String,
}

/// A pharmacy's gRPC client: `PharmacyService.SettlePurchase` answered as a [`PurchaseReceipt`].
type PharmacyClient = tonic::client::Grpc<InterceptedService<Channel, Auth>>;

/// SettlePurchase over `client`: the booked settlement's id.
async fn settle_purchase(
    client: &mut PharmacyClient,
    request: pb::SettlePurchaseRequest,
) -> Result<String, tonic::Status> {
    client
        .ready()
        .await
        .map_err(|e| tonic::Status::unknown(format!("service was not ready: {e}")))?;
    let path = http::uri::PathAndQuery::from_static("/medsettle.v1.PharmacyService/SettlePurchase");
    let receipt: PurchaseReceipt = client
        .unary(
            tonic::Request::new(request),
            path,
            tonic_prost::ProstCodec::default(),
        )
        .await?
        .into_inner();
    receipt
        .settlement
        .map(|s| s.setl_id)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| tonic::Status::internal("the answer holds no settlement id"))
}

/// A pharmacy of the benchmark: its clients (one per connection) and its request-id sequence.
struct Pharmacy {
    code: String,
    clients: Vec<PharmacyClient>,
    seq: AtomicU64,
}

impl Pharmacy {
    /// The next request id of this pharmacy's swipes.
    fn request_id(&self, ids: RequestIds) -> String {
        match ids {
            RequestIds::Random => rid(),
            RequestIds::Msgid => {
                let n = self.seq.fetch_add(1, Ordering::Relaxed);
                let local = chrono::Utc::now() + chrono::Duration::hours(8);
                format!("{}{}{n:08}", self.code, local.format("%Y%m%d%H%M%S"))
            }
        }
    }
}

struct World {
    pharmacies: Vec<Pharmacy>,
    request_ids: RequestIds,
    hospital: Vec<SettlementServiceClient<InterceptedService<Channel, Auth>>>,
    cards: Vec<String>,
    ids: Vec<String>,
    codes: Vec<(String, String)>,
    /// The bureau's operator, for enrolments during the run.
    registry: Registry,
}

type Registry = RegistryServiceClient<InterceptedService<Channel, Auth>>;

const HOME: &str = "150300";
const TREAT: &str = "150600";
const HOSPITAL: &str = "H15060000001";
const CATALOGUE_ITEMS: usize = 500;

pub(crate) fn rid() -> String {
    format!("b{:032x}", rand::random::<u128>())
}

/// Persons enrolled in one EnrolPersons call (its limit is 5,000).
const ENROL_CHUNK: usize = 1_000;

/// Birth dates the bench's persons are spread over: every day of 1950–1999.
const BIRTH_DAYS: usize = 18_262;

/// A valid national ID for person number `i`, distinct for each `i` below 18,262,000: the `i`-th
/// birth date in turn (from 1950-01-01), with sequence number `i / BIRTH_DAYS` (three digits).
pub(crate) fn national_id(i: usize) -> String {
    let born = chrono::NaiveDate::from_ymd_opt(1950, 1, 1)
        .and_then(|d| d.checked_add_days(chrono::Days::new((i % BIRTH_DAYS) as u64)))
        .unwrap_or_default();
    let body = format!(
        "150302{}{:03}",
        born.format("%Y%m%d"),
        (i / BIRTH_DAYS) % 1000
    );
    let check = national_id_check_digit(&body).unwrap_or('0');
    format!("{body}{check}")
}

/// The code of bench pharmacy `i` (0-based).
fn pharmacy_code(i: usize) -> String {
    format!("P150600{:05}", i + 1)
}

async fn seed(
    channels: &[Channel],
    db: &Db,
    persons: usize,
    pharmacies: usize,
    request_ids: RequestIds,
) -> anyhow::Result<World> {
    let (_, operator) = auth::issue(db, &Grant::Operator, "bench").await?;
    let hospital_code = InstitutionCode::parse("hospital", HOSPITAL)?;
    let (_, hospital_token) = auth::issue(db, &Grant::Institution(hospital_code), "bench").await?;
    let mut reg = RegistryServiceClient::new(with_token(channels[0].clone(), &operator)?);

    for code in [HOME, TREAT] {
        let r = reg
            .create_region(pb::CreateRegionRequest {
                request_id: rid(),
                code: code.into(),
                ..Default::default()
            })
            .await;
        if let Err(s) = r
            && s.code() != tonic::Code::AlreadyExists
        {
            return Err(s).context("creating regions");
        }
    }
    let mut institutions = vec![(
        HOSPITAL.to_owned(),
        pb::InstitutionKind::Hospital,
        3,
        "鄂尔多斯市中心医院".to_owned(),
    )];
    for i in 0..pharmacies {
        institutions.push((
            pharmacy_code(i),
            pb::InstitutionKind::Pharmacy,
            0,
            format!("鄂尔多斯市大药房第{}店", i + 1),
        ));
    }
    let mut pharmacy = Vec::with_capacity(pharmacies);
    for (code, kind, level, name) in institutions {
        reg.register_institution(pb::RegisterInstitutionRequest {
            request_id: rid(),
            code: code.clone(),
            name,
            region: TREAT.into(),
            kind: kind as i32,
            level,
            cross_region_enabled: true,
            valid_from: "2020-01-01".into(),
            valid_until: String::new(),
        })
        .await
        .context("registering institutions")?;
        if kind == pb::InstitutionKind::Pharmacy {
            let grant = Grant::Institution(InstitutionCode::parse("pharmacy", &code)?);
            let (_, token) = auth::issue(db, &grant, "bench").await?;
            pharmacy.push(Pharmacy {
                code,
                clients: channels
                    .iter()
                    .map(|c| with_token(c.clone(), &token).map(tonic::client::Grpc::new))
                    .collect::<anyhow::Result<_>>()?,
                seq: AtomicU64::new(0),
            });
        }
    }
    let rule = |care: pb::CareType, basis: pb::DeductibleBasis, deductible: &str, ratio: &str| {
        pb::PolicyRule {
            insurance_type: pb::InsuranceType::Employee as i32,
            category: pb::PersonCategory::Active as i32,
            care_type: care as i32,
            level: pb::LevelScope::Any as i32,
            province_scope: pb::ProvinceScope::Any as i32,
            deductible_basis: basis as i32,
            deductible: deductible.into(),
            repeat_admission_deductible: String::new(),
            ratio: ratio.into(),
            annual_cap: "150000.00".into(),
            critical_illness: None,
            assistance: None,
        }
    };
    reg.put_policy(pb::PutPolicyRequest {
        request_id: rid(),
        region: HOME.into(),
        effective_from: "2020-01-01".into(),
        body: Some(pb::PolicyBody {
            rules: vec![
                rule(
                    pb::CareType::Inpatient,
                    pb::DeductibleBasis::PerAdmission,
                    "800.00",
                    "0.85",
                ),
                rule(
                    pb::CareType::Pharmacy,
                    pb::DeductibleBasis::Annual,
                    "100.00",
                    "0.50",
                ),
            ],
            unfiled_allowed: true,
            unfiled_reduction: Some(pb::Reduction {
                kind: Some(pb::reduction::Kind::Factor("0.90".into())),
            }),
            pharmacy_national: false,
            ..Default::default()
        }),
    })
    .await
    .context("putting the policy")?;
    let items: Vec<pb::CatalogueItem> = (0..CATALOGUE_ITEMS)
        .map(|i| {
            let class = match i % 10 {
                0..=5 => pb::CatalogueClass::A,
                6..=8 => pb::CatalogueClass::B,
                _ => pb::CatalogueClass::C,
            };
            pb::CatalogueItem {
                code: format!("XA{i:05}"),
                name: format!("药品{i}"),
                kind: pb::CatalogueKind::Drug as i32,
                class: class as i32,
                b_self_pay_ratio: if class == pb::CatalogueClass::B {
                    "0.10".into()
                } else {
                    String::new()
                },
                price_cap: if i % 7 == 0 {
                    "50.00".into()
                } else {
                    String::new()
                },
                effective_from: "2020-01-01".into(),
                ..Default::default()
            }
        })
        .collect();
    reg.upsert_catalogue(pb::UpsertCatalogueRequest {
        request_id: rid(),
        region: TREAT.into(),
        items,
    })
    .await
    .context("upserting the catalogue")?;
    let codes = (0..CATALOGUE_ITEMS)
        .map(|i| {
            (
                format!("XA{i:05}"),
                format!("{}.{:02}", 5 + i % 60, i % 100),
            )
        })
        .collect();

    // Enrolled as a bureau enrols many: EnrolPersons, a chunk at a time (one transaction each).
    let started = Instant::now();
    let mut cards = Vec::with_capacity(persons);
    let mut ids = Vec::with_capacity(persons);
    let mut registry = RegistryServiceClient::new(with_token(channels[0].clone(), &operator)?)
        .max_encoding_message_size(usize::MAX);
    for start in (0..persons).step_by(ENROL_CHUNK) {
        for (card, id) in enrol(&mut registry, start..(start + ENROL_CHUNK).min(persons)).await? {
            cards.push(card);
            ids.push(id);
        }
    }
    eprintln!(
        "seeded {persons} persons in {} ms",
        started.elapsed().as_millis()
    );

    Ok(World {
        pharmacies: pharmacy,
        request_ids,
        hospital: channels
            .iter()
            .map(|c| with_token(c.clone(), &hospital_token).map(SettlementServiceClient::new))
            .collect::<anyhow::Result<_>>()?,
        cards,
        ids,
        codes,
        registry,
    })
}

/// Enrols the bench's persons `range` (at most 5,000) in one EnrolPersons call, as a bureau
/// enrols many; their (card, national ID).
async fn enrol(
    registry: &mut Registry,
    range: std::ops::Range<usize>,
) -> anyhow::Result<Vec<(String, String)>> {
    let persons: Vec<(String, String)> = range
        .map(|i| (format!("K{i:09}"), national_id(i)))
        .collect();
    let batch = persons
        .iter()
        .map(|(card, id)| pb::EnrolPersonRequest {
            national_id: id.clone(),
            name: "测试".into(),
            home_region: HOME.into(),
            insurances: vec![pb::PersonInsurance {
                insurance_type: pb::InsuranceType::Employee as i32,
                category: pb::PersonCategory::Active as i32,
                status: 0,
            }],
            card_no: card.clone(),
            opening_balance: "1000000.00".into(),
            ..Default::default()
        })
        .collect();
    let answered = registry
        .enrol_persons(pb::EnrolPersonsRequest {
            request_id: rid(),
            persons: batch,
        })
        .await
        .context("enrolling persons")?
        .into_inner();
    if answered.created as usize != persons.len() {
        let first = answered
            .results
            .iter()
            .find(|r| r.outcome != pb::BatchItemOutcome::Created as i32);
        anyhow::bail!(
            "enrolling persons: {} of {} enrolled; the first refused: {first:?}",
            answered.created,
            persons.len()
        );
    }
    Ok(persons)
}

fn lines(codes: &[(String, String)], n: usize) -> Vec<(String, String, String)> {
    (0..n)
        .map(|k| {
            let (code, price) = &codes[rand::random_range(0..codes.len())];
            (format!("{}", k + 1), code.clone(), price.clone())
        })
        .collect()
}

async fn swipe(w: &World, k: usize) -> Result<(), tonic::Status> {
    let n = w.pharmacies.len();
    let pharmacy = &w.pharmacies[k % n];
    let mut client = pharmacy.clients[(k / n) % pharmacy.clients.len()].clone();
    let card = w.cards[rand::random_range(0..w.cards.len())].clone();
    let lines = lines(&w.codes, rand::random_range(1..=5))
        .into_iter()
        .map(|(line_no, code, unit_price)| pb::PurchaseLine {
            line_no,
            code,
            name: String::new(),
            quantity: "2".into(),
            unit_price,
        })
        .collect();
    let request = pb::SettlePurchaseRequest {
        request_id: pharmacy.request_id(w.request_ids),
        credential: Some(pb::CardCredential {
            credential: Some(pb::card_credential::Credential::CardNo(card)),
        }),
        insurance_type: pb::InsuranceType::Employee as i32,
        lines,
        use_account: true,
        ..Default::default()
    };
    settle_purchase(&mut client, request).await.map(|_| ())
}

async fn hospital_flow(w: &World, k: usize) -> Result<(), tonic::Status> {
    let mut client = w.hospital[k % w.hospital.len()].clone();
    let id = w.ids[rand::random_range(0..w.ids.len())].clone();
    let visit = client
        .open_visit(pb::OpenVisitRequest {
            request_id: rid(),
            credential: Some(pb::PatientCredential {
                credential: Some(pb::patient_credential::Credential::NationalId(id)),
            }),
            visit_no: rid(),
            insurance_type: pb::InsuranceType::Employee as i32,
            care_type: pb::CareType::Inpatient as i32,
            diagnoses: vec!["J18.9".into()],
            begin_date: String::new(),
        })
        .await?
        .into_inner();
    let fee_lines = lines(&w.codes, 20)
        .into_iter()
        .map(|(line_no, code, unit_price)| pb::FeeLine {
            line_no,
            code,
            quantity: "3".into(),
            unit_price,
            ..Default::default()
        })
        .collect();
    client
        .upload_fee_lines(pb::UploadFeeLinesRequest {
            request_id: rid(),
            mdtrt_id: visit.mdtrt_id.clone(),
            lines: fee_lines,
        })
        .await?;
    client
        .settle(pb::SettleRequest {
            request_id: rid(),
            mdtrt_id: visit.mdtrt_id,
            use_account: true,
            expected_total: String::new(),
        })
        .await
        .map(|_| ())
}

/// Recorded latencies (µs) and error counts.
struct Recorder {
    swipes: Mutex<Histogram<u64>>,
    flows: Mutex<Histogram<u64>>,
    sends_late: Mutex<Histogram<u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
    completed: AtomicU64,
    recording: std::sync::atomic::AtomicBool,
}

impl Recorder {
    fn new() -> anyhow::Result<Self> {
        Ok(Recorder {
            swipes: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
            flows: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
            sends_late: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
            errors: Mutex::new(BTreeMap::new()),
            completed: AtomicU64::new(0),
            recording: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Counts a failure of `what` (at any time, warm-up included).
    fn failed(&self, what: &str) {
        if let Ok(mut e) = self.errors.lock() {
            *e.entry(what.to_owned()).or_default() += 1;
        }
    }

    /// An operation's outcome and its latency from `since`; at a fixed rate also how late it
    /// was sent (`since` its intended time, `sent` when it started).
    fn record(
        &self,
        hospital: bool,
        since: Instant,
        sent: Option<Instant>,
        outcome: Result<(), tonic::Status>,
    ) {
        if !self.recording.load(Ordering::Relaxed) {
            return;
        }
        if let (Some(sent), Ok(mut h)) = (sent, self.sends_late.lock()) {
            let late = u64::try_from(sent.saturating_duration_since(since).as_micros());
            h.saturating_record(late.unwrap_or(u64::MAX).max(1));
        }
        let micros = u64::try_from(since.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        match outcome {
            Ok(()) => {
                self.completed.fetch_add(1, Ordering::Relaxed);
                let h = if hospital { &self.flows } else { &self.swipes };
                if let Ok(mut h) = h.lock() {
                    h.saturating_record(micros);
                }
            }
            Err(s) => {
                if let Ok(mut e) = self.errors.lock() {
                    *e.entry(format!("{:?}", s.code())).or_default() += 1;
                }
            }
        }
    }
}

/// The value at `per_mille` ‰ of the recorded samples (integer ranks: no floats in this crate).
fn at_per_mille(h: &Histogram<u64>, per_mille: u64) -> u64 {
    let rank = (h.len() * per_mille).div_ceil(1000).max(1);
    let mut seen = 0u64;
    for v in h.iter_recorded() {
        seen += v.count_at_value();
        if seen >= rank {
            return v.value_iterated_to();
        }
    }
    h.max()
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    Percentiles {
        count: h.len(),
        p50_us: at_per_mille(h, 500),
        p90_us: at_per_mille(h, 900),
        p99_us: at_per_mille(h, 990),
        p999_us: at_per_mille(h, 999),
        max_us: h.max(),
    }
}

async fn one(w: &World, k: usize, hospital_percent: u8) -> (bool, Result<(), tonic::Status>) {
    let hospital = rand::random_range(0..100u8) < hospital_percent;
    let r = if hospital {
        hospital_flow(w, k).await
    } else {
        swipe(w, k).await
    };
    (hospital, r)
}

/// Runs the benchmark.
pub async fn run(cfg: BenchConfig) -> anyhow::Result<BenchResult> {
    let temp_dir =
        std::env::temp_dir().join(format!("medsettle-bench-{:016x}", rand::random::<u64>()));
    let url = match &cfg.database_url {
        Some(u) => u.clone(),
        None => {
            std::fs::create_dir_all(&temp_dir)?;
            format!("sqlite://{}", temp_dir.join("bench.db").display())
        }
    };
    let db = Db::open(&DbConfig {
        url: url.clone(),
        max_connections: cfg.db_max_connections,
    })
    .await?;
    let on_sqlite = db.engine() == Engine::Sqlite;
    let engine = format!("{:?}", db.engine());
    let calibrated_before = tokio::task::spawn_blocking(calibrate).await?;
    let server = Server::start(&cfg.server, &db, &url, cfg.db_max_connections).await?;
    let addr = server.addr;
    let mut channels = Vec::new();
    for _ in 0..cfg.connections.max(1) {
        channels.push(
            Channel::from_shared(format!("http://{addr}"))?
                .connect()
                .await?,
        );
    }
    let world = Arc::new(
        seed(
            &channels,
            &db,
            cfg.persons.max(1),
            cfg.pharmacies.clamp(1, 99_999),
            cfg.request_ids,
        )
        .await?,
    );
    let rec = Arc::new(Recorder::new()?);

    let deadline = Instant::now() + cfg.warmup + cfg.duration;
    let measure_from = Instant::now() + cfg.warmup;
    let usage_at_start = {
        let rec = rec.clone();
        let child = server.pid();
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_from.into()).await;
            rec.recording.store(true, Ordering::Relaxed);
            Usage::now(child)
        })
    };
    // A bureau enrolling meanwhile: one EnrolPersons call a second of new persons.
    let enrolling = (cfg.enrol_per_s > 0).then(|| {
        let (mut registry, rec) = (world.registry.clone(), rec.clone());
        let (per_s, mut next) = (cfg.enrol_per_s.min(5_000), cfg.persons.max(1));
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if Instant::now() >= deadline {
                    break;
                }
                if let Err(e) = enrol(&mut registry, next..next + per_s).await {
                    tracing::warn!(error = %e, "the bench's enrolment failed");
                    rec.failed("enrolment");
                }
                next += per_s;
            }
        })
    });
    match cfg.load {
        Load::Concurrency(n) => {
            let mut workers = Vec::new();
            for k in 0..n.max(1) {
                let (w, rec) = (world.clone(), rec.clone());
                let hp = cfg.hospital_percent;
                workers.push(tokio::spawn(async move {
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        let (hospital, r) = one(&w, k, hp).await;
                        rec.record(hospital, t, None, r);
                    }
                }));
            }
            for w in workers {
                w.await?;
            }
        }
        Load::Rate(per_s) => {
            // Paced by a thread of its own: tokio's timers have a resolution of 1 ms, so its
            // sleeps would send each millisecond's requests together, up to 1 ms late (and their
            // latency counts from the intended time). A thread's sleep ends within tens of µs.
            let interval = Duration::from_nanos(1_000_000_000 / per_s.max(1));
            let in_flight = Arc::new(AtomicU64::new(0));
            let (runtime, hp) = (tokio::runtime::Handle::current(), cfg.hospital_percent);
            let (world, rec, pacer_in_flight) = (world.clone(), rec.clone(), in_flight.clone());
            let pacer = std::thread::Builder::new()
                .name("bench-pacer".into())
                .spawn(move || {
                    let start = Instant::now();
                    for k in 0usize.. {
                        let intended = start + interval * u32::try_from(k).unwrap_or(u32::MAX);
                        if intended >= deadline {
                            break;
                        }
                        std::thread::sleep(intended.saturating_duration_since(Instant::now()));
                        // A stalled server: at most 20,000 requests outstanding.
                        while pacer_in_flight.load(Ordering::Relaxed) > 20_000 {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        pacer_in_flight.fetch_add(1, Ordering::Relaxed);
                        let (w, rec, done) = (world.clone(), rec.clone(), pacer_in_flight.clone());
                        runtime.spawn(async move {
                            let sent = Instant::now();
                            let (hospital, r) = one(&w, k, hp).await;
                            // Latency from the intended send time: a stalled server cannot hide
                            // queueing.
                            rec.record(hospital, intended, Some(sent), r);
                            done.fetch_sub(1, Ordering::Relaxed);
                        });
                    }
                })?;
            tokio::task::spawn_blocking(move || pacer.join())
                .await?
                .map_err(|_| anyhow::anyhow!("the load generator's pacer panicked"))?;
            while in_flight.load(Ordering::Relaxed) > 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    if let Some(enrolling) = enrolling {
        enrolling.await?;
    }
    let (start, end) = (usage_at_start.await?, Usage::now(server.pid()));
    let calibrated_after = tokio::task::spawn_blocking(calibrate).await?;
    let server_kind = server.kind().to_owned();
    server.stop().await?;
    db.close().await;
    if cfg.database_url.is_none() {
        let _ = std::fs::remove_dir_all(&temp_dir);
    }
    let completed = rec.completed.load(Ordering::Relaxed);
    let duration_ms = u64::try_from(cfg.duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    let swipes = rec
        .swipes
        .lock()
        .map(|h| percentiles(&h))
        .unwrap_or_default();
    let hospital_flows = rec
        .flows
        .lock()
        .map(|h| percentiles(&h))
        .unwrap_or_default();
    let sends_late = rec
        .sends_late
        .lock()
        .map(|h| percentiles(&h))
        .unwrap_or_default();
    let errors = rec.errors.lock().map(|e| e.clone()).unwrap_or_default();
    let spent = |a: Option<u64>, b: Option<u64>| Some(b?.saturating_sub(a?));
    let per_op = |total: Option<u64>| total.filter(|_| completed > 0).map(|t| t / completed);
    let server_cpu_ms = spent(start.server_cpu_ms, end.server_cpu_ms);
    let server_disk_bytes = spent(start.server_disk_bytes, end.server_disk_bytes);
    Ok(BenchResult {
        engine,
        load: match cfg.load {
            Load::Concurrency(n) => format!("concurrency {n}"),
            Load::Rate(r) => format!("offered {r}/s"),
        },
        duration_ms,
        completed,
        errors,
        throughput_per_s: completed.saturating_mul(1000) / duration_ms,
        swipes,
        hospital_flows,
        sends_late,
        server: server_kind,
        server_cpu_ms,
        bench_cpu_ms: spent(start.bench_cpu_ms, end.bench_cpu_ms),
        server_cpu_us_per_op: per_op(server_cpu_ms.map(|ms| ms.saturating_mul(1000))),
        server_disk_bytes_per_op: per_op(server_disk_bytes.filter(|_| on_sqlite)),
        host_cpu: start.host.zip(end.host).and_then(|(a, b)| b.since(a)),
        calibration_us: [calibrated_before, calibrated_after],
        threads: thread_cpu(&start.threads, &end.threads, completed),
    })
}

/// The server under measurement: a task of this process or a child process.
struct Server {
    addr: std::net::SocketAddr,
    running: Running,
}

enum Running {
    InProcess(crate::server::Local),
    Child(ChildServer),
}

impl Server {
    async fn start(
        mode: &ServerMode,
        db: &Db,
        url: &str,
        max_connections: u32,
    ) -> anyhow::Result<Server> {
        match mode {
            ServerMode::InProcess => {
                let local = crate::server::Local::start(Arc::new(App::new(db.clone()))).await?;
                Ok(Server {
                    addr: local.addr,
                    running: Running::InProcess(local),
                })
            }
            ServerMode::Child(exe) => {
                // A free port, released for the child to bind (the gap is a few milliseconds).
                let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
                let child = std::process::Command::new(exe)
                    .arg("--database-url")
                    .arg(url)
                    .arg("--db-max-connections")
                    .arg(max_connections.to_string())
                    .arg("serve")
                    .arg("--listen")
                    .arg(addr.to_string())
                    .stdin(std::process::Stdio::null())
                    .spawn()
                    .with_context(|| format!("starting {} serve", exe.display()))?;
                let mut child = ChildServer(Some(child));
                child.wait_listening(addr).await?;
                Ok(Server {
                    addr,
                    running: Running::Child(child),
                })
            }
        }
    }

    fn kind(&self) -> &'static str {
        match self.running {
            Running::InProcess(_) => "in-process",
            Running::Child(_) => "child process",
        }
    }

    fn pid(&self) -> Option<u32> {
        match &self.running {
            Running::InProcess(_) => None,
            Running::Child(c) => c.0.as_ref().map(std::process::Child::id),
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        match self.running {
            Running::InProcess(local) => local.stop().await,
            Running::Child(mut c) => c.stop().await,
        }
    }
}

/// A child `medsettle serve`; killed if dropped while still running (e.g. the bench failed).
struct ChildServer(Option<std::process::Child>);

impl ChildServer {
    async fn wait_listening(&mut self, addr: std::net::SocketAddr) -> anyhow::Result<()> {
        for _ in 0..600 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            if let Some(c) = self.0.as_mut()
                && let Some(status) = c.try_wait()?
            {
                self.0 = None;
                anyhow::bail!("the server process exited before listening: {status}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("the server process did not listen on {addr} within 30 s")
    }

    /// SIGTERM (the server drains and closes its database), then waits up to 30 s.
    async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut c) = self.0.take() else {
            return Ok(());
        };
        let term = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        if term.is_ok_and(|s| s.success()) {
            for _ in 0..600 {
                if let Some(status) = c.try_wait()? {
                    anyhow::ensure!(status.success(), "the server process ended with {status}");
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        c.kill()?;
        c.wait()?;
        anyhow::bail!("the server process did not stop on SIGTERM; killed")
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// What the processes have used so far, read at both ends of the measured window.
struct Usage {
    /// This process's CPU time (ms).
    bench_cpu_ms: Option<u64>,
    /// The server's CPU time (ms), when it is a child process.
    server_cpu_ms: Option<u64>,
    /// Bytes the server's process (the child, else this one) has sent to storage.
    server_disk_bytes: Option<u64>,
    /// Every thread of the server's child process and of this one.
    threads: Vec<ThreadTimes>,
    /// The machine's CPU time so far.
    host: Option<HostTimes>,
}

/// The machine's CPU time so far (every core, clock ticks), from the `cpu` line of /proc/stat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HostTimes {
    busy: u64,
    idle: u64,
    steal: u64,
}

impl HostTimes {
    /// From a /proc/stat text: user nice system idle iowait irq softirq steal (guest time is
    /// counted in user and nice already; kernels before 2.6.11 have no steal column: 0).
    fn parse(stat: &str) -> Option<HostTimes> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let ticks: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        if ticks.len() < 4 {
            return None;
        }
        let at = |i: usize| ticks.get(i).copied().unwrap_or(0);
        Some(HostTimes {
            busy: at(0) + at(1) + at(2) + at(5) + at(6),
            idle: at(3) + at(4),
            steal: at(7),
        })
    }

    /// The shares of the time from `start` to this reading; None when no time passed.
    fn since(self, start: HostTimes) -> Option<HostCpu> {
        let busy = self.busy.checked_sub(start.busy)?;
        let idle = self.idle.checked_sub(start.idle)?;
        let steal = self.steal.checked_sub(start.steal)?;
        let all = busy + idle + steal;
        let permille = |part: u64| (part * 1000 + all / 2).checked_div(all);
        Some(HostCpu {
            busy_permille: permille(busy)?,
            idle_permille: permille(idle)?,
            steal_permille: permille(steal)?,
        })
    }
}

/// A thread's times so far (schedstat: ns on a core, ns runnable and waiting).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ThreadTimes {
    process: &'static str,
    tid: u32,
    name: String,
    run_ns: u64,
    wait_ns: u64,
}

impl Usage {
    /// Reads it now; `child` is the server's process when it is not this one.
    fn now(child: Option<u32>) -> Usage {
        Usage {
            bench_cpu_ms: cpu_ms(None),
            server_cpu_ms: child.and_then(|p| cpu_ms(Some(p))),
            server_disk_bytes: disk_bytes(child),
            threads: child
                .map(|p| thread_times("server", Some(p)))
                .unwrap_or_default()
                .into_iter()
                .chain(thread_times("bench", None))
                .collect(),
            host: std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|s| HostTimes::parse(&s)),
        }
    }
}

/// The times of every thread of this process (None) or of process `pid`; empty where /proc
/// cannot be read (a thread that ends meanwhile is left out).
fn thread_times(process: &'static str, pid: Option<u32>) -> Vec<ThreadTimes> {
    let Ok(tasks) = std::fs::read_dir(match pid {
        Some(p) => format!("/proc/{p}/task"),
        None => "/proc/self/task".to_owned(),
    }) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for task in tasks.flatten() {
        let dir = task.path();
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
        let tid = task.file_name().to_str().and_then(|t| t.parse().ok());
        let (Some(tid), Some(name), Some(times)) = (tid, read("comm"), read("schedstat")) else {
            continue;
        };
        if let Some((run_ns, wait_ns)) = schedstat(&times) {
            out.push(ThreadTimes {
                process,
                tid,
                name: name.trim().to_owned(),
                run_ns,
                wait_ns,
            });
        }
    }
    out
}

/// (ns on a core, ns waiting for one) of a /proc/PID/task/TID/schedstat text.
fn schedstat(text: &str) -> Option<(u64, u64)> {
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
    Some((fields.next()??, fields.next()??))
}

/// Each process's threads, summed by name, over the window from `start` to `end` (a thread
/// started within it counts from zero), per completed operation; by process, then most CPU first.
fn thread_cpu(start: &[ThreadTimes], end: &[ThreadTimes], completed: u64) -> Vec<ThreadCpu> {
    if completed == 0 {
        return Vec::new();
    }
    let before: HashMap<(&str, u32), &ThreadTimes> =
        start.iter().map(|t| ((t.process, t.tid), t)).collect();
    let mut sums: BTreeMap<(&'static str, &str), (u64, u64, u64)> = BTreeMap::new();
    for t in end {
        let (run0, wait0) = before
            .get(&(t.process, t.tid))
            .map_or((0, 0), |b| (b.run_ns, b.wait_ns));
        let (run, wait) = (
            t.run_ns.saturating_sub(run0),
            t.wait_ns.saturating_sub(wait0),
        );
        if run == 0 {
            continue;
        }
        let sum = sums.entry((t.process, t.name.as_str())).or_default();
        *sum = (sum.0 + 1, sum.1 + run, sum.2 + wait);
    }
    let mut out: Vec<ThreadCpu> = sums
        .into_iter()
        .map(|((process, name), (threads, run, wait))| ThreadCpu {
            process,
            name: name.to_owned(),
            threads,
            run_us_per_op: run / 1000 / completed,
            wait_us_per_op: wait / 1000 / completed,
        })
        .collect();
    // "server" before "bench", then the busiest first.
    out.sort_by(|a, b| (b.process, b.run_us_per_op).cmp(&(a.process, a.run_us_per_op)));
    out
}

/// CPU time (user + system) in ms of this process (None) or of process `pid`, from
/// /proc/PID/stat (Linux; clock ticks of 1/100 s, the USER_HZ of every Linux ABI); None where
/// it cannot be read.
fn cpu_ms(pid: Option<u32>) -> Option<u64> {
    let stat = proc_file(pid, "stat")?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some((ticks(14)? + ticks(15)?) * 10)
}

/// Bytes this process (None) or process `pid` has caused to be sent to storage (`write_bytes` in
/// /proc/PID/io, counted when it dirties a page; Linux); None where it cannot be read.
fn disk_bytes(pid: Option<u32>) -> Option<u64> {
    write_bytes(&proc_file(pid, "io")?)
}

/// /proc/self/NAME (None) or /proc/PID/NAME; None where it cannot be read.
fn proc_file(pid: Option<u32>, name: &str) -> Option<String> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/{name}"),
        None => format!("/proc/self/{name}"),
    };
    std::fs::read_to_string(path).ok()
}

/// The `write_bytes` field of a /proc/PID/io text.
fn write_bytes(io: &str) -> Option<u64> {
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    /// A full answer, encoded as the server encodes it, reads back as its settlement's id; an
    /// answer without a settlement reads as none.
    #[test]
    fn a_receipt_reads_the_settlement_id_of_a_purchase() -> anyhow::Result<()> {
        use super::{PurchaseReceipt, pb};
        use prost::Message;
        let purchase = pb::Purchase {
            settlement: Some(pb::Settlement {
                setl_id: "S0123456789".into(),
                reverses: "S9".into(),
                ..Default::default()
            }),
            lines: vec![pb::PurchaseLineResult::default(); 3],
        };
        let receipt = PurchaseReceipt::decode(purchase.encode_to_vec().as_slice())?;
        assert_eq!(
            receipt.settlement.map(|s| s.setl_id).as_deref(),
            Some("S0123456789")
        );
        let empty = PurchaseReceipt::decode(pb::Purchase::default().encode_to_vec().as_slice())?;
        assert_eq!(empty.settlement, None);
        Ok(())
    }

    /// The persons the bench enrols need distinct, valid national IDs however many there are
    /// (the old scheme repeated itself after 7,000, and `--persons 100000` failed enrolling).
    #[test]
    fn national_ids_are_valid_and_distinct() {
        use crate::domain::ids::NationalId;
        let n = 40_000;
        let ids: std::collections::HashSet<String> = (0..n).map(super::national_id).collect();
        assert_eq!(ids.len(), n);
        for i in [0, 1, 7_000, 18_261, 18_262, 39_999, 18_261_999] {
            let id = super::national_id(i);
            assert!(NationalId::parse("national_id", &id).is_ok(), "{i}: {id}");
        }
        assert_eq!(&super::national_id(0)[6..14], "19500101");
        assert_eq!(&super::national_id(18_261)[6..17], "19991231000");
        assert_eq!(&super::national_id(18_262)[6..17], "19500101001");
    }

    #[test]
    fn write_bytes_is_read_from_proc_io() {
        // /proc/PID/io as Linux prints it: `write_bytes` (storage), not `wchar` (any write call).
        let io = "rchar: 6976\nwchar: 123\nsyscr: 10\nsyscw: 2\nread_bytes: 4096\n\
                  write_bytes: 1310720\ncancelled_write_bytes: 8192\n";
        assert_eq!(super::write_bytes(io), Some(1_310_720));
        assert_eq!(super::write_bytes("rchar: 1\nwchar: 2\n"), None);
        assert_eq!(super::write_bytes("write_bytes: many\n"), None);
    }

    #[test]
    fn thread_cpu_is_summed_by_name_over_the_window() {
        use super::{ThreadCpu, ThreadTimes, schedstat, thread_cpu};
        assert_eq!(schedstat("123 456 7\n"), Some((123, 456)));
        assert_eq!(schedstat("123\n"), None);
        let t = |process, tid, name: &str, run_ns, wait_ns| ThreadTimes {
            process,
            tid,
            name: name.to_owned(),
            run_ns,
            wait_ns,
        };
        let start = [
            t("server", 1, "swipe-writer", 1_000_000, 500_000),
            t("server", 2, "tokio-rt-worker", 2_000_000, 0),
            t("server", 3, "tokio-rt-worker", 0, 0),
            t("bench", 1, "medsettle", 3_000_000, 0),
        ];
        let end = [
            // 10 ms on a core and 2 ms waiting in the window.
            t("server", 1, "swipe-writer", 11_000_000, 2_500_000),
            // Two workers: 4 + 3 ms running, 1 + 3 ms waiting.
            t("server", 2, "tokio-rt-worker", 6_000_000, 1_000_000),
            t("server", 3, "tokio-rt-worker", 3_000_000, 3_000_000),
            // Started within the window: counted from zero (0.5 ms: 0 µs an operation).
            t("server", 4, "wal-syncer", 500_000, 100_000),
            // The same thread id in the other process is another thread; idle: left out.
            t("bench", 1, "medsettle", 3_000_000, 0),
            t("bench", 7, "tokio-rt-worker", 8_000_000, 0),
        ];
        let cpu = |process, name: &str, threads, run_us_per_op, wait_us_per_op| ThreadCpu {
            process,
            name: name.to_owned(),
            threads,
            run_us_per_op,
            wait_us_per_op,
        };
        // Per operation over 1,000 operations: ns / 1,000 / 1,000 = µs.
        assert_eq!(
            thread_cpu(&start, &end, 1000),
            vec![
                cpu("server", "swipe-writer", 1, 10, 2),
                cpu("server", "tokio-rt-worker", 2, 7, 4),
                cpu("server", "wal-syncer", 1, 0, 0),
                cpu("bench", "tokio-rt-worker", 1, 8, 0),
            ]
        );
        assert_eq!(thread_cpu(&start, &end, 0), vec![]);
    }

    #[test]
    fn host_cpu_shares_over_the_window() {
        use super::{HostCpu, HostTimes};
        let stat = |user, system, idle, iowait, steal| {
            // user nice system idle iowait irq softirq steal guest guest_nice
            format!(
                "cpu  {user} 0 {system} {idle} {iowait} 10 10 {steal} 0 0\n\
                 cpu0 1 2 3 4 5 6 7 8 0 0\nintr 1 2 3\n"
            )
        };
        let start = HostTimes::parse(&stat(1000, 500, 9000, 100, 200));
        assert_eq!(
            start,
            Some(HostTimes {
                busy: 1520,
                idle: 9100,
                steal: 200
            })
        );
        // Over the window: busy 600 + 150 + 0 = 750 ticks, idle 50 + 0 = 50, steal 200; of
        // 1,000: 750, 50 and 200 per mille.
        let end = HostTimes::parse(&stat(1600, 650, 9050, 100, 400));
        let shares = |a: Option<HostTimes>, b: Option<HostTimes>| b?.since(a?);
        assert_eq!(
            shares(start, end),
            Some(HostCpu {
                busy_permille: 750,
                idle_permille: 50,
                steal_permille: 200
            })
        );
        // Thirds round half up: 1 of 3 ticks is 333.3 per mille, 2 of 3 is 666.7.
        let third = |busy, idle| HostTimes {
            busy,
            idle,
            steal: 0,
        };
        assert_eq!(
            third(2, 1)
                .since(third(0, 0))
                .map(|h| (h.busy_permille, h.idle_permille)),
            Some((667, 333))
        );
        // No time passed, or counters that went back (another boot): nothing to report.
        assert_eq!(shares(start, start), None);
        assert_eq!(shares(end, start), None);
        // No steal column (old kernels): none stolen; no cpu line: unreadable.
        assert_eq!(HostTimes::parse("cpu 5 0 5 10\n").map(|h| h.steal), Some(0));
        assert_eq!(HostTimes::parse("cpu0 5 0 5 10\n"), None);
        assert_eq!(HostTimes::parse("cpu 5 x 5 10\n"), None);
    }

    #[test]
    fn integer_percentiles() {
        let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 1_000_000, 3).unwrap();
        for v in 1..=1000u64 {
            h.record(v).unwrap();
        }
        // 1000 samples 1..=1000: the 500th is 500, the 990th is 990, the 999th is 999.
        assert_eq!(super::at_per_mille(&h, 500), 500);
        assert_eq!(super::at_per_mille(&h, 990), 990);
        assert_eq!(super::at_per_mille(&h, 999), 999);
    }
}

//! Group commit for card swipes. Concurrent SettlePurchase calls queue here; a writer takes
//! everything queued (up to `MAX_BATCH`; while swipes come concurrently, a small batch first waits
//! up to `GATHER` for more, see `gather_until`) and books it in ONE database transaction with
//! set-based SQL: one statement finds the stored answers of every request id (those calls are
//! replays), one loads every person (locked in psn_no order), one every accumulator, one every
//! balance; adjudication runs in memory in arrival order (so two swipes of one person in a batch
//! see each other); one statement each then writes the answers (the idempotency rows, first), the
//! settlements, lines, journal, accumulators, balances and audit records; one commit, made durable
//! by one fsync (on SQLite off the writer's path, see `store::durability`), answers them all. A
//! swipe's answer is the purchase it booked, handed to its caller to encode (not on the writer);
//! its idempotency row names that settlement rather than holding a copy, and a replay reads the
//! purchase back as it was booked. A request that breaks a rule fails alone: only its audit record
//! is written. A request id stored concurrently meanwhile (another writer) makes the batch run
//! again, where it replays. A batch the database refuses as a whole is retried, then split into
//! single requests, so one bad request never fails the others.

use super::context::{pharmacy_context, pharmacy_precheck};
use super::pharmacy::{Swipe, price};
use super::posting;
use super::settle::{adjudicate_with, delta_row, row};
use super::visits::Credential;
use crate::domain::adjudication::LineSplit;
use crate::domain::ids::{RegionCode, RequestId};
use crate::domain::money::Amount;
use crate::domain::time::business_date;
use crate::ledger;
use crate::metrics::{Booked, Metrics};
use crate::service::auth::Principal;
use crate::service::clock::Clock;
use crate::service::error::{AppError, AppResult};
use crate::service::mutate::{Call, MAX_ATTEMPTS, audit_alone, audit_row, check_replay};
use crate::service::policies;
use crate::store::access::{self, Answer, IdempotencyRow};
use crate::store::batch::Writes;
use crate::store::cache::CatalogueSnapshot;
use crate::store::pharmacy::PurchaseLineRow;
use crate::store::settlement::{self, AccumulatorKey, AccumulatorRow, SettlementRow};
use crate::store::{Committed, Db, Engine, Writer, batch, catalogue, derived, persons, registry};
use chrono::{Datelike, Utc};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Swipes booked in one transaction at most.
const MAX_BATCH: usize = 256;
/// Swipes waiting at most; beyond it callers wait to enqueue (back-pressure).
const QUEUE: usize = 8192;
/// With no swipe for this long, the SQLite writer makes its idle pass (`when_idle`).
const IDLE_MERGE: std::time::Duration = std::time::Duration::from_secs(1);
/// While swipes come concurrently, a batch of fewer than [`GATHER_UP_TO`] waits until its
/// oldest swipe has been queued this long (see [`gather_until`]).
const GATHER: std::time::Duration = std::time::Duration::from_millis(2);
/// Swipes a batch gathers for at most; a batch holding as many goes at once.
const GATHER_UP_TO: usize = 32;

/// A purchase as its swipe booked it: what the swipe is answered, and every replay of it.
#[derive(Debug, Clone)]
pub struct BookedPurchase {
    pub settlement: SettlementRow,
    pub lines: Vec<PurchaseLineRow>,
    pub explanation: super::Explanation,
}

/// What a swipe is answered.
#[derive(Debug)]
pub enum SwipeAnswer {
    /// The purchase this call booked, or (a replay) the first call under its request id booked.
    Booked(Box<BookedPurchase>),
    /// The first call's answer as it was stored encoded (by earlier versions, before a swipe's
    /// idempotency row named its settlement instead).
    Stored(Vec<u8>),
}

/// A swipe's answer as its batch leaves it: a replay of a booked purchase is read by the
/// caller's own task, off the writer.
enum Reply {
    Answer(SwipeAnswer),
    Replay(String),
}

struct Job {
    /// When the swipe was queued: a batch waits for more only until its oldest has waited
    /// [`GATHER`].
    queued: std::time::Instant,
    call: Call,
    swipe: Swipe,
    reply: oneshot::Sender<AppResult<Reply>>,
}

/// The queues in front of the swipe writers of one database, one a writer.
pub struct Batcher {
    queues: Vec<mpsc::Sender<Job>>,
    db: Db,
}

impl Batcher {
    /// Starts the writers, each on a thread of its own with a queue of its own: one on SQLite
    /// (it has one writer anyway), two on PostgreSQL. Committed batches are counted in
    /// `metrics`.
    ///
    /// On PostgreSQL a swipe goes to the writer its credential names ([`Batcher::submit`]), so
    /// the two writers' batches hold different persons: a batch locks its persons, their
    /// accumulators and accounts for its whole transaction, and with one queue for both the
    /// second writer's batch nearly always shared a person with the first's and waited for its
    /// commit. (Where they still meet — a person swiping by card and by e-voucher at once, or a
    /// hospital call — rows are locked in the same global order, so they cannot deadlock.)
    ///
    /// Why threads: a batch waits on the database a dozen times (on PostgreSQL each statement is
    /// a round trip to the server), and each wake-up of a task queued behind hundreds of gRPC
    /// tasks on the shared workers cost milliseconds. On its own thread (a current-thread
    /// runtime) the writer wakes as soon as its database answers — SQLite's connections run on
    /// threads of their own, bound to no runtime; a PostgreSQL writer's own connection is
    /// opened on its thread and watched by its runtime (see `store::Writer::begin`).
    pub fn start(db: Db, clock: Clock, metrics: Arc<Metrics>) -> Batcher {
        // Callers whose answer needs a read (a replay) are answered from the server's runtime.
        let answers = tokio::runtime::Handle::current();
        let writers = match db.engine() {
            Engine::Sqlite => 1,
            Engine::Postgres => 2,
        };
        let mut queues = Vec::with_capacity(writers);
        for _ in 0..writers {
            let (tx, rx) = mpsc::channel(QUEUE);
            queues.push(tx);
            let writer = writer(
                db.clone(),
                clock.clone(),
                metrics.clone(),
                rx,
                answers.clone(),
            );
            let spawned = std::thread::Builder::new()
                .name("swipe-writer".into())
                .spawn(move || {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt.block_on(writer),
                        Err(e) => tracing::error!(error = %e, "cannot start the swipe writer"),
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the swipe writer thread");
            }
        }
        Batcher { queues, db }
    }

    /// Books one swipe with whatever else is queued; answers the purchase booked (or, replayed,
    /// the first answer under the request id).
    pub async fn submit(&self, call: Call, swipe: Swipe) -> AppResult<SwipeAnswer> {
        let (reply, answer) = oneshot::channel();
        let queue = self
            .queues
            .get(writer_of(&swipe.credential, self.queues.len()))
            .ok_or_else(|| AppError::Internal(anyhow::anyhow!("no swipe writer")))?;
        queue
            .send(Job {
                queued: std::time::Instant::now(),
                call,
                swipe,
                reply,
            })
            .await
            .map_err(|_| AppError::Internal(anyhow::anyhow!("swipe writer stopped")))?;
        let reply = answer.await.map_err(|_| {
            AppError::Internal(anyhow::anyhow!("swipe writer dropped the request"))
        })??;
        match reply {
            Reply::Answer(a) => Ok(a),
            Reply::Replay(setl_id) => Ok(SwipeAnswer::Booked(Box::new(
                booked(&self.db, &setl_id).await?,
            ))),
        }
    }
}

/// The writer (of `writers`) a swipe with `credential` goes to: the same for every swipe of one
/// card or e-voucher, in every process (see [`Batcher::start`]).
pub fn writer_of(credential: &Credential, writers: usize) -> usize {
    use std::hash::{Hash, Hasher};
    if writers <= 1 {
        return 0;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    credential.as_str().hash(&mut h);
    usize::try_from(h.finish() % u64::try_from(writers).unwrap_or(1)).unwrap_or(0)
}

/// A purchase as it was booked, read back: its settlement and lines without what happened to
/// them since (a reversal naming it, refunded quantities), its explanation from the stored JSON.
async fn booked(db: &Db, setl_id: &str) -> AppResult<BookedPurchase> {
    let mut conn = db.read().await?;
    let mut settlement = settlement::get_settlement(&mut conn, setl_id, false)
        .await?
        .ok_or_else(|| {
            AppError::Internal(anyhow::anyhow!(
                "the settlement {setl_id} a request id names is missing"
            ))
        })?;
    let mut lines = crate::store::pharmacy::lines(&mut conn, setl_id).await?;
    drop(conn);
    let explanation = serde_json::from_str(&settlement.explanation).map_err(|e| {
        AppError::Internal(anyhow::anyhow!(
            "the explanation of {setl_id} does not parse: {e}"
        ))
    })?;
    settlement.reversed_by = None;
    for l in &mut lines {
        l.refunded_qty_scaled = 0;
    }
    Ok(BookedPurchase {
        settlement,
        lines,
        explanation,
    })
}

/// The answer to a replay of `first`: its stored bytes, or (a swipe's) the settlement it names,
/// to be read by the caller; ALREADY_EXISTS for a different request under the same id.
fn replay_of(call: &Call, first: IdempotencyRow) -> AppResult<Reply> {
    check_replay(call, &first)?;
    if !first.response.is_empty() {
        return Ok(Reply::Answer(SwipeAnswer::Stored(first.response)));
    }
    first.setl_id.map(Reply::Replay).ok_or_else(|| {
        AppError::Internal(anyhow::anyhow!(
            "the first answer under request_id {:?} is empty",
            call.request_id
        ))
    })
}

async fn writer(
    db: Db,
    clock: Clock,
    metrics: Arc<Metrics>,
    mut rx: mpsc::Receiver<Job>,
    answers: tokio::runtime::Handle,
) {
    let wdb = db.writer();
    // When swipes pause, SQLite's writer makes its idle pass (`when_idle`).
    let idle = (db.engine() == Engine::Sqlite).then_some(IDLE_MERGE);
    // And within batches, sooner while the writer keeps up (see `derived::Pace`).
    let mut pacer = derived::Pacer::default();
    let mut state = State {
        pace: derived::Pace::KeepingUp,
        persons: persons::PersonCache::default(),
        request_ids: db.request_ids(),
    };
    let mut last_batch = 0;
    loop {
        let jobs = {
            let first = match idle {
                Some(after) => match tokio::time::timeout(after, rx.recv()).await {
                    Ok(first) => first,
                    Err(_) => {
                        if let Err(e) = when_idle(&db, &wdb, &mut state.persons).await {
                            tracing::warn!(error = %e, "the idle writer's pass failed; retried when idle again");
                        }
                        continue;
                    }
                },
                None => rx.recv().await,
            };
            let Some(first) = first else {
                // Every sender gone: the server stopped.
                wdb.close().await;
                return;
            };
            let mut jobs = vec![first];
            take_queued(&mut rx, &mut jobs);
            if let Some(until) = gather_until(
                jobs[0].queued,
                std::time::Instant::now(),
                jobs.len(),
                last_batch,
            ) {
                // A thread sleep, not the runtime's timer (which rounds up to whole
                // milliseconds): this runtime has nothing else to run between two batches
                // (SQLite's connections have threads of their own; a PostgreSQL writer's
                // connection is idle between its transactions).
                std::thread::sleep(until.saturating_duration_since(std::time::Instant::now()));
                take_queued(&mut rx, &mut jobs);
            }
            last_batch = jobs.len();
            jobs
        };
        // A bug that panics fails its batch (the callers get INTERNAL), not the writer.
        state.pace = pacer.batch(jobs.len());
        let batch = std::panic::AssertUnwindSafe(run(
            &db, &wdb, &clock, &metrics, &answers, jobs, &mut state,
        ));
        if futures::FutureExt::catch_unwind(batch).await.is_err() {
            tracing::error!("a swipe batch panicked; its callers were answered INTERNAL");
        }
    }
}

/// Moves what is queued into `jobs`, up to [`MAX_BATCH`] in all.
fn take_queued(rx: &mut mpsc::Receiver<Job>, jobs: &mut Vec<Job>) {
    while jobs.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(j) => jobs.push(j),
            Err(_) => break,
        }
    }
}

/// Until when a batch of `taken` swipes, the oldest queued at `oldest`, waits for more before it
/// is booked; None to book it now. It waits only while swipes come concurrently (the batch
/// before held more than one: where swipes come one at a time, none waits), only while it holds
/// fewer than [`GATHER_UP_TO`], and only until its oldest swipe has been queued [`GATHER`].
///
/// Why: every batch pays for its transaction, its commit's pages and the wake-ups that answer
/// it, whatever its size. At 5,000 swipes a second batches of ≈ 3–5 cost the server ≈ 210 µs of
/// CPU a swipe against ≈ 100 in a closed loop's large ones; gathering for 2 ms cut it by a fifth
/// and the p99 by about a quarter (BENCHMARKS.md, session 32).
fn gather_until(
    oldest: std::time::Instant,
    now: std::time::Instant,
    taken: usize,
    last_batch: usize,
) -> Option<std::time::Instant> {
    let until = oldest + GATHER;
    (last_batch > 1 && taken < GATHER_UP_TO && until > now).then_some(until)
}

/// The SQLite writer's pass while swipes pause: merges everything left in the tails of the
/// batch-maintained indexes (see [`crate::store::derived`]) and has the person cache read the log
/// of person changes (so that enrolments while no swipe comes leave no backlog for the next
/// batch), in one transaction of its own — if there is anything to do, asked on a read
/// connection, so that an idle writer takes no write lock for nothing.
async fn when_idle(db: &Db, wdb: &Writer, cache: &mut persons::PersonCache) -> AppResult<()> {
    let (tails, changes) = {
        let mut read = db.read().await?;
        let tails = derived::pending(&mut read).await?;
        (tails, persons::changes_logged(&mut read).await?)
    };
    if !tails && !changes {
        return Ok(());
    }
    let mut conn = wdb.begin().await?;
    if tails {
        derived::merge(&mut conn, 1).await?;
    }
    cache.catch_up_now(&mut conn).await?;
    wdb.commit(conn).await?;
    Ok(())
}

/// Runs a batch: retried on transient conflicts; split into single swipes if the database
/// refuses it as a whole. Once committed, the batch's callers are answered when the commit is
/// durable — by the syncer right after its fsync, or, when a replay must be read first, by a task
/// on `answers` — while the writer goes on with the next batch (see
/// [`crate::store::durability`]). Index tails are merged at the writer's pace (`state`).
async fn run(
    db: &Db,
    wdb: &Writer,
    clock: &Clock,
    metrics: &Metrics,
    answers: &tokio::runtime::Handle,
    jobs: Vec<Job>,
    state: &mut State,
) {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match book(wdb, clock, metrics, &jobs, state).await {
            Ok((outcome, committed)) => {
                if outcome.iter().all(|o| matches!(o, Outcome::Done(_))) {
                    // Answers that need no read: sent by the fsync's own thread.
                    committed.then(move || {
                        for (job, outcome) in jobs.into_iter().zip(outcome) {
                            if let Outcome::Done(answer) = outcome {
                                let _ = job.reply.send(answer);
                            }
                        }
                    });
                } else {
                    let db = db.clone();
                    answers.spawn(async move {
                        committed.durable().await;
                        finish(&db, jobs, outcome).await;
                    });
                }
                return;
            }
            Err(AppError::Retry(why)) if attempt < MAX_ATTEMPTS => {
                tracing::debug!(
                    attempt,
                    why,
                    size = jobs.len(),
                    "swipe batch conflict; retrying"
                );
                let ms = 2u64.pow(attempt.min(6)) + u64::from(rand::random::<u8>() % 8);
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
            Err(e) if jobs.len() > 1 => {
                tracing::warn!(error = %e, size = jobs.len(), "swipe batch refused; booking one by one");
                for job in jobs {
                    Box::pin(run(db, wdb, clock, metrics, answers, vec![job], state)).await;
                }
                return;
            }
            Err(e) => {
                // A single swipe the database refused (the batch was already split).
                if let Some(job) = jobs.into_iter().next() {
                    audit_alone(db, &job.call, e.code_name(), &e.to_string()).await;
                    let _ = job.reply.send(Err(e));
                }
                return;
            }
        }
    }
}

/// Per-request outcomes of a committed batch; `Defer` = the same request id appeared earlier in
/// the batch, so its answer is the committed first one.
enum Outcome {
    Done(AppResult<Reply>),
    Defer,
}

async fn finish(db: &Db, jobs: Vec<Job>, outcomes: Vec<Outcome>) {
    for (job, outcome) in jobs.into_iter().zip(outcomes) {
        let answer = match outcome {
            Outcome::Done(r) => r,
            Outcome::Defer => replay_committed(db, &job.call).await,
        };
        let _ = job.reply.send(answer);
    }
}

async fn replay_committed(db: &Db, call: &Call) -> AppResult<Reply> {
    let mut conn = db.read().await?;
    let key = (call.principal.key(), call.request_id.clone());
    let found = access::find_many(&mut conn, std::slice::from_ref(&key), None).await?;
    let answer = match found.into_iter().next() {
        Some((_, _, first)) => replay_of(call, first),
        None => Err(AppError::Retry(
            "the first call with this request id did not commit".into(),
        )),
    };
    drop(conn);
    let (outcome, detail) = match &answer {
        Ok(_) => ("OK", "replay".to_owned()),
        Err(e) => (e.code_name(), e.to_string()),
    };
    audit_alone(db, call, outcome, &detail).await;
    answer
}

/// What a swipe writer keeps from batch to batch.
struct State {
    /// How eagerly to merge index tails within the batch (see `derived::Pacer`).
    pace: derived::Pace,
    persons: persons::PersonCache,
    /// SQLite: the request ids stored since their key's last merge (every writer's map).
    request_ids: Arc<std::sync::Mutex<access::RequestIdTail>>,
}

/// A fresh request after its checks: index, context, priced lines.
struct Priced {
    i: usize,
    ctx: super::context::Context,
    lines: Vec<PurchaseLineRow>,
}

fn credential_of(s: &Swipe) -> (Option<&str>, Option<&str>) {
    match &s.credential {
        Credential::CardNo(c) => (Some(c.as_str()), None),
        Credential::EVoucher(e) => (None, Some(e.as_str())),
        Credential::NationalId(_) => (None, None),
    }
}

/// Books a batch in one transaction; per-request outcomes (to be answered once the commit is
/// durable), or an error for the whole batch. Counts the batch and its settlements in `metrics`
/// once it has committed. A tail of SQLite's batch-maintained indexes that reached its threshold
/// at the writer's pace is merged in the same transaction.
async fn book(
    db: &Writer,
    clock: &Clock,
    metrics: &Metrics,
    jobs: &[Job],
    state: &mut State,
) -> AppResult<(Vec<Outcome>, Committed)> {
    let t0 = std::time::Instant::now();
    let cpu0 = tracing::enabled!(tracing::Level::DEBUG)
        .then(thread_cpu)
        .flatten();
    let mut conn = db.begin().await?;
    let now = clock.now();
    let today = business_date(now);
    let mut out: Vec<Option<Outcome>> = jobs.iter().map(|_| None).collect();
    let mut w = Writes::default();
    let fail = |w: &mut Writes, job: &Job, e: &AppError| {
        w.audits
            .push(audit_row(&job.call, e.code_name(), &e.to_string(), now));
    };

    // 1. Request ids: every stored first answer at once; the rest are fresh. Their answers are
    // inserted with the batch's other writes (one row each, no claim to complete or release).
    let mut seen = HashSet::new();
    let mut keys: Vec<(String, String)> = Vec::new();
    let mut key_of: Vec<usize> = Vec::new();
    for (i, j) in jobs.iter().enumerate() {
        if let Err(e) = RequestId::parse("request_id", &j.call.request_id) {
            let e = AppError::from(e);
            fail(&mut w, j, &e);
            out[i] = Some(Outcome::Done(Err(e)));
            continue;
        }
        let key = (j.call.principal.key(), j.call.request_id.clone());
        if !seen.insert(key.clone()) {
            out[i] = Some(Outcome::Defer);
            continue;
        }
        keys.push(key);
        key_of.push(i);
    }
    let tail = Some(&*state.request_ids);
    let mut firsts: HashMap<(String, String), _> = access::find_many(&mut conn, &keys, tail)
        .await?
        .into_iter()
        .map(|(p, r, row)| ((p, r), row))
        .collect();
    let found_ids = t0.elapsed();
    let mut fresh = Vec::new();
    for (key, i) in keys.into_iter().zip(key_of) {
        let Some(first) = firsts.remove(&key) else {
            fresh.push(i);
            continue;
        };
        let answer = replay_of(&jobs[i].call, first);
        match &answer {
            Ok(_) => w.audits.push(audit_row(&jobs[i].call, "OK", "replay", now)),
            Err(e) => w
                .audits
                .push(audit_row(&jobs[i].call, e.code_name(), &e.to_string(), now)),
        }
        out[i] = Some(Outcome::Done(answer));
    }

    // 2. Load everything the fresh requests need, set-based.
    let codes: Vec<String> = fresh
        .iter()
        .filter_map(|&i| match &jobs[i].call.principal {
            Principal::Institution { code } => Some(code.clone()),
            _ => None,
        })
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let institutions: HashMap<String, _> = registry::institutions_by_codes(&mut conn, &codes)
        .await?
        .into_iter()
        .map(|r| (r.code.clone(), r))
        .collect();
    let (mut cards, mut vouchers) = (Vec::new(), Vec::new());
    for &i in &fresh {
        match credential_of(&jobs[i].swipe) {
            (Some(c), _) => cards.push(c.to_owned()),
            (_, Some(e)) => vouchers.push(e.to_owned()),
            _ => {}
        }
    }
    cards.sort_unstable();
    cards.dedup();
    vouchers.sort_unstable();
    vouchers.dedup();
    // The persons and their insurances (by psn_no: a swipe finds its person's at once): on
    // SQLite from the writer's cache while neither table has changed; on PostgreSQL the persons
    // locked, in psn_no order.
    let (people, held) = match state.persons.find(&mut conn, &cards, &vouchers).await? {
        Some(found) => found,
        None => persons::lock_with_insurances_pg(&mut conn, &cards, &vouchers).await?,
    };
    let found_persons = t0.elapsed();
    let by_card: HashMap<&str, _> = people
        .iter()
        .filter_map(|p| Some((p.card_no.as_deref()?, p)))
        .collect();
    let by_voucher: HashMap<&str, _> = people
        .iter()
        .filter_map(|p| Some((p.evoucher_token.as_deref()?, p)))
        .collect();

    // 3. Per request: the checks and the pricing (policies and catalogues from the caches).
    let mut policy_memo: HashMap<String, (i64, Arc<crate::domain::policy::Policy>)> =
        HashMap::new();
    let mut catalogue_memo: HashMap<String, Arc<CatalogueSnapshot>> = HashMap::new();
    let mut priced = Vec::new();
    for &i in &fresh {
        let job = &jobs[i];
        match price_one(
            &mut conn,
            job,
            today,
            &institutions,
            &by_card,
            &by_voucher,
            &held,
            &mut policy_memo,
            &mut catalogue_memo,
        )
        .await
        {
            Ok((ctx, lines)) => priced.push(Priced { i, ctx, lines }),
            Err(e) if is_request_error(&e) => {
                fail(&mut w, job, &e);
                out[i] = Some(Outcome::Done(Err(e)));
            }
            Err(e) => return Err(e),
        }
    }

    let priced_at = t0.elapsed();
    // 4. Lock accumulators and balances in key order; adjudicate in arrival order in memory.
    let mut keys: Vec<AccumulatorKey> = priced
        .iter()
        .map(|p| {
            (
                p.ctx.person.psn_no.clone(),
                p.ctx.insurance_type.code(),
                i64::from(p.ctx.service_date.year()),
            )
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let mut accs: HashMap<AccumulatorKey, AccumulatorRow> =
        settlement::lock_accumulators(&mut conn, &keys)
            .await?
            .into_iter()
            .collect();
    let mut owners: Vec<String> = priced.iter().map(|p| p.ctx.person.psn_no.clone()).collect();
    owners.sort_unstable();
    owners.dedup();
    let mut balances: HashMap<String, i64> = persons::balances_of(&mut conn, &owners, true)
        .await?
        .into_iter()
        .collect();

    let locked = t0.elapsed();
    // The purchases booked, in the order of `w.settlements`: (job, lines, explanation).
    let mut booked = Vec::new();
    for p in priced {
        let job = &jobs[p.i];
        match adjudicate_one(job, p.ctx, p.lines, &mut accs, &mut balances, &mut w, now) {
            Ok((setl_id, lines, explanation)) => {
                w.audits.push(audit_row(&job.call, "OK", "", now));
                // The answer is the settlement as booked: the row names it (a replay reads it).
                w.answers.push(Answer {
                    principal: job.call.principal.key(),
                    request_id: job.call.request_id.clone(),
                    rpc: job.call.rpc.clone(),
                    payload_hash: job.call.payload_hash.to_vec(),
                    response: Vec::new(),
                    created_at: now,
                    setl_id: Some(setl_id),
                });
                booked.push((p.i, lines, explanation));
            }
            Err(e) if is_request_error(&e) => {
                fail(&mut w, job, &e);
                out[p.i] = Some(Outcome::Done(Err(e)));
            }
            Err(e) => return Err(e),
        }
    }

    // 5. Write everything (see `store::batch`) and commit once. The answers (the idempotency rows,
    // each naming its settlement: the one index of the request ids) go first, in key order: a
    // concurrent batch holding one of these request ids (another writer on PostgreSQL) makes
    // this insert wait for it and then skip the row, and nothing else is written. Then the
    // batch runs again, and that call replays the committed answer.
    w.answers
        .sort_unstable_by(|a, b| (&a.principal, &a.request_id).cmp(&(&b.principal, &b.request_id)));
    let adjudicated = t0.elapsed();
    let stored = batch::write(&mut conn, &w).await?;
    let written = t0.elapsed();
    if stored < w.answers.len() {
        return Err(AppError::Retry(
            "a request id of the batch was stored concurrently".into(),
        ));
    }
    derived::merge_due(&mut conn, state.pace).await?;
    let merged = t0.elapsed();
    let committed = db.commit(conn).await?;
    let commit = t0.elapsed().saturating_sub(merged);
    metrics.swipe_batch(jobs.len());
    for s in &w.settlements {
        metrics.booked(&Booked::of(s));
    }
    // Where the batch's time went: the end of each phase since the batch began, the thread's
    // own CPU time in it (the rest it waited: for the disk, a lock, or a core), and how long its
    // oldest swipe had been queued by the commit.
    tracing::debug!(
        size = jobs.len(),
        booked = w.settlements.len(),
        elapsed = ?t0.elapsed(),
        ?commit,
        ?found_ids,
        ?found_persons,
        ?priced_at,
        ?locked,
        ?adjudicated,
        ?written,
        ?merged,
        cpu = ?cpu0.and_then(|c| Some(thread_cpu()?.saturating_sub(c))),
        oldest_queued = ?jobs.first().map(|j| j.queued.elapsed()),
        "swipe batch committed"
    );
    // Each booked swipe is answered its settlement and lines, moved out of the batch's writes.
    let Writes {
        settlements, lines, ..
    } = w;
    let mut lines = lines.into_iter();
    for ((i, n, explanation), settlement) in booked.into_iter().zip(settlements) {
        let purchase = BookedPurchase {
            settlement,
            lines: lines.by_ref().take(n).collect(),
            explanation,
        };
        out[i] = Some(Outcome::Done(Ok(Reply::Answer(SwipeAnswer::Booked(
            Box::new(purchase),
        )))));
    }
    let outcomes = out
        .into_iter()
        .map(|o| {
            // Lazily: an error built per swipe would capture a backtrace (RUST_BACKTRACE).
            o.unwrap_or_else(|| {
                Outcome::Done(Err(AppError::Internal(anyhow::anyhow!(
                    "swipe left unanswered"
                ))))
            })
        })
        .collect();
    Ok((outcomes, committed))
}

/// The calling thread's CPU time so far (Linux; None elsewhere or if it cannot be read).
fn thread_cpu() -> Option<std::time::Duration> {
    #[cfg(target_os = "linux")]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        (rc == 0).then(|| {
            std::time::Duration::new(
                u64::try_from(ts.tv_sec).unwrap_or(0),
                u32::try_from(ts.tv_nsec).unwrap_or(0),
            )
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// Errors that belong to one request (its input or a rule), not to the batch.
fn is_request_error(e: &AppError) -> bool {
    matches!(
        e,
        AppError::Invalid { .. }
            | AppError::Precondition { .. }
            | AppError::NotFound(_)
            | AppError::PermissionDenied(_)
            | AppError::AlreadyExists(_)
    )
}

#[allow(clippy::too_many_arguments)]
async fn price_one(
    conn: &mut crate::store::Conn,
    job: &Job,
    today: chrono::NaiveDate,
    institutions: &HashMap<String, crate::store::registry::InstitutionRow>,
    by_card: &HashMap<&str, &crate::store::persons::PersonRow>,
    by_voucher: &HashMap<&str, &crate::store::persons::PersonRow>,
    held: &persons::Insurances,
    policy_memo: &mut HashMap<String, (i64, Arc<crate::domain::policy::Policy>)>,
    catalogue_memo: &mut HashMap<String, Arc<CatalogueSnapshot>>,
) -> AppResult<(super::context::Context, Vec<PurchaseLineRow>)> {
    let Principal::Institution { code } = &job.call.principal else {
        return Err(AppError::denied(format!(
            "{} is not an institution: only institutions settle",
            job.call.principal.key()
        )));
    };
    let institution = institutions.get(code).cloned().ok_or_else(|| {
        AppError::precondition(
            "institution_not_registered",
            format!("{code} is not registered"),
        )
    })?;
    let person = match credential_of(&job.swipe) {
        (Some(c), _) => by_card.get(c),
        (_, Some(e)) => by_voucher.get(e),
        _ => None,
    }
    .map(|p| (*p).clone())
    .ok_or_else(|| AppError::not_found("no insured person matches the credential"))?;
    let mine = held.get(&person.psn_no).cloned().unwrap_or_default();
    let (_, home, treatment) = pharmacy_precheck(
        &person,
        &mine,
        &institution,
        job.swipe.insurance_type,
        today,
    )?;
    let (version, policy) = match policy_memo.get(home.as_str()) {
        Some(p) => p.clone(),
        None => {
            let p = policies::in_force(conn, &home, today).await?;
            policy_memo.insert(home.as_str().to_owned(), p.clone());
            p
        }
    };
    let snapshot = cached_catalogue(conn, &treatment, catalogue_memo).await?;
    let ctx = pharmacy_context(
        person,
        &mine,
        institution,
        job.swipe.insurance_type,
        today,
        version,
        policy,
    )?;
    let lines = price(&snapshot, today, &job.swipe.lines)?;
    Ok((ctx, lines))
}

async fn cached_catalogue(
    conn: &mut crate::store::Conn,
    region: &RegionCode,
    memo: &mut HashMap<String, Arc<CatalogueSnapshot>>,
) -> AppResult<Arc<CatalogueSnapshot>> {
    if let Some(s) = memo.get(region.as_str()) {
        return Ok(s.clone());
    }
    let s = catalogue::snapshot(conn, region.as_str()).await?;
    memo.insert(region.as_str().to_owned(), s.clone());
    Ok(s)
}

/// Adjudicates one priced swipe against the batch's in-memory accumulators and balances and
/// queues its writes (its settlement last); returns its settlement's id, how many lines it has
/// and its explanation.
fn adjudicate_one(
    job: &Job,
    ctx: super::context::Context,
    mut lines: Vec<PurchaseLineRow>,
    accs: &mut HashMap<AccumulatorKey, AccumulatorRow>,
    balances: &mut HashMap<String, i64>,
    w: &mut Writes,
    now: chrono::DateTime<Utc>,
) -> AppResult<(String, usize, super::Explanation)> {
    let key = (
        ctx.person.psn_no.clone(),
        ctx.insurance_type.code(),
        i64::from(ctx.service_date.year()),
    );
    let acc = accs.get(&key).copied().unwrap_or_default();
    let balance = balances.get(&ctx.person.psn_no).copied();
    let splits: Vec<LineSplit> = lines
        .iter()
        .map(|l| LineSplit {
            amount: Amount::from_fen(l.amount_fen),
            fulamt_ownpay: Amount::from_fen(l.fulamt_fen),
            overlmt_selfpay: Amount::from_fen(l.overlmt_fen),
            preselfpay: Amount::from_fen(l.preself_fen),
            inscp: Amount::from_fen(l.inscp_fen),
        })
        .collect();
    let mut versions: Vec<i64> = lines
        .iter()
        .filter(|l| l.class != 0)
        .map(|l| l.catalogue_version)
        .collect();
    versions.sort_unstable();
    versions.dedup();
    let s = &job.swipe;
    let adj = adjudicate_with(
        ctx,
        &splits,
        versions,
        s.use_account || s.account_only,
        &acc,
        balance,
    )?;
    let b = &adj.breakdown;
    if s.account_only && b.acct_pay != b.psn_part_amt {
        return Err(AppError::precondition(
            "insufficient_balance",
            format!(
                "the personal account can pay {} of the personal part {}",
                b.acct_pay, b.psn_part_amt
            ),
        ));
    }
    if let Some(expected) = s.expected_total
        && expected != b.medfee_sumamt
    {
        return Err(AppError::precondition(
            "total_mismatch",
            format!(
                "expected_total {expected} but the lines total {}",
                b.medfee_sumamt
            ),
        ));
    }
    let setl_id = crate::store::new_id("S", now);
    let mut settled = row(&adj, &setl_id, None, &job.call.request_id, now)?;
    let p = posting("purchase", &settled);
    if !p.legs.is_empty() {
        let (tx, entries) = ledger::journal_rows(&p, now)?;
        settled.journal_id = tx.journal_id.clone();
        w.txs.push(tx);
        w.entries.extend(entries);
    }
    if let Some(bal) = balances.get_mut(&settled.psn_no) {
        *bal -= settled.acct_fen;
        settled.balance_after_fen = Some(*bal);
        *w.accounts.entry(settled.psn_no.clone()).or_default() -= settled.acct_fen;
    }
    let delta = delta_row(&settled);
    let sum = |a: &AccumulatorRow, d: &AccumulatorRow| AccumulatorRow {
        annual_ded_fen: a.annual_ded_fen + d.annual_ded_fen,
        fund_fen: a.fund_fen + d.fund_fen,
        burden_fen: a.burden_fen + d.burden_fen,
        ci_fen: a.ci_fen + d.ci_fen,
        maf_fen: a.maf_fen + d.maf_fen,
        admissions: a.admissions + d.admissions,
    };
    accs.insert(key.clone(), sum(&acc, &delta));
    let queued = w.accumulators.entry(key).or_default();
    *queued = sum(queued, &delta);
    for l in &mut lines {
        l.setl_id = setl_id.clone();
    }
    let n = lines.len();
    w.settlements.push(settled);
    w.lines.extend(lines);
    Ok((setl_id, n, adj.explanation))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::CardNo;

    fn card(n: usize) -> crate::domain::DomainResult<Credential> {
        CardNo::parse("card", &format!("CW{n:08}")).map(Credential::CardNo)
    }

    /// The thread's CPU clock reads, moves on by the work the thread does, and not while it
    /// sleeps (on Linux).
    #[cfg(target_os = "linux")]
    #[test]
    fn the_thread_cpu_clock_counts_this_threads_work() {
        use std::time::{Duration, Instant};
        let before = thread_cpu();
        let spent = || {
            thread_cpu()
                .zip(before)
                .map(|(now, b)| now.saturating_sub(b))
        };
        // Spin until the clock shows 5 ms of work (a busy machine may take longer than that).
        let mut x = 1u64;
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_secs(5)
            && spent().is_none_or(|d| d < Duration::from_millis(5))
        {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let after = thread_cpu();
        assert!(
            spent().is_some_and(|d| d >= Duration::from_millis(5)),
            "{before:?} {after:?}"
        );
        // Asleep, the thread spends (next to) none: a CPU clock, not the wall's.
        std::thread::sleep(Duration::from_millis(50));
        let rested = thread_cpu();
        assert!(
            rested
                .zip(after)
                .is_some_and(|(r, a)| r.saturating_sub(a) < Duration::from_millis(20)),
            "{after:?} {rested:?}"
        );
    }

    /// A batch waits for more swipes only while the one before held more than one, only while it
    /// holds fewer than 32, and only until its oldest swipe has waited 2 ms.
    #[test]
    fn a_batch_gathers_only_under_concurrent_load() {
        use std::time::{Duration, Instant};
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_micros(n * 1000);
        let at_2ms = Some(ms(2));
        // Concurrent load (last batch 5), 3 taken, oldest queued at t0, now 0.5 ms later.
        assert_eq!(
            gather_until(t0, t0 + Duration::from_micros(500), 3, 5),
            at_2ms
        );
        assert_eq!(gather_until(t0, t0, 31, 2), at_2ms);
        // A lone swipe after a lone swipe goes at once.
        assert_eq!(gather_until(t0, t0, 1, 1), None);
        assert_eq!(gather_until(t0, t0, 1, 0), None);
        // 32 taken: full enough.
        assert_eq!(gather_until(t0, t0, 32, 100), None);
        // The oldest already waited 2 ms (or more) in the queue.
        assert_eq!(gather_until(t0, ms(2), 3, 5), None);
        assert_eq!(gather_until(t0, ms(3), 3, 5), None);
        // Counted from the oldest swipe's queueing, not from now.
        assert_eq!(gather_until(ms(1), ms(2), 3, 5), Some(ms(3)));
    }

    /// One card's swipes all go to one writer; a thousand cards spread over both writers
    /// (each takes 400–600 of them: SipHash is not biased to one side); with one writer, all
    /// go to it.
    #[test]
    fn a_credential_always_goes_to_the_same_writer() -> crate::domain::DomainResult<()> {
        let mut taken = [0usize; 2];
        for n in 0..1000 {
            let w = writer_of(&card(n)?, 2);
            assert_eq!(w, writer_of(&card(n)?, 2), "card {n}");
            taken[w] += 1;
            assert_eq!(writer_of(&card(n)?, 1), 0);
        }
        assert!(taken.iter().all(|&t| (400..=600).contains(&t)), "{taken:?}");
        Ok(())
    }
}

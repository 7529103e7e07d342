//! Prometheus metrics, in the text exposition format 0.0.4, on their own HTTP port
//! (`medsettle serve --metrics-listen`).
//!
//! One [`Metrics`] registry per [`App`](crate::service::App) (no process-global state, so every
//! test server has its own), written lock-free with atomics on the request path:
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `medsettle_grpc_requests_total` | counter | `rpc` (full path), `code` (gRPC status name) |
//! | `medsettle_grpc_request_duration_seconds` | histogram | `rpc` |
//! | `medsettle_settlements_total` | counter | `kind` (settlement, reversal), `care_type` |
//! | `medsettle_settlement_amount_fen_total` | counter | `kind`, `care_type`, `part` (medfee, fund, account, cash) |
//! | `medsettle_swipe_batch_size` | histogram | (swipes per committed group-commit transaction) |
//! | `medsettle_db_pool_connections` | gauge | `state` (idle, in_use), sampled at scrape time |
//! | `medsettle_db_pool_max` | gauge | |
//!
//! No floating point anywhere (the crate's rule near money): amounts are integer fen counters,
//! latencies are observed in integer microseconds and printed as decimal seconds by integer
//! formatting ("0.0025", "1.234567"), so every exposed value is exact.
//!
//! Settlement counters are recorded only after the booking transaction commits (see
//! `Conn::note_booked` and `App::finish_call`, and the swipe batch's commit): a rolled-back,
//! retried or replayed call never counts. Reversals and refunds count under `kind="reversal"`
//! with their amounts as positive magnitudes (a counter never goes down), so the net booked
//! amount of a part is `settlement − reversal`.

use crate::store::Db;
use crate::store::settlement::SettlementRow;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

// ------------------------------------------------------------------------------- histograms

/// Latency bucket bounds in microseconds (printed as seconds: 0.0005 … 60).
const LATENCY_US: &[u64] = &[
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
];

/// Swipe batch size bucket bounds (a batch holds at most 256 swipes).
const BATCH_SIZES: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256];

/// A histogram of non-negative integer observations: one counter per bucket (not cumulative;
/// cumulated at scrape time) plus one for above the last bound, and the sum.
struct Histogram {
    bounds: &'static [u64],
    /// `bounds.len() + 1` counters; the last is `+Inf` only.
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [u64]) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    fn observe(&self, v: u64) {
        let i = self.bounds.partition_point(|&b| b < v);
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Relaxed);
        }
        self.sum.fetch_add(v, Relaxed);
    }

    /// Cumulative bucket counts (the last is `+Inf`, which is also the count).
    fn cumulative(&self) -> Vec<u64> {
        let mut total = 0u64;
        self.buckets
            .iter()
            .map(|b| {
                total = total.wrapping_add(b.load(Relaxed));
                total
            })
            .collect()
    }

    /// Writes `name_bucket`, `name_sum` and `name_count` lines; `labels` is "" or `k="v",`
    /// (with the trailing comma); `fmt` prints a bound or the sum.
    fn write(&self, out: &mut String, name: &str, labels: &str, fmt: fn(u64) -> String) {
        let cumulative = self.cumulative();
        for (bound, n) in self.bounds.iter().zip(&cumulative) {
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{}\"}} {n}", fmt(*bound));
        }
        let count = cumulative.last().copied().unwrap_or(0);
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {count}");
        let labels = labels.trim_end_matches(',');
        let sum = fmt(self.sum.load(Relaxed));
        if labels.is_empty() {
            let _ = writeln!(out, "{name}_sum {sum}");
            let _ = writeln!(out, "{name}_count {count}");
        } else {
            let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
            let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
        }
    }

    fn count(&self) -> u64 {
        self.buckets
            .iter()
            .fold(0u64, |n, b| n.wrapping_add(b.load(Relaxed)))
    }
}

/// Microseconds as decimal seconds, exactly and without trailing zeros: 2500 → "0.0025",
/// 1_000_000 → "1", 1_234_567 → "1.234567".
pub fn seconds(us: u64) -> String {
    let (s, frac) = (us / 1_000_000, us % 1_000_000);
    if frac == 0 {
        return s.to_string();
    }
    let frac = format!("{frac:06}");
    format!("{s}.{}", frac.trim_end_matches('0'))
}

fn integer(v: u64) -> String {
    v.to_string()
}

// ------------------------------------------------------------------------------- gRPC codes

/// gRPC status names by code (0..=16).
const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];
const CANCELLED: usize = 1;
const UNKNOWN: usize = 2;

/// The code in a `grpc-status` header or trailer; UNKNOWN when absent or not a code.
fn grpc_code(h: &http::HeaderMap) -> Option<usize> {
    let v = h.get("grpc-status")?;
    Some(
        v.to_str()
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|c| *c < CODE_NAMES.len())
            .unwrap_or(UNKNOWN),
    )
}

struct RpcStats {
    name: Box<str>,
    codes: [AtomicU64; 17],
    latency: Histogram,
}

impl RpcStats {
    fn new(name: &str) -> RpcStats {
        RpcStats {
            name: name.into(),
            codes: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: Histogram::new(LATENCY_US),
        }
    }
}

/// The label of every path that is not a known RPC (so that a client sending made-up paths
/// cannot grow the registry).
pub const UNKNOWN_RPC: &str = "unknown";

/// Every RPC path the server offers, from the descriptor sets it serves (medsettle.v1, health,
/// reflection v1 and v1alpha).
fn known_rpcs() -> Vec<String> {
    use prost::Message;
    let sets: [&[u8]; 4] = [
        crate::server::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut paths = Vec::new();
    for bytes in sets {
        let Ok(set) = prost_types::FileDescriptorSet::decode(bytes) else {
            tracing::warn!("a descriptor set does not decode; its RPCs count as unknown");
            continue;
        };
        for file in &set.file {
            let package = file.package();
            for service in &file.service {
                for method in &service.method {
                    let service = service.name();
                    let method = method.name();
                    paths.push(if package.is_empty() {
                        format!("/{service}/{method}")
                    } else {
                        format!("/{package}.{service}/{method}")
                    });
                }
            }
        }
    }
    paths.sort();
    paths.dedup();
    paths
}

// ------------------------------------------------------------------------------- settlements

/// Settlement kinds as labelled (stored kind 1, 2).
const KINDS: [&str; 2] = ["settlement", "reversal"];
/// Care types as labelled (stored codes 1..=4), then any other code.
const CARE_TYPES: [&str; 5] = ["outpatient", "inpatient", "pharmacy", "maternity", "other"];
const OTHER_CARE: usize = 4;
/// Amount parts as labelled.
const PARTS: [&str; 4] = ["medfee", "fund", "account", "cash"];

/// The figures of one booked settlement row that the metrics count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Booked {
    pub kind: i64,
    pub care_type: i64,
    pub medfee_fen: i64,
    pub fund_fen: i64,
    pub acct_fen: i64,
    pub cash_fen: i64,
}

impl Booked {
    pub fn of(s: &SettlementRow) -> Booked {
        Booked {
            kind: s.kind,
            care_type: s.care_type,
            medfee_fen: s.medfee_fen,
            fund_fen: s.fund_fen,
            acct_fen: s.acct_fen,
            cash_fen: s.cash_fen,
        }
    }
}

// ------------------------------------------------------------------------------- registry

/// The registry.
pub struct Metrics {
    /// One entry per known RPC, then [`UNKNOWN_RPC`] last.
    rpcs: Box<[RpcStats]>,
    index: HashMap<Box<str>, usize>,
    settlements: [[AtomicU64; 5]; 2],
    amounts: [[[AtomicU64; 4]; 5]; 2],
    swipe_batches: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("rpcs", &self.rpcs.len())
            .finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let names = known_rpcs();
        let mut rpcs: Vec<RpcStats> = names.iter().map(|n| RpcStats::new(n)).collect();
        rpcs.push(RpcStats::new(UNKNOWN_RPC));
        let index = names
            .into_iter()
            .enumerate()
            .map(|(i, n)| (n.into_boxed_str(), i))
            .collect();
        Metrics {
            rpcs: rpcs.into_boxed_slice(),
            index,
            settlements: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            amounts: std::array::from_fn(|_| {
                std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0)))
            }),
            swipe_batches: Histogram::new(BATCH_SIZES),
        }
    }

    /// The slot of an RPC path (the unknown slot for any path the server does not offer).
    fn rpc_slot(&self, path: &str) -> usize {
        self.index.get(path).copied().unwrap_or(self.rpcs.len() - 1)
    }

    fn observe_rpc(&self, slot: usize, code: usize, elapsed: Duration) {
        if let Some(r) = self.rpcs.get(slot) {
            if let Some(c) = r.codes.get(code) {
                c.fetch_add(1, Relaxed);
            }
            let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
            r.latency.observe(us);
        }
    }

    /// Counts a settlement row whose transaction committed. Call it only after the commit.
    pub fn booked(&self, b: &Booked) {
        let (kind, sign) = match b.kind {
            1 => (0, 1),
            2 => (1, -1),
            other => {
                tracing::warn!(kind = other, "unknown settlement kind not counted");
                return;
            }
        };
        let care = match b.care_type {
            c @ 1..=4 => usize::try_from(c - 1).unwrap_or(OTHER_CARE),
            _ => OTHER_CARE,
        };
        self.settlements[kind][care].fetch_add(1, Relaxed);
        // Adjudication never moves a part against the row's direction; should it, the counter
        // (which cannot go down) takes nothing rather than a wrong sign.
        let parts = [b.medfee_fen, b.fund_fen, b.acct_fen, b.cash_fen];
        for (counter, fen) in self.amounts[kind][care].iter().zip(parts) {
            let v = u64::try_from(fen.saturating_mul(sign)).unwrap_or(0);
            counter.fetch_add(v, Relaxed);
        }
    }

    /// Counts a committed swipe batch of `size` requests.
    pub fn swipe_batch(&self, size: usize) {
        self.swipe_batches
            .observe(u64::try_from(size).unwrap_or(u64::MAX));
    }

    /// The exposition, with the pool gauges of `db` sampled now.
    pub fn render(&self, db: Option<&Db>) -> String {
        let mut out = String::with_capacity(8 * 1024);

        out.push_str(
            "# HELP medsettle_grpc_requests_total gRPC requests answered, by RPC and status code.\n\
             # TYPE medsettle_grpc_requests_total counter\n",
        );
        for r in self.rpcs.iter() {
            for (code, n) in CODE_NAMES.iter().zip(&r.codes) {
                let n = n.load(Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "medsettle_grpc_requests_total{{rpc=\"{}\",code=\"{code}\"}} {n}",
                        escape(&r.name)
                    );
                }
            }
        }

        out.push_str(
            "# HELP medsettle_grpc_request_duration_seconds Time from a request's arrival to its \
             status (the end of its response), by RPC.\n\
             # TYPE medsettle_grpc_request_duration_seconds histogram\n",
        );
        for r in self.rpcs.iter().filter(|r| r.latency.count() > 0) {
            let labels = format!("rpc=\"{}\",", escape(&r.name));
            r.latency.write(
                &mut out,
                "medsettle_grpc_request_duration_seconds",
                &labels,
                seconds,
            );
        }

        out.push_str(
            "# HELP medsettle_settlements_total Settlements booked (committed), by kind \
             (reversals and refunds are kind reversal) and care type.\n\
             # TYPE medsettle_settlements_total counter\n",
        );
        for (k, kind) in KINDS.iter().enumerate() {
            for (c, care) in CARE_TYPES.iter().enumerate() {
                let n = self.settlements[k][c].load(Relaxed);
                if c != OTHER_CARE || n > 0 {
                    let _ = writeln!(
                        out,
                        "medsettle_settlements_total{{kind=\"{kind}\",care_type=\"{care}\"}} {n}"
                    );
                }
            }
        }

        out.push_str(
            "# HELP medsettle_settlement_amount_fen_total Amounts of committed settlements in fen \
             (reversals as positive magnitudes), by kind, care type and part (medfee total, fund \
             payment, personal account, cash).\n\
             # TYPE medsettle_settlement_amount_fen_total counter\n",
        );
        for (k, kind) in KINDS.iter().enumerate() {
            for (c, care) in CARE_TYPES.iter().enumerate() {
                let seen = self.settlements[k][c].load(Relaxed) > 0;
                if c == OTHER_CARE && !seen {
                    continue;
                }
                for (p, part) in PARTS.iter().enumerate() {
                    let n = self.amounts[k][c][p].load(Relaxed);
                    let _ = writeln!(
                        out,
                        "medsettle_settlement_amount_fen_total{{kind=\"{kind}\",care_type=\"{care}\",part=\"{part}\"}} {n}"
                    );
                }
            }
        }

        out.push_str(
            "# HELP medsettle_swipe_batch_size Card swipes per committed group-commit transaction.\n\
             # TYPE medsettle_swipe_batch_size histogram\n",
        );
        self.swipe_batches
            .write(&mut out, "medsettle_swipe_batch_size", "", integer);

        if let Some(db) = db {
            let (size, idle) = db.pool_usage();
            let idle = u64::try_from(idle).unwrap_or(u64::MAX);
            let in_use = u64::from(size).saturating_sub(idle);
            let _ = write!(
                out,
                "# HELP medsettle_db_pool_connections Database pool connections, by state, at \
                 scrape time.\n\
                 # TYPE medsettle_db_pool_connections gauge\n\
                 medsettle_db_pool_connections{{state=\"idle\"}} {idle}\n\
                 medsettle_db_pool_connections{{state=\"in_use\"}} {in_use}\n\
                 # HELP medsettle_db_pool_max Database pool size limit.\n\
                 # TYPE medsettle_db_pool_max gauge\n\
                 medsettle_db_pool_max {}\n",
                db.pool_max()
            );
        }
        out
    }
}

/// A label value escaped for the text format.
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

// ------------------------------------------------------------------------------- the layer

/// Counts every gRPC request once, when its status is known, and observes its latency: the
/// status from the `grpc-status` response header (tonic's "trailers-only" error responses), else
/// from the trailers at the end of the response body (normal responses, streams). A response
/// dropped before its end (the client went away, the server's timeout fired) counts as
/// CANCELLED; a response that ends without any status as UNKNOWN (what a client reports).
#[derive(Clone)]
pub struct RpcLayer {
    metrics: Arc<Metrics>,
}

impl RpcLayer {
    pub fn new(metrics: Arc<Metrics>) -> RpcLayer {
        RpcLayer { metrics }
    }
}

impl<S> tower::Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> RpcService<S> {
        RpcService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RpcService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for RpcService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Body,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let pending = Pending {
            slot: self.metrics.rpc_slot(req.uri().path()),
            metrics: self.metrics.clone(),
            start: Instant::now(),
            done: false,
        };
        ResponseFuture {
            inner: self.inner.call(req),
            pending: Some(pending),
        }
    }
}

/// One request not yet counted; counts itself CANCELLED if dropped before its status is known.
struct Pending {
    metrics: Arc<Metrics>,
    slot: usize,
    start: Instant,
    done: bool,
}

impl Pending {
    fn finish(&mut self, code: usize) {
        if !self.done {
            self.done = true;
            self.metrics
                .observe_rpc(self.slot, code, self.start.elapsed());
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.finish(CANCELLED);
    }
}

pin_project_lite::pin_project! {
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        pending: Option<Pending>,
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    B: Body,
{
    type Output = Result<http::Response<MeteredBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.inner.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r,
        };
        let mut pending = this.pending.take();
        match result {
            Ok(response) => {
                if let Some(p) = pending.as_mut() {
                    if let Some(code) = grpc_code(response.headers()) {
                        p.finish(code);
                    } else if response.body().is_end_stream() {
                        // No status in the headers and no body to carry trailers.
                        p.finish(UNKNOWN);
                    }
                }
                let pending = pending.filter(|p| !p.done);
                Poll::Ready(Ok(response.map(|inner| MeteredBody { inner, pending })))
            }
            Err(e) => {
                if let Some(p) = pending.as_mut() {
                    p.finish(UNKNOWN);
                }
                Poll::Ready(Err(e))
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that counts its request when the trailers (or the end) go by.
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        pending: Option<Pending>,
    }
}

impl<B: Body> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(frame) = &polled
            && let Some(p) = this.pending.as_mut()
        {
            match frame {
                Some(Ok(f)) => {
                    if let Some(trailers) = f.trailers_ref() {
                        p.finish(grpc_code(trailers).unwrap_or(UNKNOWN));
                    }
                }
                // The stream fails without a status: the client sees no status either.
                Some(Err(_)) | None => p.finish(UNKNOWN),
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// ------------------------------------------------------------------------------- HTTP

/// Most scrape connections served at once.
const MAX_CONNECTIONS: usize = 64;

/// Serves `GET /metrics` over HTTP/1.1 on `listener` until `shutdown` resolves; then closes the
/// open connections (gracefully: a scrape in progress gets a second to finish).
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    db: Db,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    tracing::info!(addr = %listener.local_addr()?, "serving metrics");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, _) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    tracing::warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (metrics, db, mut stop) = (metrics.clone(), db.clone(), stop_rx.clone());
        connections.spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| {
                let response = answer(&req, &metrics, &db);
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10));
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "metrics connection");
                    }
                }
                () = async { drop(stop.wait_for(|s| *s).await) } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
    }
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(Duration::from_secs(1), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
    }
    tracing::info!("metrics server stopped");
    Ok(())
}

/// The answer to one HTTP request.
fn answer<B>(
    req: &http::Request<B>,
    metrics: &Metrics,
    db: &Db,
) -> http::Response<http_body_util::Full<Bytes>> {
    use http::{Method, StatusCode, header};
    let plain = |status: StatusCode, text: &'static str| {
        let mut r = http::Response::new(http_body_util::Full::new(Bytes::from_static(
            text.as_bytes(),
        )));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    if req.uri().path() != "/metrics" {
        return plain(StatusCode::NOT_FOUND, "not found: try /metrics\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let body = metrics.render(Some(db));
    let mut r = http::Response::new(http_body_util::Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(CONTENT_TYPE),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_exact() {
        assert_eq!(seconds(0), "0");
        assert_eq!(seconds(500), "0.0005");
        assert_eq!(seconds(2_500), "0.0025");
        assert_eq!(seconds(1_000_000), "1");
        assert_eq!(seconds(2_500_000), "2.5");
        assert_eq!(seconds(1_234_567), "1.234567");
        assert_eq!(seconds(60_000_001), "60.000001");
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new(&[1, 2, 4]);
        for v in [0, 1, 2, 3, 4, 5, 100] {
            h.observe(v);
        }
        assert_eq!(h.cumulative(), [2, 3, 5, 7]);
        let mut out = String::new();
        h.write(&mut out, "x", "a=\"b\",", integer);
        assert_eq!(
            out,
            "x_bucket{a=\"b\",le=\"1\"} 2\nx_bucket{a=\"b\",le=\"2\"} 3\n\
             x_bucket{a=\"b\",le=\"4\"} 5\nx_bucket{a=\"b\",le=\"+Inf\"} 7\n\
             x_sum{a=\"b\"} 115\nx_count{a=\"b\"} 7\n"
        );
    }

    #[test]
    fn known_rpcs_and_codes() {
        let m = Metrics::new();
        let settle = m.rpc_slot("/medsettle.v1.SettlementService/Settle");
        assert_ne!(settle, m.rpcs.len() - 1);
        assert_ne!(m.rpc_slot("/grpc.health.v1.Health/Check"), m.rpcs.len() - 1);
        assert_eq!(m.rpc_slot("/made.Up/Path"), m.rpcs.len() - 1);
        m.observe_rpc(settle, 0, Duration::from_micros(700));
        m.observe_rpc(settle, 3, Duration::from_micros(2_000_000));
        m.observe_rpc(m.rpc_slot("/x/y"), 12, Duration::ZERO);
        let text = m.render(None);
        assert!(text.contains(
            "medsettle_grpc_requests_total{rpc=\"/medsettle.v1.SettlementService/Settle\",code=\"OK\"} 1\n"
        ));
        assert!(text.contains(
            "medsettle_grpc_requests_total{rpc=\"/medsettle.v1.SettlementService/Settle\",code=\"INVALID_ARGUMENT\"} 1\n"
        ));
        assert!(
            text.contains(
                "medsettle_grpc_requests_total{rpc=\"unknown\",code=\"UNIMPLEMENTED\"} 1\n"
            )
        );
        assert!(text.contains(
            "medsettle_grpc_request_duration_seconds_bucket{rpc=\"/medsettle.v1.SettlementService/Settle\",le=\"0.001\"} 1\n"
        ));
        assert!(text.contains(
            "medsettle_grpc_request_duration_seconds_sum{rpc=\"/medsettle.v1.SettlementService/Settle\"} 2.0007\n"
        ));
        let mut headers = http::HeaderMap::new();
        assert_eq!(grpc_code(&headers), None);
        headers.insert("grpc-status", http::HeaderValue::from_static("16"));
        assert_eq!(grpc_code(&headers), Some(16));
        headers.insert("grpc-status", http::HeaderValue::from_static("17"));
        assert_eq!(grpc_code(&headers), Some(UNKNOWN));
    }

    #[test]
    fn settlements_count_positive_magnitudes() {
        let m = Metrics::new();
        let s = Booked {
            kind: 1,
            care_type: 2,
            medfee_fen: 1_086_067,
            fund_fen: 710_250,
            acct_fen: 100_000,
            cash_fen: 275_817,
        };
        m.booked(&s);
        m.booked(&Booked {
            kind: 2,
            medfee_fen: -s.medfee_fen,
            fund_fen: -s.fund_fen,
            acct_fen: -s.acct_fen,
            cash_fen: -s.cash_fen,
            ..s
        });
        m.booked(&Booked { care_type: 9, ..s });
        let text = m.render(None);
        for kind in ["settlement", "reversal"] {
            assert!(text.contains(&format!(
                "medsettle_settlements_total{{kind=\"{kind}\",care_type=\"inpatient\"}} 1\n"
            )));
            assert!(text.contains(&format!(
                "medsettle_settlement_amount_fen_total{{kind=\"{kind}\",care_type=\"inpatient\",part=\"cash\"}} 275817\n"
            )));
        }
        assert!(
            text.contains(
                "medsettle_settlements_total{kind=\"settlement\",care_type=\"other\"} 1\n"
            )
        );
        assert!(!text.contains("kind=\"reversal\",care_type=\"other\""));
    }
}

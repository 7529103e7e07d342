//! The gRPC server as a function of its listener and a shutdown signal.

use crate::grpc::Ctx;
use crate::proto::clearing_service_server::ClearingServiceServer;
use crate::proto::event_service_server::EventServiceServer;
use crate::proto::filing_service_server::FilingServiceServer;
use crate::proto::ledger_service_server::LedgerServiceServer;
use crate::proto::reconciliation_service_server::ReconciliationServiceServer;
use crate::proto::registry_service_server::RegistryServiceServer;
use crate::proto::settlement_service_server::SettlementServiceServer;
use crate::service::App;
use crate::service::settlement::pharmacy::SETTLE_PURCHASE_RPC;
use crate::store::durability::Durability;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

/// The encoded descriptor set of proto/ (for server reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/medsettle_descriptor.bin"));

/// Largest request accepted (a 20,000-item catalogue upsert fits).
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Concurrent requests per connection.
const MAX_CONCURRENT_STREAMS: u32 = 1024;

/// Serves every service on `listener` until `shutdown` resolves, then drains in-flight calls.
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // The swipe writer, started with the server rather than by the first swipe: on SQLite it also
    // merges the batch-maintained indexes' tails whenever a second passes without swipes, and a
    // server taking none must merge what its other calls append (request ids, audit records,
    // settlements, journal transactions) — every read through the views, and every request id
    // claimed, scans the tails.
    app.swipes();
    let metrics = crate::metrics::RpcLayer::new(app.metrics.clone());
    // Only where commits can be visible before they are durable (SQLite's swipe writer).
    let barrier = tower::util::option_layer(app.db.durability().map(BarrierLayer));
    let ctx = Ctx { app };
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<RegistryServiceServer<Ctx>>()
        .await;
    health_reporter
        .set_serving::<FilingServiceServer<Ctx>>()
        .await;
    health_reporter
        .set_serving::<LedgerServiceServer<Ctx>>()
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    tracing::info!(addr = %listener.local_addr()?, "serving gRPC");
    // No Nagle delay: an answer's HTTP/2 frames leave at once (a listener handed in does not get
    // the builder's TCP_NODELAY default).
    // Each connection's writes coalesced across the answers that are ready together.
    let incoming = futures::TryStreamExt::map_ok(
        TcpIncoming::from(listener).with_nodelay(Some(true)),
        crate::coalesce::Coalesced::new,
    );
    tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .timeout(Duration::from_secs(60))
        .trace_fn(|req| {
            tracing::info_span!(
                "rpc",
                rpc = %req.uri().path(),
                principal = tracing::field::Empty,
                request_id = tracing::field::Empty,
            )
        })
        // Outermost: requests by RPC and status, latency (every response, including errors).
        .layer(metrics)
        .layer(tower::util::MapRequestLayer::new(
            |mut req: http::Request<_>| {
                let path = crate::grpc::RpcPath(req.uri().path().to_owned());
                req.extensions_mut().insert(path);
                req
            },
        ))
        // No answer shows a swipe that is not yet on disk (see store::durability).
        .layer(barrier)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            RegistryServiceServer::new(ctx.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(FilingServiceServer::new(ctx.clone()))
        .add_service(SettlementServiceServer::new(ctx.clone()))
        .add_service(crate::grpc::pharmacy::PharmacyServer::new(ctx.clone()))
        .add_service(
            ReconciliationServiceServer::new(ctx.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(ClearingServiceServer::new(ctx.clone()))
        .add_service(EventServiceServer::new(ctx.clone()))
        .add_service(LedgerServiceServer::new(ctx))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    tracing::info!("server stopped");
    Ok(())
}

/// A server running in this process on an ephemeral port of 127.0.0.1 (the demo and the
/// benchmarks start one).
pub struct Local {
    pub addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Local {
    /// Binds 127.0.0.1:0 and serves `app` there until [`Local::stop`].
    pub async fn start(app: Arc<App>) -> anyhow::Result<Local> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(listener, app, async move {
            let _ = stopped.await;
        }));
        Ok(Local { addr, stop, task })
    }

    /// Stops serving (in-flight calls drain) and returns how the server ended.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await?
    }
}

/// Every answer except a card swipe's (a swipe is answered only once its own batch is durable)
/// waits for [`Durability::barrier`], so no reply shows a swipe that is not yet on disk.
#[derive(Clone)]
struct BarrierLayer(Arc<Durability>);

impl<S> tower::Layer<S> for BarrierLayer {
    type Service = Barrier<S>;

    fn layer(&self, inner: S) -> Barrier<S> {
        Barrier {
            inner,
            durability: self.0.clone(),
        }
    }
}

#[derive(Clone)]
struct Barrier<S> {
    inner: S,
    durability: Arc<Durability>,
}

impl<S, B, R> tower::Service<http::Request<B>> for Barrier<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let durability = (req.uri().path() != SETTLE_PURCHASE_RPC).then(|| self.durability.clone());
        let answer = self.inner.call(req);
        Box::pin(async move {
            let response = answer.await?;
            if let Some(d) = durability {
                d.barrier().await;
            }
            Ok(response)
        })
    }
}

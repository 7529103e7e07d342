//! The gRPC server as a function of its listener and a shutdown signal.

use crate::grpc::Ctx;
use crate::proto::clearing_service_server::ClearingServiceServer;
use crate::proto::event_service_server::EventServiceServer;
use crate::proto::filing_service_server::FilingServiceServer;
use crate::proto::ledger_service_server::LedgerServiceServer;
use crate::proto::pharmacy_service_server::PharmacyServiceServer;
use crate::proto::reconciliation_service_server::ReconciliationServiceServer;
use crate::proto::registry_service_server::RegistryServiceServer;
use crate::proto::settlement_service_server::SettlementServiceServer;
use crate::service::App;
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
    let metrics = crate::metrics::RpcLayer::new(app.metrics.clone());
    let barrier = crate::store::durability::BarrierLayer::new(app.db.durability());
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
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
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
        // No answer shows a swipe that is not yet on disk (SQLite; see store::durability).
        .layer(barrier)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            RegistryServiceServer::new(ctx.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(FilingServiceServer::new(ctx.clone()))
        .add_service(SettlementServiceServer::new(ctx.clone()))
        .add_service(PharmacyServiceServer::new(ctx.clone()))
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

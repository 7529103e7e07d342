//! The server as a function of its listener and a shutdown signal: health, reflection (v1 and
//! v1alpha, which Python's grpcio-reflection still asks), authentication, graceful shutdown.

use medsettle::service::App;
use medsettle::store::{Db, DbConfig};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

async fn start() -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let db = Db::open(&DbConfig {
        url: "sqlite::memory:".into(),
        max_connections: 1,
    })
    .await
    .expect("in-memory SQLite opens");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let addr = format!("http://{}", listener.local_addr().expect("local addr"));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(medsettle::server::run(
        listener,
        Arc::new(App::new(db)),
        async move {
            let _ = rx.await;
        },
    ));
    (addr, tx, handle)
}

#[tokio::test]
async fn health_reflection_auth_and_graceful_shutdown() {
    let (addr, stop, handle) = start().await;
    let channel = Channel::from_shared(addr)
        .expect("uri")
        .connect()
        .await
        .expect("connect");

    // Health: the overall server and each service report SERVING.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in [
        "",
        "medsettle.v1.RegistryService",
        "medsettle.v1.LedgerService",
    ] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check answers")
            .into_inner();
        assert_eq!(
            r.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service}"
        );
    }

    // Reflection v1alpha lists our services.
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut reflection = ServerReflectionClient::new(channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection answers")
        .into_inner();
    let first = answers
        .next()
        .await
        .expect("one answer")
        .expect("ok answer");
    let Some(MessageResponse::ListServicesResponse(list)) = first.message_response else {
        panic!("expected a service list, got {:?}", first.message_response);
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "medsettle.v1.RegistryService",
        "medsettle.v1.FilingService",
        "medsettle.v1.LedgerService",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }

    // No token, or an unknown one: UNAUTHENTICATED.
    let mut registry =
        medsettle::proto::registry_service_client::RegistryServiceClient::new(channel.clone());
    let err = registry
        .list_regions(medsettle::proto::ListRegionsRequest::default())
        .await
        .expect_err("no token is refused");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut req = tonic::Request::new(medsettle::proto::ListRegionsRequest::default());
    req.metadata_mut().insert(
        "authorization",
        "Bearer ms_not_a_token".parse().expect("ascii"),
    );
    assert_eq!(
        registry
            .list_regions(req)
            .await
            .expect_err("refused")
            .code(),
        tonic::Code::Unauthenticated
    );

    // Graceful shutdown: run() returns Ok once the signal fires.
    stop.send(()).expect("server still running");
    let result = tokio::time::timeout(std::time::Duration::from_secs(10), handle)
        .await
        .expect("server stops within 10 s")
        .expect("server task did not panic");
    assert!(result.is_ok(), "{result:?}");
}

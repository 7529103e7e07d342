//! medsettle: cross-region direct medical-insurance settlement over gRPC.
//!
//! Layers (data flows one way): `grpc` → `service` → (`domain`, `store`, `ledger`).

pub mod bench;
pub mod bench_close;
pub mod cli;
pub mod coalesce;
pub mod demo;
pub mod domain;
pub mod grpc;
pub mod import;
pub mod ledger;
pub mod metrics;
pub mod server;
pub mod service;
pub mod store;

pub mod proto {
    tonic::include_proto!("medsettle.v1");
}

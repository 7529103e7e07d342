//! Compiles proto/ with protox (pure Rust, no protoc) and generates tonic code. The encoded
//! descriptor set is also written to OUT_DIR for gRPC server reflection.
use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/medsettle/v1/common.proto",
        "proto/medsettle/v1/registry.proto",
        "proto/medsettle/v1/filing.proto",
        "proto/medsettle/v1/ledger.proto",
        "proto/medsettle/v1/settlement.proto",
        "proto/medsettle/v1/pharmacy.proto",
        "proto/medsettle/v1/reconciliation.proto",
        "proto/medsettle/v1/clearing.proto",
        "proto/medsettle/v1/events.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    // sqlx::migrate! embeds migrations/: a new migration must rebuild the crate.
    println!("cargo:rerun-if-changed=migrations");
    let fds = protox::compile(files, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("medsettle_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}

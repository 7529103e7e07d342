//! The README's ways of calling the service, run against a real server so they never rot: the
//! Python grpcio client (examples/python/client.py) and the `buf curl` commands of the README.
//! Both need their tools installed (`.ci/run` installs them): python3 with grpcio and
//! grpcio-tools, and buf (`npm i -g @bufbuild/buf`).

#[macro_use]
mod common;

use common::*;
use medsettle::service::auth::Grant;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("medsettle-{tag}-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run ({e}); .ci/run installs it"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    stdout
}

async fn python_client(b: Backend) {
    let ts = TestServer::start(b).await;
    let token = ts.token(Grant::Operator).await;
    let stubs = temp_dir("stubs");
    let stdout = run(
        Command::new("python3")
            .arg(repo().join("examples/python/client.py"))
            .args(["--target", &ts.addr.to_string(), "--token", &token])
            .env("MEDSETTLE_STUBS_DIR", &stubs),
        "python3 examples/python/client.py",
    );
    let _ = std::fs::remove_dir_all(&stubs);
    assert!(stdout.contains("deposit 250.50 -> 1250.50"), "{stdout}");
    assert!(stdout.trim_end().ends_with("ok"), "{stdout}");
    verify_ok(&ts).await;
}

/// The README's `buf curl` block, pointed at this server.
fn readme_buf_curl(port: u16) -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let section = readme
        .split("### With `buf curl`")
        .nth(1)
        .expect("a buf curl section in the README");
    let block = section
        .split("```sh")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("a sh block");
    block.replace("127.0.0.1:50051", &format!("127.0.0.1:{port}"))
}

async fn buf_curl(b: Backend) {
    let ts = TestServer::start(b).await;
    let dir = temp_dir("buf");
    std::fs::write(dir.join("operator.token"), ts.token(Grant::Operator).await)
        .expect("token file");
    let script = format!("set -euo pipefail\n{}", readme_buf_curl(ts.addr.port()));
    let stdout = run(
        Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(&dir),
        "the README's buf curl commands",
    );
    let _ = std::fs::remove_dir_all(Path::new(&dir));
    assert!(stdout.contains("\"name\": \"乌海市\""), "{stdout}");
    assert!(
        stdout.contains("\"accountBalance\": \"1000.00\""),
        "{stdout}"
    );
    assert!(stdout.contains("\"ok\": true"), "{stdout}");
    assert!(stdout.contains("SERVING"), "{stdout}");
    verify_ok(&ts).await;
}

both_engines!(python_client, buf_curl);

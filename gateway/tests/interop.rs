//! Interop with clients no one here wrote: Python `websockets` and Node `ws` (with
//! permessage-deflate), driven against the real binary. The test script installs both; a missing
//! tool fails the test.

mod common;

use std::path::Path;
use std::process::Command;

use common::Server;

fn run_client(program: &str, script: &str, addr: std::net::SocketAddr) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    let output = Command::new(program)
        .arg(dir.join(script))
        .arg(addr.to_string())
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} (install it: scripts/test-all.sh does): {e}")
        });
    assert!(
        output.status.success(),
        "{program} {script} failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn python_websockets_client() {
    let server = Server::start(2, "");
    run_client("python3", "pubsub.py", server.public);
}

#[test]
fn node_ws_client_with_permessage_deflate() {
    let server = Server::start(2, "");
    run_client("node", "pubsub.mjs", server.public);
}

#[test]
fn python_websockets_presence_events_and_history() {
    let server = Server::start(
        2,
        "[namespaces.doc]\nanonymous = \"publish\"\npresence = true\njoin_leave = true\n",
    );
    run_client("python3", "delivery.py", server.public);
}

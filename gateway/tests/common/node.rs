//! Running the Node client scripts of `gateway/tests/clients`.

use std::process::Command;

use serde_json::Value;

/// Runs a Node client script of `gateway/tests/clients` (bounded by `timeout`); returns its
/// last stdout line as JSON and whether it exited 0. `node` and `npm ci` there are required:
/// a missing one fails the test.
pub fn node_script(script: &str, args: &[&str], timeout_s: u32) -> (Value, bool) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients");
    let out = Command::new("timeout")
        .arg(timeout_s.to_string())
        .arg("node")
        .arg(script)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("node (and npm ci in gateway/tests/clients) is required");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("").to_string();
    let value = serde_json::from_str(&last).unwrap_or_else(|_| {
        let cut = |s: &str| s.chars().take(3000).collect::<String>();
        panic!(
            "{script}: no JSON result line\nstdout: {}\nstderr: {}",
            cut(&stdout),
            cut(&String::from_utf8_lossy(&out.stderr))
        )
    });
    (value, out.status.success())
}

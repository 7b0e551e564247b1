//! What the real binary writes to stderr when it is not a terminal (a file, a pipe, journald):
//! `log_format = "json"` gives one JSON object per line with tracing's fields, and text logs
//! carry no ANSI colour codes. Also `ringcast --version` and the `--log-format` flag.

mod common;

use std::io::Read;
use std::process::Command;
use std::time::Duration;

use common::Server;

/// `info`, so that start-up and shutdown write a few lines (the test config says `warn`).
const INFO: (&str, &str) = ("RINGCAST_LOG_LEVEL", "info");

/// Stops a server with SIGTERM (the drain logs too) and waits for it to exit.
fn stop(mut server: Server) {
    server.sigterm();
    assert!(
        server.wait_exit(Duration::from_secs(15)).is_some(),
        "ringcast did not exit after SIGTERM"
    );
}

#[test]
fn json_logs_are_one_object_per_line_with_level_and_fields() {
    let dir = std::env::temp_dir().join(format!("ringcast-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let log = dir.join("stderr.log");
    let server = Server::launch_logging(1, "", &[INFO, ("RINGCAST_LOG_FORMAT", "json")], &log);
    stop(server);
    let text = std::fs::read_to_string(&log).expect("log file");
    let _ = std::fs::remove_dir_all(&dir);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 2, "too few log lines: {text:?}");
    let mut started = false;
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON object ({e}): {line:?}"));
        assert!(v["level"].is_string(), "no level: {line}");
        assert!(v["fields"].is_object(), "no fields: {line}");
        if v["fields"]["message"] == "ringcast started" {
            started = true;
            assert!(v["fields"]["driver"].is_string(), "{line}");
        }
    }
    assert!(started, "no `ringcast started` line: {text}");
}

#[test]
fn text_logs_to_a_pipe_have_no_colour_codes() {
    let (server, mut stderr) = Server::launch_piped_stderr(1, "", &[INFO]);
    // Read the pipe on a thread while the server runs, so it never blocks on a full pipe.
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        stderr.read_to_end(&mut bytes).expect("read stderr");
        bytes
    });
    stop(server);
    let bytes = reader.join().expect("reader");
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("ringcast started"), "{text}");
    assert!(
        !bytes.contains(&0x1b),
        "an ESC byte (ANSI colour) in logs written to a pipe: {text:?}"
    );
}

#[test]
fn the_log_format_flag_sets_the_key() {
    let dir = std::env::temp_dir().join(format!("ringcast-logflag-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("ringcast.toml");
    std::fs::write(&file, "log_format = \"text\"\n").expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_ringcast"))
        .args(["--log-format", "json", "check-config"])
        .arg(&file)
        .output()
        .expect("run ringcast");
    let bad = Command::new(env!("CARGO_BIN_EXE_ringcast"))
        .arg("check-config")
        .arg(&file)
        .env("RINGCAST_LOG_FORMAT", "xml")
        .output()
        .expect("run ringcast");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("log_format = \"json\""), "{stdout}");
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(
        stderr.contains("log_format"),
        "the bad key is named: {stderr}"
    );
}

#[test]
fn version_names_the_commit_and_the_drivers() {
    let out = Command::new(env!("CARGO_BIN_EXE_ringcast"))
        .arg("--version")
        .output()
        .expect("run ringcast");
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    let expected_prefix = format!("ringcast {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(line.starts_with(&expected_prefix), "{line}");
    assert!(
        line.trim_end().ends_with(", drivers: io_uring epoll)"),
        "{line}"
    );
    let commit = line[expected_prefix.len()..]
        .split(',')
        .next()
        .unwrap_or_default();
    assert!(
        commit == "unknown" || (commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "commit {commit:?} in {line}"
    );
}

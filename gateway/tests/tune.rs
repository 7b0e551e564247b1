//! `ringcast tune check|apply` as a user runs them, against a fake /proc and /sys tree.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fake_host(name: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("ringcast-tune-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let put = |rel: &str, text: &str| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("dir");
        std::fs::write(p, text).expect("write");
    };
    for (k, v) in [
        ("net/core/somaxconn", "128"),
        ("net/ipv4/tcp_max_syn_backlog", "256"),
        ("net/core/busy_poll", "0"),
        ("net/core/busy_read", "0"),
        ("net/ipv4/tcp_slow_start_after_idle", "1"),
        ("net/core/netdev_max_backlog", "1000"),
        ("net/core/rmem_max", "212992"),
        ("net/core/wmem_max", "212992"),
        ("vm/swappiness", "60"),
        ("fs/file-max", "9223372036854775807"),
        ("fs/nr_open", "4194304"),
    ] {
        put(&format!("proc/sys/{k}"), &format!("{v}\n"));
    }
    put(
        "proc/self/limits",
        "Max open files            1048576              1048576              files\n",
    );
    put("proc/cmdline", "root=/dev/sda1\n");
    root
}

fn ringcast(root: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ringcast"))
        .args(args)
        .arg("--root")
        .arg(root)
        .output()
        .expect("run ringcast");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn check_fails_apply_shows_then_writes_and_check_passes() {
    let root = fake_host("apply");
    let (code, out) = ringcast(&root, &["tune", "check", "--profile", "low-latency"]);
    assert_eq!(code, 1, "a tiny accept queue is a failure:\n{out}");
    assert!(out.contains("FAIL   net.core.somaxconn"), "{out}");

    let (code, out) = ringcast(
        &root,
        &["tune", "apply", "--profile", "low-latency", "--dry-run"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("- net.core.somaxconn = 128\n+ net.core.somaxconn = 65535"),
        "{out}"
    );
    assert!(out.contains("dry run: nothing changed"));
    let somaxconn = root.join("proc/sys/net/core/somaxconn");
    assert_eq!(
        std::fs::read_to_string(&somaxconn).expect("read").trim(),
        "128"
    );

    // The tests run as root here (CI and this sandbox); a non-root user gets a clear refusal.
    let (code, out) = ringcast(&root, &["tune", "apply", "--profile", "low-latency"]);
    if code != 0 {
        assert!(out.contains("needs root"), "{out}");
        return;
    }
    assert!(
        out.contains("set net.core.somaxconn = 65535 (was 128)"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(&somaxconn).expect("read").trim(),
        "65535"
    );
    let (code, out) = ringcast(&root, &["tune", "check", "--profile", "low-latency"]);
    assert_eq!(code, 0, "no failure left:\n{out}");
    assert!(!out.contains("warn   net."), "every sysctl applied:\n{out}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn an_unknown_profile_is_a_clear_error() {
    let root = fake_host("unknown");
    let (code, out) = ringcast(&root, &["tune", "check", "--profile", "fastest"]);
    assert_ne!(code, 0);
    assert!(out.contains("no profile `fastest`"), "{out}");
}

#[test]
fn a_node_pins_by_a_profiles_core_layout() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringcast"))
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--cpu-profile", "high-connections", "--log-level", "info"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start ringcast");
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let _ = out.read_line(&mut line);
    let _ = child.kill();
    let output = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(line.contains("ringcast listening"), "{line} {err}");
    assert!(
        err.contains("pinning by the profile's core layout"),
        "{err}"
    );
    // high-connections runs one shard per core the process may run on (its affinity mask).
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let allowed = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap_or("0");
    let cores: usize = allowed
        .trim()
        .split(',')
        .map(|p| match p.split_once('-') {
            Some((a, b)) => b.parse::<usize>().unwrap_or(0) - a.parse::<usize>().unwrap_or(0) + 1,
            None => 1,
        })
        .sum();
    assert!(line.contains(&format!("shards={cores}")), "{line}");
}

//! `ringcast tune check`: the host against a profile, as a table of ok / warn / fail with the fix.

use std::path::Path;

use super::cores::{cpulist, parse_cpulist, CoreLayout};
use super::Profile;

/// A finding's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// As the profile wants.
    Ok,
    /// Not as the profile wants, or not readable; ringcast still runs well enough.
    Warn,
    /// Will hurt: fix it before production.
    Fail,
}

impl Status {
    /// `ok`, `warn`, `FAIL`.
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        }
    }
}

/// One line of the audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The verdict.
    pub status: Status,
    /// What was checked.
    pub check: String,
    /// What the host has.
    pub current: String,
    /// What the profile wants.
    pub wanted: String,
    /// How to fix it (empty when ok).
    pub fix: String,
}

fn finding(status: Status, check: &str, current: &str, wanted: &str, fix: &str) -> Finding {
    Finding {
        status,
        check: check.to_string(),
        current: current.to_string(),
        wanted: wanted.to_string(),
        fix: if status == Status::Ok {
            String::new()
        } else {
            fix.to_string()
        },
    }
}

fn read(root: &Path, rel: &str) -> Option<String> {
    std::fs::read_to_string(root.join(rel))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Audits the host under `root` against `profile`; `layout` is the core layout ringcast would
/// pin by on this host (shown, and checked against interrupt placement).
pub fn audit(root: &Path, profile: &Profile, layout: &CoreLayout) -> Vec<Finding> {
    let mut out = Vec::new();
    let latency = profile.settings.audit.latency;
    // File descriptors: the limit this process got (systemd's LimitNOFILE, or limits.conf).
    let nofile = read(root, "proc/self/limits").and_then(|l| {
        l.lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3).map(str::to_string))
    });
    let want = profile.nofile.to_string();
    out.push(match nofile.as_deref().map(|v| (v, v.parse::<u64>().ok())) {
        Some((_, Some(n))) if n >= profile.nofile => {
            finding(Status::Ok, "open files (soft limit)", &n.to_string(), &want, "")
        }
        Some(("unlimited", _)) => finding(Status::Ok, "open files (soft limit)", "unlimited", &want, ""),
        Some((v, Some(n))) => finding(
            if n < 65_536 { Status::Fail } else { Status::Warn },
            "open files (soft limit)",
            v,
            &want,
            "LimitNOFILE= in the systemd unit (deploy/systemd), or limits.conf from the profile",
        ),
        _ => finding(Status::Warn, "open files (soft limit)", "not readable", &want, "check `ulimit -n`"),
    });
    for s in &profile.sysctls {
        let path = s.path(root);
        let wanted = if s.at_least {
            format!(">= {}", s.value)
        } else {
            s.value.clone()
        };
        let fix = format!(
            "sysctl -w {}=\"{}\" (or ringcast tune apply --profile {})",
            s.key, s.value, profile.name
        );
        out.push(match std::fs::read_to_string(&path) {
            Ok(cur) if s.satisfied_by(&cur) => finding(Status::Ok, &s.key, cur.trim(), &wanted, ""),
            Ok(cur) => {
                let cur = cur.split_whitespace().collect::<Vec<_>>().join(" ");
                // A tiny accept queue or descriptor table drops clients: fail, not warn.
                let critical = matches!(
                    s.key.as_str(),
                    "net.core.somaxconn" | "fs.file-max" | "fs.nr_open"
                ) && cur.parse::<u64>().is_ok_and(|v| v < 4096);
                finding(
                    if critical { Status::Fail } else { Status::Warn },
                    &s.key,
                    &cur,
                    &wanted,
                    &fix,
                )
            }
            Err(_) => finding(
                Status::Warn,
                &s.key,
                "not readable",
                &wanted,
                "not settable in this namespace or kernel",
            ),
        });
    }
    out.push(match read(root, "proc/sys/kernel/io_uring_disabled").as_deref() {
        None => finding(Status::Ok, "io_uring", "available (no kernel switch)", "available", ""),
        Some("0") => finding(Status::Ok, "io_uring", "enabled", "available", ""),
        Some(v) => finding(
            Status::Warn,
            "io_uring",
            &format!("kernel.io_uring_disabled = {v}"),
            "0",
            "sysctl -w kernel.io_uring_disabled=0; meanwhile io_driver = auto falls back to epoll",
        ),
    });
    out.push(thp(root, latency));
    out.push(governor(root, latency));
    out.push(irqbalance(root, latency));
    out.push(isolation(root, latency, layout));
    out.extend(nics(root, latency, layout));
    out.push(finding(
        Status::Ok,
        "core layout",
        &format!(
            "shards on {}, bridge on {}, interrupts on {}",
            show(&layout.shards),
            if layout.bridge.is_empty() {
                "any core".to_string()
            } else {
                cpulist(&layout.bridge)
            },
            show(&layout.irq)
        ),
        &format!("profile {}", profile.name),
        "",
    ));
    out
}

fn show(cores: &[usize]) -> String {
    if cores.is_empty() {
        "none".into()
    } else {
        cpulist(cores)
    }
}

fn thp(root: &Path, latency: bool) -> Finding {
    let check = "transparent hugepages";
    match read(root, "sys/kernel/mm/transparent_hugepage/enabled") {
        None => finding(
            Status::Warn,
            check,
            "not readable",
            "madvise or never",
            "see /sys/kernel/mm/transparent_hugepage",
        ),
        Some(v) => {
            let chosen = v
                .split_whitespace()
                .find(|w| w.starts_with('['))
                .map_or(v.clone(), |w| w.trim_matches(['[', ']']).to_string());
            let status = if latency && chosen == "always" {
                Status::Warn
            } else {
                Status::Ok
            };
            finding(
                status,
                check,
                &chosen,
                "madvise or never",
                "echo madvise > /sys/kernel/mm/transparent_hugepage/enabled (compaction stalls add jitter)",
            )
        }
    }
}

fn governor(root: &Path, latency: bool) -> Finding {
    let check = "CPU frequency governor";
    let dir = root.join("sys/devices/system/cpu");
    let mut governors: Vec<String> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with("cpu") && n[3..].parse::<u32>().is_ok()
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("cpufreq/scaling_governor")).ok())
        .map(|g| g.trim().to_string())
        .collect();
    governors.sort();
    governors.dedup();
    if governors.is_empty() {
        return finding(
            if latency { Status::Warn } else { Status::Ok },
            check,
            "no cpufreq (a virtual machine?)",
            "performance",
            "nothing to set here; on bare metal: cpupower frequency-set -g performance",
        );
    }
    let current = governors.join(",");
    let ok = !latency || governors == ["performance"];
    finding(
        if ok { Status::Ok } else { Status::Warn },
        check,
        &current,
        if latency { "performance" } else { "any" },
        "cpupower frequency-set -g performance",
    )
}

fn irqbalance(root: &Path, latency: bool) -> Finding {
    let check = "irqbalance";
    let running = std::fs::read_dir(root.join("proc"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .any(|e| {
            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "irqbalance")
        });
    let current = if running { "running" } else { "not running" };
    let status = if latency && running {
        Status::Warn
    } else {
        Status::Ok
    };
    finding(
        status,
        check,
        current,
        if latency {
            "not running (interrupts pinned to the irq cores)"
        } else {
            "any"
        },
        "systemctl disable --now irqbalance, then pin the NIC's IRQs to the profile's irq cores",
    )
}

fn isolation(root: &Path, latency: bool, layout: &CoreLayout) -> Finding {
    let check = "isolated shard cores";
    let cmdline = read(root, "proc/cmdline").unwrap_or_default();
    let isolated: Vec<usize> = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("isolcpus="))
        // `isolcpus=[flags,]list`: the flags are not cpulist parts and are skipped.
        .map(parse_cpulist)
        .unwrap_or_default();
    let all_isolated =
        !layout.shards.is_empty() && layout.shards.iter().all(|c| isolated.contains(c));
    let status = if latency && !all_isolated {
        Status::Warn
    } else {
        Status::Ok
    };
    finding(
        status,
        check,
        &if isolated.is_empty() {
            "none".to_string()
        } else {
            cpulist(&isolated)
        },
        &if latency {
            show(&layout.shards)
        } else {
            "any".to_string()
        },
        &format!(
            "boot with isolcpus={0} nohz_full={0} (kernel command line) so only shards run there",
            show(&layout.shards)
        ),
    )
}

fn nics(root: &Path, latency: bool, layout: &CoreLayout) -> Vec<Finding> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(root.join("sys/class/net")) else {
        out.push(finding(
            Status::Warn,
            "NIC queues",
            "not readable",
            "one RX queue per shard",
            "see /sys/class/net",
        ));
        return out;
    };
    let interrupts = read(root, "proc/interrupts").unwrap_or_default();
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n != "lo")
        .collect();
    names.sort();
    for name in names {
        let rx = std::fs::read_dir(root.join("sys/class/net").join(&name).join("queues"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
            .count();
        let irqs = interrupts
            .lines()
            .filter(|l| l.contains(name.as_str()))
            .count();
        let wanted = layout.shards.len().max(1);
        let status = if latency && rx < wanted {
            Status::Warn
        } else {
            Status::Ok
        };
        out.push(finding(
            status,
            &format!("NIC {name}"),
            &format!("{rx} RX queues, {irqs} IRQs"),
            &format!(">= {wanted} RX queues (one per shard)"),
            &format!(
                "ethtool -L {name} combined {wanted}; pin its IRQs to the irq cores ({})",
                show(&layout.irq)
            ),
        ));
    }
    out
}

/// The audit as a table.
pub fn render(findings: &[Finding]) -> String {
    let w = |f: fn(&Finding) -> &str| findings.iter().map(|x| f(x).len()).max().unwrap_or(0);
    let (wc, wcur, ww) = (
        w(|f| &f.check).max(5),
        w(|f| &f.current).max(7),
        w(|f| &f.wanted).max(6),
    );
    let mut s = format!(
        "{:<6} {:<wc$}  {:<wcur$}  {:<ww$}  fix\n",
        "status", "check", "current", "wanted"
    );
    for f in findings {
        s.push_str(&format!(
            "{:<6} {:<wc$}  {:<wcur$}  {:<ww$}  {}\n",
            f.status.label(),
            f.check,
            f.current,
            f.wanted,
            f.fix
        ));
    }
    let count = |st| findings.iter().filter(|f| f.status == st).count();
    s.push_str(&format!(
        "\n{} ok, {} warn, {} fail\n",
        count(Status::Ok),
        count(Status::Warn),
        count(Status::Fail)
    ));
    s
}

use std::path::{Path, PathBuf};

use super::audit::{audit, Finding, Status};
use super::cores::{cpulist, parse_cpulist, CoreProfile};
use super::{apply, Profile};

/// A fake host root with the files the audit reads.
struct FakeHost {
    root: PathBuf,
}

impl FakeHost {
    fn new() -> FakeHost {
        let root = std::env::temp_dir().join(format!(
            "ringcast-tune-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&root).unwrap();
        FakeHost { root }
    }

    fn put(&self, rel: &str, text: &str) -> &FakeHost {
        let p = self.root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
        self
    }

    /// A small, untuned host: every profile sysctl at a low value.
    fn untuned() -> FakeHost {
        let h = FakeHost::new();
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
            ("fs/nr_open", "1048576"),
            ("kernel/io_uring_disabled", "2"),
        ] {
            h.put(&format!("proc/sys/{k}"), &format!("{v}\n"));
        }
        h.put(
            "proc/self/limits",
            "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n",
        )
        .put("sys/kernel/mm/transparent_hugepage/enabled", "[always] madvise never\n")
        .put("sys/devices/system/cpu/cpu0/cpufreq/scaling_governor", "powersave\n")
        .put("sys/devices/system/cpu/cpu1/cpufreq/scaling_governor", "powersave\n")
        .put("proc/4242/comm", "irqbalance\n")
        .put("proc/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/sda1 quiet\n")
        .put("sys/class/net/eth0/queues/rx-0/rps_cpus", "0\n")
        .put("sys/class/net/lo/queues/rx-0/rps_cpus", "0\n")
        .put(
            "proc/interrupts",
            "           CPU0       CPU1\n 24:   1000   0   PCI-MSI  eth0-rx-0\n",
        );
        h
    }

    fn root(&self) -> &Path {
        &self.root
    }
}

impl Drop for FakeHost {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn status_of<'a>(findings: &'a [Finding], check: &str) -> &'a Finding {
    findings
        .iter()
        .find(|f| f.check == check)
        .unwrap_or_else(|| panic!("no finding {check}: {findings:#?}"))
}

fn low_latency() -> Profile {
    Profile::load("low-latency").expect("built-in profile")
}

#[test]
fn built_in_profiles_parse_with_their_checks() {
    let ll = low_latency();
    let hc = Profile::load("high-connections").expect("built-in");
    assert_eq!(ll.nofile, 1_048_576);
    assert_eq!(hc.nofile, 2_097_152);
    let somaxconn = ll
        .sysctls
        .iter()
        .find(|s| s.key == "net.core.somaxconn")
        .unwrap();
    assert!(somaxconn.at_least);
    let busy = ll
        .sysctls
        .iter()
        .find(|s| s.key == "net.core.busy_poll")
        .unwrap();
    assert!(!busy.at_least, "an exact setting");
    let rmem = hc
        .sysctls
        .iter()
        .find(|s| s.key == "net.ipv4.tcp_rmem")
        .unwrap();
    assert_eq!(rmem.value, "4096 16384 8388608");
    assert!(ll.settings.audit.latency && !hc.settings.audit.latency);
    assert!(matches!(
        Profile::load("no-such-profile"),
        Err(super::ProfileError::Unknown(_))
    ));
    assert!(Profile::parse(
        "x",
        "a.b\n",
        "r soft nofile 1\n",
        "[cores]\nirq_cores=0\nbridge_cores=0\n[audit]\nlatency=false\n"
    )
    .is_err());
    assert!(Profile::parse("x", "", "nothing\n", "").is_err());
}

#[test]
fn at_least_settings_accept_higher_values_field_by_field() {
    let hc = Profile::load("high-connections").unwrap();
    let tcp_mem = hc
        .sysctls
        .iter()
        .find(|s| s.key == "net.ipv4.tcp_mem")
        .unwrap();
    assert!(tcp_mem.satisfied_by("786432\t1048576\t1572864\n"));
    assert!(tcp_mem.satisfied_by("900000 2000000 3000000"));
    assert!(!tcp_mem.satisfied_by("900000 1000000 3000000"));
    let fin = hc
        .sysctls
        .iter()
        .find(|s| s.key == "net.ipv4.tcp_fin_timeout")
        .unwrap();
    assert!(!fin.satisfied_by("60") && fin.satisfied_by("15"));
}

#[test]
fn an_untuned_host_fails_and_warns_with_fixes() {
    let host = FakeHost::untuned();
    let p = low_latency();
    let layout = p.settings.cores.layout(&[0, 1]);
    let f = audit(host.root(), &p, &layout);
    let somaxconn = status_of(&f, "net.core.somaxconn");
    assert_eq!(somaxconn.status, Status::Fail, "{somaxconn:?}");
    assert!(somaxconn
        .fix
        .contains("sysctl -w net.core.somaxconn=\"65535\""));
    assert_eq!(status_of(&f, "net.core.busy_poll").status, Status::Warn);
    assert_eq!(
        status_of(&f, "fs.file-max").status,
        Status::Ok,
        "huge default passes at-least"
    );
    assert_eq!(
        status_of(&f, "open files (soft limit)").status,
        Status::Fail
    );
    assert_eq!(status_of(&f, "io_uring").status, Status::Warn);
    assert_eq!(status_of(&f, "transparent hugepages").status, Status::Warn);
    assert_eq!(status_of(&f, "CPU frequency governor").status, Status::Warn);
    assert_eq!(status_of(&f, "irqbalance").status, Status::Warn);
    assert_eq!(status_of(&f, "isolated shard cores").status, Status::Warn);
    assert_eq!(
        status_of(&f, "NIC eth0").status,
        Status::Ok,
        "one queue for one shard"
    );
    assert!(f.iter().all(|x| x.check != "NIC lo"));
    let table = super::audit::render(&f);
    assert!(
        table.contains("FAIL") && table.contains("fail\n"),
        "{table}"
    );

    // The connection-heavy profile does not care about latency jitter.
    let hc = Profile::load("high-connections").unwrap();
    let f = audit(host.root(), &hc, &hc.settings.cores.layout(&[0, 1]));
    for check in [
        "transparent hugepages",
        "CPU frequency governor",
        "irqbalance",
        "isolated shard cores",
    ] {
        assert_eq!(status_of(&f, check).status, Status::Ok, "{check}");
    }
}

#[test]
fn a_tuned_host_passes() {
    let host = FakeHost::untuned();
    let p = low_latency();
    for s in &p.sysctls {
        host.put(&format!("proc/sys/{}", s.key.replace('.', "/")), &s.value);
    }
    host.put(
        "proc/self/limits",
        "Max open files            1048576              1048576              files\n",
    )
    .put("proc/sys/kernel/io_uring_disabled", "0\n")
    .put(
        "sys/kernel/mm/transparent_hugepage/enabled",
        "always [madvise] never\n",
    )
    .put(
        "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor",
        "performance\n",
    )
    .put(
        "sys/devices/system/cpu/cpu1/cpufreq/scaling_governor",
        "performance\n",
    )
    .put("proc/4242/comm", "bash\n")
    .put(
        "proc/cmdline",
        "root=/dev/sda1 isolcpus=managed_irq,domain,1 nohz_full=1\n",
    );
    let layout = p.settings.cores.layout(&[0, 1]);
    let f = audit(host.root(), &p, &layout);
    let bad: Vec<&Finding> = f.iter().filter(|x| x.status != Status::Ok).collect();
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
fn apply_shows_the_diff_writes_and_then_the_audit_passes() {
    let host = FakeHost::untuned();
    let p = low_latency();
    let changes = apply::plan(host.root(), &p);
    let keys: Vec<&str> = changes.iter().map(|c| c.key.as_str()).collect();
    assert!(keys.contains(&"net.core.somaxconn") && keys.contains(&"vm.swappiness"));
    assert!(!keys.contains(&"fs.file-max"), "already above the minimum");
    let diff = apply::render(&changes);
    assert!(
        diff.contains("- net.core.somaxconn = 128\n+ net.core.somaxconn = 65535\n"),
        "{diff}"
    );
    let mut log = Vec::new();
    apply::apply(host.root(), &p, &changes, &mut |l| log.push(l)).expect("apply");
    assert_eq!(
        log.len(),
        changes.len() + 1,
        "one line per change, one for the saved file"
    );
    assert!(log[0].starts_with("set "));
    let saved = std::fs::read_to_string(host.root().join("etc/sysctl.d/90-ringcast.conf")).unwrap();
    assert!(saved.contains("net.core.somaxconn = 65535\n"), "{saved}");
    assert!(saved.contains("vm.swappiness = 1\n"), "{saved}");
    assert!(
        !saved.contains("fs.file-max"),
        "a minimum the host already exceeds is not saved (it would lower it at boot): {saved}"
    );
    assert!(
        apply::plan(host.root(), &p).is_empty(),
        "nothing left to change"
    );
    let f = audit(host.root(), &p, &p.settings.cores.layout(&[0, 1]));
    assert!(f
        .iter()
        .filter(|x| x.check.contains('.'))
        .all(|x| x.status == Status::Ok));
}

#[test]
fn core_layouts_leave_interrupt_cores_and_keep_a_shard() {
    let ll = CoreProfile {
        irq_cores: 1,
        bridge_cores: 1,
    };
    let big = ll.layout(&(0..8).collect::<Vec<_>>());
    assert_eq!(
        (big.irq, big.bridge, big.shards),
        (vec![0], vec![1], (2..8).collect())
    );
    let two = ll.layout(&[0, 1]);
    assert_eq!(
        (two.irq, two.bridge, two.shards),
        (vec![0], vec![0], vec![1]),
        "the bridge shares the irq core"
    );
    let one = ll.layout(&[3]);
    assert_eq!((one.irq, one.bridge, one.shards), (vec![], vec![], vec![3]));
    let hc = CoreProfile {
        irq_cores: 0,
        bridge_cores: 0,
    };
    let all = hc.layout(&[0, 1, 2]);
    assert_eq!(
        (all.irq, all.bridge, all.shards),
        (vec![], vec![], vec![0, 1, 2])
    );
    assert_eq!(cpulist(&[0, 1, 2, 3, 6, 8, 9]), "0-3,6,8-9");
    assert_eq!(parse_cpulist("0-3,6,8-9"), vec![0, 1, 2, 3, 6, 8, 9]);
    assert_eq!(parse_cpulist("managed_irq,domain,2-3"), vec![2, 3]);
    assert_eq!(parse_cpulist("9-2,x"), Vec::<usize>::new());
}

//! The core layout of a profile: which cores run shards, which the bridge, which are left to
//! the NIC's interrupts.

/// `[cores]` of a profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoreProfile {
    /// Cores (the first ones ringcast may use) left to NIC interrupts.
    pub irq_cores: usize,
    /// Cores after those for the Redis bridge thread (0: the scheduler places it).
    pub bridge_cores: usize,
}

/// Where each kind of thread runs on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreLayout {
    /// Left to interrupts (nothing of ringcast is pinned there, except a bridge that has no
    /// core of its own).
    pub irq: Vec<usize>,
    /// The bridge thread's cores (empty: not pinned).
    pub bridge: Vec<usize>,
    /// One shard per core, in order.
    pub shards: Vec<usize>,
}

impl CoreProfile {
    /// The layout over `cores` (the cores ringcast may run on, in order). With too few cores
    /// the bridge shares the interrupt cores, and at least one shard always gets a core.
    pub fn layout(&self, cores: &[usize]) -> CoreLayout {
        let n = cores.len();
        if n == 0 {
            return CoreLayout {
                irq: Vec::new(),
                bridge: Vec::new(),
                shards: Vec::new(),
            };
        }
        let irq = self.irq_cores.min(n - 1);
        let bridge = self.bridge_cores.min(n - 1 - irq);
        let irq_set = cores[..irq].to_vec();
        let mut bridge_set = cores[irq..irq + bridge].to_vec();
        if bridge_set.is_empty() && self.bridge_cores > 0 {
            bridge_set = irq_set.clone();
        }
        CoreLayout {
            irq: irq_set,
            bridge: bridge_set,
            shards: cores[irq + bridge..].to_vec(),
        }
    }
}

/// Formats cores as a kernel cpulist (`0-3,6`).
pub fn cpulist(cores: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cores.len() {
        let start = cores[i];
        let mut end = start;
        while i + 1 < cores.len() && cores[i + 1] == end + 1 {
            i += 1;
            end = cores[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(",")
}

/// The cores this process may run on (its affinity mask), or `0..available_parallelism`.
pub fn allowed_cores() -> Vec<usize> {
    let from_status = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(parse_cpulist)
        })
        .filter(|c| !c.is_empty());
    from_status.unwrap_or_else(|| {
        (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
    })
}

/// Parses a kernel cpulist (`0-3,6`); malformed parts are skipped.
pub fn parse_cpulist(s: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.trim().parse::<usize>(), b.trim().parse::<usize>()) {
                    if b >= a && b - a < 4096 {
                        out.extend(a..=b);
                    }
                }
            }
            None => {
                if let Ok(c) = part.trim().parse() {
                    out.push(c);
                }
            }
        }
    }
    out
}

//! Admission control before the upgrade: connections per node and per client IP, handshake rate
//! per IP, the memory budget; and open connections per user after it.
//!
//! Every accepted socket takes an [`AdmitTicket`] at once (so a slowloris client counts against
//! its IP while it dawdles); the ticket's [`Verdict`] is answered after the request head is read
//! (answering before would make the kernel reset the connection and lose the answer).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::config::LimitsConfig;
use crate::ratelimit::{Rate, TokenBucket};

/// What the handshake must answer for a connection, decided at accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on with the handshake.
    Admit,
    /// The node is over its connection or memory budget: 503 with `Retry-After`.
    Busy {
        /// Why (the response body).
        reason: &'static str,
        /// Seconds, drawn from the configured range.
        retry_after_s: u64,
    },
    /// This client IP is over its limit: 429.
    TooMany {
        /// Why (the response body).
        reason: &'static str,
    },
}

impl Verdict {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Admit => "admit",
            Verdict::Busy { .. } => "over_budget",
            Verdict::TooMany { .. } => "ip_limit",
        }
    }
}

#[derive(Debug)]
struct IpEntry {
    open: u32,
    bucket: Option<TokenBucket>,
}

/// Process-wide admission state, shared by every shard.
#[derive(Debug)]
pub struct Admission {
    limits: LimitsConfig,
    handshake_rate: Option<Rate>,
    open: AtomicUsize,
    rss_bytes: AtomicU64,
    per_ip: Mutex<HashMap<IpAddr, IpEntry>>,
    per_user: Mutex<HashMap<Box<str>, u32>>,
}

/// Held for the life of an accepted socket; releases its counts when dropped.
#[derive(Debug)]
pub struct AdmitTicket {
    admission: Arc<Admission>,
    ip: Option<IpAddr>,
    /// What to answer.
    pub verdict: Verdict,
}

impl Drop for AdmitTicket {
    fn drop(&mut self) {
        self.admission.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.ip {
            let mut map = lock(&self.admission.per_ip);
            if let Some(e) = map.get_mut(&ip) {
                e.open = e.open.saturating_sub(1);
                if e.open == 0 && e.bucket.is_none() {
                    map.remove(&ip);
                }
            }
        }
    }
}

/// A poisoned lock only means another thread panicked while holding it (the process aborts on
/// panic in release builds); the counts are still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Admission {
    /// From the `[limits]` section.
    pub fn new(limits: &LimitsConfig) -> Admission {
        Admission {
            handshake_rate: Rate::new(limits.handshakes_per_ip_per_second, limits.handshake_burst),
            limits: limits.clone(),
            open: AtomicUsize::new(0),
            rss_bytes: AtomicU64::new(0),
            per_ip: Mutex::new(HashMap::new()),
            per_user: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a newly accepted socket and decides what its handshake will answer. The per-IP
    /// limits count an IPv6 client by its /64 (one host's usual allocation: it may pick any
    /// address in it).
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> AdmitTicket {
        let ip = limit_key(ip);
        let open_before = self.open.fetch_add(1, Ordering::Relaxed);
        let limits = &self.limits;
        let track_ip = limits.max_connections_per_ip > 0 || self.handshake_rate.is_some();
        let mut verdict = Verdict::Admit;
        if limits.max_connections > 0 && open_before >= limits.max_connections {
            verdict = self.busy("node is at its connection limit; retry later");
        } else if limits.memory_budget_bytes > 0
            && self.rss_bytes.load(Ordering::Relaxed) > limits.memory_budget_bytes
        {
            verdict = self.busy("node is over its memory budget; retry later");
        }
        if track_ip {
            let mut map = lock(&self.per_ip);
            let entry = map.entry(ip).or_insert(IpEntry {
                open: 0,
                bucket: None,
            });
            entry.open += 1;
            if verdict == Verdict::Admit {
                if limits.max_connections_per_ip > 0 && entry.open > limits.max_connections_per_ip {
                    verdict = Verdict::TooMany {
                        reason: "too many connections from this address",
                    };
                } else if let Some(rate) = self.handshake_rate {
                    let bucket = entry
                        .bucket
                        .get_or_insert_with(|| TokenBucket::full(rate, now));
                    if !bucket.try_take(rate, now) {
                        verdict = Verdict::TooMany {
                            reason: "too many new connections from this address; slow down",
                        };
                    }
                }
            }
        }
        AdmitTicket {
            admission: self.clone(),
            ip: track_ip.then_some(ip),
            verdict,
        }
    }

    fn busy(&self, reason: &'static str) -> Verdict {
        let (lo, hi) = (self.limits.retry_after_min_s, self.limits.retry_after_max_s);
        Verdict::Busy {
            reason,
            retry_after_s: fastrand::u64(lo..=hi.max(lo)),
        }
    }

    /// Records the process's resident memory (sampled by a shard).
    pub fn set_rss(&self, bytes: u64) {
        self.rss_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Forgets per-IP entries with no connection and a full bucket.
    pub fn purge(&self, now: Instant) {
        let Some(rate) = self.handshake_rate else {
            return;
        };
        lock(&self.per_ip)
            .retain(|_, e| e.open > 0 || e.bucket.is_some_and(|b| !b.is_full(rate, now)));
    }

    /// Counts a user's new open connection; false when that passes the per-user limit (the
    /// count is not taken then).
    pub fn add_user(&self, user: &str) -> bool {
        let limit = self.limits.max_connections_per_user;
        if limit == 0 {
            return true;
        }
        let mut map = lock(&self.per_user);
        let n = map.entry(user.into()).or_insert(0);
        if *n >= limit {
            if *n == 0 {
                map.remove(user);
            }
            return false;
        }
        *n += 1;
        true
    }

    /// Whether a user already has `max_connections_per_user` connections (a new one would be
    /// refused by [`Admission::add_user`]).
    pub fn user_at_limit(&self, user: &str) -> bool {
        let limit = self.limits.max_connections_per_user;
        limit > 0 && lock(&self.per_user).get(user).is_some_and(|n| *n >= limit)
    }

    /// Releases a count taken by [`Admission::add_user`].
    pub fn remove_user(&self, user: &str) {
        if self.limits.max_connections_per_user == 0 {
            return;
        }
        let mut map = lock(&self.per_user);
        if let Some(n) = map.get_mut(user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(user);
            }
        }
    }

    /// Sockets counted now (handshaking or open).
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// The resident set size of this process, from `/proc/self/statm`.
pub fn read_rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok().filter(|p| *p > 0).unwrap_or(4096))
}

/// The address the per-IP limits count: an IPv4 address (an IPv4-mapped IPv6 one as IPv4),
/// or an IPv6 address's /64 prefix.
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_count_by_their_64_prefix() {
        let key = |s: &str| limit_key(s.parse().unwrap()).to_string();
        assert_eq!(key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2:bbbb:cccc:dddd:eeee"), "2001:db8:1:2::");
        assert_ne!(key("2001:db8:1:3::1"), key("2001:db8:1:2::1"));
        assert_eq!(key("::ffff:10.1.2.3"), "10.1.2.3");
        assert_eq!(key("10.1.2.3"), "10.1.2.3");
    }
    use std::net::Ipv4Addr;

    fn limits(f: impl FnOnce(&mut LimitsConfig)) -> Arc<Admission> {
        let mut l = LimitsConfig::default();
        f(&mut l);
        Arc::new(Admission::new(&l))
    }

    #[test]
    fn node_and_ip_limits() {
        let a = limits(|l| {
            l.max_connections = 3;
            l.max_connections_per_ip = 2;
            l.retry_after_min_s = 2;
            l.retry_after_max_s = 4;
        });
        let ip1 = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
        let ip2 = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        let now = Instant::now();
        let t1 = a.admit(ip1, now);
        let t2 = a.admit(ip1, now);
        assert_eq!(t1.verdict, Verdict::Admit);
        assert_eq!(t2.verdict, Verdict::Admit);
        let t3 = a.admit(ip1, now);
        assert!(matches!(t3.verdict, Verdict::TooMany { .. }));
        drop(t3);
        let t4 = a.admit(ip2, now);
        assert_eq!(t4.verdict, Verdict::Admit);
        let t5 = a.admit(ip2, now);
        match t5.verdict {
            Verdict::Busy { retry_after_s, .. } => assert!((2..=4).contains(&retry_after_s)),
            ref v => panic!("{v:?}"),
        }
        drop((t1, t5));
        assert_eq!(a.open(), 2);
        assert_eq!(a.admit(ip1, now).verdict, Verdict::Admit);
        drop((t2, t4));
        assert_eq!(a.open(), 0);
        assert!(lock(&a.per_ip).is_empty());
    }

    #[test]
    fn handshake_rate_and_users_and_memory() {
        let a = limits(|l| {
            l.handshakes_per_ip_per_second = 2;
            l.max_connections_per_user = 1;
            l.memory_budget_bytes = 1000;
        });
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9));
        let now = Instant::now();
        let tickets: Vec<_> = (0..3).map(|_| a.admit(ip, now)).collect();
        assert_eq!(tickets[1].verdict, Verdict::Admit);
        assert!(matches!(tickets[2].verdict, Verdict::TooMany { .. }));
        drop(tickets);
        a.purge(now);
        assert_eq!(lock(&a.per_ip).len(), 1, "bucket not yet refilled");
        a.purge(now + std::time::Duration::from_secs(2));
        assert!(lock(&a.per_ip).is_empty());
        assert!(a.add_user("alice"));
        assert!(!a.add_user("alice"));
        a.remove_user("alice");
        assert!(a.add_user("alice"));
        a.set_rss(2000);
        assert!(matches!(
            a.admit(ip, now + std::time::Duration::from_secs(5)).verdict,
            Verdict::Busy { .. }
        ));
    }

    /// The only `unsafe` of the gateway (`sysconf` for the page size) runs here: under
    /// AddressSanitizer and Miri too (see docs/reliability.md).
    #[test]
    fn rss_is_whole_pages() {
        let rss = read_rss_bytes().expect("/proc/self/statm is readable");
        assert!(rss > 0 && rss.is_multiple_of(4096), "{rss}");
    }
}

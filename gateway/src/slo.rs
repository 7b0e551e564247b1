//! Latency SLOs: per namespace, the time from a publish being accepted (its offset assigned) to
//! its frame being written to each subscriber's socket, over a sliding window, against the
//! namespace's `latency_target_ms`. `GET /api/slo` reports it.
//!
//! Every written room frame is recorded (not a sample): a recording is a bucket index and an
//! increment in the shard's own memory. Buckets are log-linear (8 per power of two, so a
//! quantile is within 12.5% of the true value) from 1 µs to about 67 s.

use std::time::{Duration, Instant};

/// Sub-buckets per power of two.
const SUB: usize = 8;
/// Powers of two covered (2^26 µs ≈ 67 s; longer latencies land in the last bucket).
const OCTAVES: usize = 27;
/// Buckets in one histogram.
pub const BUCKETS: usize = SUB * OCTAVES;
/// Slots of the sliding window.
pub const SLOTS: usize = 6;
/// Length of one slot: the window is `SLOTS × SLOT` (60 s).
pub const SLOT: Duration = Duration::from_secs(10);

/// A latency histogram in microseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyHist {
    counts: Vec<u64>,
}

impl Default for LatencyHist {
    fn default() -> LatencyHist {
        LatencyHist {
            counts: vec![0; BUCKETS],
        }
    }
}

fn bucket(us: u64) -> usize {
    if us < SUB as u64 {
        return us as usize;
    }
    let octave = 63 - us.leading_zeros() as usize; // floor(log2(us)) ≥ 3
    let sub = ((us >> (octave - 3)) & (SUB as u64 - 1)) as usize;
    ((octave - 2) * SUB + sub).min(BUCKETS - 1)
}

/// The largest value that lands in a bucket (what a quantile reports, so it never flatters).
fn upper(bucket: usize) -> u64 {
    if bucket < SUB {
        return bucket as u64;
    }
    let octave = bucket / SUB + 2;
    let sub = (bucket % SUB) as u64;
    ((SUB as u64 + sub + 1) << (octave - 3)) - 1
}

impl LatencyHist {
    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.counts[bucket(us)] += 1;
    }

    /// Adds another histogram.
    pub fn merge(&mut self, other: &LatencyHist) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    /// How many latencies were recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The latency at quantile `q` (0..=1), in microseconds; `None` when empty.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(upper(i));
            }
        }
        Some(upper(BUCKETS - 1))
    }

    fn clear(&mut self) {
        self.counts.iter_mut().for_each(|c| *c = 0);
    }
}

/// One namespace's sliding window on one shard.
#[derive(Debug)]
struct Window {
    slots: Vec<LatencyHist>,
    current: usize,
    slot_started: Instant,
}

impl Window {
    fn new(now: Instant) -> Window {
        Window {
            slots: vec![LatencyHist::default(); SLOTS],
            current: 0,
            slot_started: now,
        }
    }

    fn rotate(&mut self, now: Instant) {
        let mut passed = now.saturating_duration_since(self.slot_started);
        if passed < SLOT {
            return;
        }
        // Clear every slot the clock moved past (all of them after a long silence).
        let mut steps = 0;
        while passed >= SLOT && steps < SLOTS {
            self.current = (self.current + 1) % SLOTS;
            self.slots[self.current].clear();
            passed -= SLOT;
            steps += 1;
        }
        self.slot_started = now - passed.min(SLOT);
    }
}

/// A shard's recorder: one window per namespace.
#[derive(Debug)]
pub struct SloRecorder {
    windows: Vec<Window>,
}

impl SloRecorder {
    /// A recorder for `namespaces` namespaces.
    pub fn new(namespaces: usize, now: Instant) -> SloRecorder {
        SloRecorder {
            windows: (0..namespaces).map(|_| Window::new(now)).collect(),
        }
    }

    /// Records a write of a message of namespace `ns` published at `published_at`.
    pub fn record(&mut self, ns: usize, published_at: Instant, now: Instant) {
        if let Some(w) = self.windows.get_mut(ns) {
            w.rotate(now);
            let cur = w.current;
            w.slots[cur].record(now.saturating_duration_since(published_at));
        }
    }

    /// Each namespace's histogram over the window.
    pub fn snapshot(&mut self, now: Instant) -> Vec<LatencyHist> {
        self.windows
            .iter_mut()
            .map(|w| {
                w.rotate(now);
                let mut all = LatencyHist::default();
                for s in &w.slots {
                    all.merge(s);
                }
                all
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_tight() {
        let mut last = 0;
        for us in [
            0u64,
            1,
            7,
            8,
            9,
            15,
            16,
            100,
            1000,
            9999,
            10_000,
            1 << 20,
            1 << 30,
        ] {
            let b = bucket(us);
            assert!(b >= last, "{us}");
            last = b;
            let hi = upper(b);
            assert!(hi >= us.min(upper(BUCKETS - 1)), "{us} -> {hi}");
            if (8..(1 << 26)).contains(&us) {
                assert!((hi as f64) <= us as f64 * 1.125 + 1.0, "{us} -> {hi}");
            }
        }
    }

    #[test]
    fn quantiles() {
        let mut h = LatencyHist::default();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        let p50 = h.quantile_us(0.5).unwrap();
        let p99 = h.quantile_us(0.99).unwrap();
        assert!((50_000..=56_250).contains(&p50), "{p50}");
        assert!((99_000..=111_375).contains(&p99), "{p99}");
        assert_eq!(LatencyHist::default().quantile_us(0.5), None);
    }

    #[test]
    fn window_slides() {
        let t0 = Instant::now();
        let mut r = SloRecorder::new(2, t0);
        r.record(1, t0, t0 + Duration::from_millis(3));
        assert_eq!(r.snapshot(t0 + Duration::from_secs(1))[1].count(), 1);
        assert_eq!(r.snapshot(t0 + Duration::from_secs(1))[0].count(), 0);
        // Still inside the 60 s window, then gone.
        assert_eq!(r.snapshot(t0 + Duration::from_secs(55))[1].count(), 1);
        assert_eq!(r.snapshot(t0 + Duration::from_secs(75))[1].count(), 0);
    }
}

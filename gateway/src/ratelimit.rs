//! Token buckets: ops per connection, publishes per connection and namespace, handshakes per IP.

use std::time::Instant;

/// A rate: `per_second` tokens refill each second, up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    per_second: f64,
    burst: f64,
}

impl Rate {
    /// A rate from configuration values; `None` when `per_second` is 0 (no limit). A `burst` of
    /// 0 means "equal to the rate".
    pub fn new(per_second: u32, burst: u32) -> Option<Rate> {
        (per_second > 0).then(|| Rate {
            per_second: f64::from(per_second),
            burst: f64::from(if burst == 0 { per_second } else { burst }),
        })
    }
}

/// One bucket. Starts full.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn full(rate: Rate, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: rate.burst,
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, rate: Rate, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket is full again at `now` (an idle entry that can be forgotten).
    pub fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * rate.per_second >= rate.burst
    }
}

/// A per-namespace bucket of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// Publishes into the namespace with this index.
    Publish(usize),
    /// Ephemeral events into the namespace with this index.
    Event(usize),
}

/// One connection's rate limits: its op bucket, a bucket per namespace and kind it sends into,
/// and its recent `rate_limited` strikes. One pointer wide until the connection first meets a
/// limit: an idle connection, or one on a node without limits, holds no bucket at all (a
/// bucket created on first use starts full, so creating it late changes nothing).
#[derive(Debug, Default)]
pub struct ConnLimiter(Option<Box<Limits>>);

/// The buckets and strikes of a connection that met a limit.
#[derive(Debug, Default)]
struct Limits {
    ops: Option<TokenBucket>,
    buckets: Vec<(Bucket, TokenBucket)>,
    strikes: u32,
    last_strike: Option<Instant>,
}

impl ConnLimiter {
    fn limits(&mut self) -> &mut Limits {
        self.0.get_or_insert_with(Box::default)
    }

    /// Takes a token for one op (`None` rate: always allowed).
    pub fn allow_op(&mut self, rate: Option<Rate>, now: Instant) -> bool {
        let Some(rate) = rate else {
            return true;
        };
        self.limits()
            .ops
            .get_or_insert_with(|| TokenBucket::full(rate, now))
            .try_take(rate, now)
    }

    /// Takes a token from a per-namespace bucket.
    pub fn allow(&mut self, bucket: Bucket, rate: Option<Rate>, now: Instant) -> bool {
        let Some(rate) = rate else {
            return true;
        };
        let limits = self.limits();
        let i = match limits.buckets.iter().position(|(b, _)| *b == bucket) {
            Some(i) => i,
            None => {
                limits.buckets.push((bucket, TokenBucket::full(rate, now)));
                limits.buckets.len() - 1
            }
        };
        limits.buckets[i].1.try_take(rate, now)
    }

    /// Records a refused op; true when the strikes within one second reached `limit` (close
    /// with 4009). A limit of 0 never closes.
    pub fn strike(&mut self, now: Instant, limit: u32) -> bool {
        let limits = self.limits();
        if limits
            .last_strike
            .is_none_or(|t| now.saturating_duration_since(t) > std::time::Duration::from_secs(1))
        {
            limits.strikes = 0;
        }
        limits.strikes += 1;
        limits.last_strike = Some(now);
        limit > 0 && limits.strikes >= limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_rate() {
        let rate = Rate::new(10, 3).unwrap();
        let t0 = Instant::now();
        let mut b = TokenBucket::full(rate, t0);
        assert!(b.try_take(rate, t0));
        assert!(b.try_take(rate, t0));
        assert!(b.try_take(rate, t0));
        assert!(!b.try_take(rate, t0));
        // 10/s: one token per 100 ms.
        assert!(!b.try_take(rate, t0 + Duration::from_millis(50)));
        assert!(b.try_take(rate, t0 + Duration::from_millis(120)));
        assert!(!b.is_full(rate, t0 + Duration::from_millis(120)));
        assert!(b.is_full(rate, t0 + Duration::from_secs(1)));
        assert_eq!(Rate::new(0, 5), None);
        assert_eq!(Rate::new(5, 0), Rate::new(5, 5));
    }

    #[test]
    fn conn_limiter_strikes_within_a_second() {
        let t0 = Instant::now();
        let mut l = ConnLimiter::default();
        let rate = Rate::new(1, 1);
        assert!(l.allow_op(rate, t0));
        assert!(!l.allow_op(rate, t0));
        assert!(l.allow_op(None, t0));
        assert!(l.allow(Bucket::Publish(2), rate, t0));
        assert!(!l.allow(Bucket::Publish(2), rate, t0));
        assert!(
            l.allow(Bucket::Publish(3), rate, t0),
            "buckets are per namespace"
        );
        assert!(l.allow(Bucket::Event(2), rate, t0), "and per kind");
        assert!(!l.strike(t0, 3));
        assert!(!l.strike(t0, 3));
        // A pause of over a second forgives.
        let t1 = t0 + Duration::from_millis(1500);
        assert!(!l.strike(t1, 3));
        assert!(!l.strike(t1, 3));
        assert!(l.strike(t1, 3));
        assert!(!ConnLimiter::default().strike(t0, 0));
    }

    #[test]
    fn a_connection_without_limits_holds_no_buckets() {
        let t0 = Instant::now();
        let mut l = ConnLimiter::default();
        assert!(l.allow_op(None, t0));
        assert!(l.allow(Bucket::Publish(0), None, t0));
        assert!(l.0.is_none(), "no limit met: nothing allocated");
        assert_eq!(std::mem::size_of::<ConnLimiter>(), 8);
        assert!(l.allow_op(Rate::new(1, 1), t0));
        assert!(l.0.is_some());
    }
}

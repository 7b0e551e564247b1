//! The canary: a probe this node publishes to its own channel and must hear back through the
//! subscription connection; when it does not, the link is dropped and rebuilt.

use std::sync::atomic::Ordering;
use std::time::Instant;

use redis::{RedisResult, Value};

use crate::redis::wire::{self};

use super::link::report_link_error;
use super::Bridge;

/// The canary channel's subscription on the current link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CanarySub {
    NotSent,
    Sent,
    InForce,
}

/// The last canary probe.
#[derive(Debug, Default)]
pub(super) struct Canary {
    pub(super) seq: u64,
    pub(super) sent_at: Option<Instant>,
    pub(super) back: bool,
}

impl Bridge {
    pub(super) fn canary_tick(&mut self, now: Instant) {
        let Some(link) = &self.link else {
            return;
        };
        if link.canary != CanarySub::InForce {
            return;
        }
        if let Some(sent) = self.canary.sent_at {
            let waited = now.saturating_duration_since(sent);
            if !self.canary.back {
                if waited > self.settings.canary_timeout {
                    self.health.canary_ok.store(false, Ordering::SeqCst);
                    self.health.canary_failed.store(true, Ordering::SeqCst);
                    metrics::gauge!("ringcast_bridge_canary_ok").set(0.0);
                    self.link_down("the canary probe did not come back through the subscription");
                }
                return;
            }
            if waited < self.settings.canary_interval {
                return;
            }
        }
        self.canary.seq += 1;
        self.canary.back = false;
        self.canary.sent_at = Some(now);
        let mut conn = link.cmd.clone();
        let (channel, key) = wire::canary_names(&self.settings.prefix, &self.instance);
        let probe = format!("c{}", self.canary.seq);
        let cmd = self.publish_cmd();
        let scripts = self.scripts.clone();
        let done = self.done_tx.clone();
        let gen = self.gen;
        tokio::spawn(async move {
            // A probe that fails to go out shows up as one that did not come back, except for a
            // link error (a demoted primary answers READONLY), which moves the link at once.
            let r: RedisResult<Value> = scripts
                .canary
                .key(key)
                .arg(channel)
                .arg(probe)
                .arg(cmd)
                .invoke_async(&mut conn)
                .await;
            if let Err(e) = r {
                report_link_error(&done, gen, &e);
            }
        });
    }
}

//! Time-driven work, every `SWEEP_INTERVAL`: heartbeats, closing deadlines, token expiry,
//! idle connections, metrics, documents' snapshots; and the start of graceful shutdown.

use std::time::{Duration, Instant};

use bytes::Bytes;
use proto_codec::protocol::ServerEvent;
use proto_codec::ws::{encode_frame, CloseCode, OpCode};

use crate::connection::shared::{CloseRequest, ConnShared};
use crate::endpoint::profile::Heartbeat;

use super::{ShardCtx, CLOSE_TIMEOUT};

impl ShardCtx {
    pub(super) fn sweep(&self) {
        let now = Instant::now();
        self.now.set(now);
        let sweeps = self.sweeps.get() + 1;
        self.sweeps.set(sweeps);
        if self.id == 0 && sweeps.is_multiple_of(10) {
            // Once a second: the memory figure admission control compares with its budget.
            if let Some(rss) = crate::admission::read_rss_bytes() {
                self.admission.set_rss(rss);
            }
            self.admission.purge(now);
        }
        let unix_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let ws = &self.config.websocket;
        let interval = Duration::from_millis(ws.heartbeat_interval_ms);
        let timeout = Duration::from_millis(ws.heartbeat_timeout_ms);
        let idle = (ws.idle_timeout_ms > 0).then(|| Duration::from_millis(ws.idle_timeout_ms));
        let mut queued = 0usize;
        let release = sweeps.is_multiple_of(10);
        for conn in self.conns.borrow().values() {
            queued += conn.queued_bytes();
            if release {
                if let Ok(mut outbox) = conn.outbox().try_borrow_mut() {
                    outbox.release_if_empty();
                }
            }
            if let Some(since) = conn.closing_since.get() {
                if now.saturating_duration_since(since) > CLOSE_TIMEOUT {
                    conn.force_end.set(true);
                    conn.wake();
                }
                continue;
            }
            if let Some(at) = conn.shutdown_close_at.get() {
                if now >= at {
                    let hint = fastrand::u64(0..=self.config.shutdown.reconnect_hint_max_ms);
                    if conn.profile.stream {
                        // EventSource reconnects after `retry:` (docs/protocol.md §18.3).
                        conn.push_bytes(Bytes::from(format!("retry: {hint}\n\n")));
                    }
                    conn.request_close(CloseRequest {
                        code: CloseCode::GOING_AWAY,
                        reason: format!("{{\"reconnect_after_ms\":{hint}}}"),
                        discard_queue: false,
                    });
                    continue;
                }
            }
            match conn.profile.heartbeat {
                // A long poll ends by itself within its hold.
                Heartbeat::None => {
                    self.check_token_expiry(conn, unix_now);
                    continue;
                }
                // An event stream cannot answer pings: a comment keeps proxies from timing it
                // out, and a dead peer shows up as a write error.
                Heartbeat::Comment => {
                    if now.saturating_duration_since(conn.last_rx.get()) >= interval {
                        conn.last_rx.set(now);
                        conn.push_bytes(Bytes::from_static(proto_codec::sse::HEARTBEAT));
                    }
                    self.check_token_expiry(conn, unix_now);
                    continue;
                }
                Heartbeat::Ping => {}
            }
            match conn.ping_sent.get() {
                Some(sent) if now.saturating_duration_since(sent) > timeout => {
                    conn.request_close(CloseRequest {
                        code: proto_codec::protocol::codes::close::HEARTBEAT_TIMEOUT,
                        reason: "heartbeat timeout".into(),
                        discard_queue: true,
                    });
                }
                None if now.saturating_duration_since(conn.last_rx.get()) >= interval => {
                    conn.ping_sent.set(Some(now));
                    conn.push_ws_control(encode_frame(OpCode::Ping, false, b""));
                }
                _ => {}
            }
            self.check_token_expiry(conn, unix_now);
            if let Some(idle) = idle {
                if conn.profile.idles_out
                    && now.saturating_duration_since(conn.last_op.get()) > idle
                {
                    conn.request_close(CloseRequest {
                        code: proto_codec::protocol::codes::close::IDLE_TIMEOUT,
                        reason: "idle timeout".into(),
                        discard_queue: false,
                    });
                }
            }
        }
        self.metrics.outbound_queued.set(queued as f64);
        self.metrics
            .mailbox_depth
            .set(self.mailboxes.depth(self.id) as f64);
        for kind in super::kinds::KINDS {
            kind.on_sweep(self, now);
        }
        let mut broker = self.broker.borrow_mut();
        broker.expire(now);
        self.metrics.rooms.set(broker.room_count() as f64);
    }

    /// Warns a connection whose token is about to expire (`token_expiring`), and closes it with
    /// 4002 once the grace period after `exp` is over without a `refresh`.
    pub(super) fn check_token_expiry(&self, conn: &ConnShared, unix_now_ms: u64) {
        let Some(exp) = conn.principal.borrow().expires_at else {
            return;
        };
        let auth = &self.config.auth;
        let close_at_ms = exp
            .saturating_mul(1000)
            .saturating_add(auth.expiry_grace_ms);
        if unix_now_ms >= close_at_ms {
            crate::metrics::limit_hit("token_expired_close");
            conn.request_close(CloseRequest {
                code: proto_codec::protocol::codes::close::TOKEN_EXPIRED,
                reason: "token expired".into(),
                discard_queue: false,
            });
        } else if !conn.expiry_warned.get()
            && unix_now_ms.saturating_add(auth.expiry_warning_ms) >= exp.saturating_mul(1000)
        {
            conn.expiry_warned.set(true);
            conn.send_control(&ServerEvent::TokenExpiring {
                expires_in_ms: close_at_ms - unix_now_ms,
            });
        }
    }

    pub(super) fn begin_shutdown(&self) {
        if self.shutting_down.replace(true) {
            return;
        }
        for w in self.accept_wakers.borrow_mut().iter_mut() {
            if let Some(w) = w.take() {
                w.wake();
            }
        }
        let now = Instant::now();
        let drain_ms = self.config.shutdown.drain_ms;
        for conn in self.conns.borrow().values() {
            let delay = Duration::from_millis(fastrand::u64(0..=drain_ms));
            conn.shutdown_close_at.set(Some(now + delay));
        }
    }
}

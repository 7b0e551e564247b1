//! [websocket]: the WebSocket, SSE and long-poll connections.

use serde::{Deserialize, Serialize};

use super::error::{invalid, ConfigError};

/// WebSocket connection settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Largest message (and frame) a client may send, after decompression.
    pub max_message_bytes: usize,
    /// Time a client has to send a complete upgrade request.
    pub handshake_timeout_ms: u64,
    /// Server ping interval.
    pub heartbeat_interval_ms: u64,
    /// Time allowed for any frame to arrive after a ping before closing with 4005.
    pub heartbeat_timeout_ms: u64,
    /// Close connections that sent no op for this long (0 = never).
    pub idle_timeout_ms: u64,
    /// Negotiate permessage-deflate when a client offers it.
    pub compression: bool,
    /// zlib level for compressed room messages (1–9).
    pub compression_level: u32,
    /// Bytes queued for one connection before the slow-consumer policy applies.
    pub outbound_high_water_bytes: usize,
    /// Serve `GET /echo` (a WebSocket echo through the same path as room traffic), for
    /// conformance testing. Off by default.
    pub echo_endpoint: bool,
    /// Serve `GET /raw/<room>` (raw broadcast: a text frame from a `?role=pub` connection goes
    /// as is to every other connection on the path), for benchmarks against peers that do not
    /// speak the app protocol. Off by default.
    pub raw_endpoint: bool,
    /// Allowed `Origin` values (empty = any).
    pub allowed_origins: Vec<String>,
    /// How long `GET /poll` holds a request with nothing to answer.
    pub long_poll_hold_ms: u64,
}

impl Default for WebSocketConfig {
    fn default() -> WebSocketConfig {
        WebSocketConfig {
            max_message_bytes: 64 * 1024,
            handshake_timeout_ms: 5_000,
            heartbeat_interval_ms: 25_000,
            heartbeat_timeout_ms: 10_000,
            idle_timeout_ms: 0,
            compression: true,
            compression_level: 6,
            outbound_high_water_bytes: 1024 * 1024,
            echo_endpoint: false,
            raw_endpoint: false,
            allowed_origins: Vec::new(),
            long_poll_hold_ms: 25_000,
        }
    }
}

impl WebSocketConfig {
    /// Checks the section.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let ws = self;
        if ws.max_message_bytes < 128 {
            return Err(invalid(
                "websocket.max_message_bytes",
                "must be at least 128",
            ));
        }
        if ws.heartbeat_interval_ms < 100 {
            return Err(invalid(
                "websocket.heartbeat_interval_ms",
                "must be at least 100",
            ));
        }
        if ws.heartbeat_timeout_ms < 100 {
            return Err(invalid(
                "websocket.heartbeat_timeout_ms",
                "must be at least 100",
            ));
        }
        if ws.handshake_timeout_ms == 0 {
            return Err(invalid("websocket.handshake_timeout_ms", "must be above 0"));
        }
        if !(1..=9).contains(&ws.compression_level) {
            return Err(invalid("websocket.compression_level", "must be 1 to 9"));
        }
        if ws.outbound_high_water_bytes < ws.max_message_bytes {
            return Err(invalid(
                "websocket.outbound_high_water_bytes",
                "must be at least websocket.max_message_bytes",
            ));
        }
        Ok(())
    }
}

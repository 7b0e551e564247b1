//! Configuration: one `Config` with its defaults in one place, loaded from a TOML file, then
//! `RINGCAST_*` environment variables, then command-line flags (each overriding the previous).
//!
//! Every key can be set from the environment: `RINGCAST_<KEY>` for a top-level key and
//! `RINGCAST_<SECTION>__<KEY>` for a key in a section (`RINGCAST_WEBSOCKET__MAX_MESSAGE_BYTES`).
//! Unknown keys are errors that name the key.

use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Which I/O driver the shards run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum IoDriver {
    /// io_uring where the kernel allows it, else epoll.
    Auto,
    /// io_uring only; start-up fails without it.
    IoUring,
    /// epoll only.
    Epoll,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Public listener (WebSocket, SSE, long-polling).
    pub listen: SocketAddr,
    /// Admin listener (/healthz, /readyz, /metrics, the server API).
    pub admin_listen: SocketAddr,
    /// Shard threads; 0 means one per available core.
    pub shards: usize,
    /// I/O driver.
    pub io_driver: IoDriver,
    /// Pin each shard thread to a core.
    pub pin_cores: bool,
    /// Log filter (`error`, `warn`, `info`, `debug`, `trace`, or a tracing directive).
    pub log_level: String,
    /// This node's name in `hello` events and metrics; defaults to the host name.
    pub node_name: String,
    /// WebSocket connection settings.
    pub websocket: WebSocketConfig,
    /// Room and history settings.
    pub rooms: RoomsConfig,
    /// Server API settings.
    pub api: ApiConfig,
    /// Graceful shutdown settings.
    pub shutdown: ShutdownConfig,
}

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
}

/// Room and history settings (per-namespace policy comes with the security issue).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoomsConfig {
    /// Messages kept per room for recovery.
    pub history_size: usize,
    /// How long a message stays recoverable.
    pub history_ttl_ms: u64,
    /// Rooms one connection may be subscribed to.
    pub max_rooms_per_connection: usize,
    /// Largest `data` of one published message, in bytes.
    pub max_data_bytes: usize,
}

/// Server API (on the admin listener).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// API key for `POST /api/publish` (`Authorization: Bearer <key>`); empty disables the API.
    pub key: String,
}

/// Graceful shutdown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Window over which clients are closed with 1001 (spread to avoid a reconnect storm).
    pub drain_ms: u64,
    /// Upper bound of the reconnect hint sent to clients.
    pub reconnect_hint_max_ms: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            shards: 0,
            io_driver: IoDriver::Auto,
            pin_cores: true,
            log_level: "info".into(),
            node_name: String::new(),
            websocket: WebSocketConfig::default(),
            rooms: RoomsConfig::default(),
            api: ApiConfig::default(),
            shutdown: ShutdownConfig::default(),
        }
    }
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
        }
    }
}

impl Default for RoomsConfig {
    fn default() -> RoomsConfig {
        RoomsConfig {
            history_size: 256,
            history_ttl_ms: 300_000,
            max_rooms_per_connection: 1024,
            max_data_bytes: 60 * 1024,
        }
    }
}

impl Default for ShutdownConfig {
    fn default() -> ShutdownConfig {
        ShutdownConfig {
            drain_ms: 5_000,
            reconnect_hint_max_ms: 5_000,
        }
    }
}

/// A configuration that cannot be used, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key is unknown or has the wrong type.
    #[error("{origin}: {message}")]
    Parse {
        /// The file or "environment".
        origin: String,
        /// The parser's message, which names the key.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid value for `{key}`: {reason}")]
    Invalid {
        /// The key, dotted (`websocket.max_message_bytes`).
        key: &'static str,
        /// Why.
        reason: String,
    },
}

impl Config {
    /// Loads a file (if given), then applies `RINGCAST_*` variables from `env`, then validates.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (mut table, origin) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    origin: p.display().to_string(),
                    message: e.message().to_string(),
                })?;
                (table, p.display().to_string())
            }
            None => (toml::Table::new(), "defaults".to_string()),
        };
        let overridden = apply_env(&mut table, env)?;
        let origin = if overridden {
            format!("{origin} + environment")
        } else {
            origin
        };
        let config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    origin,
                    message: e.message().to_string(),
                })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and relations between keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| ConfigError::Invalid {
            key,
            reason: reason.to_string(),
        };
        let ws = &self.websocket;
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
        if self.rooms.max_data_bytes == 0 {
            return Err(invalid("rooms.max_data_bytes", "must be above 0"));
        }
        if self.rooms.max_rooms_per_connection == 0 {
            return Err(invalid("rooms.max_rooms_per_connection", "must be above 0"));
        }
        if self.shards > 1024 {
            return Err(invalid("shards", "must be at most 1024"));
        }
        if self.log_level.trim().is_empty() {
            return Err(invalid("log_level", "must not be empty"));
        }
        Ok(())
    }

    /// The number of shards to run: the configured one, or one per available core.
    pub fn shard_count(&self) -> usize {
        if self.shards > 0 {
            self.shards
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    /// The node name: the configured one, or the host name.
    pub fn node_name(&self) -> String {
        if !self.node_name.is_empty() {
            return self.node_name.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "ringcast".to_string())
    }
}

/// Applies `RINGCAST_*` variables to the TOML table. Returns whether any applied.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<bool, ConfigError> {
    let mut any = false;
    for (name, value) in env {
        let Some(key) = name.strip_prefix("RINGCAST_") else {
            continue;
        };
        let path: Vec<String> = key.split("__").map(str::to_ascii_lowercase).collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::Parse {
                origin: "environment".into(),
                message: format!("malformed variable name `{name}`"),
            });
        }
        // A value is read as TOML when it parses as one (numbers, booleans, arrays), else as a
        // string, so `RINGCAST_SHARDS=4` is a number and `RINGCAST_LISTEN=0.0.0.0:80` a string.
        let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.clone()));
        let mut cursor = &mut *table;
        for section in &path[..path.len() - 1] {
            let entry = cursor
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            cursor = match entry {
                toml::Value::Table(t) => t,
                _ => {
                    return Err(ConfigError::Parse {
                        origin: "environment".into(),
                        message: format!("`{name}`: `{section}` is not a section"),
                    })
                }
            };
        }
        if let Some(last) = path.last() {
            cursor.insert(last.clone(), parsed);
        }
        any = true;
    }
    Ok(any)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_work_without_a_file() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.admin_listen.to_string(), "127.0.0.1:9090");
    }

    #[test]
    fn env_overrides_file_values() {
        let dir = std::env::temp_dir().join(format!("ringcast-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.toml");
        std::fs::write(&file, "shards = 2\n[websocket]\nmax_message_bytes = 4096\n").unwrap();
        let c = Config::load(
            Some(&file),
            env(&[
                ("RINGCAST_SHARDS", "3"),
                ("RINGCAST_LISTEN", "127.0.0.1:7000"),
                ("RINGCAST_WEBSOCKET__ECHO_ENDPOINT", "true"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.shards, 3);
        assert_eq!(c.listen.to_string(), "127.0.0.1:7000");
        assert_eq!(c.websocket.max_message_bytes, 4096);
        assert!(c.websocket.echo_endpoint);
    }

    #[test]
    fn bad_keys_are_named() {
        let e = Config::load(None, env(&[("RINGCAST_WEBSOCKET__MAX_MESAGE_BYTES", "1")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_mesage_bytes"), "{e}");
        let e = Config::load(None, env(&[("RINGCAST_WEBSOCKET__COMPRESSION_LEVEL", "0")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("websocket.compression_level"), "{e}");
        let e = Config::load(None, env(&[("RINGCAST_SHARDS", "many")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("shards") || e.contains("invalid type"), "{e}");
    }
}

//! Configuration: one `Config`, loaded from a TOML file, then `RINGCAST_*` environment
//! variables, then command-line flags (each overriding the previous). Each section is a file of
//! its own with its struct, its defaults and its checks side by side (`websocket.rs` for
//! `[websocket]`, …); this file holds the top level, loading and the checks between sections.
//!
//! Every key can be set from the environment: `RINGCAST_<KEY>` for a top-level key and
//! `RINGCAST_<SECTION>__<KEY>` for a key in a section (`RINGCAST_WEBSOCKET__MAX_MESSAGE_BYTES`).
//! Unknown keys are errors that name the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use crate::secret::{CredentialUrl, Secret};

mod api;
mod auth;
mod broker;
mod crdt;
mod error;
mod limits;
mod namespaces;
mod pusher;
mod shutdown;
mod tls;
mod websocket;

pub use api::ApiConfig;
pub use auth::{AuthConfig, KeyAlg, KeyConfig};
pub use broker::{BrokerConfig, BrokerKind};
pub use crdt::CrdtConfig;
use error::invalid;
pub use error::ConfigError;
pub use limits::LimitsConfig;
pub use namespaces::{Access, NamespacePolicy, Publishers, RoomKind, SlowConsumer};
pub use pusher::{PusherApp, PusherConfig};
pub use shutdown::ShutdownConfig;
pub use tls::TlsConfig;
pub use websocket::WebSocketConfig;

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

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// One human-readable line per event; coloured only when stderr is a terminal.
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields`, `target`, ...), for log
    /// shippers.
    Json,
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
    /// A tuning profile's core layout to pin by (`low-latency`, `high-connections`, or a profile
    /// directory): shards on its shard cores (one shard per core when `shards` is 0), the Redis
    /// bridge on its bridge cores, its interrupt cores left alone. Empty: shard *i* on core *i*.
    pub cpu_profile: String,
    /// Log filter (`error`, `warn`, `info`, `debug`, `trace`, or a tracing directive).
    pub log_level: String,
    /// Log line format: `text` or `json`.
    pub log_format: LogFormat,
    /// This node's name in `hello` events and metrics; defaults to the host name.
    pub node_name: String,
    /// WebSocket connection settings.
    pub websocket: WebSocketConfig,
    /// The policy of the default namespace (rooms without a `.`), and the base every namespace
    /// in `namespaces` starts from (a key a namespace does not set is taken from here, except
    /// `anonymous`, which each namespace grants for itself).
    pub rooms: NamespacePolicy,
    /// Per-namespace policies, by namespace name (`prices` for `prices.*`).
    pub namespaces: BTreeMap<String, NamespacePolicy>,
    /// Refuse rooms whose namespace is neither listed in `namespaces` nor the default one
    /// (`not_found`). When false, such rooms use the `rooms` policy.
    pub strict_namespaces: bool,
    /// JWT authentication.
    pub auth: AuthConfig,
    /// Limits and abuse control.
    pub limits: LimitsConfig,
    /// TLS on the public side.
    pub tls: TlsConfig,
    /// Server API settings.
    pub api: ApiConfig,
    /// Graceful shutdown settings.
    pub shutdown: ShutdownConfig,
    /// Where rooms' order and history live: in this process, or in Redis shared by many nodes.
    pub broker: BrokerConfig,
    /// Collaborative (`kind = "crdt"`) rooms: where their documents are kept.
    pub crdt: CrdtConfig,
    /// Pusher Channels protocol compatibility (`/app/<key>`, `/apps/<id>/…`): its apps.
    pub pusher: PusherConfig,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            shards: 0,
            io_driver: IoDriver::Auto,
            pin_cores: true,
            cpu_profile: String::new(),
            log_level: "info".into(),
            log_format: LogFormat::Text,
            node_name: String::new(),
            websocket: WebSocketConfig::default(),
            rooms: NamespacePolicy::default(),
            namespaces: BTreeMap::new(),
            strict_namespaces: false,
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            tls: TlsConfig::default(),
            api: ApiConfig::default(),
            shutdown: ShutdownConfig::default(),
            broker: BrokerConfig::default(),
            crdt: CrdtConfig::default(),
            pusher: PusherConfig::default(),
        }
    }
}

impl Config {
    /// Loads a file (if given), then applies `RINGCAST_*` variables from `env`, then validates.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                Config::from_toml(&text, &p.display().to_string(), env)
            }
            None => Config::from_toml("", "defaults", env),
        }
    }

    /// [`Config::load`] on text instead of a file: parses `text` as a configuration file, then
    /// applies `RINGCAST_*` variables from `env`, then validates. `origin` names the text in
    /// errors. The whole path from untrusted text to a `Config`, which the `config` fuzz target
    /// drives.
    pub fn from_toml(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            message: e.message().to_string(),
        })?;
        let overridden = apply_env(&mut table, env)?;
        let origin = if overridden {
            format!("{origin} + environment")
        } else {
            origin.to_string()
        };
        inherit_namespace_policies(&mut table);
        // serde_path_to_error names the key at fault (`rooms.anonymous: unknown variant …`).
        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(
            |e: serde_path_to_error::Error<toml::de::Error>| {
                let path = e.path().to_string();
                let message = e.into_inner().message().to_string();
                ConfigError::Parse {
                    origin,
                    message: if path.is_empty() || path == "." {
                        message
                    } else {
                        format!("`{path}`: {message}")
                    },
                }
            },
        )?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and relations between keys: each section's own checks (in its file), then
    /// those between sections.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.broker.validate()?;
        self.websocket.validate()?;
        for (name, ns) in std::iter::once(("", &self.rooms))
            .chain(self.namespaces.iter().map(|(name, ns)| (name.as_str(), ns)))
        {
            ns.validate(name)?;
        }
        let has_crdt = self.rooms.kind == RoomKind::Crdt
            || self.namespaces.values().any(|ns| ns.kind == RoomKind::Crdt);
        self.crdt
            .validate(has_crdt, self.websocket.outbound_high_water_bytes)?;
        self.pusher.validate()?;
        for name in self.namespaces.keys() {
            namespaces::validate_name(name)?;
        }
        self.limits.validate()?;
        self.auth.validate()?;
        self.tls.validate()?;
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

/// Keys a namespace never inherits from `[rooms]`: access is granted per namespace, so opening
/// the default namespace to anonymous clients never opens another one.
/// Nor is `kind`: a collaborative namespace never turns others into documents.
const NOT_INHERITED: &[&str] = &["anonymous", "kind"];

/// Fills every `[namespaces.X]` table with the `[rooms]` keys it does not set, so a namespace
/// inherits the base policy key by key (a typo is still caught by `deny_unknown_fields`), except
/// the keys of [`NOT_INHERITED`].
fn inherit_namespace_policies(table: &mut toml::Table) {
    let base = match table.get("rooms") {
        Some(toml::Value::Table(t)) => t.clone(),
        _ => toml::Table::new(),
    };
    if let Some(toml::Value::Table(namespaces)) = table.get_mut("namespaces") {
        for (_, ns) in namespaces.iter_mut() {
            if let toml::Value::Table(ns) = ns {
                for (k, v) in base
                    .iter()
                    .filter(|(k, _)| !NOT_INHERITED.contains(&k.as_str()))
                {
                    ns.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
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
        // `RINGCAST_CONFIG` is the `--config` flag's variable: the file's path, not a key.
        if key == "CONFIG" {
            continue;
        }
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
                // The `--config` flag's variable names the file; it is not a key.
                ("RINGCAST_CONFIG", "/etc/ringcast/ringcast.toml"),
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

//! Configuration: one `Config` with its defaults in one place, loaded from a TOML file, then
//! `RINGCAST_*` environment variables, then command-line flags (each overriding the previous).
//!
//! Every key can be set from the environment: `RINGCAST_<KEY>` for a top-level key and
//! `RINGCAST_<SECTION>__<KEY>` for a key in a section (`RINGCAST_WEBSOCKET__MAX_MESSAGE_BYTES`).
//! Unknown keys are errors that name the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::secret::{CredentialUrl, Secret};

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
    /// A tuning profile's core layout to pin by (`low-latency`, `high-connections`, or a profile
    /// directory): shards on its shard cores (one shard per core when `shards` is 0), the Redis
    /// bridge on its bridge cores, its interrupt cores left alone. Empty: shard *i* on core *i*.
    pub cpu_profile: String,
    /// Log filter (`error`, `warn`, `info`, `debug`, `trace`, or a tracing directive).
    pub log_level: String,
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

/// Pusher Channels protocol compatibility (docs/pusher.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PusherConfig {
    /// The apps; none: the Pusher endpoints answer 404.
    pub apps: Vec<PusherApp>,
    /// The `activity_timeout` told to clients (seconds): a client pings after this long
    /// without a message.
    pub activity_timeout_s: u64,
    /// Whether native clients (`/ws`, `/sse`, `/poll`) may use the rooms of Pusher channels,
    /// under the `pusher` namespace's policy (`[namespaces.pusher]`; without it, a token's
    /// grants only). Off: refused with `forbidden`, as the Pusher signatures are those rooms'
    /// only authorization (docs/security.md).
    pub native_access: bool,
}

impl Default for PusherConfig {
    fn default() -> PusherConfig {
        PusherConfig {
            apps: Vec::new(),
            activity_timeout_s: 120,
            native_access: false,
        }
    }
}

/// One Pusher app: its credentials and what it allows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PusherApp {
    /// The app id (in `/apps/<id>/…` and the rooms `pusher.<id>/<channel>`): letters, digits,
    /// `-` and `_`.
    pub id: String,
    /// The public key clients connect with (`/app/<key>`).
    pub key: String,
    /// The secret that signs channel auth, user sign-in, API requests and webhooks.
    pub secret: Secret,
    /// Whether clients may send `client-*` events (on private and presence channels).
    #[serde(default)]
    pub enable_client_messages: bool,
    /// Open connections of this app on one node (0: no limit beyond `limits`); past it a new
    /// connection is closed with 4004.
    #[serde(default)]
    pub max_connections: usize,
    /// Client events per second one connection of this app may send (0: the `pusher`
    /// namespace's `event_rate` and `event_burst`).
    #[serde(default)]
    pub max_client_events_per_second: u32,
    /// Webhook URLs (`http://host:port/path`) that get `channel_occupied`, `channel_vacated`,
    /// `member_added` and `member_removed`, signed with the secret.
    #[serde(default)]
    pub webhooks: Vec<CredentialUrl>,
}

/// Collaborative rooms (`kind = "crdt"` namespaces, docs/collaboration.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CrdtConfig {
    /// With the embedded broker: the directory documents persist in (a snapshot and a log of
    /// updates per room), so a restart keeps them. Empty: in memory only. (With Redis, documents
    /// live in Redis.)
    pub snapshot_dir: String,
    /// A room's document is snapshotted this long after its first unsnapshotted update (and on
    /// the last unsubscribe, on shutdown, and after half its namespace's `history_size` updates).
    pub snapshot_interval_ms: u64,
    /// Awareness states (cursors, names) a room keeps, every node's clients together; a new
    /// client's state past it is not kept nor relayed.
    pub max_awareness_states: usize,
    /// Bytes of one awareness state's JSON; a larger state is not kept nor relayed.
    pub max_awareness_state_bytes: usize,
    /// Client ids one connection may set awareness states for (y-websocket uses one).
    pub max_awareness_clients_per_connection: usize,
}

impl Default for CrdtConfig {
    fn default() -> CrdtConfig {
        CrdtConfig {
            snapshot_dir: String::new(),
            snapshot_interval_ms: 5_000,
            max_awareness_states: 200,
            max_awareness_state_bytes: 2048,
            max_awareness_clients_per_connection: 4,
        }
    }
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
    /// How long `GET /poll` holds a request with nothing to answer.
    pub long_poll_hold_ms: u64,
}

/// What a namespace's rooms are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoomKind {
    /// Rooms of messages (JSON or binary), the default.
    Messages,
    /// Collaborative documents: every message is a Yjs update, merged on the room's home shard
    /// into one document that joining clients sync from (docs/collaboration.md).
    Crdt,
}

/// The policy of one namespace (or of the default namespace, `[rooms]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NamespacePolicy {
    /// What the rooms are: `messages` or `crdt` (never inherited from `[rooms]`).
    pub kind: RoomKind,
    /// For `crdt` rooms: the largest document, in encoded bytes; an update that would pass it
    /// is refused.
    pub max_document_bytes: usize,
    /// Messages kept per room for recovery (0: no history).
    pub history_size: usize,
    /// How long a message stays recoverable.
    pub history_ttl_ms: u64,
    /// Whether `subscribe` with `since` replays missed messages (false: always
    /// `recovered: false`).
    pub recovery: bool,
    /// Whether the `presence` op is allowed.
    pub presence: bool,
    /// Whether `join`/`leave` events are sent to subscribers.
    pub join_leave: bool,
    /// Who may publish: clients (with permission) or only the server API.
    pub publish: Publishers,
    /// What happens to a connection that reads too slowly.
    pub slow_consumer: SlowConsumer,
    /// For `slow_consumer = "conflate"`: the top-level JSON field of `data` whose value is the
    /// conflation key (messages with equal values replace each other); empty: the whole room is
    /// one key (only the newest message matters). Messages without the field are not conflated.
    pub conflation_key: String,
    /// A queued room message older than this when its turn to be written comes is dropped for
    /// that subscriber, with a `gap` (0: never).
    pub max_age_ms: u64,
    /// Whether ephemeral `event`s are allowed.
    pub events: bool,
    /// Ephemeral events per second one connection may send into this namespace (0: no limit).
    pub event_rate: u32,
    /// Burst above `event_rate` (0: equal to the rate).
    pub event_burst: u32,
    /// Largest `data` of one published message, in bytes.
    pub max_data_bytes: usize,
    /// Messages per second one connection may publish into this namespace (0: no limit).
    pub publish_rate: u32,
    /// Burst allowed above `publish_rate` (0: equal to the rate).
    pub publish_burst: u32,
    /// What a connection without a token may do here.
    pub anonymous: Access,
    /// The p99 publish→write latency this namespace should meet (`GET /api/slo`).
    pub latency_target_ms: u64,
}

/// Who may publish in a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Publishers {
    /// Clients whose token allows it, and the server API.
    Clients,
    /// Only the server API.
    Server,
}

/// The slow-consumer policy: what happens to a connection whose outbound queue is past
/// `websocket.outbound_high_water_bytes` when a room message arrives for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlowConsumer {
    /// Close with 4008; the client resumes from history.
    Disconnect,
    /// Drop the oldest queued room messages, leaving a `gap` notice.
    DropOldest,
    /// Replace queued messages of the same conflation key by the newest, leaving a `gap`
    /// notice; fast clients still get every message.
    Conflate,
}

/// What a kind of connection may do in a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// Nothing.
    None,
    /// Subscribe, history and presence.
    Subscribe,
    /// Subscribe and publish.
    Publish,
}

/// JWT authentication (verified before the upgrade).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Verification keys; several at once for rotation, chosen by the token's `kid`.
    pub keys: Vec<KeyConfig>,
    /// Accepted `aud` values (empty: `aud` is not checked).
    pub audience: Vec<String>,
    /// Accepted `iss` values (empty: `iss` is not checked).
    pub issuer: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_s: u64,
    /// Refuse tokens without `exp`.
    pub require_exp: bool,
    /// The claim holding the token's permissions (`{"subscribe":[…],"publish":[…],
    /// "presence":[…]}`, room patterns).
    pub permissions_claim: String,
    /// Room patterns every authenticated connection may subscribe to (`{user}` is the token's
    /// `sub`).
    pub subscribe: Vec<String>,
    /// Room patterns every authenticated connection may publish to.
    pub publish: Vec<String>,
    /// Room patterns every authenticated connection may ask presence of.
    pub presence: Vec<String>,
    /// Users (token `sub`) refused with 403 even with a valid token.
    pub deny_users: Vec<String>,
    /// `token_expiring` is sent this long before the token expires.
    pub expiry_warning_ms: u64,
    /// After the token expires, the connection has this long to `refresh` before 4002.
    pub expiry_grace_ms: u64,
}

/// One verification key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// The key id tokens name in their `kid` header (optional when it is the only key of its
    /// algorithm).
    #[serde(default)]
    pub kid: String,
    /// `HS256`, `RS256` or `ES256`.
    pub alg: KeyAlg,
    /// HS256: the shared secret. Prefer `secret_file`: a secret in a file stays out of the
    /// configuration (and `check-config` never prints it).
    #[serde(default, skip_serializing_if = "Secret::is_empty")]
    pub secret: Secret,
    /// HS256: a file holding the shared secret (trailing newline removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// RS256/ES256: a PEM file with the public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_file: Option<PathBuf>,
}

/// A JWT signing algorithm ringcast verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyAlg {
    /// HMAC with SHA-256.
    HS256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// ECDSA on P-256 with SHA-256.
    ES256,
}

/// Limits and abuse control. 0 means "no limit" where noted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Connections (handshaking or open) on this node; over it: 503 with `Retry-After`
    /// (0: no limit).
    pub max_connections: usize,
    /// Connections from one client IP address; over it: 429 (0: no limit).
    pub max_connections_per_ip: u32,
    /// New connections per second from one IP address; over it: 429 (0: no limit).
    pub handshakes_per_ip_per_second: u32,
    /// Burst of new connections from one IP address (0: equal to the rate).
    pub handshake_burst: u32,
    /// Open connections of one user (token `sub`); over it: close 4010 (0: no limit).
    pub max_connections_per_user: u32,
    /// Resident memory of the process above which handshakes get 503 (0: no limit).
    pub memory_budget_bytes: u64,
    /// `Retry-After` of a 503 is drawn uniformly from `[retry_after_min_s, retry_after_max_s]`.
    pub retry_after_min_s: u64,
    /// Upper end of the `Retry-After` range.
    pub retry_after_max_s: u64,
    /// Bytes a client may send before it is authenticated (the request head); over it: 431.
    pub max_request_head_bytes: usize,
    /// Bytes of messages one shard's inbox may hold (publishes, deliveries, answers from other
    /// shards); past it, a publish into a room of that shard (or with subscribers there) is
    /// refused with `unavailable` and an ephemeral event is dropped.
    pub shard_inbox_bytes: usize,
    /// Rooms one connection may be subscribed to.
    pub max_rooms_per_connection: usize,
    /// Ops per second per connection (0: no limit); over it: error `rate_limited`.
    pub ops_per_second: u32,
    /// Burst of ops above the rate (0: equal to the rate).
    pub ops_burst: u32,
    /// `rate_limited` errors within one second after which the connection is closed with 4009.
    pub rate_limit_strikes: u32,
}

/// TLS on the public side (wss:// and https://).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The TLS listener; unset: no TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// PEM certificate chain, leaf first. Re-read on SIGHUP.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1). Re-read on SIGHUP.
    pub key_file: PathBuf,
    /// Serve only TLS: no plain listener on `listen`.
    pub disable_plain: bool,
}

/// Server API (on the admin listener).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// API key for `POST /api/publish` (`Authorization: Bearer <key>`); empty disables the API.
    pub key: Secret,
}

/// Which broker holds rooms' order and history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BrokerKind {
    /// In this process; one node (the default: no dependency).
    Embedded,
    /// One Redis primary (plain URL) shared by every node.
    Redis,
    /// A Redis Cluster (`url` lists seed nodes, comma-separated): sharded pub/sub.
    RedisCluster,
    /// One primary found through Redis Sentinel (`url` lists sentinels, comma-separated;
    /// `sentinel_service` names the primary).
    RedisSentinel,
}

/// The broker (docs/scaling.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// `embedded`, `redis`, `redis-cluster` or `redis-sentinel`.
    pub kind: BrokerKind,
    /// Redis URL (`redis://[user:password@]host:port[/db]`); for a cluster, seed nodes separated
    /// by commas.
    pub url: CredentialUrl,
    /// Prefix of every Redis key and channel (nodes of one deployment share it).
    pub prefix: String,
    /// With `kind = "redis-sentinel"`: the monitored primary's name.
    pub sentinel_service: String,
    /// How long a room's epoch and last offset outlive its last publish.
    pub room_retention_s: u64,
    /// A node's presence entries expire this long after its last refresh (every third of it).
    pub presence_ttl_ms: u64,
    /// How often each node publishes its canary probe.
    pub canary_interval_ms: u64,
    /// A probe not back within this turns `/readyz` red and forces a reconnect.
    pub canary_timeout_ms: u64,
    /// Reconnect backoff floor (exponential, full jitter).
    pub reconnect_min_ms: u64,
    /// Reconnect backoff ceiling.
    pub reconnect_max_ms: u64,
    /// Connecting to Redis gives up after this.
    pub connect_timeout_ms: u64,
    /// A Redis command not answered within this fails and the link is rebuilt.
    pub response_timeout_ms: u64,
}

impl Default for BrokerConfig {
    fn default() -> BrokerConfig {
        BrokerConfig {
            kind: BrokerKind::Embedded,
            url: "redis://127.0.0.1:6379".into(),
            prefix: "ringcast".into(),
            sentinel_service: "mymaster".into(),
            room_retention_s: 86_400,
            presence_ttl_ms: 15_000,
            canary_interval_ms: 2_000,
            canary_timeout_ms: 3_000,
            reconnect_min_ms: 100,
            reconnect_max_ms: 5_000,
            connect_timeout_ms: 2_000,
            response_timeout_ms: 2_000,
        }
    }
}

impl BrokerConfig {
    /// The Redis bridge's settings (for `redis` and `redis-cluster`).
    pub fn redis_settings(&self) -> broker_bridge::redis::RedisSettings {
        let ms = Duration::from_millis;
        broker_bridge::redis::RedisSettings {
            urls: self
                .url
                .expose()
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_string)
                .collect(),
            cluster: self.kind == BrokerKind::RedisCluster,
            sentinel_service: (self.kind == BrokerKind::RedisSentinel)
                .then(|| self.sentinel_service.clone()),
            prefix: self.prefix.clone(),
            room_retention: Duration::from_secs(self.room_retention_s),
            presence_ttl: ms(self.presence_ttl_ms),
            canary_interval: ms(self.canary_interval_ms),
            canary_timeout: ms(self.canary_timeout_ms),
            reconnect_min: ms(self.reconnect_min_ms),
            reconnect_max: ms(self.reconnect_max_ms),
            connect_timeout: ms(self.connect_timeout_ms),
            response_timeout: ms(self.response_timeout_ms),
            // The gateway's `limits.shard_inbox_bytes` applies (set where the bridge starts).
            max_queued_bytes: broker_bridge::redis::RedisSettings::default().max_queued_bytes,
        }
    }
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
            cpu_profile: String::new(),
            log_level: "info".into(),
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

impl Default for NamespacePolicy {
    fn default() -> NamespacePolicy {
        NamespacePolicy {
            kind: RoomKind::Messages,
            max_document_bytes: 16 * 1024 * 1024,
            history_size: 256,
            history_ttl_ms: 300_000,
            recovery: true,
            presence: false,
            join_leave: false,
            publish: Publishers::Clients,
            slow_consumer: SlowConsumer::Disconnect,
            conflation_key: String::new(),
            max_age_ms: 0,
            events: true,
            event_rate: 50,
            event_burst: 100,
            max_data_bytes: 60 * 1024,
            publish_rate: 0,
            publish_burst: 0,
            anonymous: Access::None,
            latency_target_ms: 10,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            keys: Vec::new(),
            audience: Vec::new(),
            issuer: Vec::new(),
            leeway_s: 30,
            require_exp: true,
            permissions_claim: "ringcast".into(),
            subscribe: Vec::new(),
            publish: Vec::new(),
            presence: Vec::new(),
            deny_users: Vec::new(),
            expiry_warning_ms: 30_000,
            expiry_grace_ms: 10_000,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        LimitsConfig {
            max_connections: 0,
            max_connections_per_ip: 0,
            handshakes_per_ip_per_second: 0,
            handshake_burst: 0,
            max_connections_per_user: 0,
            memory_budget_bytes: 0,
            retry_after_min_s: 1,
            retry_after_max_s: 30,
            max_request_head_bytes: proto_codec::http::MAX_HEAD_BYTES,
            shard_inbox_bytes: 64 << 20,
            max_rooms_per_connection: 1024,
            ops_per_second: 0,
            ops_burst: 0,
            rate_limit_strikes: 10,
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

    /// Checks ranges and relations between keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| ConfigError::Invalid {
            key,
            reason: reason.to_string(),
        };
        let b = &self.broker;
        if b.kind != BrokerKind::Embedded {
            let urls = b.redis_settings().urls;
            if urls.is_empty() {
                return Err(invalid("broker.url", "a Redis broker needs a URL"));
            }
            if let Some(bad) = urls.iter().find(|u| !u.starts_with("redis://")) {
                return Err(ConfigError::Invalid {
                    key: "broker.url",
                    reason: format!("`{}` is not a redis:// URL", crate::secret::redact_url(bad)),
                });
            }
            if b.kind == BrokerKind::RedisSentinel && b.sentinel_service.is_empty() {
                return Err(invalid(
                    "broker.sentinel_service",
                    "redis-sentinel needs the monitored primary's name",
                ));
            }
            if b.kind == BrokerKind::Redis && urls.len() > 1 {
                return Err(invalid(
                    "broker.url",
                    "several URLs are cluster seed nodes: set kind = \"redis-cluster\"",
                ));
            }
            if b.prefix.is_empty() || b.prefix.contains(['{', '}']) {
                return Err(invalid(
                    "broker.prefix",
                    "must be non-empty, without `{` or `}`",
                ));
            }
            for (key, v) in [
                ("broker.presence_ttl_ms", b.presence_ttl_ms),
                ("broker.canary_interval_ms", b.canary_interval_ms),
                ("broker.canary_timeout_ms", b.canary_timeout_ms),
                ("broker.reconnect_min_ms", b.reconnect_min_ms),
                ("broker.connect_timeout_ms", b.connect_timeout_ms),
                ("broker.response_timeout_ms", b.response_timeout_ms),
                ("broker.room_retention_s", b.room_retention_s),
            ] {
                if v == 0 {
                    return Err(invalid(key, "must be above 0"));
                }
            }
            if b.reconnect_max_ms < b.reconnect_min_ms {
                return Err(invalid(
                    "broker.reconnect_max_ms",
                    "must be at least broker.reconnect_min_ms",
                ));
            }
        }
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
        for (name, ns) in std::iter::once(("", &self.rooms))
            .chain(self.namespaces.iter().map(|(name, ns)| (name.as_str(), ns)))
        {
            if ns.max_data_bytes == 0 {
                return Err(ConfigError::Invalid {
                    key: "max_data_bytes",
                    reason: format!("namespace `{name}`: must be above 0"),
                });
            }
            if ns.kind == RoomKind::Crdt {
                // A document is its updates: none may be dropped for a slow reader, and the
                // updates after a snapshot are read back from the room's history.
                if ns.slow_consumer != SlowConsumer::Disconnect {
                    return Err(ConfigError::Invalid {
                        key: "slow_consumer",
                        reason: format!(
                            "namespace `{name}`: a crdt namespace needs \"disconnect\" (a dropped update would leave a client's document behind)"
                        ),
                    });
                }
                if ns.history_size < 2 || ns.max_document_bytes == 0 {
                    return Err(ConfigError::Invalid {
                        key: "history_size",
                        reason: format!(
                            "namespace `{name}`: a crdt namespace needs history_size of at least 2 and max_document_bytes above 0"
                        ),
                    });
                }
            }
        }
        let c = &self.crdt;
        if c.max_awareness_states == 0
            || c.max_awareness_state_bytes == 0
            || c.max_awareness_clients_per_connection == 0
        {
            return Err(invalid(
                "crdt.max_awareness_states",
                "the awareness bounds (max_awareness_states, max_awareness_state_bytes, max_awareness_clients_per_connection) must be above 0",
            ));
        }
        // A joiner is sent the whole table: it must fit in half its queue's high-water mark.
        let has_crdt = self.rooms.kind == RoomKind::Crdt
            || self.namespaces.values().any(|ns| ns.kind == RoomKind::Crdt);
        if has_crdt
            && c.max_awareness_states
                .saturating_mul(c.max_awareness_state_bytes + 32)
                > self.websocket.outbound_high_water_bytes / 2
        {
            return Err(invalid(
                "crdt.max_awareness_states",
                "with crdt namespaces, max_awareness_states × (max_awareness_state_bytes + 32) must be at most half of websocket.outbound_high_water_bytes (a joiner gets the whole table)",
            ));
        }
        if self.crdt.snapshot_interval_ms == 0 {
            return Err(invalid("crdt.snapshot_interval_ms", "must be above 0"));
        }
        let mut keys = std::collections::HashSet::new();
        let mut ids = std::collections::HashSet::new();
        for app in &self.pusher.apps {
            let bad = |reason: String| ConfigError::Invalid {
                key: "pusher.apps",
                reason,
            };
            if app.id.is_empty()
                || !app
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(bad(format!(
                    "app id `{}` must be letters, digits, `-` or `_`",
                    app.id
                )));
            }
            if app.key.is_empty() || app.key.contains(['/', '?', ' ']) || app.secret.is_empty() {
                return Err(bad(format!(
                    "app `{}`: key (no `/`, `?` or space) and secret must be set",
                    app.id
                )));
            }
            if !ids.insert(app.id.as_str()) || !keys.insert(app.key.as_str()) {
                return Err(bad(format!(
                    "app `{}`: ids and keys must be unique",
                    app.id
                )));
            }
            for url in &app.webhooks {
                let host = url
                    .expose()
                    .strip_prefix("http://")
                    .map(|r| r.split('/').next().unwrap_or(""));
                if host.is_none_or(|h| !h.contains(':')) {
                    return Err(bad(format!(
                        "app `{}`: webhook `{url}` must be http://host:port/path",
                        app.id
                    )));
                }
            }
        }
        for name in self.namespaces.keys() {
            if name.is_empty()
                || name.contains('.')
                || proto_codec::protocol::validate_room(name).is_err()
            {
                return Err(ConfigError::Invalid {
                    key: "namespaces",
                    reason: format!(
                        "`{name}` is not a namespace name (room characters, no `.`; the default \
                         namespace is configured in [rooms])"
                    ),
                });
            }
        }
        let limits = &self.limits;
        if limits.max_rooms_per_connection == 0 {
            return Err(invalid(
                "limits.max_rooms_per_connection",
                "must be above 0",
            ));
        }
        if limits.retry_after_min_s > limits.retry_after_max_s {
            return Err(invalid(
                "limits.retry_after_min_s",
                "must not be above limits.retry_after_max_s",
            ));
        }
        if limits.shard_inbox_bytes < 64 * 1024 {
            return Err(invalid(
                "limits.shard_inbox_bytes",
                "must be at least 65536",
            ));
        }
        if !(1024..=proto_codec::http::MAX_HEAD_BYTES).contains(&limits.max_request_head_bytes) {
            return Err(ConfigError::Invalid {
                key: "limits.max_request_head_bytes",
                reason: format!("must be 1024 to {}", proto_codec::http::MAX_HEAD_BYTES),
            });
        }
        for key in &self.auth.keys {
            let has_secret = !key.secret.is_empty() || key.secret_file.is_some();
            let ok = match key.alg {
                KeyAlg::HS256 => has_secret && key.public_key_file.is_none(),
                KeyAlg::RS256 | KeyAlg::ES256 => !has_secret && key.public_key_file.is_some(),
            };
            if !ok {
                return Err(ConfigError::Invalid {
                    key: "auth.keys",
                    reason: format!(
                        "key `{}` ({:?}): HS256 needs `secret` or `secret_file`; RS256 and ES256 \
                         need `public_key_file`",
                        key.kid, key.alg
                    ),
                });
            }
        }
        if self.tls.listen.is_some()
            && (self.tls.cert_file.as_os_str().is_empty()
                || self.tls.key_file.as_os_str().is_empty())
        {
            return Err(invalid(
                "tls.cert_file",
                "tls.listen needs tls.cert_file and tls.key_file",
            ));
        }
        if self.tls.disable_plain && self.tls.listen.is_none() {
            return Err(invalid(
                "tls.disable_plain",
                "needs tls.listen (there would be no public listener)",
            ));
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

//! [pusher]: Pusher Channels protocol compatibility (docs/pusher.md).

use serde::{Deserialize, Serialize};

use super::error::ConfigError;
use crate::secret::{CredentialUrl, Secret};

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

impl PusherConfig {
    /// Checks the apps (ids and keys unique, secrets set, webhook URLs).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let mut keys = std::collections::HashSet::new();
        let mut ids = std::collections::HashSet::new();
        for app in &self.apps {
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
        Ok(())
    }
}

//! Namespaces: the policy that applies to a room, found from the part of its name before the
//! first `.` (`prices.BTC-USD` is in `prices`; `lobby` in the default namespace `""`).

use std::collections::HashMap;
use std::time::Duration;

use broker_bridge::HistoryPolicy;
use proto_codec::protocol::{namespace_of, ErrorCode};

use crate::config::{Access, Config, NamespacePolicy};
use crate::errors::OpFailure;

/// One namespace as the shards use it.
#[derive(Debug, Clone, PartialEq)]
pub struct Namespace {
    /// Its position in [`Namespaces`] (a small key for per-connection state).
    pub index: usize,
    /// Its name (`""` for the default namespace).
    pub name: Box<str>,
    /// Its policy.
    pub policy: NamespacePolicy,
    /// Its history policy, as the broker takes it.
    pub history: HistoryPolicy,
    /// Whether native clients may use its rooms (`false` only for the `pusher` namespace
    /// without `[pusher] native_access`).
    pub native: bool,
}

/// Every configured namespace.
#[derive(Debug, Clone)]
pub struct Namespaces {
    all: Vec<Namespace>,
    by_name: HashMap<Box<str>, usize>,
    strict: bool,
}

impl Namespaces {
    /// From the configuration: the default namespace (`[rooms]`) first, then `[namespaces.*]`.
    pub fn from_config(config: &Config) -> Namespaces {
        let mut all = Vec::with_capacity(2 + config.namespaces.len());
        let mut by_name = HashMap::new();
        // Pusher apps' channels are rooms of the `pusher` namespace (docs/pusher.md): unless it
        // is configured, it is the default policy with presence and join/leave on (member
        // events are part of the Pusher protocol) and no anonymous access (issue 19, finding 2:
        // it inherited `[rooms] anonymous`).
        let pusher_default = (!config.pusher.apps.is_empty()
            && !config
                .namespaces
                .contains_key(proto_codec::pusher::NAMESPACE))
        .then(|| NamespacePolicy {
            presence: true,
            join_leave: true,
            kind: crate::config::RoomKind::Messages,
            anonymous: Access::None,
            ..config.rooms.clone()
        });
        let entries = std::iter::once(("", &config.rooms))
            .chain(
                config
                    .namespaces
                    .iter()
                    .map(|(name, policy)| (name.as_str(), policy)),
            )
            .chain(
                pusher_default
                    .as_ref()
                    .map(|p| (proto_codec::pusher::NAMESPACE, p)),
            );
        for (index, (name, policy)) in entries.enumerate() {
            by_name.insert(name.into(), index);
            all.push(Namespace {
                index,
                name: name.into(),
                history: HistoryPolicy {
                    size: policy.history_size,
                    ttl: Duration::from_millis(policy.history_ttl_ms),
                },
                policy: policy.clone(),
                native: name != proto_codec::pusher::NAMESPACE || config.pusher.native_access,
            });
        }
        Namespaces {
            all,
            by_name,
            strict: config.strict_namespaces,
        }
    }

    /// The namespace of a (valid) room name, or `not_found`.
    pub fn of(&self, room: &str) -> Result<&Namespace, OpFailure> {
        let name = namespace_of(room);
        match self.by_name.get(name) {
            Some(&i) => Ok(&self.all[i]),
            None if !self.strict => Ok(&self.all[0]),
            None => Err(OpFailure::new(
                ErrorCode::NotFound,
                format!("namespace `{name}` is not configured"),
            )),
        }
    }

    /// A namespace by its index.
    pub fn by_index(&self, index: usize) -> &Namespace {
        &self.all[index.min(self.all.len() - 1)]
    }

    /// Whether some namespace lets connections without a token in.
    pub fn anonymous_allowed(&self) -> bool {
        self.all.iter().any(|n| n.policy.anonymous > Access::None)
    }

    /// The number of namespaces (the default one included).
    pub fn len(&self) -> usize {
        self.all.len()
    }

    /// Always false: the default namespace exists.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_inherits_and_refuses_unlisted_when_strict() {
        let dir = std::env::temp_dir().join(format!("ringcast-ns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ns.toml");
        std::fs::write(
            &file,
            "[rooms]\nhistory_size = 10\nmax_data_bytes = 500\nanonymous = \"publish\"\n\
             [namespaces.prices]\nhistory_size = 1\nanonymous = \"subscribe\"\n\
             [namespaces.chat]\npublish = \"server\"\n",
        )
        .unwrap();
        let mut config = Config::load(Some(&file), Vec::new()).unwrap();
        let ns = Namespaces::from_config(&config);
        assert_eq!(ns.len(), 3);
        let prices = ns.of("prices.BTC").unwrap();
        assert_eq!(prices.policy.history_size, 1);
        // Inherited from [rooms], key by key.
        assert_eq!(prices.policy.max_data_bytes, 500);
        assert_eq!(ns.of("chat.x").unwrap().policy.history_size, 10);
        // Access is never inherited: `[rooms] anonymous` does not open `chat`.
        assert_eq!(ns.of("chat.x").unwrap().policy.anonymous, Access::None);
        assert_eq!(&*ns.of("lobby").unwrap().name, "");
        assert_eq!(&*ns.of("other.x").unwrap().name, "");
        assert!(ns.anonymous_allowed());
        config.strict_namespaces = true;
        let ns = Namespaces::from_config(&config);
        assert_eq!(ns.of("other.x").unwrap_err().code, ErrorCode::NotFound);
        assert!(ns.of("lobby").is_ok());
    }
}

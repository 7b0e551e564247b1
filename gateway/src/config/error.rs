//! What a configuration that cannot be used says (a base of the config sections).

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

/// A value out of range, naming its key.
pub(super) fn invalid(key: &'static str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.to_string(),
    }
}

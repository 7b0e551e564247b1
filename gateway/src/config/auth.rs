//! [auth]: token verification.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::ConfigError;
use crate::secret::Secret;

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

impl AuthConfig {
    /// Checks every key (its algorithm and its material).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for key in &self.keys {
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
        Ok(())
    }
}

//! [tls]: TLS on the public side.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::{invalid, ConfigError};

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

impl TlsConfig {
    /// Checks the section.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.is_some()
            && (self.cert_file.as_os_str().is_empty() || self.key_file.as_os_str().is_empty())
        {
            return Err(invalid(
                "tls.cert_file",
                "tls.listen needs tls.cert_file and tls.key_file",
            ));
        }
        if self.disable_plain && self.listen.is_none() {
            return Err(invalid(
                "tls.disable_plain",
                "needs tls.listen (there would be no public listener)",
            ));
        }
        Ok(())
    }
}

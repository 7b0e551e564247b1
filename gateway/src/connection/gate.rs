//! What the handshake checks a request against: the configuration, token verification, the
//! namespaces, whether the node drains, and the admission verdict taken at accept.

use crate::admission::Verdict;
use crate::auth::Authenticator;
use crate::config::Config;
use crate::namespaces::Namespaces;

/// What the handshake checks a request against.
#[derive(Debug, Clone, Copy)]
pub struct Gate<'a> {
    /// The configuration.
    pub config: &'a Config,
    /// Token verification.
    pub auth: &'a Authenticator,
    /// Namespace policies.
    pub namespaces: &'a Namespaces,
    /// The node is draining for shutdown.
    pub draining: bool,
    /// The admission decision taken when the socket was accepted.
    pub admission: &'a Verdict,
}

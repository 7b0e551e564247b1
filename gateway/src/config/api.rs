//! [api]: the server API.

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// Server API (on the admin listener).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// API key for `POST /api/publish` (`Authorization: Bearer <key>`); empty disables the API.
    pub key: Secret,
}

//! Authentication and permissions: JWTs verified before the upgrade, and the room permissions a
//! connection holds ([`Principal`]), checked on every op.
//!
//! Tokens are verified with the keys of `[auth]` (HS256, RS256, ES256; several at once, chosen by
//! the token's `kid`). A token carries its permissions in one claim (`auth.permissions_claim`,
//! default `ringcast`): `{"subscribe":[…],"publish":[…],"presence":[…]}` with room patterns
//! ([`pattern`]); `auth.subscribe`/`publish`/`presence` add patterns every token holder gets.
//! A connection without a token is anonymous; what it may do is set per namespace
//! (`anonymous = "none" | "subscribe" | "publish"`).

pub mod pattern;

use std::collections::HashSet;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use proto_codec::http::Request;
use proto_codec::protocol::ErrorCode;
use serde_json::{Map, Value};

use self::pattern::{PatternError, RoomPattern};
use crate::config::{Access, AuthConfig, KeyAlg, Publishers};
use crate::errors::OpFailure;
use crate::namespaces::Namespace;

/// The subprotocol-entry prefix that carries a token (browsers cannot set headers).
pub const TOKEN_PROTOCOL_PREFIX: &str = "ringcast.token.";

/// Why a token was refused (the handshake answers 401, or 403 for [`AuthError::Denied`]).
/// Messages never include the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token, and no namespace allows anonymous access.
    #[error("a token is required (no namespace allows anonymous access)")]
    Missing,
    /// A token was sent but the server has no keys.
    #[error("this server has no token keys configured")]
    NoKeys,
    /// Not a JWT, or its header is unreadable.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// No key with the token's `kid` (or for its algorithm).
    #[error("no key for this token (kid {0:?})")]
    UnknownKey(Option<String>),
    /// Signature, `exp`, `nbf`, `aud` or `iss` check failed.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The permissions claim is not of the documented shape.
    #[error("invalid permissions claim: {0}")]
    BadClaim(String),
    /// A valid token whose user may not connect.
    #[error("user is not allowed to connect")]
    Denied,
}

impl AuthError {
    /// The HTTP status of the refusal.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::Denied => 403,
            _ => 401,
        }
    }

    /// The error code of the refusal where it is answered as an `error` event.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            AuthError::Denied => ErrorCode::Forbidden,
            _ => ErrorCode::Unauthorized,
        }
    }

    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            AuthError::Missing => "token_missing",
            AuthError::Denied => "user_denied",
            AuthError::Invalid(r) if r.contains("xpired") => "token_expired",
            _ => "token_invalid",
        }
    }
}

/// What an op asks to do in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Subscribe (and read history).
    Subscribe,
    /// Publish.
    Publish,
    /// Ask who is present.
    Presence,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Subscribe => "subscribe",
            Action::Publish => "publish",
            Action::Presence => "presence",
        }
    }

    fn needs(self) -> Access {
        match self {
            Action::Publish => Access::Publish,
            Action::Subscribe | Action::Presence => Access::Subscribe,
        }
    }
}

/// Who is on a connection and what it may do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Principal {
    /// The token's `sub`; `None` for an anonymous connection.
    pub user: Option<Box<str>>,
    /// The token's public `info` claim.
    pub info: Option<Value>,
    /// The token's `exp` (Unix seconds).
    pub expires_at: Option<u64>,
    subscribe: Vec<RoomPattern>,
    publish: Vec<RoomPattern>,
    presence: Vec<RoomPattern>,
}

impl Principal {
    /// An anonymous connection.
    pub fn anonymous() -> Principal {
        Principal::default()
    }

    /// Whether the connection was opened without a token.
    pub fn is_anonymous(&self) -> bool {
        self.user.is_none()
    }

    /// Checks an op on a room of namespace `ns`. The error is the code and reason of the
    /// `error` event.
    pub fn authorize(&self, action: Action, room: &str, ns: &Namespace) -> Result<(), OpFailure> {
        if !ns.native {
            return Err(OpFailure::new(ErrorCode::Forbidden, format!(
                    "the rooms of namespace `{}` are reached through the Pusher protocol (/app/<key>); [pusher] native_access opens them to native clients",
                    ns.name
                )));
        }
        if action == Action::Publish && ns.policy.publish == Publishers::Server {
            return Err(OpFailure::new(
                ErrorCode::Forbidden,
                format!("only the server API publishes in namespace `{}`", ns.name),
            ));
        }
        if ns.policy.anonymous >= action.needs() {
            return Ok(());
        }
        if self.is_anonymous() {
            return Err(OpFailure::new(
                ErrorCode::Unauthorized,
                format!("{} in namespace `{}` needs a token", action.name(), ns.name),
            ));
        }
        let grants = match action {
            Action::Subscribe => &self.subscribe,
            Action::Publish => &self.publish,
            Action::Presence => &self.presence,
        };
        if grants.iter().any(|p| p.matches(room)) {
            Ok(())
        } else {
            Err(OpFailure::new(
                ErrorCode::Forbidden,
                format!("{} is not allowed in {room}", action.name()),
            ))
        }
    }
}

struct VerifyKey {
    kid: String,
    alg: Algorithm,
    key: DecodingKey,
}

/// A NumericDate claim (RFC 7519 §2: seconds, possibly fractional) as whole seconds, floored;
/// `None` when absent. Anything but a number is refused, never ignored.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(secs), _) => Ok(Some(secs)),
            // Negative or fractional: floored, negative is the epoch (long past).
            (None, Some(f)) if f.is_finite() => Ok(Some(f.max(0.0).floor() as u64)),
            _ => Err(AuthError::Invalid(format!(
                "`{name}` is not a number of seconds"
            ))),
        },
        Some(_) => Err(AuthError::Invalid(format!("`{name}` must be a number"))),
    }
}

/// Verifies tokens. Built once from the configuration (key files are read then).
pub struct Authenticator {
    keys: Vec<VerifyKey>,
    audience: Vec<String>,
    issuer: Vec<String>,
    leeway_s: u64,
    require_exp: bool,
    claim: String,
    subscribe: Vec<String>,
    publish: Vec<String>,
    presence: Vec<String>,
    deny_users: HashSet<String>,
    anonymous_allowed: bool,
}

impl std::fmt::Debug for Authenticator {
    // Never prints key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field(
                "keys",
                &self.keys.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .field("anonymous_allowed", &self.anonymous_allowed)
            .finish_non_exhaustive()
    }
}

/// A key or pattern in the configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// A key file could not be read.
    #[error("auth key `{kid}`: cannot read {path}: {source}")]
    Read {
        /// The key id.
        kid: String,
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A key is not a valid key for its algorithm.
    #[error("auth key `{kid}`: {reason}")]
    BadKey {
        /// The key id.
        kid: String,
        /// Why.
        reason: String,
    },
    /// A default pattern is not valid.
    #[error("auth: {0}")]
    BadPattern(#[from] PatternError),
}

impl Authenticator {
    /// Reads the keys and checks the patterns. `anonymous_allowed`: whether some namespace lets
    /// connections without a token in.
    pub fn new(
        config: &AuthConfig,
        anonymous_allowed: bool,
    ) -> Result<Authenticator, AuthConfigError> {
        let mut keys = Vec::with_capacity(config.keys.len());
        for k in &config.keys {
            let read = |path: &std::path::Path| {
                std::fs::read(path).map_err(|source| AuthConfigError::Read {
                    kid: k.kid.clone(),
                    path: path.display().to_string(),
                    source,
                })
            };
            let bad = |e: jsonwebtoken::errors::Error| AuthConfigError::BadKey {
                kid: k.kid.clone(),
                reason: e.to_string(),
            };
            let (alg, key) = match k.alg {
                KeyAlg::HS256 => {
                    let secret = match &k.secret_file {
                        Some(p) => {
                            let mut s = read(p)?;
                            while s.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                                s.pop();
                            }
                            s
                        }
                        None => k.secret.expose().as_bytes().to_vec(),
                    };
                    if secret.len() < 32 {
                        return Err(AuthConfigError::BadKey {
                            kid: k.kid.clone(),
                            reason: "an HS256 secret must be at least 32 bytes".into(),
                        });
                    }
                    (Algorithm::HS256, DecodingKey::from_secret(&secret))
                }
                KeyAlg::RS256 => {
                    let pem = read(public_key_path(k)?)?;
                    (
                        Algorithm::RS256,
                        DecodingKey::from_rsa_pem(&pem).map_err(bad)?,
                    )
                }
                KeyAlg::ES256 => {
                    let pem = read(public_key_path(k)?)?;
                    (
                        Algorithm::ES256,
                        DecodingKey::from_ec_pem(&pem).map_err(bad)?,
                    )
                }
            };
            keys.push(VerifyKey {
                kid: k.kid.clone(),
                alg,
                key,
            });
        }
        for p in config
            .subscribe
            .iter()
            .chain(&config.publish)
            .chain(&config.presence)
        {
            RoomPattern::check(p)?;
        }
        Ok(Authenticator {
            keys,
            audience: config.audience.clone(),
            issuer: config.issuer.clone(),
            leeway_s: config.leeway_s,
            require_exp: config.require_exp,
            claim: config.permissions_claim.clone(),
            subscribe: config.subscribe.clone(),
            publish: config.publish.clone(),
            presence: config.presence.clone(),
            deny_users: config.deny_users.iter().cloned().collect(),
            anonymous_allowed,
        })
    }

    /// The principal of a request: its token verified, or anonymous where allowed.
    pub fn authenticate(&self, req: &Request<'_>) -> Result<Principal, AuthError> {
        match token_of(req) {
            Some(token) => self.verify(&token),
            None if self.anonymous_allowed => Ok(Principal::anonymous()),
            None => Err(AuthError::Missing),
        }
    }

    /// Verifies one token.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if self.keys.is_empty() {
            return Err(AuthError::NoKeys);
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Malformed(e.to_string()))?;
        let key = match &header.kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| &k.kid == kid && k.alg == header.alg),
            None => {
                let mut same_alg = self.keys.iter().filter(|k| k.alg == header.alg);
                match (same_alg.next(), same_alg.next()) {
                    (Some(k), None) => Some(k),
                    _ => None,
                }
            }
        }
        .ok_or_else(|| AuthError::UnknownKey(header.kid.clone()))?;
        let mut validation = Validation::new(key.alg);
        validation.leeway = self.leeway_s;
        validation.validate_nbf = true;
        validation.required_spec_claims.clear();
        if self.require_exp {
            validation.required_spec_claims.insert("exp".into());
        }
        validation.validate_exp = true;
        if self.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.audience);
            validation.required_spec_claims.insert("aud".into());
        }
        if !self.issuer.is_empty() {
            validation.set_issuer(&self.issuer);
            validation.required_spec_claims.insert("iss".into());
        }
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        self.principal(data.claims)
    }

    fn principal(&self, mut claims: Map<String, Value>) -> Result<Principal, AuthError> {
        let user = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::String(_)) | None => {
                return Err(AuthError::BadClaim("`sub` is required".into()))
            }
            Some(_) => return Err(AuthError::BadClaim("`sub` must be a string".into())),
        };
        if self.deny_users.contains(&user) {
            return Err(AuthError::Denied);
        }
        // jsonwebtoken checks `exp` and `nbf` only when they are integers; issuers write
        // `Date.now() / 1000 + 60`, a float, which it skips (issue 19, finding 8). Both are
        // read here, floored, and checked the same way, whatever their JSON number form.
        let now = jsonwebtoken::get_current_timestamp();
        let expires_at = numeric_date(&claims, "exp")?;
        if expires_at.is_some_and(|exp| exp.saturating_add(self.leeway_s) < now) {
            return Err(AuthError::Invalid("token expired (`exp`)".into()));
        }
        if numeric_date(&claims, "nbf")?.is_some_and(|nbf| nbf > now.saturating_add(self.leeway_s))
        {
            return Err(AuthError::Invalid("token not valid yet (`nbf`)".into()));
        }
        let info = claims.remove("info");
        let mut p = Principal {
            user: Some(user.clone().into()),
            info,
            expires_at,
            ..Principal::default()
        };
        let compile = |patterns: &[String], out: &mut Vec<RoomPattern>| -> Result<(), AuthError> {
            for s in patterns {
                out.push(
                    RoomPattern::compile(s, Some(&user))
                        .map_err(|e| AuthError::BadClaim(e.to_string()))?,
                );
            }
            Ok(())
        };
        compile(&self.subscribe, &mut p.subscribe)?;
        compile(&self.publish, &mut p.publish)?;
        compile(&self.presence, &mut p.presence)?;
        match claims.get(&self.claim) {
            None => {}
            Some(Value::Object(perms)) => {
                for (name, value) in perms {
                    let out = match name.as_str() {
                        "subscribe" => &mut p.subscribe,
                        "publish" => &mut p.publish,
                        "presence" => &mut p.presence,
                        other => {
                            return Err(AuthError::BadClaim(format!(
                                "`{}.{other}` is not subscribe, publish or presence",
                                self.claim
                            )))
                        }
                    };
                    let Some(list) = value.as_array() else {
                        return Err(AuthError::BadClaim(format!(
                            "`{}.{name}` must be an array of room patterns",
                            self.claim
                        )));
                    };
                    let mut strings = Vec::with_capacity(list.len());
                    for v in list {
                        match v.as_str() {
                            Some(s) => strings.push(s.to_string()),
                            None => {
                                return Err(AuthError::BadClaim(format!(
                                    "`{}.{name}` must be an array of strings",
                                    self.claim
                                )))
                            }
                        }
                    }
                    compile(&strings, out)?;
                }
            }
            Some(_) => {
                return Err(AuthError::BadClaim(format!(
                    "`{}` must be an object",
                    self.claim
                )))
            }
        }
        Ok(p)
    }
}

fn public_key_path(k: &crate::config::KeyConfig) -> Result<&std::path::Path, AuthConfigError> {
    k.public_key_file
        .as_deref()
        .ok_or_else(|| AuthConfigError::BadKey {
            kid: k.kid.clone(),
            reason: "public_key_file is required".into(),
        })
}

/// The token of a request: `Authorization: Bearer`, then a `ringcast.token.<jwt>` subprotocol
/// entry, then the `token` query parameter.
pub fn token_of<'a>(req: &Request<'a>) -> Option<std::borrow::Cow<'a, str>> {
    if let Some(auth) = req.header_str("authorization") {
        let mut words = auth.trim().splitn(2, ' ');
        if let (Some(scheme), Some(token)) = (words.next(), words.next()) {
            if scheme.eq_ignore_ascii_case("bearer") {
                return Some(token.trim().into());
            }
        }
    }
    for value in req.header_values("sec-websocket-protocol") {
        for entry in value.split(',') {
            if let Some(token) = entry.trim().strip_prefix(TOKEN_PROTOCOL_PREFIX) {
                return Some(token.into());
            }
        }
    }
    req.query_param("token")
}

#[cfg(test)]
mod tests;

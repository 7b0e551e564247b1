//! Configured secrets as types that cannot print themselves (issue 19, finding 9:
//! `check-config` printed a Pusher app secret and a webhook URL's credentials).
//!
//! [`Secret`] holds a key or a password: `Debug` and `Serialize` write `<redacted>`, it has no
//! `Display`, and its value is read only through [`Secret::expose`], at the places that sign or
//! compare with it. [`CredentialUrl`] holds a URL (or a comma-separated list of them) that may
//! carry `user:password@`: it prints with the password replaced, and [`CredentialUrl::expose`]
//! gives the URL to connect to. So a configuration printed whole (`check-config`) or logged in
//! part holds no secret, whatever the code that prints it.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use broker_bridge::{redact_url, REDACTED};

/// A secret string (an HMAC key, an API key).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for signing and comparing only: never format it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether none is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret(s.to_string())
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = if self.0.is_empty() { "" } else { REDACTED };
        write!(f, "Secret({shown:?})")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { REDACTED })
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// A URL, or a comma-separated list of URLs, that may hold credentials (`user:password@`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CredentialUrl(String);

impl CredentialUrl {
    /// The URL as configured, to connect with: never format it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for CredentialUrl {
    fn from(s: &str) -> CredentialUrl {
        CredentialUrl(s.to_string())
    }
}

impl std::fmt::Display for CredentialUrl {
    /// The URLs with their passwords (and a user-only userinfo) replaced.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for url in self.0.split(',') {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            f.write_str(&redact_url(url))?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for CredentialUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CredentialUrl({:?})", self.to_string())
    }
}

impl Serialize for CredentialUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CredentialUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<CredentialUrl, D::Error> {
        String::deserialize(d).map(CredentialUrl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print_and_urls_print_without_their_passwords() {
        let s = Secret::from("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(\"<redacted>\")");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"<redacted>\"");
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(serde_json::to_string(&Secret::default()).unwrap(), "\"\"");
        let u = CredentialUrl::from("redis://:pw1@a:1,redis://u:pw2@b:2/0,http://tok@h/p?x=a@b");
        let shown = format!("{u} {u:?} {}", serde_json::to_string(&u).unwrap());
        for secret in ["pw1", "pw2", "tok"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("redis://u:<redacted>@b:2/0"), "{shown}");
        assert!(shown.contains("http://<redacted>@h/p?x=a@b"), "{shown}");
        assert_eq!(
            redact_url("http://h/p?email=a@b"),
            "http://h/p?email=a@b",
            "an @ past the authority is not userinfo"
        );
    }
}

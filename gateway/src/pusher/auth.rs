//! Pusher signatures: HMAC-SHA256 with the app's secret, in lowercase hex.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// HMAC-SHA256 of `message` with `secret`, as lowercase hex.
pub fn sign(secret: &str, message: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(message.as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares in constant time (for signatures).
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Checks a channel auth string `<key>:<signature>` (signature of `<socket_id>:<channel>` and,
/// for presence channels, `:<channel_data>`).
pub fn channel_auth_ok(
    key: &str,
    secret: &str,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
    auth: &str,
) -> bool {
    let Some((k, sig)) = auth.split_once(':') else {
        return false;
    };
    let message = match channel_data {
        Some(d) => format!("{socket_id}:{channel}:{d}"),
        None => format!("{socket_id}:{channel}"),
    };
    same(k, key) && same(sig, &sign(secret, &message))
}

/// Checks a user sign-in auth string (signature of `<socket_id>::user::<user_data>`).
pub fn signin_auth_ok(
    key: &str,
    secret: &str,
    socket_id: &str,
    user_data: &str,
    auth: &str,
) -> bool {
    let Some((k, sig)) = auth.split_once(':') else {
        return false;
    };
    same(k, key)
        && same(
            sig,
            &sign(secret, &format!("{socket_id}::user::{user_data}")),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_documented_example() {
        // docs: https://pusher.com/docs/channels/library_auth_reference/auth-signatures/
        let sig = sign("7ad3773142a6692b25b8", "1234.1234:private-foobar");
        assert_eq!(
            sig,
            "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
        assert!(channel_auth_ok(
            "278d425bdf160c739803",
            "7ad3773142a6692b25b8",
            "1234.1234",
            "private-foobar",
            None,
            &format!("278d425bdf160c739803:{sig}")
        ));
        assert!(!channel_auth_ok(
            "278d425bdf160c739803",
            "other",
            "1234.1234",
            "private-foobar",
            None,
            &format!("278d425bdf160c739803:{sig}")
        ));
        assert!(!channel_auth_ok("k", "s", "1.1", "c", None, "no-colon"));
    }
}

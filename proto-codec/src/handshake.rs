//! The WebSocket opening handshake (RFC 6455 §4.2): validating an upgrade request, picking a
//! subprotocol and extensions, and writing the 101 answer or an error answer.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use sha1::{Digest, Sha1};

use crate::http::{write_error_response, write_header, write_status_line, Request};

/// The GUID RFC 6455 appends to the client's key.
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Why an upgrade request was refused; each variant maps to one HTTP status and reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The method is not GET.
    #[error("method must be GET")]
    MethodNotAllowed,
    /// HTTP/1.0 cannot upgrade.
    #[error("HTTP/1.1 is required")]
    HttpVersion,
    /// No `Upgrade: websocket`.
    #[error("Upgrade: websocket is required")]
    NotAnUpgrade,
    /// No `Connection: Upgrade`.
    #[error("Connection: Upgrade is required")]
    MissingConnectionUpgrade,
    /// No `Host` header.
    #[error("Host header is required")]
    MissingHost,
    /// `Sec-WebSocket-Version` is missing or not 13.
    #[error("Sec-WebSocket-Version must be 13")]
    UnsupportedVersion,
    /// `Sec-WebSocket-Key` is missing or not 16 bytes of base64.
    #[error("Sec-WebSocket-Key must be 16 bytes in base64")]
    BadKey,
}

impl HandshakeError {
    /// The HTTP status that answers this error.
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::MethodNotAllowed => 405,
            HandshakeError::NotAnUpgrade | HandshakeError::UnsupportedVersion => 426,
            _ => 400,
        }
    }

    /// Appends the full error response, with the headers RFC 6455 and RFC 9110 ask for.
    pub fn write_response(&self, dst: &mut Vec<u8>) {
        let reason = self.to_string();
        match self {
            HandshakeError::MethodNotAllowed => {
                write_error_response(dst, 405, &reason, &[("Allow", "GET")])
            }
            HandshakeError::UnsupportedVersion => write_error_response(
                dst,
                426,
                &reason,
                &[("Sec-WebSocket-Version", "13"), ("Upgrade", "websocket")],
            ),
            HandshakeError::NotAnUpgrade => {
                write_error_response(dst, 426, &reason, &[("Upgrade", "websocket")])
            }
            _ => write_error_response(dst, self.status(), &reason, &[]),
        }
    }
}

/// A valid upgrade request's WebSocket parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade<'a> {
    /// `Sec-WebSocket-Key` as sent.
    pub key: &'a str,
    /// Offered subprotocols, in the client's order.
    pub protocols: Vec<&'a str>,
    /// Raw `Sec-WebSocket-Extensions` header values.
    pub extensions: Vec<&'a str>,
    /// The `Origin` header, if any.
    pub origin: Option<&'a str>,
}

/// Validates an upgrade request (RFC 6455 §4.2.1).
pub fn validate_upgrade<'a>(req: &Request<'a>) -> Result<Upgrade<'a>, HandshakeError> {
    if req.method != "GET" {
        return Err(HandshakeError::MethodNotAllowed);
    }
    if req.minor_version != 1 {
        return Err(HandshakeError::HttpVersion);
    }
    if !req.header_has_token("upgrade", "websocket") {
        return Err(HandshakeError::NotAnUpgrade);
    }
    if !req.header_has_token("connection", "upgrade") {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    if req.header("host").is_none() {
        return Err(HandshakeError::MissingHost);
    }
    if req.header("sec-websocket-version").map(<[u8]>::trim_ascii) != Some(b"13") {
        return Err(HandshakeError::UnsupportedVersion);
    }
    let key = req
        .header_str("sec-websocket-key")
        .map(str::trim)
        .ok_or(HandshakeError::BadKey)?;
    match BASE64.decode(key) {
        Ok(raw) if raw.len() == 16 => {}
        _ => return Err(HandshakeError::BadKey),
    }
    let protocols = req
        .header_values("sec-websocket-protocol")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let extensions = req.header_values("sec-websocket-extensions").collect();
    Ok(Upgrade {
        key,
        protocols,
        extensions,
        origin: req.header_str("origin"),
    })
}

/// `Sec-WebSocket-Accept` for a key: base64(SHA-1(key + GUID)).
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WS_GUID.as_bytes());
    BASE64.encode(sha.finalize())
}

/// Picks the first subprotocol the client offered that the server supports.
pub fn select_protocol<'a>(offered: &[&'a str], supported: &[&str]) -> Option<&'a str> {
    offered.iter().copied().find(|p| supported.contains(p))
}

/// Appends the `101 Switching Protocols` answer.
pub fn write_upgrade_response(
    dst: &mut Vec<u8>,
    key: &str,
    protocol: Option<&str>,
    extensions: Option<&str>,
) {
    write_status_line(dst, 101);
    write_header(dst, "Upgrade", "websocket");
    write_header(dst, "Connection", "Upgrade");
    write_header(dst, "Sec-WebSocket-Accept", &accept_key(key));
    if let Some(p) = protocol {
        write_header(dst, "Sec-WebSocket-Protocol", p);
    }
    if let Some(e) = extensions {
        write_header(dst, "Sec-WebSocket-Extensions", e);
    }
    dst.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse_request;

    const GOOD: &str = "GET /ws HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn rfc_example_accept() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn valid_request() {
        let req = parse_request(GOOD.as_bytes()).unwrap().unwrap();
        let up = validate_upgrade(&req).unwrap();
        assert_eq!(up.protocols, ["chat", "superchat"]);
        assert_eq!(up.origin, Some("http://example.com"));
        assert_eq!(
            select_protocol(&up.protocols, &["superchat"]),
            Some("superchat")
        );
        let mut out = Vec::new();
        write_upgrade_response(&mut out, up.key, Some("superchat"), None);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    fn check(raw: &str) -> Result<(), HandshakeError> {
        let req = parse_request(raw.as_bytes()).unwrap().unwrap();
        validate_upgrade(&req).map(|_| ())
    }

    #[test]
    fn each_rule_has_its_answer() {
        assert_eq!(
            check(&GOOD.replace("GET", "POST")),
            Err(HandshakeError::MethodNotAllowed)
        );
        assert_eq!(
            check(&GOOD.replace("HTTP/1.1", "HTTP/1.0")),
            Err(HandshakeError::HttpVersion)
        );
        assert_eq!(
            check(&GOOD.replace("Upgrade: websocket\r\n", "")),
            Err(HandshakeError::NotAnUpgrade)
        );
        assert_eq!(
            check(&GOOD.replace("Connection: Upgrade", "Connection: close")),
            Err(HandshakeError::MissingConnectionUpgrade)
        );
        assert_eq!(
            check(&GOOD.replace("Host: server.example.com\r\n", "")),
            Err(HandshakeError::MissingHost)
        );
        assert_eq!(
            check(&GOOD.replace("Version: 13", "Version: 8")),
            Err(HandshakeError::UnsupportedVersion)
        );
        assert_eq!(
            check(&GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=")),
            Err(HandshakeError::BadKey)
        );
        let mut out = Vec::new();
        HandshakeError::UnsupportedVersion.write_response(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(text.contains("Sec-WebSocket-Version: 13\r\n"));
    }
}

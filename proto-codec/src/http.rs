//! HTTP/1.1 request heads (parsed with httparse, borrowed from the read buffer) and responses.
//!
//! Used by the WebSocket upgrade, SSE, long-polling and the admin endpoints alike.

use std::borrow::Cow;

/// The most header lines a request may have.
pub const MAX_HEADERS: usize = 48;
/// The largest request head (request line and headers) accepted.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Why a request head was refused; each maps to one HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// Not HTTP/1.x, or malformed.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// The head is larger than [`MAX_HEAD_BYTES`] or has too many headers.
    #[error("request head too large")]
    HeadTooLarge,
}

impl HttpError {
    /// The HTTP status that answers this error.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::Malformed(_) => 400,
            HttpError::HeadTooLarge => 431,
        }
    }
}

/// A parsed request head, borrowing from the buffer it was read into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// The method (`GET`, `POST`, …).
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    /// The raw query string (after `?`), if any.
    pub query: Option<&'a str>,
    /// The minor HTTP version (0 or 1).
    pub minor_version: u8,
    /// Header names and values in order.
    pub headers: Vec<(&'a str, &'a [u8])>,
    /// The length of the head in bytes; a body starts there.
    pub head_len: usize,
}

/// Parses a request head. `Ok(None)` means more bytes are needed.
pub fn parse_request(buf: &[u8]) -> Result<Option<Request<'_>>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let status = match req.parse(buf) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadTooLarge),
        Err(e) => return Err(HttpError::Malformed(malformed_reason(e))),
    };
    let head_len = match status {
        httparse::Status::Partial => {
            return if buf.len() >= MAX_HEAD_BYTES {
                Err(HttpError::HeadTooLarge)
            } else {
                Ok(None)
            };
        }
        httparse::Status::Complete(n) => n,
    };
    if head_len > MAX_HEAD_BYTES {
        return Err(HttpError::HeadTooLarge);
    }
    let method = req.method.ok_or(HttpError::Malformed("no method"))?;
    let target = req.path.ok_or(HttpError::Malformed("no target"))?;
    let minor_version = req.version.ok_or(HttpError::Malformed("no version"))?;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let headers = req.headers.iter().map(|h| (h.name, h.value)).collect();
    Ok(Some(Request {
        method,
        path,
        query,
        minor_version,
        headers,
        head_len,
    }))
}

fn malformed_reason(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token",
        httparse::Error::Version => "invalid HTTP version",
        httparse::Error::TooManyHeaders => "too many headers",
    }
}

impl<'a> Request<'a> {
    /// The first value of a header (names compare case-insensitively).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// The first value of a header as text, if it is valid UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&'a str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every value of a header, in order, that is valid UTF-8.
    pub fn header_values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a str> + 's {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// Whether a comma-separated header has `token` among its elements (case-insensitive).
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.header_values(name)
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// A query parameter, percent-decoded. `None` if absent or not valid UTF-8 once decoded.
    pub fn query_param(&self, name: &str) -> Option<Cow<'a, str>> {
        query_param(self.query?, name)
    }

    /// Every value of a repeatable query parameter, in order, percent-decoded (`None` for a
    /// value that does not decode).
    pub fn query_params<'s>(
        &'s self,
        name: &'s str,
    ) -> impl Iterator<Item = Option<Cow<'a, str>>> + 's {
        self.query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter_map(move |pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (k == name).then(|| percent_decode(v))
            })
    }
}

/// Looks up `name` in a query string and percent-decodes its value (`+` is a space).
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<Cow<'a, str>> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v)).flatten()
    })
}

/// Percent-decodes a query value; `None` for a bad escape or invalid UTF-8.
pub fn percent_decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Some(Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hi = (hex[0] as char).to_digit(16)?;
                let lo = (hex[1] as char).to_digit(16)?;
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// The standard reason phrase of the statuses ringcast sends.
pub fn status_text(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Appends a whole response: status line, headers, `Content-Length` and body.
pub fn write_response(
    dst: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    extra_headers: &[(&str, &str)],
    body: &[u8],
) {
    write_status_line(dst, status);
    write_header(dst, "Content-Type", content_type);
    write_header(dst, "Content-Length", &body.len().to_string());
    for (name, value) in extra_headers {
        write_header(dst, name, value);
    }
    dst.extend_from_slice(b"\r\n");
    dst.extend_from_slice(body);
}

/// Appends an error response whose body is the reason, as plain text, and which closes.
pub fn write_error_response(
    dst: &mut Vec<u8>,
    status: u16,
    reason: &str,
    extra_headers: &[(&str, &str)],
) {
    let mut headers: Vec<(&str, &str)> = extra_headers.to_vec();
    headers.push(("Connection", "close"));
    let body = format!("{reason}\n");
    write_response(
        dst,
        status,
        "text/plain; charset=utf-8",
        &headers,
        body.as_bytes(),
    );
}

/// Appends `HTTP/1.1 <status> <text>\r\n`.
pub fn write_status_line(dst: &mut Vec<u8>, status: u16) {
    dst.extend_from_slice(b"HTTP/1.1 ");
    dst.extend_from_slice(status.to_string().as_bytes());
    dst.push(b' ');
    dst.extend_from_slice(status_text(status).as_bytes());
    dst.extend_from_slice(b"\r\n");
}

/// Appends `name: value\r\n`, dropping CR and LF from the value so it cannot split the head.
pub fn write_header(dst: &mut Vec<u8>, name: &str, value: &str) {
    dst.extend_from_slice(name.as_bytes());
    dst.extend_from_slice(b": ");
    dst.extend(value.bytes().filter(|b| *b != b'\r' && *b != b'\n'));
    dst.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_head_and_finds_headers() {
        let raw = b"GET /ws?token=a%2Bb&x=1 HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nX: 1\r\nX: 2\r\n\r\nbody";
        let req = parse_request(raw).unwrap().unwrap();
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/ws");
        assert_eq!(req.query_param("token").as_deref(), Some("a+b"));
        assert_eq!(req.query_param("missing"), None);
        assert!(req.header_has_token("connection", "upgrade"));
        assert_eq!(req.header_values("x").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(&raw[req.head_len..], b"body");
    }

    #[test]
    fn partial_malformed_and_too_large() {
        assert_eq!(parse_request(b"GET / HTTP/1.1\r\nHost:"), Ok(None));
        assert!(matches!(
            parse_request(b"GET / HTTP/2.0\r\n\r\n"),
            Err(HttpError::Malformed(_))
        ));
        let big = vec![b'a'; MAX_HEAD_BYTES + 1];
        let mut req = b"GET / HTTP/1.1\r\nX: ".to_vec();
        req.extend(big);
        assert_eq!(parse_request(&req), Err(HttpError::HeadTooLarge));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c").as_deref(), Some("a b c"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("%ff"), None);
    }

    #[test]
    fn header_values_cannot_inject() {
        let mut out = Vec::new();
        write_header(&mut out, "X", "a\r\nSet-Cookie: b");
        assert_eq!(out, b"X: aSet-Cookie: b\r\n");
    }
}

//! Server-Sent Events (the WHATWG `text/event-stream` format): event encoding and `Last-Event-ID`.

/// One event to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SseEvent<'a> {
    /// `id:` — the client sends it back as `Last-Event-ID` when it reconnects.
    pub id: Option<&'a str>,
    /// `event:` — the event type (`message` when absent).
    pub event: Option<&'a str>,
    /// `data:` — split into one `data:` line per line of the payload.
    pub data: &'a [u8],
    /// `retry:` — the reconnection delay the client should use, in milliseconds.
    pub retry_ms: Option<u32>,
}

/// Removes CR, LF and NUL, which would end or corrupt a field (an `id` with NUL is ignored by
/// browsers).
fn write_field(dst: &mut Vec<u8>, name: &str, value: &[u8]) {
    dst.extend_from_slice(name.as_bytes());
    dst.extend_from_slice(b": ");
    dst.extend(
        value
            .iter()
            .copied()
            .filter(|b| !matches!(b, b'\r' | b'\n' | 0)),
    );
    dst.push(b'\n');
}

impl SseEvent<'_> {
    /// The encoded size, to reserve once.
    pub fn encoded_len_hint(&self) -> usize {
        self.data.len() + 32 + self.id.map_or(0, str::len) + self.event.map_or(0, str::len)
    }

    /// Appends the event, ending with the blank line that dispatches it.
    pub fn encode_into(&self, dst: &mut Vec<u8>) {
        dst.reserve(self.encoded_len_hint());
        if let Some(event) = self.event {
            write_field(dst, "event", event.as_bytes());
        }
        if let Some(id) = self.id {
            write_field(dst, "id", id.as_bytes());
        }
        if let Some(retry) = self.retry_ms {
            write_field(dst, "retry", retry.to_string().as_bytes());
        }
        // Lines end with CRLF, LF or CR; each becomes its own `data:` line.
        let mut rest = self.data;
        loop {
            let end = rest.iter().position(|b| *b == b'\n' || *b == b'\r');
            let (line, next) = match end {
                None => (rest, None),
                Some(i) => {
                    let skip = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') {
                        2
                    } else {
                        1
                    };
                    (&rest[..i], Some(&rest[i + skip..]))
                }
            };
            dst.extend_from_slice(b"data: ");
            dst.extend_from_slice(line);
            dst.push(b'\n');
            match next {
                Some(n) => rest = n,
                None => break,
            }
        }
        dst.push(b'\n');
    }

    /// The event as a new buffer.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }
}

/// The SSE form of a server text frame carrying one JSON event (as the WebSocket side sends
/// it): `event:` is the event's `ev`, `data:` the same JSON, `id:` as given. `None` for a frame
/// that is not an unmasked, unfragmented text frame of a JSON object with `ev` first (control
/// frames have no SSE form).
pub fn event_from_ws_frame(frame: &[u8], id: Option<&str>) -> Option<Vec<u8>> {
    let payload = json_payload(frame)?;
    let payload = &payload[..];
    let name = payload.strip_prefix(b"{\"ev\":\"")?;
    let end = name.iter().position(|b| *b == b'"')?;
    let event = std::str::from_utf8(&name[..end]).ok()?;
    Some(
        SseEvent {
            id,
            event: Some(event),
            data: payload,
            retry_ms: None,
        }
        .encode(),
    )
}

/// The JSON of a server frame: a text frame's payload as it is, or the JSON form (`bin`) of a
/// binary room message (`protocol::binary`); `None` for any other frame.
pub fn json_payload(frame: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
    if let Some(text) = text_payload(frame) {
        return Some(std::borrow::Cow::Borrowed(text));
    }
    let binary = payload_of(frame, 0x82)?;
    crate::protocol::binary::binary_msg_json(binary).map(std::borrow::Cow::Owned)
}

/// The payload of an unmasked, unfragmented, uncompressed server text frame; `None` for any
/// other frame.
pub fn text_payload(frame: &[u8]) -> Option<&[u8]> {
    payload_of(frame, 0x81)
}

/// The payload of an unmasked, unfragmented, uncompressed server frame whose first byte is
/// `first` (FIN, no RSV bits, the opcode: `0x81` text, `0x82` binary).
pub fn payload_of(frame: &[u8], first: u8) -> Option<&[u8]> {
    let (&b0, rest) = frame.split_first()?;
    let (&b1, rest) = rest.split_first()?;
    // FIN + the opcode, no RSV bits, no mask.
    if b0 != first || b1 & 0x80 != 0 {
        return None;
    }
    match b1 & 0x7f {
        126 => rest.get(2..),
        127 => rest.get(8..),
        _ => Some(rest),
    }
}

/// A comment line, used as a heartbeat that keeps proxies from timing the stream out.
pub const HEARTBEAT: &[u8] = b": hb\n\n";

/// The response head that opens an event stream.
pub fn write_stream_head(dst: &mut Vec<u8>, extra_headers: &[(&str, &str)]) {
    crate::http::write_status_line(dst, 200);
    crate::http::write_header(dst, "Content-Type", "text/event-stream");
    crate::http::write_header(dst, "Cache-Control", "no-cache");
    crate::http::write_header(dst, "X-Accel-Buffering", "no");
    for (n, v) in extra_headers {
        crate::http::write_header(dst, n, v);
    }
    dst.extend_from_slice(b"\r\n");
}

/// The last event id a reconnecting client sent, if it is usable (non-empty, no NUL).
pub fn last_event_id(header_value: Option<&[u8]>) -> Option<&str> {
    let v = std::str::from_utf8(header_value?).ok()?.trim();
    (!v.is_empty() && !v.contains('\0')).then_some(v)
}

/// A room position as carried in an SSE id: `<epoch>:<offset>`.
pub fn parse_position_id(id: &str) -> Option<(&str, u64)> {
    let (epoch, offset) = id.rsplit_once(':')?;
    if epoch.is_empty() {
        return None;
    }
    Some((epoch, offset.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_frames_become_sse_events() {
        let json = br#"{"ev":"msg","room":"r","data":{"a":
1}}"#;
        let mut frame = vec![0x81, json.len() as u8];
        frame.extend_from_slice(json);
        let sse = event_from_ws_frame(&frame, Some("r|e:1")).unwrap();
        assert_eq!(
            String::from_utf8(sse).unwrap(),
            "event: msg\nid: r|e:1\ndata: {\"ev\":\"msg\",\"room\":\"r\",\"data\":{\"a\":\ndata: 1}}\n\n"
        );
        let big = format!(r#"{{"ev":"pong","pad":"{}"}}"#, "x".repeat(300));
        let mut frame = vec![0x81, 126];
        frame.extend_from_slice(&(big.len() as u16).to_be_bytes());
        frame.extend_from_slice(big.as_bytes());
        assert!(
            String::from_utf8(event_from_ws_frame(&frame, None).unwrap())
                .unwrap()
                .starts_with("event: pong\ndata: {")
        );
        // Control frames and compressed frames have no SSE form.
        assert_eq!(event_from_ws_frame(&[0x89, 0], None), None);
        assert_eq!(event_from_ws_frame(&[0xc1, 1, b'x'], None), None);
        assert_eq!(event_from_ws_frame(&[0x81], None), None);
    }

    #[test]
    fn multi_line_data_and_fields() {
        let ev = SseEvent {
            id: Some("e1:42"),
            event: Some("msg"),
            data: b"a\nb\r\nc\rd",
            retry_ms: Some(1500),
        };
        assert_eq!(
            String::from_utf8(ev.encode()).unwrap(),
            "event: msg\nid: e1:42\nretry: 1500\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
        );
    }

    #[test]
    fn fields_cannot_break_the_stream() {
        let ev = SseEvent {
            id: Some("x\n\ndata: evil"),
            data: b"",
            ..Default::default()
        };
        assert_eq!(
            String::from_utf8(ev.encode()).unwrap(),
            "id: xdata: evil\ndata: \n\n"
        );
    }

    #[test]
    fn last_event_id_and_positions() {
        assert_eq!(last_event_id(Some(b" e1:7 ")), Some("e1:7"));
        assert_eq!(last_event_id(Some(b"")), None);
        assert_eq!(last_event_id(None), None);
        assert_eq!(parse_position_id("e1:7"), Some(("e1", 7)));
        assert_eq!(parse_position_id(":7"), None);
        assert_eq!(parse_position_id("e1:x"), None);
    }
}

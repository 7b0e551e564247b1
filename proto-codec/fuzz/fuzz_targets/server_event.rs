//! Server events as clients decode them, and SSE position ids: no panic on any input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use proto_codec::protocol::ServerEvent;
use proto_codec::sse::{last_event_id, parse_position_id, SseEvent};

fuzz_target!(|data: &[u8]| {
    if let Ok(ev) = ServerEvent::decode(data) {
        let json = ev.to_json();
        let again = ServerEvent::decode(json.as_bytes()).expect("re-encoded event decodes");
        assert_eq!(again.to_json(), json);
    }
    if let Some(id) = last_event_id(Some(data)) {
        let _ = parse_position_id(id);
        let encoded = SseEvent { id: Some(id), event: Some(id), data, retry_ms: None }.encode();
        assert!(encoded.ends_with(b"\n\n"));
    }
});

//! The app protocol decoder: any frame is an op or an error answer; a decoded op re-encodes to
//! JSON that decodes to the same op.
#![no_main]
use libfuzzer_sys::fuzz_target;
use proto_codec::protocol::decode_op;

fuzz_target!(|data: &[u8]| {
    if let Ok(op) = decode_op(data) {
        let json = op.to_json();
        let again = decode_op(json.as_bytes()).expect("re-encoded op decodes");
        assert_eq!(again.to_json(), json);
    }
});

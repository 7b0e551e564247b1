//! Micro-benchmarks of the codec's hot path. Run: `cargo bench -p proto-codec --bench codec`.

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use proto_codec::protocol::{decode_op, room_message_frame};
use proto_codec::ws::frame::write_masked_frame;
use proto_codec::ws::mask::apply_mask_bytewise;
use proto_codec::ws::utf8::Utf8Validator;
use proto_codec::ws::{
    apply_mask, encode_frame, parse_header, Decoder, DecoderConfig, FrameLimits, OpCode,
};

fn header_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("header_parse");
    g.throughput(Throughput::Elements(1));
    let limits = FrameLimits::server(1 << 20);
    for len in [64usize, 1024, 65536] {
        let mut b = BytesMut::new();
        write_masked_frame(
            &mut b,
            true,
            false,
            OpCode::Text,
            [1, 2, 3, 4],
            &vec![b'a'; len],
        );
        g.bench_with_input(BenchmarkId::from_parameter(len), &b, |bench, b| {
            bench.iter(|| parse_header(black_box(b), &limits))
        });
    }
    g.finish();
}

fn unmask(c: &mut Criterion) {
    let mut g = c.benchmark_group("unmask");
    for len in [64usize, 1024, 65536] {
        let mut buf = vec![0x5au8; len];
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(BenchmarkId::new("word", len), |b| {
            b.iter(|| apply_mask(black_box(&mut buf), [1, 2, 3, 4]))
        });
        g.bench_function(BenchmarkId::new("bytewise", len), |b| {
            b.iter(|| apply_mask_bytewise(black_box(&mut buf), [1, 2, 3, 4], 0))
        });
    }
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(1));
    let payload = vec![b'x'; 200];
    g.bench_function("frame_200B", |b| {
        b.iter(|| encode_frame(OpCode::Text, false, black_box(&payload)))
    });
    let data = br#"{"symbol":"BTC-USD","bid":64123.5,"ask":64124.0,"ts":1732531200123}"#;
    g.bench_function("room_message_frame", |b| {
        b.iter(|| room_message_frame("prices.BTC-USD", "7f3a9c", black_box(123_456), data))
    });
    g.finish();
}

fn utf8(c: &mut Criterion) {
    let mut g = c.benchmark_group("utf8");
    for len in [64usize, 1024, 65536] {
        let text = "κόσμε ascii mixed text 0123456789 ".repeat(len / 30 + 1);
        let bytes = &text.as_bytes()[..text.floor_char_boundary(len)];
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_with_input(BenchmarkId::new("incremental", len), bytes, |b, bytes| {
            b.iter(|| {
                let mut v = Utf8Validator::new();
                v.feed(black_box(bytes)).and_then(|_| v.finish())
            })
        });
        g.bench_with_input(BenchmarkId::new("std", len), bytes, |b, bytes| {
            b.iter(|| std::str::from_utf8(black_box(bytes)).is_ok())
        });
    }
    g.finish();
}

fn ops(c: &mut Criterion) {
    let mut g = c.benchmark_group("op_decode");
    g.throughput(Throughput::Elements(1));
    let publish = br#"{"op":"publish","id":42,"room":"prices.BTC-USD","data":{"bid":64123.5,"ask":64124.0,"ts":1732531200123}}"#;
    g.bench_function("publish", |b| {
        b.iter(|| decode_op(black_box(publish)).is_ok())
    });
    let subscribe = br#"{"op":"subscribe","id":7,"room":"chat.lobby","since":{"epoch":"7f3a9c","offset":1200}}"#;
    g.bench_function("subscribe", |b| {
        b.iter(|| decode_op(black_box(subscribe)).is_ok())
    });
    g.finish();
}

fn decode_message(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_message");
    for len in [128usize, 16384] {
        let mut frame = BytesMut::new();
        write_masked_frame(
            &mut frame,
            true,
            false,
            OpCode::Text,
            [9, 8, 7, 6],
            &vec![b'a'; len],
        );
        let frame = frame.to_vec();
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(BenchmarkId::from_parameter(len), |b| {
            let mut decoder = Decoder::new(DecoderConfig::server(1 << 20));
            let mut buf = frame.clone();
            b.iter(|| {
                buf.copy_from_slice(&frame);
                decoder.decode(black_box(&mut buf)).map(|d| d.consumed)
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    header_parse,
    unmask,
    encode,
    utf8,
    ops,
    decode_message
);
criterion_main!(benches);

//! `ceiling-server`: the physical limit of this machine for the same fan-out, without a gateway.
//!
//! It speaks just enough of the raw-broadcast mode to be loaded by `fanout --mode raw`: it accepts
//! WebSocket upgrades on `/raw/<room>`, and one thread reads each publisher's frames and writes
//! the same pre-encoded server frame to every subscriber socket of the room. No rooms registry,
//! no queues, no protocol: what is left is the cost of the syscalls and of loopback TCP.
//!
//! Variants: `write` (one `write(2)` per frame per socket), `writev` (all frames that arrived
//! together, one `writev(2)` per socket), `uring` (one io_uring SQE per socket, one submission
//! per frame batch).

use std::collections::HashMap;
use std::io::{IoSlice, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use bytes::BytesMut;
use proto_codec::ws::{Decoder, DecoderConfig, Message};

/// How the sender writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Variant {
    /// One write(2) per frame per socket.
    Write,
    /// One writev(2) per socket for every frame read in one go.
    Writev,
    /// One io_uring write SQE per socket, submitted together.
    Uring,
}

/// Arguments of the ceiling server.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// How to write.
    #[arg(long, value_enum, default_value_t = Variant::Writev)]
    variant: Variant,
}

type Rooms = Arc<Mutex<HashMap<String, Vec<TcpStream>>>>;

/// Runs the ceiling server until killed.
pub fn run(args: Args) -> anyhow::Result<()> {
    let listener = TcpListener::bind(&args.listen)?;
    println!("listening public={}", listener.local_addr()?);
    let rooms: Rooms = Arc::default();
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_nodelay(true);
        let Ok((path, leftover)) = handshake(&mut stream) else {
            continue;
        };
        let (path, query) = path.split_once('?').unwrap_or((&path, ""));
        let room = path.trim_start_matches("/raw/").to_string();
        if query.contains("role=pub") {
            let rooms = rooms.clone();
            let variant = args.variant;
            std::thread::spawn(move || {
                if let Err(e) = publisher(stream, leftover, &room, &rooms, variant) {
                    eprintln!("publisher ended: {e}");
                }
            });
        } else if let Ok(mut map) = rooms.lock() {
            map.entry(room).or_default().push(stream);
        }
    }
    Ok(())
}

fn handshake(stream: &mut TcpStream) -> anyhow::Result<(String, Vec<u8>)> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let end = loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            bail!("closed");
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let req = proto_codec::http::parse_request(&head[..end])?.context("incomplete")?;
    let upgrade = proto_codec::handshake::validate_upgrade(&req)?;
    let mut resp = Vec::new();
    proto_codec::handshake::write_upgrade_response(&mut resp, upgrade.key, None, None);
    let path = match req.query {
        Some(q) => format!("{}?{q}", req.path),
        None => req.path.to_string(),
    };
    stream.write_all(&resp)?;
    Ok((path, head[end..].to_vec()))
}

fn publisher(
    mut stream: TcpStream,
    leftover: Vec<u8>,
    room: &str,
    rooms: &Rooms,
    variant: Variant,
) -> anyhow::Result<()> {
    let mut decoder = Decoder::new(DecoderConfig::server(1 << 20));
    let mut buf = leftover;
    let mut chunk = vec![0u8; 64 * 1024];
    let mut ring = match variant {
        Variant::Uring => Some(io_uring::IoUring::new(4096)?),
        _ => None,
    };
    loop {
        // Every complete frame that arrived together is sent as one batch.
        let mut frames = Vec::new();
        let mut pos = 0;
        loop {
            let d = decoder.decode(&mut buf[pos..])?;
            pos += d.consumed;
            match d.message {
                Some(Message::Data(_, payload)) => {
                    let mut f = BytesMut::new();
                    proto_codec::ws::frame::write_frame(
                        &mut f,
                        true,
                        false,
                        proto_codec::ws::OpCode::Text,
                        &payload,
                    );
                    frames.push(f.freeze());
                }
                Some(Message::Close(_)) => return Ok(()),
                Some(_) => {}
                None => break,
            }
        }
        buf.drain(..pos);
        if !frames.is_empty() {
            let mut map = rooms.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            let subs = map.entry(room.to_string()).or_default();
            match variant {
                Variant::Write => {
                    for s in subs.iter_mut() {
                        for f in &frames {
                            s.write_all(f)?;
                        }
                    }
                }
                Variant::Writev => {
                    let slices: Vec<IoSlice<'_>> = frames.iter().map(|f| IoSlice::new(f)).collect();
                    for s in subs.iter_mut() {
                        write_all_vectored(s, &slices, &frames)?;
                    }
                }
                Variant::Uring => {
                    if let Some(ring) = ring.as_mut() {
                        uring_fan_out(ring, subs, &frames)?;
                    }
                }
            }
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn write_all_vectored(
    s: &mut TcpStream,
    slices: &[IoSlice<'_>],
    frames: &[bytes::Bytes],
) -> std::io::Result<()> {
    let total: usize = frames.iter().map(|f| f.len()).sum();
    let written = s.write_vectored(slices)?;
    if written < total {
        // Rare with loopback buffers: finish byte-exactly.
        let mut skip = written;
        for f in frames {
            if skip >= f.len() {
                skip -= f.len();
                continue;
            }
            s.write_all(&f[skip..])?;
            skip = 0;
        }
    }
    Ok(())
}

fn uring_fan_out(
    ring: &mut io_uring::IoUring,
    subs: &mut [TcpStream],
    frames: &[bytes::Bytes],
) -> anyhow::Result<()> {
    for f in frames {
        for chunk in subs.chunks(2048) {
            for (i, s) in chunk.iter().enumerate() {
                let sqe = io_uring::opcode::Write::new(
                    io_uring::types::Fd(s.as_raw_fd()),
                    f.as_ptr(),
                    f.len() as u32,
                )
                .build()
                .user_data(i as u64);
                // SAFETY: the buffer (`f`) and the fds outlive the submission: we wait for every
                // completion below before returning, and nothing else touches the ring.
                unsafe {
                    ring.submission()
                        .push(&sqe)
                        .map_err(|_| anyhow::anyhow!("submission queue full"))?;
                }
            }
            ring.submit_and_wait(chunk.len())?;
            let mut short = Vec::new();
            for cqe in ring.completion() {
                let res = cqe.result();
                if res < 0 {
                    bail!(
                        "uring write failed: {}",
                        std::io::Error::from_raw_os_error(-res)
                    );
                }
                if (res as usize) < f.len() {
                    short.push((cqe.user_data() as usize, res as usize));
                }
            }
            for (i, done) in short {
                let mut s = &chunk[i];
                s.write_all(&f[done..])?;
            }
        }
    }
    Ok(())
}

//! Runs the Autobahn client cases against `kosoku -m fuzzingserver` with the SDK's WebSocket
//! layer (`ringcast_client::transport::open`: our upgrade, fastwebsockets frames): every message
//! is echoed back as it came.
//!
//! Usage: cargo run -p ringcast-client --example autobahn_client -- 127.0.0.1:9001

use std::time::Duration;

use fastwebsockets::{Frame, OpCode, Payload, WebSocketError};
use ringcast_client::transport;

const AGENT: &str = "ringcast-client";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".into());
    let timeout = Duration::from_secs(10);
    let (mut read, _w) = transport::open(&addr, "/getCaseCount", None, timeout).await?;
    let mut ignore = |_: Frame<'_>| async { Ok::<(), WebSocketError>(()) };
    let count: u32 = String::from_utf8_lossy(&read.read_frame(&mut ignore).await?.payload)
        .trim()
        .parse()?;
    for case in 1..=count {
        let path = format!("/runCase?case={case}&agent={AGENT}");
        let (mut read, mut write) = transport::open(&addr, &path, None, timeout).await?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(OpCode, Vec<u8>)>();
        loop {
            let obligated = tx.clone();
            let mut send = move |f: Frame<'_>| {
                let _ = obligated.send(transport::obligated_reply(&f));
                async { Ok::<(), WebSocketError>(()) }
            };
            let frame = read.read_frame(&mut send).await;
            // Pongs and close replies the protocol obliges us to send go first.
            while let Ok((op, payload)) = rx.try_recv() {
                let _ = write
                    .write_frame(Frame::new(true, op, None, Payload::Owned(payload)))
                    .await;
            }
            let Ok(frame) = frame else { break };
            match frame.opcode {
                OpCode::Text | OpCode::Binary => {
                    let echo = Frame::new(
                        true,
                        frame.opcode,
                        None,
                        Payload::Owned(frame.payload.to_vec()),
                    );
                    if write.write_frame(echo).await.is_err() {
                        break;
                    }
                }
                OpCode::Close => break,
                _ => {}
            }
        }
        if case % 50 == 0 {
            eprintln!("autobahn client: {case}/{count}");
        }
    }
    let (mut read, _w) = transport::open(
        &addr,
        &format!("/updateReports?agent={AGENT}"),
        None,
        timeout,
    )
    .await?;
    let _ = tokio::time::timeout(timeout, read.read_frame(&mut ignore)).await;
    Ok(())
}

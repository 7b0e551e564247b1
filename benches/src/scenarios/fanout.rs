//! `fanout`: S subscribers over R rooms, P publishers at an offered rate.
//!
//! Each message carries the time it was *scheduled* to be sent; latency is receive time minus that
//! schedule, so a stalled publisher or server cannot hide its stall (coordinated omission is
//! corrected). Every delivered message is recorded in an HdrHistogram. Each message also carries
//! its publisher and sequence number, so every subscriber checks it got each publisher's messages
//! once and in order; loss is expected minus received.
//!
//! Two modes: `app` speaks the ringcast protocol on `/ws`; `raw` is the minimal broadcast peers
//! implement (`/raw/<room>`; publishers add `?role=pub` and send text frames).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;

use crate::client::{connect, find_u64, next_text, send};
use crate::procstat;

/// Arguments of the fanout scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Server to load (ignored with --spawn).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Start this server command (split on spaces) and measure its CPU and RSS. It must print a
    /// line with `public=HOST:PORT` on stdout (ringcast and the bundled peers do).
    #[arg(long, value_name = "COMMAND")]
    pub spawn: Option<String>,
    /// Publishers connect to a second server started with this command (the subscribers stay on
    /// `--spawn`/`--addr`): a cross-node run, both nodes sharing rooms through a broker.
    #[arg(long, value_name = "COMMAND")]
    pub publish_spawn: Option<String>,
    /// A label for the server in the report.
    #[arg(long, default_value = "server")]
    pub label: String,
    /// A tag for the run in the JSON line (`tag`), to group runs in a report (e.g. `floor`,
    /// `half-load`).
    #[arg(long, default_value = "")]
    pub tag: String,
    /// `app`: the ringcast protocol on /ws. `raw`: raw broadcast on /raw/<room>. `socketio`,
    /// `pusher`: those protocols.
    #[arg(long, value_enum, default_value_t = Mode::App)]
    pub mode: Mode,
    /// With `--mode pusher`: the app as `id:key:secret`.
    #[arg(long, default_value = "1:bench-key:bench-secret")]
    pub pusher_app: crate::pusher::App,
    /// Read CPU and RSS of this server process (when not spawning).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Subscriber connections.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Rooms (subscriber i joins room i mod R).
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Publisher connections (raw mode: publisher p publishes to room p mod R).
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Offered publish rate, messages per second over all publishers.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Padding bytes in each message's data.
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2)]
    pub warmup_secs: u64,
    /// Client runtime threads.
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
    /// Also print the result as one JSON line.
    #[arg(long)]
    pub json: bool,
    /// Also write the latency percentile spectrum of the run as an SVG plot to this file.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<std::path::PathBuf>,
    /// Connect over TLS, verifying the server against this PEM certificate (name `localhost`);
    /// with --spawn, the server's `tls=` address is loaded instead of `public=`.
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// Ramp the offered rate (×1.5 per step from --rate, then ×1.2 between the last passing and
    /// the first failing step) and report the highest whose p99 stays at or under
    /// --p99-target-ms with nothing lost or duplicated.
    #[arg(long)]
    pub find_max: bool,
    /// The p99 target of --find-max.
    #[arg(long, default_value_t = 10.0)]
    pub p99_target_ms: f64,
    /// The highest rate --find-max tries.
    #[arg(long, default_value_t = 100_000.0)]
    pub max_rate: f64,
    /// Fair egress: also flood another room (`flood.room`; give its namespace a drop-oldest or
    /// conflate policy) on the same server with this many subscribers (app mode), while the
    /// rooms above are measured. 0: no flood. Known issue: a flood that keeps every task of a
    /// shard runnable starves monoio's timers and new connections (docs/architecture.md §9).
    #[arg(long, default_value_t = 0)]
    pub flood_subscribers: usize,
    /// Connections publishing into the flood room as fast as they can write.
    #[arg(long, default_value_t = 2)]
    pub flood_publishers: usize,
}

/// Which protocol the load speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The ringcast app protocol.
    App,
    /// Raw broadcast.
    Raw,
    /// Socket.IO 4 (Engine.IO v4 over WebSocket): subscribers join the room on connect,
    /// publishers emit `pub`, the server broadcasts `msg` to the room.
    Socketio,
    /// The Pusher Channels protocol 7: subscribers on `/app/<key>` subscribe to public channels;
    /// each message is a signed `POST /apps/<id>/events` (one HTTP request per message, as the
    /// Pusher server libraries send them).
    Pusher,
}

/// Connects a Socket.IO 4 client over WebSocket: the Engine.IO open packet, then the namespace
/// connect (`40`), answered `40{...}` once the server ran its `connection` handler.
async fn socketio_connect(
    addr: SocketAddr,
    room: &str,
    role: &str,
) -> anyhow::Result<fastwebsockets::WebSocket<crate::tls::Stream>> {
    let path = format!("/socket.io/?EIO=4&transport=websocket&room={room}&role={role}");
    let mut ws = connect(addr, &path, false).await?;
    let open = next_text(&mut ws).await?;
    if !open.starts_with(b"0{") {
        bail!(
            "no Engine.IO open packet: {}",
            String::from_utf8_lossy(&open)
        );
    }
    send(&mut ws, "40".into()).await?;
    loop {
        let f = next_text(&mut ws).await?;
        if f.starts_with(b"40") {
            return Ok(ws);
        }
    }
}

static BASE: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the harness's time base (shared by publishers and subscribers).
pub fn ns_since_base(t: Instant) -> u64 {
    let base = *BASE.get_or_init(Instant::now);
    t.saturating_duration_since(base).as_nanos() as u64
}

/// A server process started by the harness, killed on drop.
pub struct Spawned {
    /// The process.
    pub child: Child,
    /// Its public address.
    pub addr: SocketAddr,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a server command and waits for its `public=HOST:PORT` line.
pub fn spawn_server(command: &str) -> anyhow::Result<Spawned> {
    let mut parts = command.split_whitespace();
    let program = parts.next().context("empty --spawn command")?;
    let mut child = Command::new(program)
        .args(parts)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {command}"))?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    // Over TLS (`--tls-ca`), the server's TLS listener is the one to load.
    let field = if crate::tls::enabled() {
        "tls="
    } else {
        "public="
    };
    let addr = loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            bail!("{command} exited without printing {field}HOST:PORT");
        }
        if let Some(a) = line.split_whitespace().find_map(|w| w.strip_prefix(field)) {
            break a
                .parse()
                .with_context(|| format!("{field}{a} is not an address"))?;
        }
    };
    // A ringcast node also names its admin listener: wait until it is ready (on a Redis broker
    // it serves before its link is up, with /readyz red).
    if let Some(admin) = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("admin="))
        .and_then(|a| a.parse::<SocketAddr>().ok())
    {
        wait_ready(admin, Duration::from_secs(20))
            .with_context(|| format!("{command} did not become ready"))?;
    }
    // Keep draining its stdout so it never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    Ok(Spawned { child, addr })
}

/// Polls `GET /readyz` until it answers 200.
fn wait_ready(admin: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(mut s) = std::net::TcpStream::connect(admin) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut head = [0u8; 12];
            if s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .is_ok()
                && s.read_exact(&mut head).is_ok()
                && head.ends_with(b" 200")
            {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("/readyz on {admin} stayed red")
}

/// What one subscriber saw.
#[derive(Default)]
pub struct SubResult {
    /// Messages received.
    pub received: u64,
    /// Messages that came again or out of their publisher's order.
    pub duplicated: u64,
    /// Latency of messages scheduled after the warm-up, in µs, from their scheduled time.
    pub hist: Option<Histogram<u64>>,
    /// The same messages' latency from the moment the publisher actually sent them (their `s`
    /// field; messages without one are not in it), in µs.
    pub from_send: Option<Histogram<u64>>,
}

/// Reads messages until `stop` fires, checking order and recording latency.
pub async fn subscriber_loop<S>(
    ws: &mut fastwebsockets::WebSocket<S>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    measure_from_ns: u64,
) -> SubResult
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut r = SubResult {
        hist: Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).ok(),
        from_send: Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).ok(),
        ..SubResult::default()
    };
    let mut last_k: HashMap<u64, u64> = HashMap::new();
    loop {
        // A watch cannot miss the stop, even if it fires while this task handles a frame.
        if *stop.borrow() {
            break;
        }
        let frame = tokio::select! {
            _ = stop.changed() => break,
            f = next_text(ws) => match f { Ok(f) => f, Err(_) => break },
        };
        if frame.as_slice() == b"2" {
            // Engine.IO ping: answer, or the server drops the connection.
            let pong = fastwebsockets::Frame::text(fastwebsockets::Payload::Borrowed(b"3"));
            if ws.write_frame(pong).await.is_err() {
                break;
            }
            continue;
        }
        let now = ns_since_base(Instant::now());
        // Pusher events carry the data as a JSON string: its quotes are escaped.
        let field = |key: &[u8], escaped: &[u8]| {
            find_u64(&frame, key).or_else(|| find_u64(&frame, escaped))
        };
        let (Some(t), Some(p), Some(k)) = (
            field(b"\"t\":", b"\\\"t\\\":"),
            field(b"\"p\":", b"\\\"p\\\":"),
            field(b"\"k\":", b"\\\"k\\\":"),
        ) else {
            continue;
        };
        r.received += 1;
        // Each publisher's messages must arrive once, in its order.
        match last_k.get(&p) {
            Some(prev) if k <= *prev => r.duplicated += 1,
            _ => {
                last_k.insert(p, k);
            }
        }
        if t >= measure_from_ns {
            if let Some(h) = r.hist.as_mut() {
                let _ = h.record(now.saturating_sub(t).max(1000) / 1000);
            }
            if let (Some(h), Some(sent)) = (r.from_send.as_mut(), field(b"\"s\":", b"\\\"s\\\":")) {
                let _ = h.record(now.saturating_sub(sent).max(1000) / 1000);
            }
        }
    }
    r
}

/// The ramp's step factor until its first failing step.
const COARSE_STEP: f64 = 1.5;
/// The ramp's step factor between the last passing and the first failing coarse step.
const FINE_STEP: f64 = 1.2;

/// Runs the scenario (or the --find-max ramp) and prints the report.
pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(ca) = &args.tls_ca {
        crate::tls::init(ca)?;
    }
    if !args.find_max {
        let report = measure(&args)?;
        print_report(&args, &report);
        return Ok(());
    }
    let mut step = args.clone();
    let mut best: Option<(f64, f64, u64)> = None;
    let mut limited_by_load = false;
    // ×1.5 per step until a step fails, then ×1.2 from the last passing rate up to the failed
    // one: the limit is known to within 20 %, in two more steps at most.
    let mut failed_at: Option<f64> = None;
    let mut next_rate = args.rate;
    for i in 1.. {
        let factor = if failed_at.is_some() {
            FINE_STEP
        } else {
            COARSE_STEP
        };
        step.rate = next_rate;
        if step.rate > args.max_rate || failed_at.is_some_and(|f| step.rate >= f * 0.999) {
            break;
        }
        eprintln!(
            "find-max [{}]: step {i} at {:.0} msg/s (x{factor} steps)",
            args.label, step.rate
        );
        let mut report = measure(&step)?;
        print_report(&step, &report);
        let passes = |r: &Report| {
            r.expected == r.received
                && r.duplicated == 0
                && r.hist.value_at_quantile(0.99) as f64 / 1000.0 <= args.p99_target_ms
        };
        if !report.load_fell_behind && !passes(&report) {
            // One noisy step must not end the ramp: a failing step is measured once more.
            eprintln!(
                "find-max [{}]: step failed; measuring it once more",
                args.label
            );
            report = measure(&step)?;
            print_report(&step, &report);
        }
        if report.load_fell_behind {
            println!(
                "find-max [{}]: the load generator could not offer {:.0} msg/s; stopping the ramp there (a limit of the load, not of the server)",
                args.label, step.rate
            );
            limited_by_load = true;
            break;
        }
        if !passes(&report) {
            match best {
                Some((rate, ..)) if failed_at.is_none() => {
                    failed_at = Some(step.rate);
                    next_rate = rate * FINE_STEP;
                    continue;
                }
                _ => break,
            }
        }
        best = Some((
            step.rate,
            report.hist.len() as f64 / report.measured_secs,
            report.hist.value_at_quantile(0.99),
        ));
        next_rate = step.rate * factor;
    }
    match best {
        Some((rate, deliveries, p99)) => {
            println!(
                "find-max [{}]: highest offered rate with p99 <= {} ms and no loss: {:.0} msg/s = {:.0} deliveries/s (p99 {:.2} ms)",
                args.label, args.p99_target_ms, rate, deliveries, p99 as f64 / 1000.0
            );
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"scenario": "find-max", "label": args.label, "mode": format!("{:?}", args.mode).to_lowercase(),
                        "subscribers": args.subscribers, "rooms": args.rooms, "max_rate": rate,
                        "max_deliveries_per_sec": deliveries, "p99_us": p99, "p99_target_ms": args.p99_target_ms,
                        "limited_by_load": limited_by_load,
                        "capped": rate * COARSE_STEP > args.max_rate && !limited_by_load && failed_at.is_none()})
                );
            }
        }
        None => {
            println!(
                "find-max [{}]: even {:.0} msg/s misses p99 <= {} ms",
                args.label, args.rate, args.p99_target_ms
            );
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"scenario": "find-max", "label": args.label, "mode": format!("{:?}", args.mode).to_lowercase(),
                        "subscribers": args.subscribers, "rooms": args.rooms, "max_rate": 0.0,
                        "max_deliveries_per_sec": 0.0, "p99_us": null, "p99_target_ms": args.p99_target_ms})
                );
            }
        }
    }
    Ok(())
}

/// Runs the scenario and returns the figures.
pub fn measure(args: &Args) -> anyhow::Result<Report> {
    if args.rooms == 0 || args.publishers == 0 || args.rate <= 0.0 {
        bail!("rooms, publishers and rate must be above 0");
    }
    if !matches!(args.mode, Mode::App | Mode::Pusher) && args.publishers < args.rooms {
        bail!("raw mode needs at least one publisher per room");
    }
    let spawned = match &args.spawn {
        Some(cmd) => Some(spawn_server(cmd)?),
        None => None,
    };
    let addr = spawned.as_ref().map_or(args.addr, |s| s.addr);
    let publish_node = match &args.publish_spawn {
        Some(cmd) => Some(spawn_server(cmd)?),
        None => None,
    };
    let publish_addr = publish_node.as_ref().map_or(addr, |s| s.addr);
    let server_pid = spawned.as_ref().map(|s| s.child.id()).or(args.server_pid);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .enable_all()
        .build()?;
    let _ = ns_since_base(Instant::now());
    let report = rt.block_on(drive(args, addr, publish_addr, server_pid));
    drop(publish_node);
    drop(spawned);
    report
}

/// The figures of one run.
pub struct Report {
    /// Messages published.
    pub published: u64,
    /// Deliveries expected (messages × subscribers of their room).
    pub expected: u64,
    /// Deliveries received.
    pub received: u64,
    /// Deliveries out of order or repeated.
    pub duplicated: u64,
    /// Latency (µs) of messages scheduled in the measured window, from their scheduled time
    /// (a late send counts its lateness: no coordinated omission).
    pub hist: Histogram<u64>,
    /// The same deliveries' latency (µs) from the publisher's actual send.
    pub from_send: Histogram<u64>,
    /// How late (µs) the publishers sent, against their schedule: the harness's own share.
    pub lateness: Histogram<u64>,
    /// The measured window.
    pub measured_secs: f64,
    /// Server CPU, percent of one core.
    pub cpu_percent: Option<f64>,
    /// Harness CPU, percent of one core.
    pub client_cpu_percent: Option<f64>,
    /// Server RSS at the end of the load.
    pub rss_bytes: Option<u64>,
    /// A publisher fell more than a second behind its schedule: the load generator could not
    /// offer this rate, so the run says nothing about the server.
    pub load_fell_behind: bool,
    /// With `--flood-subscribers`: what the flood room delivered per second meanwhile.
    pub flood_deliveries_per_sec: Option<f64>,
}

/// How long before a send slot a publisher stops sleeping on tokio's timer (1 ms granularity,
/// rounded up) and yields to the runtime instead until the slot.
const SPIN_BEFORE: Duration = Duration::from_millis(2);

/// Waits until `at`: on the timer until [`SPIN_BEFORE`] ahead of it, then by yielding (so the
/// subscribers on the same runtime keep being served, and the I/O driver is polled between
/// yields) until the slot. Costs the load core up to `SPIN_BEFORE` of busy time per send, and
/// keeps the send within a few µs of its slot instead of up to a timer tick behind it.
async fn wait_until(at: Instant) {
    if let Some(early) = at.checked_sub(SPIN_BEFORE) {
        if early > Instant::now() {
            tokio::time::sleep_until(early.into()).await;
        }
    }
    while Instant::now() < at {
        tokio::task::yield_now().await;
    }
}

async fn drive(
    args: &Args,
    addr: SocketAddr,
    publish_addr: SocketAddr,
    server_pid: Option<u32>,
) -> anyhow::Result<Report> {
    let rooms: Arc<Vec<String>> = Arc::new(
        (0..args.rooms)
            .map(|r| match args.mode {
                // A Pusher channel name (no ringcast namespace).
                Mode::Pusher => format!("bench-room{r}"),
                _ => format!("bench.room{r}"),
            })
            .collect(),
    );
    // Connect and subscribe every subscriber (in waves, to stay under the accept backlog).
    let mut subs = Vec::with_capacity(args.subscribers);
    let indices: Vec<usize> = (0..args.subscribers).collect();
    for wave in indices.chunks(200) {
        let mut joins = Vec::new();
        for &i in wave {
            let room = rooms[i % rooms.len()].clone();
            let mode = args.mode;
            let app = args.pusher_app.clone();
            joins.push(tokio::spawn(async move {
                if mode == Mode::Raw {
                    return connect(addr, &format!("/raw/{room}"), false).await;
                }
                if mode == Mode::Socketio {
                    return socketio_connect(addr, &room, "sub").await;
                }
                if mode == Mode::Pusher {
                    return crate::pusher::subscribe(addr, &app, &room).await;
                }
                let mut ws = connect(addr, "/ws", true).await?;
                send(
                    &mut ws,
                    format!(r#"{{"op":"subscribe","id":1,"room":"{room}"}}"#),
                )
                .await?;
                let ev = next_text(&mut ws).await?;
                if !ev.starts_with(br#"{"ev":"subscribed""#) {
                    bail!("subscribe failed: {}", String::from_utf8_lossy(&ev));
                }
                anyhow::Ok(ws)
            }));
        }
        for j in joins {
            subs.push(j.await??);
        }
    }
    let flood = start_flood(args, addr).await?;
    let mut pubs = Vec::with_capacity(args.publishers);
    for p in 0..args.publishers {
        pubs.push(match args.mode {
            // Events go through the HTTP API: no publisher connection.
            Mode::Pusher => None,
            Mode::App => Some(connect(publish_addr, "/ws", true).await?),
            Mode::Raw => {
                let path = format!("/raw/{}?role=pub", rooms[p % rooms.len()]);
                Some(connect(publish_addr, &path, false).await?)
            }
            Mode::Socketio => {
                Some(socketio_connect(publish_addr, &rooms[p % rooms.len()], "pub").await?)
            }
        });
    }
    if args.mode == Mode::Raw {
        // Raw subscriptions have no answer: let them settle.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let start = Instant::now() + Duration::from_millis(300);
    let measure_from = start + Duration::from_secs(args.warmup_secs);
    let end = measure_from + Duration::from_secs(args.duration_secs);
    let measure_from_ns = ns_since_base(measure_from);
    let published_per_room: Arc<Vec<AtomicU64>> =
        Arc::new((0..args.rooms).map(|_| AtomicU64::new(0)).collect());

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut sub_tasks = Vec::with_capacity(subs.len());
    for mut ws in subs {
        let stop = stop_rx.clone();
        sub_tasks.push(tokio::spawn(async move {
            subscriber_loop(&mut ws, stop, measure_from_ns).await
        }));
    }

    // Publishers: each sends on its own schedule (`wait_until`: precise to a few µs); a late
    // send keeps its scheduled time `t` and carries its actual send time `s` beside it.
    let interval = Duration::from_secs_f64(args.publishers as f64 / args.rate);
    let pad = "x".repeat(args.payload);
    let behind = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut pub_tasks = Vec::new();
    for (p, mut ws) in pubs.into_iter().enumerate() {
        let app = args.pusher_app.clone();
        let rooms = rooms.clone();
        let counts = published_per_room.clone();
        let pad = pad.clone();
        let publishers = args.publishers;
        let mode = args.mode;
        let behind = behind.clone();
        pub_tasks.push(tokio::spawn(async move {
            let offset = interval.mul_f64(p as f64 / publishers as f64);
            let mut lateness = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).ok();
            let mut k: u64 = 0;
            loop {
                let scheduled = start + interval.mul_f64(k as f64) + offset;
                if scheduled >= end {
                    break;
                }
                wait_until(scheduled).await;
                let sent_at = Instant::now();
                if sent_at.saturating_duration_since(scheduled) > Duration::from_secs(1) {
                    behind.store(true, Ordering::Relaxed);
                    break;
                }
                let (t, s) = (ns_since_base(scheduled), ns_since_base(sent_at));
                if scheduled >= measure_from {
                    if let Some(h) = lateness.as_mut() {
                        let _ = h.record(s.saturating_sub(t) / 1000);
                    }
                }
                let data = format!(r#"{{"t":{t},"s":{s},"p":{p},"k":{k},"pad":"{pad}"}}"#);
                let (r, frame) = match mode {
                    Mode::App => {
                        let r = (k as usize * publishers + p) % rooms.len();
                        (
                            r,
                            format!(r#"{{"op":"publish","room":"{}","data":{data}}}"#, rooms[r]),
                        )
                    }
                    Mode::Raw => (p % rooms.len(), data),
                    Mode::Socketio => (p % rooms.len(), format!(r#"42["pub",{data}]"#)),
                    Mode::Pusher => ((k as usize * publishers + p) % rooms.len(), data),
                };
                let sent = match ws.as_mut() {
                    Some(ws) => send(ws, frame).await.is_ok(),
                    None => crate::pusher::trigger(publish_addr, &app, &rooms[r], &frame)
                        .await
                        .is_ok(),
                };
                if !sent {
                    break;
                }
                counts[r].fetch_add(1, Ordering::Relaxed);
                k += 1;
            }
            // Keep the connection until the end so nothing is cut short.
            (ws, lateness)
        }));
    }
    let progress = tokio::spawn(crate::report::progress(
        format!("fanout [{}]", args.label),
        start,
        measure_from,
        end,
    ));
    let cpu_start = server_pid.and_then(procstat::cpu_seconds);
    let client_cpu_start = procstat::cpu_seconds(std::process::id());
    let wall_start = Instant::now();
    let mut pub_conns = Vec::new();
    let mut lateness = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for t in pub_tasks {
        let (ws, late) = t.await?;
        pub_conns.push(ws);
        if let Some(h) = late {
            lateness.add(h)?;
        }
    }
    progress.abort();
    crate::report::progress_done();
    let cpu_end = server_pid.and_then(procstat::cpu_seconds);
    let client_cpu_end = procstat::cpu_seconds(std::process::id());
    let wall = wall_start.elapsed().as_secs_f64();
    let rss_bytes = server_pid.and_then(procstat::rss_bytes);
    let flood_deliveries_per_sec = match flood {
        Some(f) => Some(f.stop(wall).await),
        None => None,
    };
    // Let in-flight messages arrive, then stop the readers.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop_tx.send(true);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut from_send = hist.clone();
    let (mut received, mut duplicated) = (0, 0);
    for t in sub_tasks {
        let r = t.await?;
        received += r.received;
        duplicated += r.duplicated;
        if let Some(h) = r.hist {
            hist.add(h)?;
        }
        if let Some(h) = r.from_send {
            from_send.add(h)?;
        }
    }
    drop(pub_conns);
    let subs_per_room = |r: usize| {
        (0..args.subscribers)
            .filter(|i| i % args.rooms == r)
            .count() as u64
    };
    let published: u64 = published_per_room
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum();
    let expected = published_per_room
        .iter()
        .enumerate()
        .map(|(r, c)| c.load(Ordering::Relaxed) * subs_per_room(r))
        .sum();
    Ok(Report {
        published,
        expected,
        received,
        duplicated,
        hist,
        from_send,
        lateness,
        measured_secs: args.duration_secs as f64,
        cpu_percent: cpu_start.zip(cpu_end).map(|(a, b)| (b - a) / wall * 100.0),
        client_cpu_percent: client_cpu_start
            .zip(client_cpu_end)
            .map(|(a, b)| (b - a) / wall * 100.0),
        rss_bytes,
        load_fell_behind: behind.load(Ordering::Relaxed),
        flood_deliveries_per_sec,
    })
}

/// The flood of `--flood-subscribers`: readers that count frames, writers that never wait.
struct Flood {
    stop: Arc<std::sync::atomic::AtomicBool>,
    frames: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    started: u64,
}

impl Flood {
    /// Stops the flood; returns the deliveries per second it got over `wall` seconds.
    async fn stop(self, wall: f64) -> f64 {
        let got = self.frames.load(Ordering::Relaxed) - self.started;
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            // A writer may be blocked on a full socket: end it.
            t.abort();
            let _ = t.await;
        }
        got as f64 / wall.max(1e-9)
    }
}

async fn start_flood(args: &Args, addr: SocketAddr) -> anyhow::Result<Option<Flood>> {
    if args.flood_subscribers == 0 {
        return Ok(None);
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let frames = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.flood_subscribers {
        let mut ws = connect(addr, "/ws", true).await?;
        send(
            &mut ws,
            r#"{"op":"subscribe","id":1,"room":"flood.room"}"#.to_string(),
        )
        .await?;
        next_text(&mut ws).await?;
        let (stop, frames) = (stop.clone(), frames.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match ws.read_frame().await {
                    Ok(_) => {
                        frames.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => break,
                }
            }
        }));
    }
    let op = format!(
        r#"{{"op":"publish","room":"flood.room","data":{{"pad":"{}"}}}}"#,
        "f".repeat(args.payload)
    );
    for _ in 0..args.flood_publishers {
        let mut ws = connect(addr, "/ws", true).await?;
        let (stop, op) = (stop.clone(), op.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if send(&mut ws, op.clone()).await.is_err() {
                    break;
                }
                n += 1;
                if n.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    // Let the flood build up before the measured rooms start.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = frames.load(Ordering::Relaxed);
    Ok(Some(Flood {
        stop,
        frames,
        tasks,
        started,
    }))
}

/// Prints the human report (and the JSON line with --json; the SVG plot with --svg).
pub fn print_report(args: &Args, r: &Report) {
    let h = &r.hist;
    let lost = r.expected.saturating_sub(r.received);
    let measured = h.len();
    if let Some(path) = &args.svg {
        let title = format!(
            "{}: {} subscribers, {} msg/s, {} B; publish -> receive",
            args.label, args.subscribers, args.rate, args.payload
        );
        match std::fs::write(path, crate::report::svg_percentiles(h, &title)) {
            Ok(()) => eprintln!("percentile plot: {}", path.display()),
            Err(e) => eprintln!("could not write {}: {e}", path.display()),
        }
    }
    println!(
        "fanout [{}, {:?} mode]: {} subscribers, {} rooms, {} publishers, offered {} msg/s, {} B padding, {} s measured after {} s warm-up",
        args.label, args.mode, args.subscribers, args.rooms, args.publishers, args.rate, args.payload, args.duration_secs, args.warmup_secs
    );
    println!(
        "published {}  delivered {} of {} ({:.0} deliveries/s in the measured window)  lost {}  duplicated/reordered {}",
        r.published,
        r.received,
        r.expected,
        measured as f64 / r.measured_secs,
        lost,
        r.duplicated,
    );
    println!(
        "latency, scheduled send -> receive: {}",
        crate::report::percentiles_ms(h)
    );
    if !r.from_send.is_empty() {
        println!(
            "latency, actual send -> receive:    {}",
            crate::report::percentiles_ms(&r.from_send)
        );
    }
    println!(
        "publisher lateness (actual - scheduled send): {}",
        crate::report::percentiles_ms(&r.lateness)
    );
    if let Some(f) = r.flood_deliveries_per_sec {
        println!(
            "meanwhile the flood room (flood.room, {} subscribers, {} publishers writing as fast as they can) delivered {f:.0} frames/s",
            args.flood_subscribers, args.flood_publishers
        );
    }
    if r.load_fell_behind {
        println!("WARNING: a publisher fell over 1 s behind its schedule: the load generator could not offer this rate");
    }
    if let Some(cpu) = r.cpu_percent {
        println!(
            "server: cpu {:.0}% of one core, rss {:.1} MiB; load client: cpu {:.0}% of one core ({} threads)",
            cpu,
            r.rss_bytes.unwrap_or(0) as f64 / (1024.0 * 1024.0),
            r.client_cpu_percent.unwrap_or(0.0),
            args.client_threads
        );
    }
    if args.json {
        let j = serde_json::json!({
            "scenario": "fanout", "tag": args.tag, "label": args.label, "mode": format!("{:?}", args.mode).to_lowercase(),
            "subscribers": args.subscribers, "rooms": args.rooms, "publishers": args.publishers,
            "rate": args.rate, "payload": args.payload, "duration_secs": args.duration_secs,
            "published": r.published, "expected": r.expected, "received": r.received, "lost": lost,
            "duplicated": r.duplicated, "deliveries_per_sec": measured as f64 / r.measured_secs,
            "p50_us": h.value_at_quantile(0.5), "p90_us": h.value_at_quantile(0.9),
            "p99_us": h.value_at_quantile(0.99), "p999_us": h.value_at_quantile(0.999), "max_us": h.max(),
            "send_p50_us": r.from_send.value_at_quantile(0.5), "send_p99_us": r.from_send.value_at_quantile(0.99),
            "send_p999_us": r.from_send.value_at_quantile(0.999),
            "late_p50_us": r.lateness.value_at_quantile(0.5), "late_p99_us": r.lateness.value_at_quantile(0.99),
            "late_p999_us": r.lateness.value_at_quantile(0.999), "late_max_us": r.lateness.max(),
            "server_cpu_percent": r.cpu_percent, "server_rss_bytes": r.rss_bytes,
            "client_cpu_percent": r.client_cpu_percent, "client_threads": args.client_threads,
            "load_fell_behind": r.load_fell_behind,
            "flood_subscribers": args.flood_subscribers,
            "flood_deliveries_per_sec": r.flood_deliveries_per_sec,
        });
        println!("{j}");
    }
}

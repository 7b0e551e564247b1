//! Test helpers: start the real `ringcast` binary on loopback, and talk to it with
//! fastwebsockets (an implementation no one here wrote).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use fastwebsockets::{FragmentCollector, Frame, OpCode, Payload, Role, WebSocket};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The I/O driver the tests run the server with (`RINGCAST_IO_DRIVER`, default `auto`).
pub fn driver() -> String {
    std::env::var("RINGCAST_IO_DRIVER").unwrap_or_else(|_| "auto".into())
}

/// A running server process, killed on drop.
pub struct Server {
    child: Child,
    /// Public listener.
    pub public: SocketAddr,
    /// TLS listener, when configured.
    pub tls: Option<SocketAddr>,
    /// Admin listener.
    pub admin: SocketAddr,
    /// The driver it reported.
    pub driver: String,
    _dir: PathBuf,
}

impl Server {
    /// Starts `ringcast` with `shards` shards and extra TOML appended to the test config, with
    /// anonymous clients allowed to subscribe and publish everywhere (the tests of the core
    /// protocol; `RINGCAST_ROOMS__ANONYMOUS=publish` overrides the file).
    pub fn start(shards: usize, extra_toml: &str) -> Server {
        Server::launch(
            shards,
            extra_toml,
            &[("RINGCAST_ROOMS__ANONYMOUS", "publish")],
        )
    }

    /// Starts `ringcast` with exactly the given configuration (secure defaults: no anonymous
    /// access unless the TOML grants it).
    pub fn start_strict(shards: usize, extra_toml: &str) -> Server {
        Server::launch(shards, extra_toml, &[])
    }

    /// Starts `ringcast` with the test config plus `extra_toml`, and these environment variables
    /// (which override the file: `RINGCAST_LISTEN` picks a fixed port).
    pub fn launch(shards: usize, extra_toml: &str, env: &[(&str, &str)]) -> Server {
        Server::launch_with(shards, extra_toml, env, Stdio::inherit())
    }

    /// [`Server::launch`] with the server's log (stderr) written to `log`.
    pub fn launch_logging(
        shards: usize,
        extra_toml: &str,
        env: &[(&str, &str)],
        log: &std::path::Path,
    ) -> Server {
        let file = std::fs::File::create(log).expect("log file");
        Server::launch_with(shards, extra_toml, env, Stdio::from(file))
    }

    fn launch_with(shards: usize, extra_toml: &str, env: &[(&str, &str)], stderr: Stdio) -> Server {
        let dir = std::env::temp_dir().join(format!(
            "ringcast-test-{}-{}",
            std::process::id(),
            fastrand_id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let config = dir.join("ringcast.toml");
        let mut f = std::fs::File::create(&config).expect("config file");
        writeln!(
            f,
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshards = {shards}\npin_cores = false\nlog_level = \"warn\"\nnode_name = \"test\"\n{extra_toml}"
        )
        .expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringcast"))
            .arg("--config")
            .arg(&config)
            .arg("--io-driver")
            .arg(driver())
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start ringcast");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let mut reader = BufReader::new(stdout);
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            // Keep draining so the child never blocks on a full pipe.
            let mut sink = String::new();
            while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                sink.clear();
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("ringcast printed its listening line");
        let field = |name: &str| -> String {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {line:?}"))
                .to_string()
        };
        Server {
            public: field("public=")
                .parse()
                .unwrap_or(([127, 0, 0, 1], 1).into()),
            tls: field("tls=").parse().ok(),
            admin: field("admin=").parse().expect("admin addr"),
            driver: field("driver="),
            child,
            _dir: dir,
        }
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        // SAFETY: kill(2) with our own child's pid and a valid signal number has no memory
        // effects; the worst case is ESRCH if it already exited.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Server {
    /// The process's open file descriptors.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id())).map_or(0, |d| d.count())
    }

    /// Sends a signal.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with our own child's pid and a valid signal number has no memory
        // effects.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fastrand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A blocking HTTP/1.1 request to the admin listener; returns (status, body).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).expect("connect admin");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).expect("send");
    let mut resp = Vec::new();
    let mut buf = [0u8; 4096];
    // One response per connection: read until the head and Content-Length bytes are in.
    loop {
        let n = s.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        resp.extend_from_slice(&buf[..n]);
        if let Some(end) = find(&resp, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&resp[..end]).to_string();
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if resp.len() >= end + 4 + len {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&resp).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads a raw HTTP response head (byte by byte, so nothing after it is consumed).
pub async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut b).await.expect("read head");
        if n == 0 {
            break;
        }
        head.push(b[0]);
    }
    String::from_utf8_lossy(&head).to_string()
}

/// Sends an upgrade request to `path` with extra header lines on a connected stream; returns the
/// response head.
async fn upgrade_on(stream: &mut TcpStream, addr: SocketAddr, path: &str, extra: &str) -> String {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    stream
        .write_all(req.as_bytes())
        .await
        .expect("send upgrade");
    read_head(stream).await
}

/// Sends a raw upgrade request to `path` with extra header lines; returns the stream and head.
pub async fn raw_upgrade(addr: SocketAddr, path: &str, extra: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let head = upgrade_on(&mut stream, addr, path, extra).await;
    (stream, head)
}

/// Like [`raw_upgrade`], from a chosen loopback source address (so per-IP limits of one test
/// case do not touch another's).
pub async fn raw_upgrade_from(
    addr: SocketAddr,
    from: std::net::Ipv4Addr,
    path: &str,
    extra: &str,
) -> (TcpStream, String) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((from, 0)))
        .expect("bind source address");
    let mut stream = socket.connect(addr).await.expect("connect");
    let head = upgrade_on(&mut stream, addr, path, extra).await;
    (stream, head)
}

/// Connects to `/ws` without panicking on any failure (a node going away mid-handshake, a load
/// balancer answering 502/503): the client after its `hello`, or `None`.
pub async fn connect_lenient(addr: SocketAddr) -> Option<Client> {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let req = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ringcast.v1\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await.ok()?;
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut b).await.ok()? == 0 {
                return None;
            }
            head.push(b[0]);
        }
        if !head.starts_with(b"HTTP/1.1 101") {
            return None;
        }
        let mut ws = WebSocket::after_handshake(stream, Role::Client);
        ws.set_auto_close(false);
        ws.set_auto_pong(true);
        let mut client = Client {
            ws: FragmentCollector::new(ws),
            hello: Value::Null,
        };
        let hello = client.try_next(Duration::from_secs(5)).await.ok()??;
        (hello["ev"] == "hello").then(|| {
            client.hello = hello;
            client
        })
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .ok()
        .flatten()
}

/// The app client on an upgraded stream, after its `hello`.
async fn client_on(stream: TcpStream) -> Client {
    let mut ws = WebSocket::after_handshake(stream, Role::Client);
    ws.set_auto_close(false);
    ws.set_auto_pong(true);
    let mut client = Client {
        ws: FragmentCollector::new(ws),
        hello: Value::Null,
    };
    let hello = client.recv().await;
    assert_eq!(hello["ev"], "hello", "{hello}");
    client.hello = hello;
    client
}

/// Connects to `path` from `from` with extra header lines; the app client after `hello`, or the
/// refusal's head and body.
pub async fn try_connect(
    addr: SocketAddr,
    from: std::net::Ipv4Addr,
    path: &str,
    extra: &str,
) -> Result<Client, String> {
    let (mut stream, head) = raw_upgrade_from(addr, from, path, extra).await;
    if !head.starts_with("HTTP/1.1 101") {
        let mut body = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut body)).await;
        return Err(format!("{head}{}", String::from_utf8_lossy(&body)));
    }
    Ok(client_on(stream).await)
}

/// Connects a client whose socket receive buffer is tiny (`rcvbuf` bytes), so that when it does
/// not read, the server's queue for it fills quickly: a deliberately slow consumer.
pub async fn connect_slow(addr: SocketAddr, rcvbuf: u32, extra: &str) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(rcvbuf).expect("SO_RCVBUF");
    let mut stream = socket.connect(addr).await.expect("connect");
    let head = upgrade_on(&mut stream, addr, "/ws", extra).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    client_on(stream).await
}

/// The CPU time (user + system) process `pid` has used, from `/proc/<pid>/stat` (0 if unread).
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses: utime is the
    // 14th field of the line, stime the 15th, in clock ticks (100 a second on Linux).
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// The resident memory of a process, in bytes (0 if it cannot be read).
pub fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

/// Reads `/metrics` and sums the samples of one metric (all label sets).
pub fn metric(admin: SocketAddr, name: &str) -> f64 {
    let (_, body) = http(admin, "GET", "/metrics", &[], "");
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A WebSocket client of the app protocol.
pub struct Client {
    ws: FragmentCollector<TcpStream>,
    /// The `hello` event.
    pub hello: Value,
}

/// Connects to `/ws` and reads `hello`.
pub async fn connect(addr: SocketAddr) -> Client {
    let (stream, head) = raw_upgrade(addr, "/ws", "Sec-WebSocket-Protocol: ringcast.v1\r\n").await;
    assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
    client_on(stream).await
}

/// What a read returned.
#[derive(Debug)]
pub enum Received {
    /// A JSON event.
    Event(Value),
    /// A close frame: code and reason.
    Close(u16, String),
}

impl Client {
    /// Sends one op.
    pub async fn send(&mut self, op: Value) {
        let text = op.to_string();
        self.ws
            .write_frame(Frame::text(Payload::Owned(text.into_bytes())))
            .await
            .expect("send op");
    }

    /// Sends a raw frame.
    pub async fn send_frame(&mut self, frame: Frame<'_>) {
        self.ws.write_frame(frame).await.expect("send frame");
    }

    /// Publishes binary data (a binary message, docs/protocol.md §9.9).
    pub async fn publish_binary(&mut self, id: Option<u64>, room: &str, data: &[u8]) {
        let wire = proto_codec::protocol::encode_binary_publish(id, room, data).expect("room");
        self.send_frame(Frame::binary(Payload::Owned(wire))).await;
    }

    /// The next event or close (pings are answered and skipped), within 10 s.
    pub async fn next(&mut self) -> Received {
        let read = async {
            loop {
                let frame = self.ws.read_frame().await.expect("read frame");
                match frame.opcode {
                    OpCode::Text => {
                        let v: Value =
                            serde_json::from_slice(&frame.payload).expect("event is JSON");
                        return Received::Event(v);
                    }
                    // A binary room message, in its JSON form (`bin` = base64 payload).
                    OpCode::Binary => {
                        let json = proto_codec::protocol::binary::binary_msg_json(&frame.payload)
                            .expect("a binary message is a binary msg");
                        let mut v: Value = serde_json::from_slice(&json).expect("JSON form");
                        v["binary_frame"] = Value::Bool(true);
                        return Received::Event(v);
                    }
                    OpCode::Close => {
                        let p = frame.payload.to_vec();
                        let code = if p.len() >= 2 {
                            u16::from_be_bytes([p[0], p[1]])
                        } else {
                            1005
                        };
                        let reason = String::from_utf8_lossy(p.get(2..).unwrap_or(&[])).to_string();
                        return Received::Close(code, reason);
                    }
                    _ => continue,
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("an event within 10 s")
    }

    /// The next event (panics on close).
    pub async fn recv(&mut self) -> Value {
        match self.next().await {
            Received::Event(v) => v,
            Received::Close(c, r) => panic!("closed {c} {r}"),
        }
    }

    /// The next close frame, skipping events.
    pub async fn recv_close(&mut self) -> (u16, String) {
        loop {
            if let Received::Close(c, r) = self.next().await {
                return (c, r);
            }
        }
    }

    /// Every event that arrives until `wait` passes with nothing new (or the connection ends).
    pub async fn drain(&mut self, wait: Duration) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            match tokio::time::timeout(wait, self.ws.read_frame()).await {
                Ok(Ok(frame)) if frame.opcode == OpCode::Text => {
                    if let Ok(v) = serde_json::from_slice(&frame.payload) {
                        out.push(v);
                    }
                }
                Ok(Ok(frame)) if frame.opcode == OpCode::Close => return out,
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => return out,
            }
        }
    }

    /// The next event within `wait` without panicking: `Ok(Some(event))`, `Ok(None)` when
    /// nothing came, `Err(())` when the connection ended (a close, a reset, a kill -9).
    pub async fn try_next(&mut self, wait: Duration) -> Result<Option<Value>, ()> {
        loop {
            match tokio::time::timeout(wait, self.ws.read_frame()).await {
                Err(_) => return Ok(None),
                Ok(Err(_)) => return Err(()),
                Ok(Ok(frame)) => match frame.opcode {
                    OpCode::Text => {
                        return serde_json::from_slice(&frame.payload)
                            .map(Some)
                            .map_err(|_| ());
                    }
                    OpCode::Close => return Err(()),
                    _ => continue,
                },
            }
        }
    }

    /// Like [`Client::try_next`], but an ended connection tells its close code (`None`: no
    /// close frame, the connection just ended).
    #[allow(dead_code)]
    pub async fn try_next_or_close(
        &mut self,
        wait: Duration,
    ) -> Result<Option<Value>, Option<u16>> {
        loop {
            match tokio::time::timeout(wait, self.ws.read_frame()).await {
                Err(_) => return Ok(None),
                Ok(Err(_)) => return Err(None),
                Ok(Ok(frame)) => match frame.opcode {
                    OpCode::Text => {
                        return serde_json::from_slice(&frame.payload)
                            .map(Some)
                            .map_err(|_| None);
                    }
                    OpCode::Close => {
                        let p = &frame.payload;
                        return Err((p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]])));
                    }
                    _ => continue,
                },
            }
        }
    }

    /// Whether nothing arrives within `wait`.
    pub async fn is_quiet(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.ws.read_frame())
            .await
            .is_err()
    }

    /// Subscribes and returns the `subscribed` event.
    pub async fn subscribe(&mut self, id: u64, room: &str, since: Option<(&str, u64)>) -> Value {
        let mut op = serde_json::json!({"op": "subscribe", "id": id, "room": room});
        if let Some((epoch, offset)) = since {
            op["since"] = serde_json::json!({"epoch": epoch, "offset": offset});
        }
        self.send(op).await;
        let ev = self.recv().await;
        assert_eq!(ev["ev"], "subscribed", "{ev}");
        ev
    }

    /// Publishes with an id and returns the `published` ack.
    pub async fn publish(&mut self, id: u64, room: &str, data: Value) -> Value {
        self.send(serde_json::json!({"op": "publish", "id": id, "room": room, "data": data}))
            .await;
        loop {
            let ev = self.recv().await;
            if ev["ev"] == "published" && ev["id"] == id {
                return ev;
            }
            assert_ne!(ev["ev"], "error", "{ev}");
        }
    }
}

/// A `redis-server` process on loopback with its own directory (AOF with `appendfsync always`,
/// so an acknowledged write survives `kill -9`), killed on drop.
pub struct Redis {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Redis {
    /// Starts a standalone Redis.
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    /// Starts Redis with extra `--key value` arguments.
    pub fn start_with(extra: &[&str]) -> Redis {
        Redis::start_on(free_port(), extra)
    }

    fn start_on(port: u16, extra: &[&str]) -> Redis {
        let dir = std::env::temp_dir().join(format!(
            "ringcast-redis-{}-{}",
            std::process::id(),
            fastrand_id()
        ));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut r = Redis {
            child: None,
            port,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server is installed (scripts/test-all.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.cli(&["PING"]).trim() == "PONG" {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not answer on port {}", self.port);
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs `redis-cli` against it and returns stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli is installed");
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and directory (its AOF reloads).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Sends a signal (SIGSTOP/SIGCONT to hang it).
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child with a valid signal; no memory effects.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }
}

/// A Redis Cluster of three primaries on loopback (no replicas).
pub struct RedisCluster {
    /// The primaries.
    pub nodes: Vec<Redis>,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers and joins them (`redis-cli --cluster create`).
    pub fn start() -> RedisCluster {
        let mut nodes = Vec::new();
        while nodes.len() < 3 {
            // The cluster bus listens on port + 10000: both must be free.
            let port = 20_000 + (fastrand_port() % 9_000) as u16;
            let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
            if free(port) && free(port + 10_000) {
                nodes.push(Redis::start_on(
                    port,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "2000",
                    ],
                ));
            }
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if nodes
                .iter()
                .all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
            {
                return RedisCluster { nodes };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the cluster did not reach cluster_state:ok");
    }

    /// Seed URLs, comma-separated.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(Redis::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn fastrand_port() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    nanos ^ (std::process::id() << 8) ^ (fastrand_id() as u32).wrapping_mul(2_654_435_761)
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Server {
    /// Starts a node on a Redis broker (anonymous publish allowed, as [`Server::start`]), with
    /// its own node name.
    pub fn start_on_redis(
        shards: usize,
        name: &str,
        broker_toml: &str,
        extra_toml: &str,
    ) -> Server {
        Server::launch(
            shards,
            &format!("[broker]\n{broker_toml}\n{extra_toml}"),
            &[
                ("RINGCAST_ROOMS__ANONYMOUS", "publish"),
                ("RINGCAST_NODE_NAME", name),
            ],
        )
    }

    /// Waits until `/readyz` answers `want` (200 or 503), up to `timeout`.
    pub fn wait_ready(&self, want: u16, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if http(self.admin, "GET", "/readyz", &[], "").0 == want {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

/// A TCP proxy in front of Redis that can silently stop delivering to the subscription
/// connections it carries (the connection stays open, nothing arrives): the failure the bridge's
/// canary exists for.
pub struct FreezingProxy {
    /// Its port on 127.0.0.1.
    pub port: u16,
    frozen_below: std::sync::Arc<std::sync::atomic::AtomicU64>,
    accepted: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl FreezingProxy {
    /// Proxies 127.0.0.1:`port` to the upstream port.
    pub fn start(upstream: u16) -> FreezingProxy {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::Arc;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy listener");
        let port = listener.local_addr().expect("proxy addr").port();
        let frozen_below = Arc::new(AtomicU64::new(0));
        let accepted = Arc::new(AtomicU64::new(0));
        let (fb, acc) = (frozen_below.clone(), accepted.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let index = acc.fetch_add(1, Ordering::SeqCst);
                let subscriber = Arc::new(AtomicBool::new(false));
                let (mut c_read, mut s_write) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                let sub = subscriber.clone();
                std::thread::spawn(move || {
                    use std::io::Read;
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = c_read.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        if buf[..n]
                            .windows(9)
                            .any(|w| w.eq_ignore_ascii_case(b"SUBSCRIBE"))
                        {
                            sub.store(true, Ordering::SeqCst);
                        }
                        if s_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s_write.shutdown(std::net::Shutdown::Both);
                });
                let (mut s_read, mut c_write) = (server, client);
                let fb = fb.clone();
                std::thread::spawn(move || {
                    use std::io::Read;
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = s_read.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        let frozen =
                            subscriber.load(Ordering::SeqCst) && index < fb.load(Ordering::SeqCst);
                        if !frozen && c_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = c_write.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        FreezingProxy {
            port,
            frozen_below,
            accepted,
        }
    }

    /// From now on, subscription connections opened so far get nothing more from Redis.
    pub fn freeze_subscriptions(&self) {
        use std::sync::atomic::Ordering;
        self.frozen_below
            .store(self.accepted.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

/// A primary, a replica and one Sentinel (quorum 1) on loopback.
pub struct RedisSentinel {
    /// The first primary.
    pub primary: Redis,
    /// Its replica.
    pub replica: Redis,
    /// The sentinel.
    pub sentinel: Redis,
}

impl RedisSentinel {
    /// Starts the three and waits until the sentinel knows the replica.
    pub fn start() -> RedisSentinel {
        let primary = Redis::start();
        let replica = Redis::start_with(&["--replicaof", "127.0.0.1", &primary.port.to_string()]);
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "ringcast-sentinel-{}-{}",
            std::process::id(),
            fastrand_id()
        ));
        std::fs::create_dir_all(&dir).expect("sentinel dir");
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {} 1\nsentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 5000\n",
                primary.port
            ),
        )
        .expect("sentinel.conf");
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server --sentinel");
        let sentinel = Redis {
            child: Some(child),
            port,
            dir,
            extra: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let replicas = sentinel.cli(&["SENTINEL", "REPLICAS", "mymaster"]);
            let synced = replica
                .cli(&["INFO", "replication"])
                .contains("master_link_status:up");
            if synced && replicas.contains(&replica.port.to_string()) {
                return RedisSentinel {
                    primary,
                    replica,
                    sentinel,
                };
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("the sentinel did not discover the replica");
    }

    /// The port of the primary the sentinel names now.
    pub fn primary_port(&self) -> String {
        self.sentinel
            .cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"])
            .lines()
            .nth(1)
            .unwrap_or("")
            .to_string()
    }
}

/// Runs a Node client script of `gateway/tests/clients` (bounded by `timeout`); returns its
/// last stdout line as JSON and whether it exited 0. `node` and `npm ci` there are required:
/// a missing one fails the test.
pub fn node_script(script: &str, args: &[&str], timeout_s: u32) -> (Value, bool) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients");
    let out = Command::new("timeout")
        .arg(timeout_s.to_string())
        .arg("node")
        .arg(script)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("node (and npm ci in gateway/tests/clients) is required");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("").to_string();
    let value = serde_json::from_str(&last).unwrap_or_else(|_| {
        let cut = |s: &str| s.chars().take(3000).collect::<String>();
        panic!(
            "{script}: no JSON result line\nstdout: {}\nstderr: {}",
            cut(&stdout),
            cut(&String::from_utf8_lossy(&out.stderr))
        )
    });
    (value, out.status.success())
}

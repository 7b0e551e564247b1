//! The `ringcast` process under test: launching it, signals and waits, and `/proc` readings.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::http::http;

/// The I/O driver the tests run the server with (`RINGCAST_IO_DRIVER`, default `auto`).
pub fn driver() -> String {
    std::env::var("RINGCAST_IO_DRIVER").unwrap_or_else(|_| "auto".into())
}

/// A running server process, killed on drop (its temporary config directory is removed too).
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
    /// Its temporary directory (the generated config), removed on drop.
    dir: PathBuf,
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

    /// [`Server::launch`] with the server's log (stderr) on a pipe, read from the returned end.
    pub fn launch_piped_stderr(
        shards: usize,
        extra_toml: &str,
        env: &[(&str, &str)],
    ) -> (Server, std::process::ChildStderr) {
        let mut server = Server::launch_with(shards, extra_toml, env, Stdio::piped());
        let stderr = server.child.stderr.take().expect("piped stderr");
        (server, stderr)
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
            dir,
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

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(super) fn fastrand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
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

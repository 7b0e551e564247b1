//! TCP proxies that inject network faults between the gateway and Redis.

use std::io::Write;

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

//! Writing a connection's queue to its socket, by its own task or by the shard's write pass.
//!
//! A room message reaching a thousand idle subscribers used to wake a thousand tasks, each
//! polled once to make one `writev`. Now a delivery that starts an empty queue of a plain TCP
//! connection lists the connection in the shard's [`super::write_list::WriteList`] instead,
//! and one task (the shard's write loop) writes every listed queue in one pass, straight to the
//! socket (`sendmsg` with `MSG_DONTWAIT`). Only what does not go out at once (a full socket
//! buffer, a queue past the pass's budget, an error) wakes the connection's own task, which
//! waits for writability and goes on as before. Coalescing is kept: messages delivered before the pass
//! runs (a publisher's whole read, a mailbox batch) go out in one `writev` per subscriber.
//!
//! TLS connections (their bytes go through the TLS session) and connections being closed are
//! always written by their task.

use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::rc::Rc;
use std::task::Poll;
use std::time::Instant;

use super::outbox::{self, MAX_IOVECS};
use super::shared::ConnShared;
use crate::shard::ShardCtx;

/// Output bytes one connection may write per turn (its task's, or the write pass) before
/// yielding: a subscriber with a deep queue cannot hold the shard while others wait (fair
/// egress).
pub const WRITE_BUDGET: usize = 64 * 1024;

/// How a write of a queue ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// The queue is empty.
    Empty,
    /// The turn's budget is spent with frames left.
    BudgetSpent,
}

/// What writes did, added to the shard's metrics once per flush or write pass (not per
/// `writev`: a pass makes one per subscriber).
#[derive(Debug, Default)]
pub struct WriteStats {
    bytes: u64,
    frames: u64,
    /// The latest batch's oldest room message: its namespace and publish→write latency.
    sample: Option<(usize, f64)>,
}

impl WriteStats {
    /// Adds the counts to the shard's metrics and records the latency sample; resets.
    pub fn publish(&mut self, ctx: &ShardCtx) {
        if self.bytes > 0 {
            ctx.metrics.bytes_out.increment(self.bytes);
            ctx.metrics.frames_out.increment(self.frames);
        }
        if let Some((ns, secs)) = self.sample {
            if let Some(h) = ctx.metrics.publish_to_write.get(ns) {
                h.record(secs);
            }
        }
        *self = WriteStats::default();
    }
}

/// Writes queued frames with `write` until the queue is empty, the budget is spent, or
/// `write` is not ready (`Pending`: the socket is full). Applies `max_age` before each write,
/// and records every written room frame in its namespace's SLO window.
pub fn write_queue(
    ctx: &ShardCtx,
    conn: &ConnShared,
    budget: &mut usize,
    stats: &mut WriteStats,
    mut write: impl FnMut(&[IoSlice<'_>]) -> Poll<io::Result<usize>>,
) -> Poll<io::Result<Flushed>> {
    loop {
        let mut outbox = conn.outbox().borrow_mut();
        // `max_age`: stale room messages leave (with a gap notice) before their turn.
        outbox.drop_stale(ctx.now.get());
        let actions = outbox.take_actions();
        if actions != outbox::PolicyActions::default() {
            crate::metrics::slow_consumer_actions(actions);
        }
        if outbox.is_empty() {
            return Poll::Ready(Ok(Flushed::Empty));
        }
        if *budget == 0 {
            return Poll::Ready(Ok(Flushed::BudgetSpent));
        }
        // A calm queue holds a frame or two: do not fill (and zero) 64 slices for them.
        let (result, oldest) = if outbox.len() <= FEW {
            let mut slices = [IoSlice::new(&[]); FEW];
            let (n, oldest) = outbox.slices(&mut slices);
            (write(&slices[..n]), oldest)
        } else {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let (n, oldest) = outbox.slices(&mut slices);
            (write(&slices[..n]), oldest)
        };
        let written = match result {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(w)) => w,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        let frames = match oldest {
            Some((at, ns)) => {
                // One clock read per write batch (not the coarse shard clock: this is a
                // latency). Every room frame written goes into its namespace's SLO window.
                let now = Instant::now();
                stats.sample = Some((ns, now.saturating_duration_since(at).as_secs_f64()));
                let mut slo = ctx.slo.borrow_mut();
                outbox.advance_with(written, |m| slo.record(m.namespace, m.published_at, now))
            }
            None => outbox.advance(written),
        };
        *budget = budget.saturating_sub(written);
        stats.bytes += written as u64;
        stats.frames += frames as u64;
    }
}

/// Queues at most this long are written from a small slice array.
const FEW: usize = 4;

/// The shard's write pass: writes the queues of `batch` (emptied), in the order they were
/// listed. A connection whose queue does not empty at once is handed to its task.
pub fn write_pass(ctx: &ShardCtx, batch: &mut Vec<Rc<ConnShared>>) {
    let mut stats = WriteStats::default();
    let started = Instant::now();
    let listed = batch.len();
    for conn in batch.drain(..) {
        let Some(fd) = conn.direct_fd() else {
            // Its task ended (or it was never written here): nothing to do.
            continue;
        };
        if conn.closing_since.get().is_some() || conn.close_requested() {
            // A close is the task's to sequence (close frame, then FIN).
            conn.wake();
            continue;
        }
        let mut budget = WRITE_BUDGET;
        let written = write_queue(ctx, &conn, &mut budget, &mut stats, |slices| {
            send_vectored(fd, slices)
        });
        match written {
            Poll::Ready(Ok(Flushed::Empty)) => {}
            // The socket is full, the budget is spent, or the write failed: the task waits
            // for writability, takes its turn, or meets the error and ends.
            _ => conn.wake(),
        }
    }
    stats.publish(ctx);
    ctx.metrics
        .write_pass_seconds
        .record(started.elapsed().as_secs_f64());
    ctx.metrics.write_pass_connections.record(listed as f64);
}

/// One non-blocking `sendmsg` of `slices` on `fd`; `Pending` when the socket buffer is full.
fn send_vectored(fd: RawFd, slices: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
    // SAFETY: an all-zero `msghdr` is valid (no name, no control data, no iovecs).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // `IoSlice` is ABI-compatible with `iovec` on Unix (std guarantees it); sendmsg only reads
    // through the pointer.
    msg.msg_iov = slices.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = slices.len() as _;
    // SAFETY: `msg` points at `slices`, which outlive the call. `fd` is the socket of a live
    // connection: its task clears `direct_fd` before it drops the stream, and the pass reads
    // `direct_fd` right before this call on the same thread. MSG_DONTWAIT keeps the call from
    // blocking whatever the fd's flags; MSG_NOSIGNAL turns a closed peer into EPIPE instead of
    // SIGPIPE. Exercised by the tests below and by every WebSocket integration test.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if n >= 0 {
        return Poll::Ready(Ok(n as usize));
    }
    let e = io::Error::last_os_error();
    match e.kind() {
        io::ErrorKind::WouldBlock => Poll::Pending,
        io::ErrorKind::Interrupted => send_vectored(fd, slices),
        _ => Poll::Ready(Err(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    use super::*;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        (a, b)
    }

    #[test]
    fn send_vectored_writes_every_slice_in_order() {
        let (a, mut b) = pair();
        let slices = [
            IoSlice::new(b"hello "),
            IoSlice::new(b""),
            IoSlice::new(b"world"),
        ];
        match send_vectored(a.as_raw_fd(), &slices) {
            Poll::Ready(Ok(n)) => assert_eq!(n, 11),
            other => panic!("{other:?}"),
        }
        let mut got = [0u8; 11];
        b.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello world");
    }

    #[test]
    fn send_vectored_is_pending_on_a_full_socket_and_never_blocks() {
        // A blocking socket whose peer never reads: the call must still return.
        let (a, _b) = pair();
        let chunk = vec![7u8; 64 * 1024];
        let mut total = 0usize;
        let mut pending = false;
        for _ in 0..10_000 {
            match send_vectored(a.as_raw_fd(), &[IoSlice::new(&chunk)]) {
                Poll::Ready(Ok(n)) => total += n,
                Poll::Ready(Err(e)) => panic!("unexpected error: {e}"),
                Poll::Pending => {
                    pending = true;
                    break;
                }
            }
        }
        assert!(
            pending,
            "a peer that never reads fills the socket ({total} bytes sent)"
        );
        assert!(total > 0);
    }

    #[test]
    fn send_vectored_reports_a_closed_peer_as_an_error_not_a_signal() {
        let (a, b) = pair();
        drop(b);
        let mut failed = false;
        for _ in 0..100 {
            match send_vectored(a.as_raw_fd(), &[IoSlice::new(b"x")]) {
                Poll::Ready(Err(_)) => {
                    failed = true;
                    break;
                }
                Poll::Ready(Ok(_)) => std::thread::sleep(std::time::Duration::from_millis(5)),
                Poll::Pending => panic!("a closed peer is not a full socket"),
            }
        }
        assert!(
            failed,
            "writes to a reset connection fail (EPIPE/ECONNRESET)"
        );
    }
}

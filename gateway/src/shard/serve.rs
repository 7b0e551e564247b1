//! The shard's thread: its runtime and its loops (accept, mailbox, deferred turns, writes,
//! sweep), and the drain of graceful shutdown. The top of the shard: it starts connections
//! (`connection::spawn`), which call into the families of `ShardCtx`.

use std::future::{poll_fn, Future};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::connection::shared::ConnShared;
use crate::connection::write::write_pass;
use crate::listener::Transport;
use crate::runtime::{self};

use super::{ShardCtx, ShardSetup, CLOSE_TIMEOUT, SWEEP_INTERVAL};

/// Runs a shard until graceful shutdown ends (or the listener fails).
pub fn run(setup: ShardSetup) -> std::io::Result<()> {
    if let Some(core) = setup.core {
        runtime::pin_current_thread(core);
    }
    let driver = setup.driver;
    let started = setup.started.clone();
    let result = runtime::block_on(driver, move || async move {
        let mut listeners = Vec::with_capacity(setup.listeners.len());
        for (l, transport) in setup.listeners {
            match monoio::net::TcpListener::from_std(l) {
                Ok(l) => listeners.push((l, transport)),
                Err(e) => {
                    let _ = setup
                        .started
                        .send(Err(format!("shard {}: listener: {e}", setup.id)));
                    return Err(e);
                }
            }
        }
        let ctx = Rc::new(ShardCtx::new(
            setup.id,
            setup.mailboxes,
            setup.config,
            setup.node,
            setup.global,
            setup.policy,
            setup.broker,
        ));
        monoio::spawn(mailbox_loop(ctx.clone()));
        monoio::spawn(sweep_loop(ctx.clone()));
        monoio::spawn(deferred_loop(ctx.clone()));
        monoio::spawn(write_loop(ctx.clone()));
        let _ = setup.started.send(Ok(ctx.id));
        let loops: Vec<_> = listeners
            .into_iter()
            .map(|(l, transport)| monoio::spawn(accept_loop(ctx.clone(), l, transport)))
            .collect();
        for l in loops {
            l.await;
        }
        // Drain: keep serving this shard's mailbox (rooms homed here, deliveries to its
        // connections) until every shard's connections are gone, or the deadline.
        let deadline = Instant::now()
            + Duration::from_millis(ctx.config.shutdown.drain_ms)
            + CLOSE_TIMEOUT
            + Duration::from_secs(1);
        while ctx.global.connections.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            monoio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::debug!(
            shard = ctx.id,
            left = ctx.conns.borrow().len(),
            "shard stopped"
        );
        Ok(())
    });
    match result {
        Ok(r) => r,
        Err(e) => {
            let _ = started.send(Err(format!("runtime: {e}")));
            Err(e)
        }
    }
}

async fn accept_loop(ctx: Rc<ShardCtx>, listener: monoio::net::TcpListener, transport: Transport) {
    let mut backoff_logged = false;
    loop {
        let accept = listener.accept();
        let mut accept = std::pin::pin!(accept);
        let next = poll_fn(|cx| {
            if ctx.shutting_down.get() {
                return Poll::Ready(None);
            }
            ctx.accept_wakers.borrow_mut()[transport as usize] = Some(cx.waker().clone());
            accept.as_mut().poll(cx).map(Some)
        })
        .await;
        match next {
            None => return,
            Some(Ok((stream, peer))) => {
                backoff_logged = false;
                let bytes = crate::connection::spawn(ctx.clone(), stream, peer, transport);
                if bytes > 0 {
                    ctx.metrics.connection_task_bytes.set(bytes as f64);
                }
            }
            Some(Err(e)) => {
                // Out of file descriptors (or similar): wait a little instead of spinning.
                if !backoff_logged {
                    tracing::warn!(shard = ctx.id, error = %e, "accept failed; backing off");
                    backoff_logged = true;
                }
                monoio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn mailbox_loop(ctx: Rc<ShardCtx>) {
    let mut batch = Vec::with_capacity(256);
    loop {
        ctx.mailboxes.recv_batch(ctx.id, &mut batch).await;
        ctx.now.set(Instant::now());
        for msg in batch.drain(..) {
            ctx.handle(msg);
        }
        ctx.poll_broker();
    }
}

/// Wakes the connections that used up their turn, once per park of the runtime: a timer of the
/// smallest resolution fires only when monoio parks, which it does only when its run queue is
/// empty, so every busy connection's next turn comes after timers, accepts and I/O were polled
/// (under io_uring, monoio re-arms the epoll instance of `poll-io` sockets only when it parks:
/// new input, such as a calm room's publish, is seen once per park). A busy connection thus
/// gets one turn per round of about a millisecond, and connections with little to do run in
/// between: this is what keeps a flood from taking the whole shard (docs/decisions.md, "Fair
/// egress").
async fn deferred_loop(ctx: Rc<ShardCtx>) {
    loop {
        poll_fn(|cx| {
            if ctx.deferred.borrow().is_empty() {
                *ctx.deferred_loop_waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
        monoio::time::sleep(Duration::from_millis(1)).await;
        let round: Vec<Rc<ConnShared>> = ctx.deferred.borrow_mut().drain(..).collect();
        for conn in round {
            conn.deferred.set(false);
            conn.wake();
        }
    }
}

/// Writes the queues deliveries started, one pass over every listed connection
/// (`connection::write`): one task woken per burst instead of one per subscriber.
async fn write_loop(ctx: Rc<ShardCtx>) {
    let mut batch = Vec::new();
    loop {
        poll_fn(|cx| ctx.writes.poll_listed(cx)).await;
        ctx.writes.take(&mut batch);
        write_pass(&ctx, &mut batch);
    }
}

async fn sweep_loop(ctx: Rc<ShardCtx>) {
    loop {
        monoio::time::sleep(SWEEP_INTERVAL).await;
        ctx.sweep();
    }
}

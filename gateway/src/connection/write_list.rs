//! The shard's write list: connections whose empty queue a delivery started, waiting for the
//! shard's write pass ([`super::write`]).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use super::shared::ConnShared;

/// Connections whose queue a delivery started, waiting for the shard's next write pass.
#[derive(Default)]
pub struct WriteList {
    conns: RefCell<Vec<Rc<ConnShared>>>,
    waker: Cell<Option<Waker>>,
}

impl WriteList {
    /// A delivery queued the first frame of `conn`'s empty queue: list it for the write pass
    /// when the pass can write it, or wake its task.
    pub fn started(&self, conn: &Rc<ConnShared>) {
        if conn.direct_fd().is_none() {
            conn.wake();
            return;
        }
        let mut conns = self.conns.borrow_mut();
        conns.push(conn.clone());
        if conns.len() == 1 {
            if let Some(w) = self.waker.take() {
                w.wake();
            }
        }
    }

    /// `Ready` once a connection is listed; otherwise remembers the write loop's waker.
    pub fn poll_listed(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.conns.borrow().is_empty() {
            self.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }

    /// Moves the listed connections into `batch` (an empty vector whose allocation is reused).
    pub fn take(&self, batch: &mut Vec<Rc<ConnShared>>) {
        std::mem::swap(&mut *self.conns.borrow_mut(), batch);
    }
}

impl std::fmt::Debug for WriteList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteList")
            .field("listed", &self.conns.borrow().len())
            .finish()
    }
}

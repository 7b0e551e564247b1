//! Containing a panic in code that handles one client's input, so that it refuses that input
//! instead of taking the node down (`docs/decisions.md`, "Panics reachable from input").
//!
//! Everywhere else a panic is a bug and ends the process, as `panic = "abort"` did: the hook
//! [`install_hook`] sets prints the panic and aborts unless the panicking thread is inside
//! [`contain`]. Inside, the panic unwinds to `contain`, which returns [`Contained`] with the
//! panic's message, counts it (`ringcast_contained_panics_total{what}`) and logs it. The caller
//! owns what the closure may have left half-changed and must discard it (a CRDT document is
//! rebuilt from its stored updates, `rooms::crdt`).

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};

thread_local! {
    /// How many `contain` calls the thread is inside.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// The last contained panic's message and place, recorded by the hook.
    static LAST: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// A panic caught by [`contain`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} failed: {message}")]
pub struct Contained {
    /// What was running (a metric label: a fixed string).
    pub what: &'static str,
    /// The panic's message and where it was raised.
    pub message: String,
}

/// Installs the process's panic hook: a panic outside [`contain`] is printed by the default
/// hook and aborts the process; one inside is recorded for `contain` to report.
pub fn install_hook() {
    let default = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        if DEPTH.with(Cell::get) > 0 {
            let place = info
                .location()
                .map_or_else(String::new, |l| format!(" at {}:{}", l.file(), l.line()));
            LAST.with(|last| {
                *last.borrow_mut() = Some(format!("{}{place}", message_of(info.payload())))
            });
            return;
        }
        default(info);
        std::process::abort();
    }));
}

/// Runs `f`, turning a panic inside it into [`Contained`]. `f` must not leave shared state
/// that outlives the call half-changed, or the caller must discard that state on `Err`.
pub fn contain<R>(what: &'static str, f: impl FnOnce() -> R) -> Result<R, Contained> {
    DEPTH.with(|d| d.set(d.get() + 1));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    DEPTH.with(|d| d.set(d.get() - 1));
    result.map_err(|payload| {
        let message = LAST
            .with(|last| last.borrow_mut().take())
            .unwrap_or_else(|| message_of(payload.as_ref()).to_string());
        crate::metrics::contained_panic(what);
        tracing::warn!(what, message, "input refused: a contained panic");
        Contained { what, message }
    })
}

fn message_of(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_is_an_error_with_its_message_and_the_depth_unwinds() {
        assert_eq!(contain("ok", || 7), Ok(7));
        let err = contain("probe", || -> u8 { panic!("bad input {}", 3) }).unwrap_err();
        assert_eq!(err.what, "probe");
        assert!(err.message.contains("bad input 3"), "{}", err.message);
        let nested = contain("outer", || contain("inner", || panic!("x")).is_err());
        assert_eq!(nested, Ok(true));
        assert_eq!(DEPTH.with(Cell::get), 0);
    }
}

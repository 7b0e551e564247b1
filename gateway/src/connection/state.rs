//! The connection state machine after the upgrade.
//!
//! ```text
//!            peer close ──► CloseReceived ─┐ (our close reply written, FIN sent)
//!  Open ──┤                                ├──► Lingering ──► (peer FIN, or timeout) done
//!         ├─ we close ──► Closing ─ peer close ─┘
//!         └─ protocol error ──► Failed ─────┘ (our close written, FIN sent)
//! ```
//! `Closing` and `Lingering` end after a timeout if the peer never answers.

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// Frames flow both ways.
    Open,
    /// We sent a close frame and wait for the peer's; its data frames are ignored.
    Closing,
    /// The peer's close arrived (and ours is queued or sent): flush, then send FIN.
    CloseReceived,
    /// The peer broke the protocol: our close is queued; flush, then send FIN. Input is no
    /// longer decoded.
    Failed,
    /// Our side is shut down; input is discarded until the peer's FIN.
    Lingering,
}

impl ConnState {
    /// Whether input is decoded into frames.
    pub fn decodes(self) -> bool {
        matches!(self, ConnState::Open | ConnState::Closing)
    }

    /// Whether the write side should be shut down once the queue is flushed.
    pub fn shuts_down_after_flush(self) -> bool {
        matches!(self, ConnState::CloseReceived | ConnState::Failed)
    }
}

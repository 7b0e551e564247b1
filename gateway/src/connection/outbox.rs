//! A connection's outbound queue: encoded frames waiting to be written, bounded in bytes.
//!
//! Frames are `Bytes` shared with every other subscriber of the same message; pushing one is a
//! reference-count increment. The writer takes many frames per `writev`.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::time::Instant;

use bytes::Bytes;

/// The most frames handed to one `writev`.
pub const MAX_IOVECS: usize = 64;

/// What happened to a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Queued; the queue was empty before (the writer may need a wake).
    QueuedFirst,
    /// Queued behind others.
    Queued,
    /// Not queued: the queue is past its high-water mark (slow consumer).
    Overflow,
}

/// The outbound queue.
#[derive(Debug)]
pub struct Outbox {
    frames: VecDeque<(Bytes, Option<Instant>)>,
    queued_bytes: usize,
    /// Bytes of the front frame already written.
    front_written: usize,
    high_water: usize,
}

impl Outbox {
    /// An empty queue that overflows past `high_water` bytes.
    pub fn new(high_water: usize) -> Outbox {
        Outbox {
            frames: VecDeque::new(),
            queued_bytes: 0,
            front_written: 0,
            high_water,
        }
    }

    /// Queues a frame, with the time its message was published (for latency metrics).
    pub fn push(&mut self, frame: Bytes, published_at: Option<Instant>) -> Push {
        if self.queued_bytes + frame.len() > self.high_water && !self.frames.is_empty() {
            return Push::Overflow;
        }
        self.enqueue(frame, published_at)
    }

    /// Queues a control frame (close, pong) regardless of the high-water mark.
    pub fn push_control(&mut self, frame: Bytes) -> Push {
        self.enqueue(frame, None)
    }

    fn enqueue(&mut self, frame: Bytes, published_at: Option<Instant>) -> Push {
        let first = self.frames.is_empty();
        self.queued_bytes += frame.len();
        self.frames.push_back((frame, published_at));
        if first {
            Push::QueuedFirst
        } else {
            Push::Queued
        }
    }

    /// Drops everything not yet started (a frame partly written is kept, so the stream stays
    /// well-formed).
    pub fn discard_unstarted(&mut self) {
        let keep = usize::from(self.front_written > 0);
        while self.frames.len() > keep {
            if let Some((f, _)) = self.frames.pop_back() {
                self.queued_bytes -= f.len();
            }
        }
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Bytes queued (including the unwritten part of a partly written frame).
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes - self.front_written
    }

    /// Fills `slices` with the next frames to write; returns how many, and the oldest publish
    /// time among them.
    pub fn slices<'a>(
        &'a self,
        slices: &mut [IoSlice<'a>; MAX_IOVECS],
    ) -> (usize, Option<Instant>) {
        let mut n = 0;
        let mut oldest = None;
        for (i, (frame, at)) in self.frames.iter().take(MAX_IOVECS).enumerate() {
            let bytes = if i == 0 {
                &frame[self.front_written..]
            } else {
                &frame[..]
            };
            slices[n] = IoSlice::new(bytes);
            n += 1;
            if oldest.is_none() {
                oldest = *at;
            }
        }
        (n, oldest)
    }

    /// Marks `written` bytes as sent; returns how many whole frames left the queue.
    pub fn advance(&mut self, mut written: usize) -> usize {
        let mut frames_done = 0;
        while written > 0 {
            let Some((front, _)) = self.frames.front() else {
                break;
            };
            let left = front.len() - self.front_written;
            if written >= left {
                written -= left;
                self.queued_bytes -= front.len();
                self.front_written = 0;
                self.frames.pop_front();
                frames_done += 1;
            } else {
                self.front_written += written;
                written = 0;
            }
        }
        frames_done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_partial_writes() {
        let mut o = Outbox::new(10);
        assert_eq!(
            o.push(Bytes::from_static(b"abcdef"), None),
            Push::QueuedFirst
        );
        assert_eq!(o.push(Bytes::from_static(b"ghij"), None), Push::Queued);
        assert_eq!(o.push(Bytes::from_static(b"k"), None), Push::Overflow);
        assert_eq!(o.push_control(Bytes::from_static(b"k")), Push::Queued);
        {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            assert_eq!(o.slices(&mut slices).0, 3);
        }
        assert_eq!(o.advance(8), 1);
        assert_eq!(o.queued_bytes(), 3);
        {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            assert_eq!(o.slices(&mut slices).0, 2);
            assert_eq!(&*slices[0], b"ij");
        }
        o.discard_unstarted();
        assert_eq!(o.queued_bytes(), 2, "the partly written frame stays");
        assert_eq!(o.advance(2), 1);
        assert!(o.is_empty());
    }

    #[test]
    fn one_huge_frame_is_accepted_into_an_empty_queue() {
        let mut o = Outbox::new(4);
        assert_eq!(o.push(Bytes::from(vec![0u8; 100]), None), Push::QueuedFirst);
    }
}

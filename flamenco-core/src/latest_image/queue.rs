//! The paths waiting for conversion: a FIFO bounded both in count ([`QUEUE_CAPACITY`]) and
//! in bytes ([`QUEUE_MAX_BYTES`], the sum of the paths' lengths), that makes room for a new
//! path by dropping the oldest ones, so whoever submits never waits. It also knows whether a
//! path is being converted, so "idle" (nothing waiting, nothing in progress) can be asked.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

/// How many paths may wait for conversion; beyond that the oldest waiting path is dropped.
pub const QUEUE_CAPACITY: usize = 50;

/// How many bytes of paths may wait for conversion in total; beyond that the oldest waiting
/// paths are dropped. A single longer path is refused.
pub const QUEUE_MAX_BYTES: usize = 64 * 1024;

/// What [`PathQueue::push`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued; this many older paths were dropped to make room.
    Queued { dropped: usize },
    /// The same path was already waiting.
    Duplicate,
    /// The path alone is longer than [`QUEUE_MAX_BYTES`].
    TooLong,
}

#[derive(Debug, Default)]
pub(crate) struct PathQueue {
    paths: VecDeque<PathBuf>,
    bytes: usize,
    in_flight: bool,
}

fn size_of(path: &Path) -> usize {
    path.as_os_str().len()
}

impl PathQueue {
    pub(crate) fn push(&mut self, path: PathBuf) -> Pushed {
        let size = size_of(&path);
        if size > QUEUE_MAX_BYTES {
            return Pushed::TooLong;
        }
        if self.paths.contains(&path) {
            return Pushed::Duplicate;
        }
        let mut dropped = 0;
        while self.paths.len() >= QUEUE_CAPACITY || self.bytes + size > QUEUE_MAX_BYTES {
            let Some(old) = self.paths.pop_front() else {
                break;
            };
            self.bytes -= size_of(&old);
            dropped += 1;
        }
        self.bytes += size;
        self.paths.push_back(path);
        Pushed::Queued { dropped }
    }

    /// The oldest waiting path; from then on the queue counts a conversion in progress
    /// until [`PathQueue::done`].
    pub(crate) fn take(&mut self) -> Option<PathBuf> {
        let path = self.paths.pop_front()?;
        self.bytes -= size_of(&path);
        self.in_flight = true;
        Some(path)
    }

    /// The conversion of the last taken path is over (whatever its outcome).
    pub(crate) fn done(&mut self) {
        self.in_flight = false;
    }

    pub(crate) fn len(&self) -> usize {
        self.paths.len()
    }

    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.paths.is_empty() && !self.in_flight
    }

    /// Drop every waiting path; returns how many there were.
    pub(crate) fn clear(&mut self) -> usize {
        let n = self.paths.len();
        self.paths.clear();
        self.bytes = 0;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_by_count_and_by_bytes_dropping_the_oldest() {
        let mut q = PathQueue::default();
        for i in 0..QUEUE_CAPACITY {
            assert_eq!(
                q.push(PathBuf::from(format!("/r/{i}.png"))),
                Pushed::Queued { dropped: 0 }
            );
        }
        assert_eq!(
            q.push(PathBuf::from("/r/new.png")),
            Pushed::Queued { dropped: 1 }
        );
        assert_eq!(q.len(), QUEUE_CAPACITY);
        assert_eq!(q.push(PathBuf::from("/r/new.png")), Pushed::Duplicate);

        // Long paths: the byte budget binds before the count.
        let mut q = PathQueue::default();
        let long = |i: usize| PathBuf::from(format!("/{}{i:04}", "x".repeat(4000)));
        for i in 0..40 {
            q.push(long(i));
        }
        assert!(q.bytes() <= QUEUE_MAX_BYTES, "{}", q.bytes());
        assert_eq!(q.len(), QUEUE_MAX_BYTES / 4005);
        assert_eq!(q.take(), Some(long(40 - QUEUE_MAX_BYTES / 4005)));
        assert!(!q.is_idle(), "a conversion is in progress");
        q.done();
        assert_eq!(q.clear(), QUEUE_MAX_BYTES / 4005 - 1);
        assert!(q.is_idle());
        assert_eq!(q.bytes(), 0);
        let huge = PathBuf::from("x".repeat(QUEUE_MAX_BYTES + 1));
        assert_eq!(q.push(huge), Pushed::TooLong);
    }
}

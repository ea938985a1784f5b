//! The data directory lock: at most one `flamenco serve` per embedded store.
//!
//! Two daemons on one `flamenco.sqlite` would each believe they own the queue (their
//! in-memory caches, timeouts and outbox consumers would fight), so `serve` takes an
//! exclusive advisory lock (`flock`/`LockFileEx`, through `fs4`) on `flamenco.lock` in the
//! data directory and holds it until it exits. The operating system drops the lock when
//! the process ends in any way, `kill -9` included, so a crashed daemon never leaves a
//! stale lock behind. The file holds the owner's pid, start time and listen address, for
//! the message the second daemon prints.
//!
//! Only `serve` takes the lock: the other CLI commands read the store (or, like
//! `cleanslate`, write in small batches) and are safe while the daemon runs.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "flamenco.lock";

/// Why the data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error(
        "another Flamenco Manager is already using the data directory {dir} ({owner}; lock \
         file {lock}); stop that one first, or give this one a different data_dir"
    )]
    Held {
        dir: PathBuf,
        lock: PathBuf,
        /// What the lock file says about its owner ("pid 1234, started …").
        owner: String,
    },
    /// The lock file could not be created or locked.
    #[error("cannot lock the data directory {dir} (lock file {lock}): {error}; check that the directory exists and is writable")]
    Io {
        dir: PathBuf,
        lock: PathBuf,
        error: std::io::Error,
    },
}

/// An exclusive lock on a data directory, held until dropped (or the process ends).
#[derive(Debug)]
pub struct DataDirLock {
    file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Take the lock on `data_dir` (creating the directory if needed) without waiting;
    /// `owner` (e.g. "listening on 127.0.0.1:8083") is written into the lock file after the
    /// pid, for the message another daemon prints.
    pub fn acquire(data_dir: &Path, owner: &str) -> Result<DataDirLock, LockError> {
        let dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
        let lock = dir.join(LOCK_FILE);
        let io = |error: std::io::Error| LockError::Io {
            dir: dir.clone(),
            lock: lock.clone(),
            error,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        // Not truncated before the lock is ours: the owner's text must survive a failed try.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock)
            .map_err(io)?;
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => {}
            Err(fs4::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let text = text.trim();
                let owner = if text.is_empty() {
                    "owner unknown".to_string()
                } else {
                    text.to_string()
                };
                return Err(LockError::Held { dir, lock, owner });
            }
            Err(fs4::TryLockError::Error(e)) => return Err(io(e)),
        }
        let started = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
        let text = format!("pid {}, started {started}, {owner}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(text.as_bytes()))
            .and_then(|()| file.flush())
            .map_err(io)?;
        Ok(DataDirLock { file, path: lock })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DataDirLock {
    fn drop(&mut self) {
        // Closing the file releases the lock too; unlocking first makes it immediate even
        // if another handle to the same open file exists. The file stays: removing it
        // could race with a daemon that just opened it.
        let _ = fs4::FileExt::unlock(&self.file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_with_the_owner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = DataDirLock::acquire(dir.path(), "listening on 127.0.0.1:1").expect("first");
        let err = DataDirLock::acquire(dir.path(), "listening on 127.0.0.1:2")
            .expect_err("second must be refused");
        let text = err.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains("listening on 127.0.0.1:1"), "{text}");
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        assert!(text.contains(LOCK_FILE), "{text}");
        // Released on drop: the next one gets it and records itself.
        drop(first);
        let again = DataDirLock::acquire(dir.path(), "listening on 127.0.0.1:3").expect("again");
        let text = std::fs::read_to_string(again.path()).expect("read");
        assert!(text.contains("listening on 127.0.0.1:3"), "{text}");
        assert!(!text.contains("127.0.0.1:1"), "{text}");
    }
}

//! The files converted recently, remembered by what survives a rename or a move: file name,
//! size and modification time ([`FileIdentity`]). A frame reported by the worker, seen
//! again by the watcher in the intermediate folder and once more after `move-to-final`
//! renamed that folder is one identity, so it is converted once. At most [`RECENT_FILES`]
//! identities are kept (the oldest is forgotten first).

use std::collections::{HashSet, VecDeque};
use std::ffi::OsString;
use std::fs::Metadata;
use std::path::Path;
use std::time::SystemTime;

/// How many converted files are remembered.
pub const RECENT_FILES: usize = 1024;

/// What identifies a rendered file across renames and moves (and across the different
/// paths a worker and the Manager may see it under).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    name: OsString,
    size: u64,
    modified: Option<SystemTime>,
}

impl FileIdentity {
    pub fn new(path: &Path, meta: &Metadata) -> FileIdentity {
        FileIdentity {
            name: path.file_name().map(OsString::from).unwrap_or_default(),
            size: meta.len(),
            modified: meta.modified().ok(),
        }
    }
}

/// A bounded set of identities, forgetting the oldest first.
#[derive(Debug, Default)]
pub(crate) struct RecentFiles {
    order: VecDeque<FileIdentity>,
    known: HashSet<FileIdentity>,
}

impl RecentFiles {
    /// Remember `id`; false if it was already known.
    pub(crate) fn insert(&mut self, id: FileIdentity) -> bool {
        if self.known.contains(&id) {
            return false;
        }
        if self.order.len() >= RECENT_FILES {
            if let Some(old) = self.order.pop_front() {
                self.known.remove(&old);
            }
        }
        self.known.insert(id.clone());
        self.order.push_back(id);
        true
    }

    /// Forget `id` (its conversion could not be done, so a later report may try again).
    pub(crate) fn remove(&mut self, id: &FileIdentity) {
        if self.known.remove(id) {
            self.order.retain(|x| x != id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_name_size_and_time_is_the_same_file_wherever_it_is() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let pa = a.path().join("frame_0001.png");
        std::fs::write(&pa, b"12345").unwrap();
        let pb = b.path().join("frame_0001.png");
        std::fs::rename(&pa, &pb).unwrap();
        let id_b = FileIdentity::new(&pb, &std::fs::metadata(&pb).unwrap());
        let mut recent = RecentFiles::default();
        assert!(recent.insert(id_b.clone()));
        // The same file under its old name in another folder (e.g. a copy with times kept).
        let copy = a.path().join("frame_0001.png");
        std::fs::copy(&pb, &copy).unwrap();
        let f = std::fs::File::options().write(true).open(&copy).unwrap();
        f.set_modified(std::fs::metadata(&pb).unwrap().modified().unwrap())
            .unwrap();
        let id_copy = FileIdentity::new(&copy, &std::fs::metadata(&copy).unwrap());
        assert!(!recent.insert(id_copy), "a renamed/copied frame is known");
        // Another frame number, or rewritten content, is new.
        let other = a.path().join("frame_0002.png");
        std::fs::copy(&pb, &other).unwrap();
        assert!(recent.insert(FileIdentity::new(
            &other,
            &std::fs::metadata(&other).unwrap()
        )));
        recent.remove(&id_b);
        assert!(recent.insert(id_b));
    }

    #[test]
    fn the_oldest_is_forgotten_first() {
        let mut recent = RecentFiles::default();
        let id = |i: u64| FileIdentity {
            name: OsString::from("f.png"),
            size: i,
            modified: None,
        };
        for i in 0..(RECENT_FILES as u64 + 1) {
            assert!(recent.insert(id(i)));
        }
        assert_eq!(recent.order.len(), RECENT_FILES);
        assert!(recent.insert(id(0)), "forgotten");
        assert!(!recent.insert(id(RECENT_FILES as u64)), "still known");
    }
}

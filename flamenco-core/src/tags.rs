//! Worker tags (docs/jobs.md, "Worker tags"): the rules both stores and every caller
//! share. What a tag may look like, how many a worker may have, and what adding and
//! removing tags does to a worker's list.
//!
//! An admin gives workers tags (`gpu`, `win`, `farm-b`); a job may require one tag
//! (`worker_tag`), and then only workers with that tag get its tasks. Tags are the
//! Manager's: the Flamenco Worker (2.x) cannot declare any, so registration, sign-on and
//! sign-off never touch them.

use std::fmt;

/// Longest tag, in bytes (tags are ASCII).
pub const MAX_TAG_LEN: usize = 64;
/// Most tags one worker may have.
pub const MAX_TAGS_PER_WORKER: usize = 32;
/// Most workers one tagging request may name (`POST /api/workers/tags`, the CLI).
pub const MAX_WORKERS_PER_TAGGING: usize = 1_000;

/// What is wrong with a tag or a change of tags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagError {
    /// Not 1–64 characters of `A-Z a-z 0-9 _ . -`.
    Invalid(String),
    /// The same change would leave a worker with more than [`MAX_TAGS_PER_WORKER`].
    TooMany { worker: String, count: usize },
    /// More tags added or removed at once than a worker could have.
    TooManyInRequest(usize),
}

impl fmt::Display for TagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TagError::Invalid(tag) => write!(
                f,
                "invalid tag {tag:?}: a tag is 1 to {MAX_TAG_LEN} characters of letters, \
                 digits, '_', '.' and '-'"
            ),
            TagError::TooMany { worker, count } => write!(
                f,
                "worker {worker} would have {count} tags; a worker may have at most \
                 {MAX_TAGS_PER_WORKER}: remove some first"
            ),
            TagError::TooManyInRequest(n) => write!(
                f,
                "{n} tags in one request; at most {MAX_TAGS_PER_WORKER} may be added and \
                 {MAX_TAGS_PER_WORKER} removed at once"
            ),
        }
    }
}

impl std::error::Error for TagError {}

/// Is `tag` a valid tag: 1–64 characters of `[A-Za-z0-9_.-]`? Tags are compared exactly
/// (`GPU` and `gpu` are two tags).
pub fn check_tag(tag: &str) -> Result<(), TagError> {
    let ok = !tag.is_empty()
        && tag.len() <= MAX_TAG_LEN
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(TagError::Invalid(tag.to_string()))
    }
}

/// A requested change of tags, checked: every tag valid, at most
/// [`MAX_TAGS_PER_WORKER`] on each side, no duplicates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TagChange {
    pub add: Vec<String>,
    pub remove: Vec<String>,
}

impl TagChange {
    /// Check `add` and `remove` (duplicates are dropped, order kept).
    pub fn new(add: &[String], remove: &[String]) -> Result<TagChange, TagError> {
        let clean = |tags: &[String]| -> Result<Vec<String>, TagError> {
            if tags.len() > MAX_TAGS_PER_WORKER {
                return Err(TagError::TooManyInRequest(tags.len()));
            }
            let mut out: Vec<String> = Vec::with_capacity(tags.len());
            for t in tags {
                check_tag(t)?;
                if !out.contains(t) {
                    out.push(t.clone());
                }
            }
            Ok(out)
        };
        Ok(TagChange {
            add: clean(add)?,
            remove: clean(remove)?,
        })
    }

    /// The tags a worker that has `current` has after this change: removals first, then
    /// additions appended in order (a tag both removed and added stays). `None` when the
    /// list does not change.
    pub fn apply(&self, current: &[String]) -> Option<Vec<String>> {
        let mut tags: Vec<String> = current
            .iter()
            .filter(|t| !self.remove.contains(t))
            .cloned()
            .collect();
        for t in &self.add {
            if !tags.contains(t) {
                tags.push(t.clone());
            }
        }
        (tags != current).then_some(tags)
    }

    /// [`TagChange::apply`], refusing a result of more than [`MAX_TAGS_PER_WORKER`] tags
    /// (`worker` names the worker in the error).
    pub fn apply_checked(
        &self,
        worker: &str,
        current: &[String],
    ) -> Result<Option<Vec<String>>, TagError> {
        match self.apply(current) {
            Some(tags) if tags.len() > MAX_TAGS_PER_WORKER => Err(TagError::TooMany {
                worker: worker.to_string(),
                count: tags.len(),
            }),
            other => Ok(other),
        }
    }
}

/// A job's `worker_tag` as submitted: `None` or empty for any worker; otherwise it must be
/// a valid tag.
pub fn check_job_tag(tag: Option<&str>) -> Result<Option<String>, TagError> {
    match tag.map(str::trim) {
        None | Some("") => Ok(None),
        Some(t) => check_tag(t).map(|()| Some(t.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(list: &[&str]) -> Vec<String> {
        list.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn tag_syntax() {
        for good in ["gpu", "GPU", "win-10", "farm_b", "v2.5", &"x".repeat(64)] {
            assert_eq!(check_tag(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            " gpu",
            "gpu ",
            "a/b",
            "é",
            "a,b",
            &"x".repeat(65),
            "a b",
        ] {
            assert!(check_tag(bad).is_err(), "{bad:?}");
        }
        let msg = check_tag("a b").unwrap_err().to_string();
        assert!(msg.contains("\"a b\"") && msg.contains("1 to 64"), "{msg}");
    }

    #[test]
    fn a_change_removes_then_adds_in_order() {
        let c = TagChange::new(&s(&["gpu", "ssd", "gpu"]), &s(&["win"])).unwrap();
        assert_eq!(c.add, s(&["gpu", "ssd"]));
        assert_eq!(
            c.apply(&s(&["win", "linux"])),
            Some(s(&["linux", "gpu", "ssd"]))
        );
        // Nothing to do: no change reported.
        assert_eq!(c.apply(&s(&["gpu", "ssd"])), None);
        // Removed and added: kept, and moved to the end.
        let c = TagChange::new(&s(&["a"]), &s(&["a"])).unwrap();
        assert_eq!(c.apply(&s(&["a", "b"])), Some(s(&["b", "a"])));
        assert_eq!(c.apply(&s(&["b"])), Some(s(&["b", "a"])));
    }

    #[test]
    fn limits() {
        assert!(matches!(
            TagChange::new(&s(&["ok", "not ok"]), &[]),
            Err(TagError::Invalid(t)) if t == "not ok"
        ));
        let many: Vec<String> = (0..33).map(|i| format!("t{i}")).collect();
        assert_eq!(
            TagChange::new(&many, &[]),
            Err(TagError::TooManyInRequest(33))
        );
        let c = TagChange::new(&many[..32], &[]).unwrap();
        assert_eq!(
            c.apply_checked("w", &[]).unwrap().map(|t| t.len()),
            Some(32)
        );
        let err = c.apply_checked("w", &s(&["extra"])).unwrap_err();
        assert_eq!(
            err,
            TagError::TooMany {
                worker: "w".into(),
                count: 33
            }
        );
    }

    #[test]
    fn job_tags() {
        assert_eq!(check_job_tag(None), Ok(None));
        assert_eq!(check_job_tag(Some("")), Ok(None));
        assert_eq!(check_job_tag(Some(" gpu ")), Ok(Some("gpu".into())));
        assert!(check_job_tag(Some("g p u")).is_err());
    }
}

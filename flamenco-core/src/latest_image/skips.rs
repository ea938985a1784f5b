//! Summarised warnings about paths the pipeline did not convert, so that a flood of bad
//! paths cannot flood the log: in each [`WINDOW`] the first [`LOGGED_PER_WINDOW`] skips are
//! logged one per line (with the path and the reason), later ones only counted; the counts
//! are logged as one line when the window is over ("skipped 1234 more paths in the last
//! 10 s: 1200 not found, 34 not a regular file; the last: …").
//!
//! Paths in log lines are quoted and escaped (`{:?}`) and cut to [`MAX_LOGGED_PATH`] bytes,
//! so a path cannot forge a log line or make a huge one.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Length of one summary window.
pub const WINDOW: Duration = Duration::from_secs(10);

/// How many skips per window are logged one by one.
pub const LOGGED_PER_WINDOW: u32 = 3;

/// Longest path shown in a log line, in bytes (longer ones are cut, with `…`).
pub const MAX_LOGGED_PATH: usize = 256;

/// A path for a log line: escaped, quoted, at most [`MAX_LOGGED_PATH`] bytes of it.
pub fn shown(path: &Path) -> String {
    let text = path.to_string_lossy();
    if text.len() <= MAX_LOGGED_PATH {
        return format!("{text:?}");
    }
    let mut end = MAX_LOGGED_PATH;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}…", &text[..end])
}

/// The skip counter of one pipeline.
#[derive(Debug, Default)]
pub(crate) struct SkipLog {
    window_start: Option<Instant>,
    logged: u32,
    suppressed: BTreeMap<&'static str, u64>,
    last: Option<String>,
}

impl SkipLog {
    /// Note one skipped path: `reason` is a short counted phrase ("not found"), `detail` the
    /// full explanation for the individual line.
    pub(crate) fn skip(&mut self, now: Instant, reason: &'static str, path: &Path, detail: &str) {
        self.flush_if_due(now);
        self.window_start.get_or_insert(now);
        if self.logged < LOGGED_PER_WINDOW {
            self.logged += 1;
            tracing::warn!("latest image: skipped {}: {detail}", shown(path));
        } else {
            *self.suppressed.entry(reason).or_default() += 1;
            self.last = Some(shown(path));
        }
    }

    /// Note `n` paths skipped at once for `reason`; `line` is the whole log line used when
    /// it is logged individually.
    pub(crate) fn skip_many(&mut self, now: Instant, reason: &'static str, n: u64, line: &str) {
        self.flush_if_due(now);
        self.window_start.get_or_insert(now);
        if self.logged < LOGGED_PER_WINDOW {
            self.logged += 1;
            tracing::warn!("{line}");
        } else {
            *self.suppressed.entry(reason).or_default() += n;
        }
    }

    /// When the current window ends, if there is anything to summarise then.
    pub(crate) fn due(&self) -> Option<Instant> {
        self.window_start.map(|s| s + WINDOW)
    }

    /// Log the summary of a finished window, if any, and start a new one.
    pub(crate) fn flush_if_due(&mut self, now: Instant) {
        match self.window_start {
            Some(start) if now.saturating_duration_since(start) >= WINDOW => self.flush(),
            _ => {}
        }
    }

    /// Log what was counted but not logged yet, and start a new window.
    pub(crate) fn flush(&mut self) {
        let total: u64 = self.suppressed.values().sum();
        if total > 0 {
            let kinds: Vec<String> = self
                .suppressed
                .iter()
                .map(|(reason, n)| format!("{n} {reason}"))
                .collect();
            tracing::warn!(
                "latest image: skipped {total} more paths in the last {} s: {}; the last: {}",
                WINDOW.as_secs(),
                kinds.join(", "),
                self.last.as_deref().unwrap_or("?")
            );
        }
        *self = SkipLog::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_escaped_and_cut() {
        assert_eq!(shown(Path::new("/r/a.png")), "\"/r/a.png\"");
        assert_eq!(
            shown(Path::new("/r/a\nFAKE LOG LINE")),
            "\"/r/a\\nFAKE LOG LINE\""
        );
        let long = format!("/{}", "é".repeat(400));
        let s = shown(Path::new(&long));
        assert!(s.len() <= MAX_LOGGED_PATH + 8, "{}", s.len());
        assert!(s.ends_with('…'));
    }

    #[test]
    fn counts_after_the_first_few_and_summarises_once_per_window() {
        let t0 = Instant::now();
        let mut log = SkipLog::default();
        assert_eq!(log.due(), None);
        for i in 0..100 {
            log.skip(t0, "not found", Path::new(&format!("/r/{i}")), "gone");
        }
        assert_eq!(log.logged, LOGGED_PER_WINDOW);
        assert_eq!(
            log.suppressed["not found"],
            100 - u64::from(LOGGED_PER_WINDOW)
        );
        assert_eq!(log.due(), Some(t0 + WINDOW));
        log.flush_if_due(t0 + WINDOW / 2);
        assert_eq!(log.logged, LOGGED_PER_WINDOW, "not yet");
        log.skip(t0 + WINDOW, "not a regular file", Path::new("/r/fifo"), "x");
        assert_eq!(log.logged, 1, "a new window");
        assert!(log.suppressed.is_empty());
    }
}

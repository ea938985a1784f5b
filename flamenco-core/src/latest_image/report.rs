//! One worker's `/output-produced` report into the pipeline: cheap (no file access: whether
//! a path exists is found out later, off the request), never waiting, and logged as one line
//! per report however many paths it lists.

use std::path::{Path, PathBuf};

use super::{skips, LatestImages, QUEUE_CAPACITY};

/// What became of the paths of one report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReportSummary {
    /// Paths in the report.
    pub paths: usize,
    /// Paths queued for conversion.
    pub queued: usize,
    /// Relative paths, skipped: they would depend on the Manager's working directory.
    pub relative: usize,
    /// Absolute paths not queued because the report lists more than [`QUEUE_CAPACITY`]
    /// after them (only the newest could wait in the queue anyway).
    pub older: usize,
    /// The first skipped path, quoted and cut for a log line.
    pub first_skipped: Option<String>,
}

impl LatestImages {
    /// Queue the absolute paths of a worker's report, the newest [`QUEUE_CAPACITY`] at
    /// most, and log one line about the ones skipped (a warning when some are relative).
    pub fn submit_report(&self, worker: &str, paths: &[String]) -> ReportSummary {
        let mut summary = ReportSummary {
            paths: paths.len(),
            ..ReportSummary::default()
        };
        let mut absolute: Vec<&Path> = Vec::with_capacity(paths.len().min(QUEUE_CAPACITY));
        for path in paths.iter().map(Path::new) {
            if path.is_absolute() {
                absolute.push(path);
            } else {
                summary.relative += 1;
                summary
                    .first_skipped
                    .get_or_insert_with(|| skips::shown(path));
            }
        }
        summary.older = absolute.len().saturating_sub(QUEUE_CAPACITY);
        if summary.older > 0 && summary.first_skipped.is_none() {
            summary.first_skipped = Some(skips::shown(absolute[0]));
        }
        summary.queued = self.submit_all(absolute[summary.older..].iter().map(PathBuf::from));
        let skipped = summary.relative + summary.older;
        let first = summary.first_skipped.as_deref().unwrap_or("");
        if summary.relative > 0 {
            tracing::warn!(
                worker,
                "output-produced: skipped {skipped} of {} paths: {} relative, {} beyond the \
                 newest {QUEUE_CAPACITY} of the report; first: {first} (report absolute \
                 paths: a relative one would depend on the Manager's working directory)",
                summary.paths,
                summary.relative,
                summary.older,
            );
        } else if summary.older > 0 {
            tracing::debug!(
                worker,
                "output-produced: only the newest {QUEUE_CAPACITY} of {} paths are queued; \
                 first skipped: {first}",
                summary.paths
            );
        }
        summary
    }
}

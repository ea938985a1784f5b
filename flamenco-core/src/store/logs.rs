//! Task logs: every log line a worker sends is kept per task, in both modes and both stores
//! (docs/storage.md, "Task logs").
//!
//! The [`TaskLogStore`] trait is the storage side; the decisions are the pure functions of
//! this module, shared by every backend:
//!
//! * A log is stored as *chunks*: the lines of one update, with their line numbers and their
//!   byte offsets in the whole log (every line counts its length plus one for the newline).
//! * The size is capped per task ([`TaskLogLimits`]): the first half of the cap is the
//!   *head*, kept for good; the other half is the *tail*, a window over the newest lines.
//!   When the tail would grow past its half, its oldest chunks are deleted. Lines dropped
//!   that way leave a gap in the line numbers, shown when reading as one marker entry,
//!   `… N lines (M bytes) dropped …` ([`TaskLogEntry::Dropped`]). Lines keep their numbers,
//!   so a reader can follow a log by asking for the lines after the last one it has.
//! * One line longer than a quarter of the cap (at most [`MAX_LINE_BYTES`]) is cut, with
//!   `… [N bytes cut]` at its end.
//! * The log follows its task: deleting a task (cleanup, job delete, clean slate) deletes
//!   its log.
//!
//! [`plan_append`] decides where new lines go; [`assemble`] turns stored chunks into what a
//! reader sees.

use async_trait::async_trait;
use serde::Serialize;

use super::StoreResult;
use crate::model::ObjectId;

/// The default cap on one task's stored log (`task_log_max_bytes`): 1 MiB.
pub const DEFAULT_TASK_LOG_MAX_BYTES: u64 = 1 << 20;

/// The smallest cap that may be configured (0 excepted, which turns logs off).
pub const MIN_TASK_LOG_MAX_BYTES: u64 = 1024;

/// No single line is kept longer than this (plus the cut marker).
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// The most lines one read returns.
pub const MAX_READ_LINES: usize = 10_000;

/// How much of each task's log is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskLogLimits {
    /// The cap per task in bytes (head plus tail); 0 keeps no logs at all.
    pub max_bytes: u64,
}

impl Default for TaskLogLimits {
    fn default() -> Self {
        TaskLogLimits {
            max_bytes: DEFAULT_TASK_LOG_MAX_BYTES,
        }
    }
}

impl TaskLogLimits {
    /// Logs are not kept.
    pub const OFF: TaskLogLimits = TaskLogLimits { max_bytes: 0 };

    pub fn enabled(&self) -> bool {
        self.max_bytes > 0
    }

    /// Bytes kept from the start of the log.
    pub fn head_bytes(&self) -> u64 {
        self.max_bytes / 2
    }

    /// Bytes kept from the end of the log.
    pub fn tail_bytes(&self) -> u64 {
        self.max_bytes - self.head_bytes()
    }

    /// The longest line kept whole.
    pub fn line_bytes(&self) -> usize {
        usize::try_from(self.tail_bytes() / 2)
            .unwrap_or(MAX_LINE_BYTES)
            .clamp(16, MAX_LINE_BYTES)
    }
}

/// Consecutive lines of one task's log, stored together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogChunk {
    /// The number of its first line (the log's first line is 0).
    pub first_line: u64,
    pub line_count: u64,
    /// Byte offset of its first line in the whole log (dropped lines included).
    pub start: u64,
    /// Byte offset just after its last line (its newline included).
    pub end: u64,
    /// Part of the head (never dropped) rather than the tail.
    pub head: bool,
    /// The lines, joined with `\n` (no newline at the end).
    pub text: String,
}

impl LogChunk {
    /// The number just after its last line.
    pub fn end_line(&self) -> u64 {
        self.first_line + self.line_count
    }
}

/// Where a task's log ends: the number and byte offset the next line gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LogEnd {
    pub next_line: u64,
    pub next_byte: u64,
}

impl LogEnd {
    /// The end of a log whose last stored chunk is `last` (none: an empty log).
    pub fn after(last: Option<&LogChunk>) -> LogEnd {
        last.map(|c| LogEnd {
            next_line: c.end_line(),
            next_byte: c.end,
        })
        .unwrap_or_default()
    }
}

/// What appending some text to a log does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendPlan {
    /// Chunks to insert (a head part and/or a tail part).
    pub chunks: Vec<LogChunk>,
    /// Delete the tail chunks (`head == false`) that start before this byte offset.
    pub drop_tail_before: u64,
    /// The log's end afterwards.
    pub end: LogEnd,
}

/// Split a log text into lines: one trailing newline is not an empty last line, and a
/// `\r` before a newline is dropped.
pub fn split_lines(text: &str) -> Vec<&str> {
    let text = text.strip_suffix('\n').unwrap_or(text);
    if text.is_empty() {
        return Vec::new();
    }
    text.split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect()
}

/// `line`, cut to at most `max` bytes (on a character boundary) with the cut marker.
fn cut_line(line: &str, max: usize) -> String {
    if line.len() <= max {
        return line.to_string();
    }
    let mut at = max;
    while !line.is_char_boundary(at) {
        at -= 1;
    }
    format!("{}… [{} bytes cut]", &line[..at], line.len() - at)
}

/// Decide where the lines of `text` go in a log that ends at `end`. `None` when there is
/// nothing to store (no lines, or logs off).
pub fn plan_append(end: LogEnd, text: &str, limits: TaskLogLimits) -> Option<AppendPlan> {
    if !limits.enabled() {
        return None;
    }
    let lines: Vec<String> = split_lines(text)
        .into_iter()
        .map(|l| cut_line(l, limits.line_bytes()))
        .collect();
    if lines.is_empty() {
        return None;
    }
    let head_limit = limits.head_bytes();
    let mut offset = end.next_byte;
    // The head is the prefix of the log that fits in its half; once a line does not fit,
    // every later line belongs to the tail.
    let mut head_count = 0;
    for line in &lines {
        let after = offset + line.len() as u64 + 1;
        if after > head_limit {
            break;
        }
        offset = after;
        head_count += 1;
    }
    let mut chunks = Vec::new();
    let mut next_line = end.next_line;
    if head_count > 0 {
        chunks.push(LogChunk {
            first_line: next_line,
            line_count: head_count as u64,
            start: end.next_byte,
            end: offset,
            head: true,
            text: lines[..head_count].join("\n"),
        });
        next_line += head_count as u64;
    }
    let tail = &lines[head_count..];
    let tail_start = offset;
    let tail_end = tail_start + tail.iter().map(|l| l.len() as u64 + 1).sum::<u64>();
    let new_end = LogEnd {
        next_line: next_line + tail.len() as u64,
        next_byte: tail_end,
    };
    if !tail.is_empty() {
        // Keep the newest lines of this append that fit in the tail by themselves.
        let mut start = tail_start;
        let mut skip = 0;
        while tail_end - start > limits.tail_bytes() {
            start += tail[skip].len() as u64 + 1;
            skip += 1;
        }
        if skip < tail.len() {
            chunks.push(LogChunk {
                first_line: next_line + skip as u64,
                line_count: (tail.len() - skip) as u64,
                start,
                end: tail_end,
                head: false,
                text: tail[skip..].join("\n"),
            });
        }
    }
    Some(AppendPlan {
        chunks,
        drop_tail_before: tail_end.saturating_sub(limits.tail_bytes()),
        end: new_end,
    })
}

/// One entry of a log as read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum TaskLogEntry {
    /// A stored line and its number.
    Line { line: u64, text: String },
    /// Lines dropped by the size cap, between the head and the tail.
    Dropped {
        dropped_lines: u64,
        dropped_bytes: u64,
    },
}

impl TaskLogEntry {
    /// The entry as one line of text (the marker for a [`TaskLogEntry::Dropped`]).
    pub fn text(&self) -> String {
        match self {
            TaskLogEntry::Line { text, .. } => text.clone(),
            TaskLogEntry::Dropped {
                dropped_lines,
                dropped_bytes,
            } => dropped_marker(*dropped_lines, *dropped_bytes),
        }
    }
}

/// The marker line for dropped lines.
pub fn dropped_marker(lines: u64, bytes: u64) -> String {
    format!("… {lines} lines ({bytes} bytes) dropped …")
}

/// Which part of a log to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskLogQuery {
    /// The last `n` stored lines (at most [`MAX_READ_LINES`]).
    Tail(usize),
    /// Up to `limit` stored lines (at most [`MAX_READ_LINES`]) numbered `from` or more.
    From { from: u64, limit: usize },
}

/// A part of a task's log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TaskLogPage {
    pub entries: Vec<TaskLogEntry>,
    /// The number after the last line returned (ask `From` it for what follows), or the
    /// `from` asked for when nothing was returned.
    pub next_line: u64,
    /// Where the whole log ends now.
    pub end: LogEnd,
}

/// What a reader sees of `chunks` (ascending, consecutive as stored, possibly only the
/// newest part of the log) for `query`, with the log's `end`.
pub fn assemble(chunks: &[LogChunk], query: TaskLogQuery, end: LogEnd) -> TaskLogPage {
    let mut entries = Vec::new();
    let mut previous: Option<&LogChunk> = None;
    let from = match query {
        TaskLogQuery::From { from, .. } => from,
        TaskLogQuery::Tail(_) => 0,
    };
    for chunk in chunks {
        if let Some(p) = previous {
            if p.end_line() < chunk.first_line && chunk.first_line > from {
                entries.push(TaskLogEntry::Dropped {
                    dropped_lines: chunk.first_line - p.end_line(),
                    dropped_bytes: chunk.start.saturating_sub(p.end),
                });
            }
        }
        for (i, text) in chunk.text.split('\n').enumerate() {
            let line = chunk.first_line + i as u64;
            if line >= from {
                entries.push(TaskLogEntry::Line {
                    line,
                    text: text.to_string(),
                });
            }
        }
        previous = Some(chunk);
    }
    let is_line = |e: &TaskLogEntry| matches!(e, TaskLogEntry::Line { .. });
    match query {
        TaskLogQuery::Tail(n) => {
            let n = n.min(MAX_READ_LINES);
            let total = entries.iter().filter(|e| is_line(e)).count();
            // Keep from the n-th line before the end; a marker before it goes too.
            let mut to_skip = total.saturating_sub(n);
            let mut cut = 0;
            for (i, e) in entries.iter().enumerate() {
                if to_skip == 0 && is_line(e) {
                    cut = i;
                    break;
                }
                if is_line(e) {
                    to_skip -= 1;
                }
                cut = i + 1;
            }
            entries.drain(..cut.min(entries.len()));
        }
        TaskLogQuery::From { limit, .. } => {
            let limit = limit.min(MAX_READ_LINES);
            let mut lines = 0;
            let mut keep = entries.len();
            for (i, e) in entries.iter().enumerate() {
                if is_line(e) {
                    if lines == limit {
                        keep = i;
                        break;
                    }
                    lines += 1;
                }
            }
            entries.truncate(keep);
            // A trailing marker belongs with the lines after it.
            if matches!(entries.last(), Some(TaskLogEntry::Dropped { .. })) && lines == limit {
                entries.pop();
            }
        }
    }
    let next_line = entries
        .iter()
        .rev()
        .find_map(|e| match e {
            TaskLogEntry::Line { line, .. } => Some(line + 1),
            TaskLogEntry::Dropped { .. } => None,
        })
        .unwrap_or(match query {
            TaskLogQuery::From { from, .. } => from.min(end.next_line),
            TaskLogQuery::Tail(_) => end.next_line,
        });
    TaskLogPage {
        entries,
        next_line,
        end,
    }
}

/// The chunks (in log order, without their text) that hold what `query` asks for, with
/// the chunk before a gap when the query reaches it (for the marker).
pub fn choose(metas: &[LogChunk], query: TaskLogQuery) -> Vec<LogChunk> {
    match query {
        TaskLogQuery::Tail(n) => {
            let n = n.min(MAX_READ_LINES) as u64;
            let mut lines = 0;
            let mut first = metas.len();
            while first > 0 && lines < n {
                first -= 1;
                lines += metas[first].line_count;
            }
            // A marker before the first line kept is not shown: no chunk before it needed.
            metas[first..].to_vec()
        }
        TaskLogQuery::From { from, limit } => {
            let limit = limit.min(MAX_READ_LINES) as u64;
            // The last chunk starting at or before `from` (it holds `from`, or precedes
            // the gap `from` is in), then chunks until `limit` lines past `from`.
            let start = metas
                .partition_point(|c| c.first_line <= from)
                .saturating_sub(1);
            let mut out = Vec::new();
            let mut lines = 0;
            for c in &metas[start..] {
                if lines >= limit {
                    break;
                }
                lines += c.end_line().saturating_sub(from.max(c.first_line));
                out.push(c.clone());
            }
            out
        }
    }
}

/// The task-log part of a [`super::Store`].
///
/// Lines sent with a worker's update are appended by [`super::WorkerProtocolStore::apply_worker_update`]
/// itself (in the update's transaction on SQLite; right after the task and outbox writes on
/// MongoDB, before the worker is answered), so an acknowledged update's log is stored.
#[async_trait]
pub trait TaskLogStore: Send + Sync + 'static {
    /// Set how much of each task's log later appends keep ([`TaskLogLimits::OFF`]: none).
    /// Logs already stored are not shortened.
    fn set_task_log_limits(&self, limits: TaskLogLimits);

    /// The limits in force.
    fn task_log_limits(&self) -> TaskLogLimits;

    /// Whether the updates queued in the outbox must carry their log lines too: yes in
    /// upstream mode (the Flamenco Server gets every line from the outbox), no in
    /// standalone mode (the lines are in the task's log, and the job consumer reads
    /// statuses only). When they need not, a store may queue updates without their log
    /// text: the MongoDB store does, since its outbox waits in the task documents; the
    /// embedded store keeps it (its outbox rows cost nothing to carry). Default: carried.
    fn set_outbox_log_text(&self, _carry: bool) {}

    /// Append `text` (lines separated by `\n`) to the log of `task_id`, within the limits.
    /// The task need not exist.
    async fn append_task_log(&self, task_id: ObjectId, text: &str) -> StoreResult<()>;

    /// Read a part of the log of `task_id` (an unknown task has an empty log).
    async fn read_task_log(
        &self,
        task_id: ObjectId,
        query: TaskLogQuery,
    ) -> StoreResult<TaskLogPage>;

    /// Where the log of `task_id` ends (cheap: followers poll it).
    async fn task_log_end(&self, task_id: ObjectId) -> StoreResult<LogEnd>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: u64) -> TaskLogLimits {
        TaskLogLimits { max_bytes: max }
    }

    /// Apply plans in memory, as a backend would.
    fn append(chunks: &mut Vec<LogChunk>, text: &str, l: TaskLogLimits) {
        let end = LogEnd::after(chunks.last());
        if let Some(plan) = plan_append(end, text, l) {
            chunks.extend(plan.chunks);
            chunks.retain(|c| c.head || c.start >= plan.drop_tail_before);
        }
    }

    fn texts(page: &TaskLogPage) -> Vec<String> {
        page.entries.iter().map(TaskLogEntry::text).collect()
    }

    #[test]
    fn lines_are_split_on_newlines() {
        assert_eq!(split_lines("a\nb\n"), vec!["a", "b"]);
        assert_eq!(split_lines("a\r\n\nb"), vec!["a", "", "b"]);
        assert!(split_lines("").is_empty());
        assert!(split_lines("\n").is_empty());
        assert!(plan_append(LogEnd::default(), "x", TaskLogLimits::OFF).is_none());
    }

    #[test]
    fn small_logs_are_kept_whole_in_the_head() {
        let mut chunks = Vec::new();
        let l = limits(1000);
        append(&mut chunks, "one\ntwo", l);
        append(&mut chunks, "three\n", l);
        assert!(chunks.iter().all(|c| c.head));
        let end = LogEnd::after(chunks.last());
        assert_eq!(
            end,
            LogEnd {
                next_line: 3,
                next_byte: 14
            }
        );
        let page = assemble(&chunks, TaskLogQuery::Tail(10), end);
        assert_eq!(texts(&page), ["one", "two", "three"]);
        assert_eq!(page.next_line, 3);
        let page = assemble(&chunks, TaskLogQuery::From { from: 1, limit: 1 }, end);
        assert_eq!(texts(&page), ["two"]);
        assert_eq!(page.next_line, 2);
    }

    #[test]
    fn the_cap_keeps_head_and_tail_with_one_marker() {
        let l = limits(1000);
        let mut chunks = Vec::new();
        for i in 0..200 {
            append(&mut chunks, &format!("line {i:04}\nline {i:04}b"), l);
        }
        let stored: u64 = chunks.iter().map(|c| c.end - c.start).sum();
        assert!(stored <= 1000, "{stored}");
        let end = LogEnd::after(chunks.last());
        assert_eq!(end.next_line, 400);
        let page = assemble(&chunks, TaskLogQuery::Tail(MAX_READ_LINES), end);
        let t = texts(&page);
        assert_eq!(t[0], "line 0000");
        assert_eq!(t.last().unwrap(), "line 0199b");
        let markers: Vec<_> = t.iter().filter(|s| s.contains("dropped")).collect();
        assert_eq!(markers.len(), 1, "{t:?}");
        // The marker's counts add up: every line is kept or counted as dropped.
        let kept = page
            .entries
            .iter()
            .filter(|e| matches!(e, TaskLogEntry::Line { .. }))
            .count() as u64;
        let Some(TaskLogEntry::Dropped {
            dropped_lines,
            dropped_bytes,
        }) = page
            .entries
            .iter()
            .find(|e| matches!(e, TaskLogEntry::Dropped { .. }))
        else {
            panic!("a marker");
        };
        assert_eq!(kept + dropped_lines, 400);
        assert_eq!(stored + dropped_bytes, end.next_byte);
        assert_eq!(
            markers[0].as_str(),
            dropped_marker(*dropped_lines, *dropped_bytes)
        );
        // Line numbers survive the cap.
        let page = assemble(&chunks, TaskLogQuery::Tail(1), end);
        assert_eq!(
            page.entries,
            [TaskLogEntry::Line {
                line: 399,
                text: "line 0199b".into()
            }]
        );
    }

    #[test]
    fn one_huge_update_keeps_its_start_and_end() {
        let l = limits(1024);
        let text: Vec<String> = (0..1000).map(|i| format!("{i:05}")).collect();
        let mut chunks = Vec::new();
        append(&mut chunks, &text.join("\n"), l);
        let end = LogEnd::after(chunks.last());
        assert_eq!(end.next_line, 1000);
        let t = texts(&assemble(&chunks, TaskLogQuery::Tail(MAX_READ_LINES), end));
        assert_eq!(t[0], "00000");
        assert_eq!(t.last().unwrap(), "00999");
        assert!(t
            .iter()
            .any(|s| s.starts_with("… ") && s.ends_with(" dropped …")));
        let stored: u64 = chunks.iter().map(|c| c.end - c.start).sum();
        assert!(stored <= 1024);
    }

    #[test]
    fn long_lines_are_cut() {
        let l = limits(1024);
        let long = "é".repeat(1000);
        let plan = plan_append(LogEnd::default(), &long, l).expect("plan");
        let text = &plan.chunks[0].text;
        assert!(text.ends_with("bytes cut]"), "{text}");
        assert!(text.len() < 400);
    }

    #[test]
    fn reading_from_inside_the_gap_starts_with_the_marker() {
        let l = limits(1024);
        let mut chunks = Vec::new();
        for i in 0..100 {
            append(&mut chunks, &format!("{i:040}"), l);
        }
        let end = LogEnd::after(chunks.last());
        let head_end = chunks.iter().rfind(|c| c.head).unwrap().end_line();
        let page = assemble(
            &chunks,
            TaskLogQuery::From {
                from: head_end,
                limit: 2,
            },
            end,
        );
        assert!(matches!(page.entries[0], TaskLogEntry::Dropped { .. }));
        assert_eq!(page.entries.len(), 3);
        // Past the end: nothing, and the follower stays at the end.
        let page = assemble(
            &chunks,
            TaskLogQuery::From {
                from: 500,
                limit: 2,
            },
            end,
        );
        assert!(page.entries.is_empty());
        assert_eq!(page.next_line, 100);
    }
}

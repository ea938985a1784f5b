//! Shared output helpers: writing to stdout (a closed pipe ends the command quietly),
//! tables that fit the terminal (short ids, cut cells), humanised times,
//! one-JSON-object-per-line, and the error text printed once.

use std::io::{IsTerminal, Write};

use chrono::{DateTime, Utc};
use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{ColumnConstraint, ContentArrangement, Table};
use flamenco_core::model::ObjectId;

/// Write to stdout. A closed pipe (`flamenco queue list | head -1`) exits the process at
/// once with status 0, as Unix tools do; any other write error is reported as an error.
/// Used through the `outln!` and `out!` macros.
pub fn write_stdout(args: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(anyhow::anyhow!("cannot write the output: {e}")),
    }
}

/// How many characters of an id the tables show: the end of the id (its first 8 are the
/// creation time, the same for everything made in one second). Commands accept it back
/// (see `ids::resolve`).
pub const SHORT_ID: usize = 8;

/// The last [`SHORT_ID`] characters of an id.
pub fn short_id(id: &ObjectId) -> String {
    let hex = id.to_hex();
    hex[hex.len() - SHORT_ID..].to_string()
}

/// The text cut to `max` characters, with `…` at the end when cut.
pub fn cut(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() > max || line.len() < text.trim_end().len() {
        let kept: String = line.chars().take(max.saturating_sub(1)).collect();
        format!("{kept}…")
    } else {
        line.to_string()
    }
}

/// The width tables must fit: the terminal's when stdout is one, else `COLUMNS` when set,
/// else none (no wrapping: the output goes to a file or a program).
fn table_width() -> Option<u16> {
    if std::io::stdout().is_terminal() {
        if let Some((w, _)) = terminal_width().filter(|(w, _)| *w >= 20) {
            return Some(w);
        }
    }
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<u16>().ok())
        .filter(|w| *w >= 20)
}

fn terminal_width() -> Option<(u16, u16)> {
    // comfy-table asks the terminal itself; a fresh table tells us what it found.
    let t = Table::new();
    t.width().map(|w| (w, 0))
}

/// A table with our house style. Columns named in `fixed` (ids, statuses, times) are never
/// wrapped; the others wrap to fit the width (see [`table_width`]).
pub fn table(header: &[&str], fixed: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.iter().copied());
    if let Some(width) = table_width() {
        t.set_width(width);
    }
    for (i, name) in header.iter().enumerate() {
        if fixed.contains(name) {
            if let Some(column) = t.column_mut(i) {
                column.set_constraint(ColumnConstraint::ContentWidth);
            }
        }
    }
    t
}

/// "3s ago", "5m ago", "2h ago", "4d ago", or "-" for no time.
pub fn ago(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    let Some(t) = t else {
        return "-".to_string();
    };
    let secs = (now - t).num_seconds();
    if secs < 0 {
        return "in the future".to_string();
    }
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86_399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// Print one JSON value per line.
pub fn json_line<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    write_stdout(format_args!("{}\n", serde_json::to_string(value)?))
}

/// Print one JSON document, indented.
pub fn json_doc<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    write_stdout(format_args!("{}\n", serde_json::to_string_pretty(value)?))
}

/// The error and its causes, joined with ": ", each said once: a cause whose text the
/// message already contains (many errors repeat their source in their own text) is left
/// out.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if part.is_empty() || text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn humanised_ages() {
        let now = Utc::now();
        assert_eq!(ago(None, now), "-");
        assert_eq!(ago(Some(now - chrono::Duration::seconds(5)), now), "5s ago");
        assert_eq!(ago(Some(now - chrono::Duration::minutes(7)), now), "7m ago");
        assert_eq!(ago(Some(now - chrono::Duration::hours(3)), now), "3h ago");
        assert_eq!(ago(Some(now - chrono::Duration::days(2)), now), "2d ago");
    }

    #[test]
    fn short_ids_and_cut_cells() {
        let id = ObjectId::parse("5852bc5198377351f95d103e").unwrap();
        assert_eq!(short_id(&id), "f95d103e");
        assert_eq!(cut("short", 10), "short");
        assert_eq!(cut("a long activity text", 10), "a long ac…");
        assert_eq!(cut("two\nlines", 10), "two…");
    }

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use");
        let e = anyhow::Error::new(io).context(
            "cannot listen on 127.0.0.1:1: Address already in use. Is another Manager running?",
        );
        let text = error_text(&e);
        assert_eq!(text.matches("Address already in use").count(), 1, "{text}");
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_text(&e), "outer: inner");
    }
}

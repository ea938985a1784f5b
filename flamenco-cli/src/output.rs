//! Shared output helpers: tables, humanised times, one-JSON-object-per-line.

use chrono::{DateTime, Utc};
use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{ContentArrangement, Table};

/// A table with our house style.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.iter().copied());
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
    println!("{}", serde_json::to_string(value)?);
    Ok(())
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
}

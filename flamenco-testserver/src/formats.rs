//! The Server's text formats: ObjectIds, etags, tokens, RFC 1123 dates in documents,
//! Python `isoformat()` in `X-Flamenco-Last-Updated`, and the lenient parsing of
//! `X-Flamenco-If-Updated-Since` (`dateutil.parser.parse`).

use std::sync::atomic::{AtomicU32, Ordering};

use base64::Engine;
use chrono::{DateTime, NaiveDateTime, TimeZone, Timelike, Utc};

/// A new ObjectId in its 24-hex form: 4 bytes of seconds, 5 random, a 3-byte counter.
pub fn new_object_id() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let secs = Utc::now().timestamp() as u32;
    let random: [u8; 5] = rand::random();
    let count = COUNTER.fetch_add(1, Ordering::Relaxed) & 0x00ff_ffff;
    let mut bytes = Vec::with_capacity(12);
    bytes.extend_from_slice(&secs.to_be_bytes());
    bytes.extend_from_slice(&random);
    bytes.extend_from_slice(&count.to_be_bytes()[1..]);
    hex::encode(bytes)
}

/// Is this a 24-character hex ObjectId (either case)?
pub fn is_object_id(s: &str) -> bool {
    s.len() == 24 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A random Eve etag: 32 lowercase hex characters.
pub fn new_etag() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// A Manager token as `create_manager` makes them: `SRV` + base64 of 32 random bytes with
/// `xy` as the altchars and no padding (46 characters).
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes);
    let b64: String = b64
        .chars()
        .map(|c| match c {
            '+' => 'x',
            '/' => 'y',
            c => c,
        })
        .collect();
    format!("SRV{b64}")
}

/// Now, truncated to milliseconds (MongoDB's precision).
pub fn now_ms() -> DateTime<Utc> {
    truncate_ms(Utc::now())
}

pub fn truncate_ms(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// Pillar's JSON encoding of a datetime: `Sat, 28 Nov 2026 07:18:59 GMT`.
pub fn rfc1123(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// Python's `isoformat()` of a UTC-aware datetime with millisecond precision:
/// `2026-11-28T07:18:59.861000+00:00`, or `2017-06-23T10:00:00+00:00` when the fraction
/// is zero.
pub fn python_isoformat(t: DateTime<Utc>) -> String {
    let micros = t.nanosecond() / 1000;
    if micros == 0 {
        t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
    } else {
        format!("{}.{micros:06}+00:00", t.format("%Y-%m-%dT%H:%M:%S"))
    }
}

/// Parse `X-Flamenco-If-Updated-Since` the way `dateutil.parser.parse` would for the values
/// a Manager sends: ISO 8601 with or without offset or fraction, or an HTTP date. A value
/// without an offset is taken as UTC. `None` is what makes the Server answer 500.
pub fn parse_since(text: &str) -> Option<DateTime<Utc>> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Some(d.with_timezone(&Utc));
    }
    if let Ok(d) = DateTime::parse_from_rfc2822(t) {
        return Some(d.with_timezone(&Utc));
    }
    for layout in [
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%z",
        "%Y-%m-%dT%H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%.f%:z",
    ] {
        if let Ok(d) = DateTime::parse_from_str(t, layout) {
            return Some(d.with_timezone(&Utc));
        }
    }
    for layout in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(d) = NaiveDateTime::parse_from_str(t, layout) {
            return Some(Utc.from_utc_datetime(&d));
        }
    }
    if let Ok(d) = DateTime::parse_from_str(&format!("{t} +0000"), "%a, %d %b %Y %H:%M:%S GMT %z") {
        return Some(d.with_timezone(&Utc));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isoformat_like_python() {
        let t = DateTime::from_timestamp_millis(1_795_850_339_861).unwrap();
        assert_eq!(python_isoformat(t), "2026-11-28T07:18:59.861000+00:00");
        let t = DateTime::from_timestamp(1_498_212_000, 0).unwrap();
        assert_eq!(python_isoformat(t), "2017-06-23T10:00:00+00:00");
        assert_eq!(parse_since(&python_isoformat(t)), Some(t));
        assert_eq!(rfc1123(t), "Fri, 23 Jun 2017 10:00:00 GMT");
        assert_eq!(parse_since(&rfc1123(t)), Some(t));
        assert_eq!(parse_since("2017-06-23T10:00:00"), Some(t));
        assert_eq!(parse_since("garbage"), None);
    }

    #[test]
    fn ids_and_tokens() {
        assert!(is_object_id(&new_object_id()));
        assert_ne!(new_object_id(), new_object_id());
        let token = new_token();
        assert_eq!(token.len(), 46);
        assert!(token.starts_with("SRV"));
        assert_eq!(new_etag().len(), 32);
    }
}

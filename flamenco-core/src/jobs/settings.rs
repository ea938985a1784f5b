//! Reading a job's settings with errors that name the setting: what every job type's
//! validation uses.

use serde_json::{Map, Value};

use super::frames::FrameSet;
use super::InvalidSetting;

/// A job's settings, read one key at a time. Every error names the setting
/// (`settings.<key>`) and says what was expected.
#[derive(Clone, Copy, Debug)]
pub struct Settings<'a> {
    map: &'a Map<String, Value>,
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

impl<'a> Settings<'a> {
    pub fn new(map: &'a Map<String, Value>) -> Settings<'a> {
        Settings { map }
    }

    /// The error for `key`.
    pub fn invalid(&self, key: &str, why: impl std::fmt::Display) -> InvalidSetting {
        InvalidSetting::new(key, why)
    }

    /// Refuse settings this job type does not know (a typo would otherwise be ignored).
    /// Every unknown setting is named.
    pub fn only(&self, known: &[&str]) -> Result<(), InvalidSetting> {
        let unknown = self
            .map
            .keys()
            .filter(|k| !known.contains(&k.as_str()))
            .map(|k| {
                self.invalid(
                    k,
                    format!("unknown setting; this job type knows {}", known.join(", ")),
                )
            })
            .collect();
        match InvalidSetting::all(unknown) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The raw value, `None` when absent or null.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// A non-empty string.
    pub fn required_str(&self, key: &str) -> Result<&'a str, InvalidSetting> {
        self.optional_str(key)?
            .ok_or_else(|| self.invalid(key, "required, a non-empty string"))
    }

    /// A non-empty string when given.
    pub fn optional_str(&self, key: &str) -> Result<Option<&'a str>, InvalidSetting> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s)),
            Some(Value::String(_)) => Err(self.invalid(key, "must not be empty")),
            Some(other) => {
                Err(self.invalid(key, format!("expected a string, found {}", kind(other))))
            }
        }
    }

    /// An integer of at least 1, or `default` when absent (`None`: required).
    pub fn positive_int(&self, key: &str, default: Option<u64>) -> Result<u64, InvalidSetting> {
        match (self.get(key), default) {
            (None, Some(d)) => Ok(d),
            (None, None) => Err(self.invalid(key, "required, an integer of at least 1")),
            (Some(Value::Number(n)), _) => match n.as_u64() {
                Some(v) if v >= 1 => Ok(v),
                _ => {
                    Err(self.invalid(key, format!("expected an integer of at least 1, found {n}")))
                }
            },
            (Some(other), _) => Err(self.invalid(
                key,
                format!("expected an integer of at least 1, found {}", kind(other)),
            )),
        }
    }

    /// A number of seconds, at least 0 (integer or not); returned as given.
    pub fn seconds(&self, key: &str) -> Result<serde_json::Number, InvalidSetting> {
        match self.get(key) {
            None => Err(self.invalid(key, "required, a number of seconds")),
            Some(Value::Number(n)) if n.as_f64().is_some_and(|f| f >= 0.0 && f.is_finite()) => {
                Ok(n.clone())
            }
            Some(Value::Number(n)) => Err(self.invalid(
                key,
                format!("expected a number of seconds of at least 0, found {n}"),
            )),
            Some(other) => Err(self.invalid(
                key,
                format!("expected a number of seconds, found {}", kind(other)),
            )),
        }
    }

    /// A frame range (`1-10,20,30-40`, or a single frame number).
    pub fn frames(&self, key: &str) -> Result<FrameSet, InvalidSetting> {
        match self.get(key) {
            None => Err(self.invalid(key, "required, a frame range like 1-10,20,30-40")),
            Some(Value::String(s)) => FrameSet::parse(s).map_err(|e| self.invalid(key, e)),
            Some(Value::Number(n)) => match n.as_u64().and_then(|f| u32::try_from(f).ok()) {
                Some(f) => Ok(FrameSet::from_runs(vec![(f, f)])),
                None => Err(self.invalid(key, format!("{n} is not a frame number"))),
            },
            Some(other) => Err(self.invalid(
                key,
                format!(
                    "expected a frame range like 1-10,20,30-40, found {}",
                    kind(other)
                ),
            )),
        }
    }

    /// One non-empty string, or a non-empty list of them.
    pub fn string_or_list(&self, key: &str) -> Result<Vec<&'a str>, InvalidSetting> {
        match self.get(key) {
            None => Err(self.invalid(key, "required, a string or a list of strings")),
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(vec![s.as_str()]),
            Some(Value::Array(items)) if !items.is_empty() => items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) if !s.trim().is_empty() => Ok(s.as_str()),
                    other => Err(self.invalid(
                        key,
                        format!(
                            "item {} must be a non-empty string, found {}",
                            i + 1,
                            if other.is_string() {
                                "an empty string"
                            } else {
                                kind(other)
                            }
                        ),
                    )),
                })
                .collect(),
            Some(Value::String(_)) | Some(Value::Array(_)) => {
                Err(self.invalid(key, "must not be empty"))
            }
            Some(other) => Err(self.invalid(
                key,
                format!(
                    "expected a string or a list of strings, found {}",
                    kind(other)
                ),
            )),
        }
    }
}

/// Collects the problems of several checks, so that a job type reports every bad or
/// missing setting at once instead of the first:
///
/// ```ignore
/// let mut p = Problems::default();
/// let frames = p.check(s.frames("frames"));
/// let seconds = p.check(s.seconds("time_in_seconds"));
/// p.finish()?;
/// let (Some(frames), Some(seconds)) = (frames, seconds) else { return Err(p.unexpected()) };
/// ```
#[derive(Debug, Default)]
pub struct Problems(Vec<InvalidSetting>);

impl Problems {
    /// The value of a check that passed; a failed one is kept and gives `None`.
    pub fn check<T>(&mut self, result: Result<T, InvalidSetting>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.push(e);
                None
            }
        }
    }

    /// Keep a problem found otherwise.
    pub fn push(&mut self, problem: InvalidSetting) {
        self.0.push(problem);
    }

    /// `Err` with every problem kept, if any.
    pub fn finish(&mut self) -> Result<(), InvalidSetting> {
        match InvalidSetting::all(std::mem::take(&mut self.0)) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// For the `else` of a destructuring after [`Problems::finish`] passed (cannot happen:
    /// every `None` came with a problem).
    pub fn unexpected(&self) -> InvalidSetting {
        InvalidSetting::new("", "the settings could not be read")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn errors_name_the_setting() {
        let m = map(json!({"a": 0, "b": "", "c": [1], "f": "1-x", "s": -1, "x": "hi"}));
        let s = Settings::new(&m);
        let e = s.positive_int("a", None).unwrap_err();
        assert_eq!(e.field(), "settings.a");
        assert!(e.to_string().contains("setting `a`"), "{e}");
        assert!(s.required_str("b").unwrap_err().to_string().contains("`b`"));
        assert!(s
            .string_or_list("c")
            .unwrap_err()
            .to_string()
            .contains("item 1"));
        assert!(s.frames("f").unwrap_err().to_string().contains("1-x"));
        assert!(s.seconds("s").unwrap_err().to_string().contains("`s`"));
        assert!(s
            .required_str("missing")
            .unwrap_err()
            .to_string()
            .contains("required"));
        assert_eq!(s.positive_int("missing", Some(3)).unwrap(), 3);
        assert_eq!(
            s.only(&["a", "b", "c", "f", "s"]).unwrap_err().field(),
            "settings.x"
        );
        assert_eq!(s.string_or_list("x").unwrap(), ["hi"]);
        let both = s.only(&["a", "b", "c", "f"]).unwrap_err();
        assert_eq!(both.count(), 2, "every unknown setting: {both}");
        assert!(both.to_string().contains("`s`") && both.to_string().contains("`x`"));
    }

    #[test]
    fn problems_are_collected() {
        let m = map(json!({"a": 0}));
        let s = Settings::new(&m);
        let mut p = Problems::default();
        assert_eq!(p.check(s.positive_int("a", None)), None);
        assert_eq!(p.check(s.positive_int("b", Some(2))), Some(2));
        assert_eq!(p.check(s.required_str("c")), None);
        let e = p.finish().unwrap_err();
        assert_eq!(e.count(), 2);
        assert_eq!(e.field(), "settings.a");
        let text = e.to_string();
        assert!(text.starts_with("2 problems with the settings:"), "{text}");
        assert!(
            text.contains("setting `a`") && text.contains("setting `c`"),
            "{text}"
        );
        assert!(p.finish().is_ok(), "finish takes the problems");
    }

    #[test]
    fn frames_accept_a_single_number() {
        let m = map(json!({"frames": 7}));
        assert_eq!(
            Settings::new(&m).frames("frames").unwrap().runs(),
            &[(7, 7)]
        );
    }
}

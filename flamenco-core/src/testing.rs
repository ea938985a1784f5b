//! Test support shared by this workspace's test suites (not part of the SDK proper):
//! visible skips of the suites that need an external component (a MongoDB server, a
//! browser, a Python worker, Blender).
//!
//! The rule: under `CI=true` a missing component is a failure; elsewhere the test returns
//! early and the skip is *seen*. The test harness captures `print!`/`eprint!` of passing
//! tests, so [`skip_or_fail`] writes straight to the process's stderr, and when the test
//! binary exits (after the harness's `test result:` line) it prints one line per
//! component saying how many of the tests counted as passed were in fact skipped, and
//! why. Without that, a suite of skipped tests reports "47 passed" and nothing else.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Mutex, Once};

/// Whether the tests run under CI (`CI=true` or `CI=1`), where skips are failures.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skipped tests per component.
type Skips = BTreeMap<String, Skipped>;

#[derive(Debug, PartialEq)]
struct Skipped {
    count: usize,
    /// The first reason given, with its hint.
    reason: String,
}

static SKIPPED: Mutex<Skips> = Mutex::new(BTreeMap::new());
static AT_EXIT: Once = Once::new();

/// `test` cannot run because `component` (e.g. "MongoDB", "browser") is missing: `why`,
/// and `hint` says how to provide it. Under CI this panics, so the test fails. Otherwise
/// it writes a `NOTICE:` line to the process's stderr (which the harness does not
/// capture), counts the skip for the summary printed when the test binary exits, and
/// returns; the caller then returns from the test.
pub fn skip_or_fail(component: &str, test: &str, why: &str, hint: &str) {
    if under_ci() {
        panic!("{component} test {test} cannot run under CI=true: {why}; {hint}");
    }
    record(
        &mut SKIPPED.lock().unwrap_or_else(|e| e.into_inner()),
        component,
        &format!("{why}; {hint}"),
    );
    AT_EXIT.call_once(|| {
        // SAFETY: C's `atexit` only stores the pointer; `print_summary` is an
        // `extern "C" fn()` that takes nothing, only writes to stderr, and does not panic.
        unsafe {
            atexit(print_summary);
        }
    });
    let _ = writeln!(
        std::io::stderr(),
        "NOTICE: {component} test {test} SKIPPED: {why}"
    );
}

fn record(skips: &mut Skips, component: &str, reason: &str) {
    skips
        .entry(component.to_string())
        .or_insert_with(|| Skipped {
            count: 0,
            reason: reason.to_string(),
        })
        .count += 1;
}

fn summary(skips: &Skips) -> Vec<String> {
    skips
        .iter()
        .map(|(component, s)| {
            format!(
                "NOTICE: {} {component} test(s) of this test binary were SKIPPED, not run \
                 (the `passed` count above includes them): {}. Under CI=true they fail instead.",
                s.count, s.reason
            )
        })
        .collect()
}

unsafe extern "C" {
    fn atexit(f: extern "C" fn()) -> std::os::raw::c_int;
}

/// Runs when the test binary exits, after the harness's summary line.
extern "C" fn print_summary() {
    let lines = summary(&SKIPPED.lock().unwrap_or_else(|e| e.into_inner()));
    let mut err = std::io::stderr().lock();
    for line in lines {
        let _ = writeln!(err, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_are_counted_per_component_with_the_first_reason() {
        let mut skips = Skips::new();
        record(&mut skips, "MongoDB", "URL not set; run scripts/test.sh");
        record(&mut skips, "MongoDB", "another reason");
        record(&mut skips, "browser", "no chromium; install it");
        let lines = summary(&skips);
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with("NOTICE: 2 MongoDB test(s)") && lines[0].contains("SKIPPED"),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains("URL not set; run scripts/test.sh"));
        assert!(lines[1].starts_with("NOTICE: 1 browser test(s)"));
    }
}

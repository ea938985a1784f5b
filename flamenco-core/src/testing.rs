//! Test support shared by this workspace's test suites (not part of the SDK proper):
//! visible skips of the suites that need an external component (a MongoDB server, a
//! browser, a Python worker, Blender), and [`wait_until`], the one way tests wait for
//! something to happen (never a fixed sleep).
//!
//! The rule: under `CI=true` a missing component is a failure; elsewhere the test returns
//! early and the skip is *seen*. The test harness captures `print!`/`eprint!` of passing
//! tests, so [`skip_or_fail`] writes straight to the process's stderr, and when the test
//! binary exits (after the harness's `test result:` line) it prints one line per
//! component saying how many of the tests counted as passed were in fact skipped, and
//! why. Without that, a suite of skipped tests reports "47 passed" and nothing else.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

/// How long [`wait_until`] waits: generous, it only bounds how long a broken build takes
/// to fail on a loaded machine.
pub const WAIT_LIMIT: Duration = Duration::from_secs(30);

/// Poll `check` (every 25 ms) until it returns true; panic with `what` after
/// [`WAIT_LIMIT`]. Tests wait with this for an observable condition, not with a sleep.
pub async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT_LIMIT;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("not within {WAIT_LIMIT:?}: {what}");
}

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

/// A small disk for tests that fill one: a tmpfs of a given size mounted on a fresh
/// directory, unmounted and removed when dropped.
pub struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    /// Mount a tmpfs of `bytes` for `test`. Mounting needs root (with `CAP_SYS_ADMIN` in a
    /// container); without it, this is a skip (see [`skip_or_fail`]) and `None`.
    pub fn mount(test: &str, bytes: u64) -> Option<SmallDisk> {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("flamenco-small-disk-{}-{n}", std::process::id()));
        if let Err(e) = std::fs::create_dir_all(&path) {
            panic!("cannot create {}: {e}", path.display());
        }
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(&path)
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(SmallDisk { path }),
            other => {
                let _ = std::fs::remove_dir(&path);
                let why = match other {
                    Ok(out) => format!(
                        "`mount -t tmpfs` failed: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                    Err(e) => format!("cannot run `mount`: {e}"),
                };
                skip_or_fail(
                    "small-disk (tmpfs)",
                    test,
                    &why,
                    "run the tests as root, or in a container with CAP_SYS_ADMIN",
                );
                None
            }
        }
    }

    /// Where the disk is mounted.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Fill the disk: write zeros to `<disk>/filler` until no space is left. Returns its
    /// size.
    pub fn fill(&self) -> u64 {
        let mut file = std::fs::File::create(self.path.join("filler")).expect("create the filler");
        let block = vec![0u8; 64 * 1024];
        let mut written = 0u64;
        let mut size = block.len();
        while size > 0 {
            match file.write(&block[..size]) {
                Ok(0) => size /= 2,
                Ok(n) => written += n as u64,
                Err(_) => size /= 2,
            }
        }
        let _ = file.sync_all();
        written
    }

    /// Make room again: remove the filler.
    pub fn free(&self) {
        let _ = std::fs::remove_file(self.path.join("filler"));
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy: a process still holding a file there does not keep the mount busy.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
        let _ = std::fs::remove_dir_all(&self.path);
    }
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

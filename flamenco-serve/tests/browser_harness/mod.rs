//! The browser tests' harness: find Chromium and ChromeDriver, run one ChromeDriver child
//! process per test (in its own process group, killed with everything it started when the
//! test ends), drive headless Chromium through it with fantoccini, poll the page until a
//! condition holds, and save screenshots to `target/browser-artifacts/`.
//!
//! When Chromium or ChromeDriver is missing the tests skip with a `NOTICE:` line on stderr,
//! except under `CI=true`, where that is a failure.

#![allow(dead_code)]

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use futures::FutureExt;
use serde_json::{json, Map, Value};

/// How long a wait polls before it fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// The browser tests run one at a time: one ChromeDriver and one Chromium on the machine.
pub static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Chromium's flags: headless, and nothing that reaches for the network on its own (on a
/// closed network Chromium otherwise hangs on start).
const CHROMIUM_ARGS: [&str; 10] = [
    "--headless",
    // Screenshots without the desktop scrollbar (a phone has none).
    "--hide-scrollbars",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,800",
];

/// A headless Chromium session driven through a ChromeDriver child process.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
    log_path: PathBuf,
}

/// Where screenshots go: `<workspace>/target/browser-artifacts/` (or under
/// `CARGO_TARGET_DIR`).
pub fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap_or(Path::new("."))
                .join("target")
        });
    target.join("browser-artifacts")
}

fn find_program(env_var: &str, names: &[&str]) -> Result<PathBuf, String> {
    if let Some(given) = std::env::var_os(env_var) {
        let path = PathBuf::from(given);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{env_var}={} is not a file", path.display()))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(format!(
        "none of {} found on PATH (or set {env_var})",
        names.join(", ")
    ))
}

/// The browser is not available: a failure under `CI=true`, a visible skip otherwise.
fn unavailable(test: &str, why: &str) {
    let hint = "install Debian's `chromium` and `chromium-driver` (.ci/run does), or point \
                FLAMENCO_TEST_CHROMIUM / FLAMENCO_TEST_CHROMEDRIVER at them";
    // Past the harness's capture, and counted in a summary after `test result:`.
    flamenco_core::testing::skip_or_fail("browser", test, why, hint);
}

fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

impl Browser {
    /// Start ChromeDriver and a headless Chromium at 1280×800, or `None` (after the notice)
    /// when they are not installed. Panics under `CI=true` when they are missing, and
    /// whenever they are installed but do not start.
    pub async fn start(test: &str) -> Option<Browser> {
        let chromium = match find_program(
            "FLAMENCO_TEST_CHROMIUM",
            &[
                "chromium",
                "chromium-browser",
                "google-chrome",
                "google-chrome-stable",
            ],
        ) {
            Ok(p) => p,
            Err(why) => {
                unavailable(test, &format!("Chromium: {why}"));
                return None;
            }
        };
        let chromedriver = match find_program("FLAMENCO_TEST_CHROMEDRIVER", &["chromedriver"]) {
            Ok(p) => p,
            Err(why) => {
                unavailable(test, &format!("ChromeDriver: {why}"));
                return None;
            }
        };

        let profile = tempfile::tempdir().expect("a temporary Chromium profile directory");
        let log_path = profile.path().join("chromedriver.log");
        let log = std::fs::File::create(&log_path).expect("the ChromeDriver log file");
        let port = free_port().expect("a free loopback port for ChromeDriver");
        let mut driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log_path.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            // Its own process group, so that ending the test ends Chromium too.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));

        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = driver.try_wait() {
                panic!(
                    "ChromeDriver ({}) exited with {status} before listening on port {port}; its log:\n{}",
                    chromedriver.display(),
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                kill_group(&mut driver);
                panic!(
                    "ChromeDriver did not listen on port {port} within {WAIT:?}; its log:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|s| s.to_string()).collect();
        args.push(format!(
            "--user-data-dir={}",
            profile.path().join("profile").display()
        ));
        let mut caps = Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": chromium.display().to_string(), "args": args}),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let mut builder = ClientBuilder::new(connector);
        builder.capabilities(caps);
        let url = format!("http://127.0.0.1:{port}");
        let connect = builder.connect(&url);
        let client = match tokio::time::timeout(Duration::from_secs(60), connect).await {
            Ok(Ok(client)) => client,
            outcome => {
                kill_group(&mut driver);
                let why = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => "no session within 60 s".to_string(),
                };
                panic!(
                    "ChromeDriver could not start Chromium ({}): {why}; ChromeDriver's log:\n{}",
                    chromium.display(),
                    tail(&std::fs::read_to_string(&log_path).unwrap_or_default(), 60)
                );
            }
        };
        let browser = Browser {
            client,
            driver,
            _profile: profile,
            log_path,
        };
        // Every screenshot at a 1280×800 viewport (the window adds Chromium's frame).
        browser.goto("about:blank").await;
        let viewport = browser.set_viewport(1280, 800).await;
        assert_eq!(viewport, (1280, 800), "the browser's viewport");
        // A failure of an earlier run must not be mistaken for one of this run.
        for ext in ["png", "html"] {
            let _ = std::fs::remove_file(artifacts_dir().join(format!("{test}-failure.{ext}")));
        }
        Some(browser)
    }

    /// Load `url` and wait until the page has finished loading.
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("loading {url}: {e}"));
    }

    /// Run `script` (a function body: use `return`) in the page and give its result.
    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("running script in the page: {e}\nscript: {script}"))
    }

    /// Run `script` with `arguments[0] = arg`.
    pub async fn js_with(&self, script: &str, arg: Value) -> Value {
        self.client
            .execute(script, vec![arg])
            .await
            .unwrap_or_else(|e| panic!("running script in the page: {e}\nscript: {script}"))
    }

    /// Poll `probe` (every 100 ms, up to [`WAIT`]) until it gives `Ok`; panic with `what`
    /// and the last observation otherwise.
    pub async fn wait_for<T, F, Fut>(&self, what: &str, mut probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        let deadline = Instant::now() + WAIT;
        loop {
            match probe().await {
                Ok(value) => return value,
                Err(seen) => {
                    if Instant::now() > deadline {
                        panic!("waited {WAIT:?} for {what}; last seen: {seen}");
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait until `script` returns something other than `null`/`false`/`undefined`; give it.
    pub async fn wait_js(&self, what: &str, script: &str) -> Value {
        self.wait_for(what, || async move {
            let v = self.js(script).await;
            match v {
                Value::Null | Value::Bool(false) => Err(v.to_string()),
                v => Ok(v),
            }
        })
        .await
    }

    /// The text of the first element matching `selector` (trimmed), or `None`.
    pub async fn text(&self, selector: &str) -> Option<String> {
        match self
            .js_with(
                "const e = document.querySelector(arguments[0]); return e ? e.textContent.trim() : null;",
                json!(selector),
            )
            .await
        {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// Size the window so that the page's viewport is `width`×`height` CSS pixels (the
    /// window includes Chromium's own frame); gives the resulting `[innerWidth,
    /// innerHeight]`.
    pub async fn set_viewport(&self, width: u32, height: u32) -> (u64, u64) {
        let mut inner = (0, 0);
        // Twice: the frame's size is only known once a page is shown at some size.
        for _ in 0..2 {
            let frame = self
                .js("return [window.outerWidth - window.innerWidth, window.outerHeight - window.innerHeight];")
                .await;
            let dw = frame[0].as_u64().unwrap_or(0) as u32;
            let dh = frame[1].as_u64().unwrap_or(0) as u32;
            self.client
                .set_window_size(width + dw, height + dh)
                .await
                .unwrap_or_else(|e| {
                    panic!("resizing the window for a {width}×{height} viewport: {e}")
                });
            let v = self
                .js("return [window.innerWidth, window.innerHeight];")
                .await;
            inner = (v[0].as_u64().unwrap_or(0), v[1].as_u64().unwrap_or(0));
            if inner == (u64::from(width), u64::from(height)) {
                break;
            }
        }
        inner
    }

    /// Save a screenshot of the viewport as `target/browser-artifacts/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("taking screenshot {name}: {e}"));
        let dir = artifacts_dir();
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, &png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        eprintln!("screenshot: {}", path.display());
        path
    }

    /// Save a screenshot of the whole page at the current width (the viewport is made as
    /// tall as the page, up to 8000 pixels, then put back) as `<name>.png`.
    pub async fn screenshot_full_page(&self, name: &str) -> PathBuf {
        let v = self
            .js("return [window.innerWidth, window.innerHeight, document.documentElement.scrollHeight];")
            .await;
        let size = |i: usize| v[i].as_u64().unwrap_or(0) as u32;
        let (width, height, full) = (size(0), size(1), size(2).min(8000));
        self.set_viewport(width, full.max(height)).await;
        let path = self.screenshot(name).await;
        self.set_viewport(width, height).await;
        path
    }

    /// End the session: on a failed scenario first save `<test>-failure.png` and the page's
    /// HTML, then close Chromium and ChromeDriver, then re-raise the failure.
    pub async fn finish(self, test: &str, outcome: std::thread::Result<()>) {
        if outcome.is_err() {
            let shot = AssertUnwindSafe(self.screenshot(&format!("{test}-failure")))
                .catch_unwind()
                .await;
            if shot.is_err() {
                eprintln!("(no failure screenshot could be taken)");
            }
            if let Ok(html) = self.client.source().await {
                let path = artifacts_dir().join(format!("{test}-failure.html"));
                if std::fs::write(&path, html).is_ok() {
                    eprintln!("page source: {}", path.display());
                }
            }
        }
        self.close().await;
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }

    /// Close the WebDriver session (Chromium exits), then stop ChromeDriver.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.client.clone().close()).await;
        kill_group(&mut self.driver);
    }

    /// ChromeDriver's log so far (for failure messages).
    pub fn driver_log(&self) -> String {
        tail(
            &std::fs::read_to_string(&self.log_path).unwrap_or_default(),
            40,
        )
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.driver);
    }
}

/// SIGKILL ChromeDriver's process group (ChromeDriver and the Chromium it started), then
/// reap ChromeDriver. Harmless when they are gone already.
fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

//! The last-rendered image over HTTP: `/output-produced` → conversion → `/imagewatch`
//! event → `/latest-image.jpg` (with ETag revalidation), its description, and the page;
//! and the hostile-input probes of issue 13: huge reports (memory and log growth) and a
//! FIFO reported as a frame.

mod common;

use std::time::Duration;

use common::{CapturedLog, TestManager, TestWorker};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The memory probe measures this process's RSS: the other tests of this file wait.
static EXCLUSIVE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Read an event stream until `needle` appears, or fail after `secs`.
async fn read_until(resp: &mut reqwest::Response, needle: &str, secs: u64) -> String {
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !seen.contains(needle) {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} within {secs} s; got {seen:?}"))
            .expect("read the event stream")
            .unwrap_or_else(|| panic!("the stream ended before {needle:?}; got {seen:?}"));
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    seen
}

fn write_png(dir: &std::path::Path, name: &str, width: u32, height: u32) -> String {
    let path = dir.join(name);
    image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, 90])
    })
    .save(&path)
    .expect("write the test PNG");
    path.display().to_string()
}

#[tokio::test]
async fn output_produced_becomes_the_latest_image() {
    let _one = EXCLUSIVE.lock().await;
    let tm = TestManager::start().await;
    let w = tm.register("renderer", "linux", &["blender-render"]).await;
    let renders = tempfile::tempdir().unwrap();

    // Nothing yet: clear 404s.
    for path in [
        "/latest-image.jpg",
        "/static/latest-image.jpg",
        "/api/latest-image",
    ] {
        let resp = tm.client.get(tm.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("no image"),
            "{path}: {body}"
        );
    }

    let mut events = tm.client.get(tm.url("/imagewatch")).send().await.unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    assert_eq!(events.headers()["content-type"], "text/event-stream");

    let frame = write_png(renders.path(), "frame_0001.png", 640, 360);
    let resp = w
        .post_json("/output-produced", &json!({"paths": [frame]}))
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let got = read_until(&mut events, "data: latest-image.jpg", 30).await;
    assert!(got.contains("event: image"), "{got:?}");
    assert!(got.contains("id: 1"), "{got:?}");

    let resp = tm
        .client
        .get(tm.url("/latest-image.jpg"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "image/jpeg");
    assert_eq!(resp.headers()["cache-control"], "no-cache");
    let etag = resp.headers()["etag"].to_str().unwrap().to_string();
    assert!(etag.starts_with('"') && etag.len() > 2, "{etag}");
    let jpeg = resp.bytes().await.unwrap();
    let decoded = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg)
        .expect("a decodable JPEG");
    assert_eq!((decoded.width(), decoded.height()), (640, 360));

    // Revalidation: 304 without a body while the image is the same.
    let resp = tm
        .client
        .get(tm.url("/latest-image.jpg"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(resp.headers()["etag"].to_str().unwrap(), etag);
    assert!(resp.bytes().await.unwrap().is_empty());
    // Another tag gets the image.
    let resp = tm
        .client
        .get(tm.url("/latest-image.jpg"))
        .header("If-None-Match", "\"something-else\"")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // v2's address serves the same bytes; the description matches; it is saved in data_dir.
    let v2 = tm
        .client
        .get(tm.url("/static/latest-image.jpg"))
        .send()
        .await
        .unwrap();
    assert_eq!(v2.status(), StatusCode::OK);
    assert_eq!(v2.bytes().await.unwrap(), jpeg);
    let info: Value = tm
        .client
        .get(tm.url("/api/latest-image"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["version"], 1);
    assert_eq!(info["width"], 640);
    assert_eq!(info["height"], 360);
    assert_eq!(info["source_path"], frame);
    assert!(info["updated"].as_str().is_some(), "{info}");
    let saved = std::fs::read(tm.manager.config().data_dir.join("latest-image.jpg")).unwrap();
    assert_eq!(saved, jpeg.as_ref());

    // Bad input: an empty list is 422; a relative path, a text file and a missing file are
    // accepted (204) but leave the image as it was.
    let resp = w.post_json("/output-produced", &json!({"paths": []})).await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let text = renders.path().join("notes.png");
    std::fs::write(&text, "not an image").unwrap();
    let resp = w
        .post_json(
            "/output-produced",
            &json!({"paths": ["relative/frame.png", text.display().to_string(),
                              renders.path().join("missing.exr").display().to_string()]}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    // A good frame after them is the next image, so the bad ones have been handled by then.
    let second = write_png(renders.path(), "frame_0002.png", 3200, 1800);
    let resp = w
        .post_json("/output-produced", &json!({"paths": [second]}))
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let got = read_until(&mut events, "id: 2", 60).await;
    assert!(!got.contains("id: 3"), "{got:?}");
    let info = tm.manager.latest_image_info().unwrap();
    assert_eq!(info.version, 2, "bad paths do not make images");
    assert_eq!((info.width, info.height), (1920, 1080), "scaled down");
    let resp = tm
        .client
        .get(tm.url("/latest-image.jpg"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "a new image has a new ETag");

    // Without credentials /output-produced is refused.
    let resp = tm
        .client
        .post(tm.url("/output-produced"))
        .json(&json!({"paths": [frame]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // Closing the pipeline (as the daemon does when shutdown begins) ends the streams.
    tm.manager.latest_images().close();
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(_)) = events.chunk().await {}
    })
    .await;
    assert!(
        end.is_ok(),
        "the event stream ends when the pipeline closes"
    );
    drop(events);
    tm.stop().await;
}

#[tokio::test]
async fn the_full_screen_page_follows_imagewatch() {
    let _one = EXCLUSIVE.lock().await;
    let tm = TestManager::start().await;
    let resp = tm.client.get(tm.url("/latest-image")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = resp.text().await.unwrap();
    assert!(page.contains("EventSource(\"/imagewatch\")"), "{page}");
    assert!(page.contains("src=\"/latest-image.jpg\""));
    assert!(page.contains("href=\"/\""), "links back to the dashboard");
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no external resources"
    );
    tm.stop().await;
}

/// This process's resident memory, in bytes (Linux `/proc/self/status`).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

fn post_raw(w: &TestWorker, body: bytes::Bytes) -> reqwest::RequestBuilder {
    w.client
        .post(format!("{}/output-produced", w.base))
        .basic_auth(w.id.to_hex(), Some(&w.secret))
        .header("Content-Type", "application/json")
        .body(body)
}

/// Issue 13's probe: ten 16 MB reports of 2.7 M relative paths each took RSS from 75 MB
/// to 1,548 MB, and 100 k relative paths wrote 21 MB of log. Now a report's body is at
/// most 1 MiB (413, refused before it is read), a report of more than 1,000 paths is a 400
/// naming the limit (decoding stops there), and a report logs at most one line however
/// many paths it has.
///
/// Bounds asserted (generous, for a loaded machine): RSS grows by less than 100 MB over the
/// ten concurrent 16 MB requests, and 100 k paths within the limits write less than 64 KiB
/// of log.
#[tokio::test]
async fn hostile_reports_keep_memory_and_logs_bounded() {
    let _one = EXCLUSIVE.lock().await;
    let log = CapturedLog::default();
    let subscriber = log.subscriber(tracing::Level::INFO);
    // current_thread runtime: the server's tasks run on this thread, so they log here.
    let _logging = tracing::subscriber::set_default(subscriber);
    let tm = TestManager::start().await;
    let w = tm.register("hostile", "linux", &["blender-render"]).await;

    // 2.7 M relative paths in one 16 MB body (under max_request_body).
    const PATHS: usize = 2_700_000;
    let mut body = Vec::with_capacity(16_000_000);
    body.extend_from_slice(b"{\"paths\":[");
    for i in 0..PATHS {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b"\"abc\"");
    }
    body.extend_from_slice(b"]}");
    assert!(body.len() < 16 * 1024 * 1024, "{}", body.len());
    let body = bytes::Bytes::from(body);
    log.clear();
    let rss_before = rss_bytes();
    let answers = futures::future::join_all((0..10).map(|_| async {
        match post_raw(&w, body.clone()).send().await {
            Ok(resp) => Some(resp.status()),
            // The server may answer and close before the client has sent the whole body.
            Err(_) => None,
        }
    }))
    .await;
    let rss_after = rss_bytes();
    for status in answers.iter().flatten() {
        assert_eq!(*status, StatusCode::PAYLOAD_TOO_LARGE);
    }
    let refused_mid_upload = answers.iter().filter(|a| a.is_none()).count();
    let grown = rss_after.saturating_sub(rss_before);
    let log_bytes = log.text().len();
    eprintln!(
        "10 x {} MB reports of {PATHS} paths: 413 ({refused_mid_upload} cut off mid-upload); \
         RSS {} MB -> {} MB (+{} MB); log +{log_bytes} bytes",
        body.len() / 1_000_000,
        rss_before / 1_000_000,
        rss_after / 1_000_000,
        grown / 1_000_000
    );
    assert!(grown < 100_000_000, "RSS grew by {grown} bytes");
    assert!(log_bytes < 64 * 1024, "{log_bytes} bytes of log");
    assert!(
        !tm.manager
            .produced_outputs()
            .iter()
            .any(|o| o.paths.len() > 1000),
        "refused reports are not kept"
    );

    // Under the body limit but over the path limit: 400 naming the limit, decoding stops.
    let mut small = b"{\"paths\":[".to_vec();
    small.extend_from_slice(&b"\"a\",".repeat(200_000));
    small.extend_from_slice(b"\"a\"]}");
    let resp = post_raw(&w, small.into()).send().await.expect("send");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let text = resp.text().await.unwrap();
    assert!(text.contains("at most 1000 paths"), "{text}");

    // 100 k paths within the limits: 100 reports of 1,000 (relative ones, and absolute
    // ones that do not exist): one line per report at most, and the pipeline's skips are
    // summarised.
    log.clear();
    let renders = tempfile::tempdir().unwrap();
    for r in 0..100 {
        let paths: Vec<String> = (0..1000)
            .map(|i| {
                if r % 2 == 0 {
                    format!("relative/frame_{i:04}.png")
                } else {
                    renders
                        .path()
                        .join(format!("missing_{r}_{i:04}.png"))
                        .display()
                        .to_string()
                }
            })
            .collect();
        let resp = w
            .post_json("/output-produced", &json!({ "paths": paths }))
            .await;
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    }
    let images = tm.manager.latest_images().clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !images.is_idle() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pipeline did not finish: {:?}",
            images.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = log.text();
    let lines = text.lines().count();
    let relative_lines = text.matches("paths: 1000 relative,").count();
    eprintln!(
        "100 reports x 1000 paths: {lines} log lines, {} bytes; pipeline {:?}",
        text.len(),
        images.stats()
    );
    assert!(text.len() < 64 * 1024, "{} bytes of log", text.len());
    assert_eq!(
        relative_lines, 50,
        "one line per report with relative paths:\n{text}"
    );
    assert!(lines <= 50 + 20, "{lines} lines:\n{text}");
    assert!(
        text.contains("skipped 1000 of 1000 paths: 1000 relative"),
        "{text}"
    );
    // What is remembered of the reports is bounded too.
    let kept: usize = tm
        .manager
        .produced_outputs()
        .iter()
        .flat_map(|o| &o.paths)
        .map(String::len)
        .sum();
    assert!(kept <= 256 * 1024, "{kept} bytes of paths kept");
    drop(_logging);
    tm.stop().await;
}

/// A FIFO named like a frame (or a hung mount) must not block anything: it is skipped
/// with a warning, the next real frame is shown, and the pipeline closes at once.
#[tokio::test]
async fn a_fifo_reported_as_output_is_skipped() {
    let _one = EXCLUSIVE.lock().await;
    let tm = TestManager::start().await;
    let w = tm.register("renderer", "linux", &["blender-render"]).await;
    let renders = tempfile::tempdir().unwrap();
    let fifo = renders.path().join("frame_0001.png");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo (coreutils)");
    assert!(status.success());
    let resp = w
        .post_json(
            "/output-produced",
            &json!({"paths": [fifo.display().to_string()]}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let frame = write_png(renders.path(), "frame_0002.png", 64, 36);
    let resp = w
        .post_json("/output-produced", &json!({ "paths": [frame] }))
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let images = tm.manager.latest_images().clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while images.info().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no image: {:?}",
            images.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(images.info().unwrap().source_path, frame);
    assert_eq!(images.stats().not_regular, 1, "{:?}", images.stats());
    // Another FIFO, then close: returns at once.
    let fifo2 = renders.path().join("frame_0003.png");
    std::process::Command::new("mkfifo")
        .arg(&fifo2)
        .status()
        .expect("mkfifo");
    images.submit(&fifo2);
    let closing = tokio::task::spawn_blocking(move || images.close());
    tokio::time::timeout(Duration::from_secs(10), closing)
        .await
        .expect("close returns")
        .unwrap();
    tm.stop().await;
}

//! The last-rendered image over HTTP: `/output-produced` → conversion → `/imagewatch`
//! event → `/latest-image.jpg` (with ETag revalidation), its description, and the page.

mod common;

use std::time::Duration;

use common::TestManager;
use reqwest::StatusCode;
use serde_json::{json, Value};

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

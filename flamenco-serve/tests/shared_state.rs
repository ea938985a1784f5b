//! What a user sees is the same on every Manager of one MongoDB database (issue 17 item 4,
//! docs/operations.md "What is shared between Managers"): two in-process Managers, A and
//! B, each with its own store connection, HTTP server and local loops, on one test
//! database. A change made through one is observed through the other within the
//! documented time, waiting for it with a deadline:
//!
//! * the latest image converted by one Manager is served by the other (same bytes, ETag
//!   and version), announced on its `/imagewatch`, within `FOLLOW_PERIOD` (2 s);
//! * a status request, a changed secret and a forgotten worker, made on A, reach a worker
//!   talking to B within the worker cache's second (the secret cache follows the stored
//!   hash, so a changed or deleted worker stops authenticating as soon as its record is
//!   read again).
//!
//! Prints the measured propagation times. Needs the test MongoDB server
//! (`FLAMENCO_TEST_MONGODB_URL`); without it the tests skip with a notice, except under
//! `CI=true`, where they fail.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{v2_test_config, TestManager, TestWorker};
use flamenco_core::latest_image::FOLLOW_PERIOD;
use flamenco_core::model::RequestedStatus;
use flamenco_core::store::mongo::testing::TestDatabase;
use flamenco_core::store::mongo::MongoStore;
use flamenco_core::worker_cache::DEFAULT_TTL;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::sync::watch;

/// Slack on top of a documented propagation time, for a loaded two-core test machine.
const SLACK: Duration = Duration::from_secs(3);

/// Two Managers on one database, their local loops running (as `flamenco serve` runs
/// them on every Manager).
struct Farm {
    a: TestManager,
    b: TestManager,
    stop: watch::Sender<bool>,
    loops: Vec<tokio::task::JoinHandle<()>>,
    _db: TestDatabase,
}

impl Farm {
    async fn start(test: &str) -> Option<Farm> {
        let db = TestDatabase::new(test)?;
        let a = MongoStore::connect(&db.url).await.expect("connect A");
        let b = MongoStore::connect(&db.url).await.expect("connect B");
        let a = TestManager::start_with_store(v2_test_config(), Arc::new(a)).await;
        let b = TestManager::start_with_store(v2_test_config(), Arc::new(b)).await;
        let (stop, rx) = watch::channel(false);
        let loops = [&a, &b]
            .iter()
            .map(|m| {
                tokio::spawn(flamenco_core::maintenance::run_local_loops(
                    m.manager.clone(),
                    rx.clone(),
                ))
            })
            .collect();
        Some(Farm {
            a,
            b,
            stop,
            loops,
            _db: db,
        })
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        for l in self.loops {
            l.await.expect("local loops");
        }
        self.a.stop().await;
        self.b.stop().await;
    }
}

/// The same worker, talking to `to`.
fn via(w: &TestWorker, to: &TestManager) -> TestWorker {
    TestWorker {
        base: to.base.clone(),
        ..w.clone()
    }
}

/// Wait until `check` gives `Some`, polling every 20 ms; panics with `what` after
/// `within`. Returns the value and how long it took.
async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut check: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return (v, start.elapsed());
        }
        assert!(
            start.elapsed() < within,
            "{what}: not seen within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn image_info(m: &TestManager) -> Option<Value> {
    let resp = m.client.get(m.url("/api/latest-image")).send().await.ok()?;
    if resp.status() != StatusCode::OK {
        return None;
    }
    resp.json().await.ok()
}

async fn image_bytes(m: &TestManager) -> (String, bytes::Bytes) {
    let resp = m
        .client
        .get(m.url("/latest-image.jpg"))
        .send()
        .await
        .expect("get image");
    assert_eq!(resp.status(), StatusCode::OK);
    let etag = resp.headers()["etag"].to_str().expect("etag").to_string();
    (etag, resp.bytes().await.expect("bytes"))
}

fn write_png(dir: &std::path::Path, name: &str, width: u32, height: u32) -> String {
    let path = dir.join(name);
    image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, 40])
    })
    .save(&path)
    .expect("write the test PNG");
    path.display().to_string()
}

/// Read an event stream until `needle` arrives (or panic after `within`).
async fn read_until(resp: &mut reqwest::Response, needle: &str, within: Duration) -> String {
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + within;
    while !seen.contains(needle) {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} within {within:?}; got {seen:?}"))
            .expect("read the event stream")
            .unwrap_or_else(|| panic!("the stream ended before {needle:?}; got {seen:?}"));
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_latest_image_is_the_same_on_every_manager() {
    let Some(farm) = Farm::start("shared_latest_image").await else {
        return;
    };
    let (a, b) = (&farm.a, &farm.b);
    let w = a.register("renderer", "linux", &["blender-render"]).await;
    let renders = tempfile::tempdir().expect("tempdir");
    for m in [a, b] {
        let resp = m
            .client
            .get(m.url("/latest-image.jpg"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
    let mut b_events = b.client.get(b.url("/imagewatch")).send().await.unwrap();
    assert_eq!(b_events.status(), StatusCode::OK);

    // A frame reported to A: converted there, then served by B too.
    let frame = write_png(renders.path(), "frame_0001.png", 320, 180);
    let resp = w
        .post_json("/output-produced", &json!({ "paths": [frame] }))
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let (a_info, _) = wait_for("the image on A", Duration::from_secs(30), || image_info(a)).await;
    let on_a = Instant::now();
    read_until(
        &mut b_events,
        "data: latest-image.jpg",
        FOLLOW_PERIOD + SLACK,
    )
    .await;
    let (b_info, _) = wait_for("the image on B", FOLLOW_PERIOD + SLACK, || image_info(b)).await;
    let lag = on_a.elapsed();
    println!("latest image: on B {lag:?} after A showed it (documented: within {FOLLOW_PERIOD:?})");
    assert_eq!(a_info["version"], 1, "{a_info}");
    assert_eq!(a_info, b_info, "both Managers describe the same image");
    let (a_tag, a_jpeg) = image_bytes(a).await;
    let (b_tag, b_jpeg) = image_bytes(b).await;
    assert_eq!(a_tag, b_tag, "same ETag");
    assert_eq!(a_jpeg, b_jpeg, "same bytes");

    // The other way round: a later frame reported to B reaches A, as version 2.
    let frame = write_png(renders.path(), "frame_0002.png", 160, 90);
    let resp = via(&w, b)
        .post_json("/output-produced", &json!({ "paths": [frame] }))
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let (b_info, _) = wait_for("version 2 on B", Duration::from_secs(30), || async {
        image_info(b).await.filter(|i| i["version"] == 2)
    })
    .await;
    let (a_info, lag) = wait_for("version 2 on A", FOLLOW_PERIOD + SLACK, || async {
        image_info(a).await.filter(|i| i["version"] == 2)
    })
    .await;
    println!("latest image: version 2 on A {lag:?} after B showed it");
    assert_eq!(a_info, b_info);
    assert_eq!(a_info["width"], 160);
    assert_eq!(image_bytes(a).await, image_bytes(b).await);
    // A keeps it in its data_dir for its next start, as for its own images.
    let saved = std::fs::read(a.manager.config().data_dir.join("latest-image.jpg"))
        .expect("saved in A's data_dir");
    assert_eq!(saved, image_bytes(b).await.1.as_ref());

    drop(b_events);
    farm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_changes_on_one_manager_reach_the_others_within_a_second() {
    let Some(farm) = Farm::start("shared_worker_changes").await else {
        return;
    };
    let (a, b) = (&farm.a, &farm.b);
    let limit = DEFAULT_TTL + SLACK;
    let w = a.register("sleeper", "linux", &["sleep"]).await;
    let on_b = via(&w, b);
    // B reads the worker, checks its secret and caches both.
    assert_eq!(
        on_b.get("/status-change").await.status(),
        StatusCode::NO_CONTENT
    );

    // A status request made on A: B's answer changes within the worker cache's TTL.
    a.manager
        .request_worker_status(w.id, Some(RequestedStatus::Asleep))
        .await
        .expect("request asleep");
    let (_, lag) = wait_for("the request on B", limit, || async {
        let resp = on_b.get("/status-change").await;
        if resp.status() != StatusCode::OK {
            return None;
        }
        let body: Value = resp.json().await.ok()?;
        (body["status_requested"] == "asleep").then_some(())
    })
    .await;
    println!(
        "worker cache: a status request made on A seen on B after {lag:?} (TTL {DEFAULT_TTL:?})"
    );

    // A new secret stored for the worker (as another Manager, or an operator's tool,
    // would): the old secret stops working on B, the new one works there.
    let new_secret = format!("{}-new", w.secret);
    let stored = flamenco_core::auth::hash_new_secret(&new_secret).expect("hash");
    let client = mongodb::Client::with_uri_str(&farm._db.url)
        .await
        .expect("client");
    let db = client.database(&farm._db.name);
    let changed = db
        .collection::<mongodb::bson::Document>("flamenco_workers")
        .update_one(
            mongodb::bson::doc! { "_id": mongodb::bson::oid::ObjectId::parse_str(w.id.to_hex()).expect("oid") },
            mongodb::bson::doc! { "$set": {
                "hashed_secret": mongodb::bson::Binary {
                    subtype: mongodb::bson::spec::BinarySubtype::Generic,
                    bytes: stored.hashed_secret.into_bytes(),
                },
                "secret_sha256": stored.secret_sha256,
            } },
        )
        .await
        .expect("change the secret");
    assert_eq!(changed.matched_count, 1);
    let (_, lag) = wait_for("the old secret refused on B", limit, || async {
        (on_b.get("/status-change").await.status() == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    println!("secret cache: a changed secret refused on B after {lag:?}");
    let renewed = TestWorker {
        secret: new_secret,
        ..on_b.clone()
    };
    assert_eq!(renewed.get("/status-change").await.status(), StatusCode::OK);

    // Forgotten on A: its credentials stop working on B.
    a.manager.forget_worker(w.id).await.expect("forget");
    let (_, lag) = wait_for("the forgotten worker refused on B", limit, || async {
        (renewed.get("/status-change").await.status() == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    println!("worker cache: a worker forgotten on A refused on B after {lag:?}");
    client.shutdown().await;
    farm.stop().await;
}

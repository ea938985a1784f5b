//! A task the Go Manager v2 queued in MongoDB, handed to a worker by this Manager: the JSON
//! the worker receives has what v2 sent (manager-v2.md §3.3, issue 17 item 6). v2 stored
//! the Server's numbers in `commands[].settings` as BSON doubles and its Go encoder wrote
//! whole ones as integers; Flamenco Worker 2.0.x checks `cycles_num_chunks`,
//! `cycles_chunk`, `weight1` and `weight2` with `isinstance(value, int)`.
//!
//! Needs the test MongoDB server (`FLAMENCO_TEST_MONGODB_URL`); without it the test skips
//! with a notice, except under `CI=true`, where it fails.

mod common;

use std::sync::Arc;

use common::{oid, v2_test_config, TestManager};
use flamenco_core::model::ObjectId;
use flamenco_core::store::mongo::testing::TestDatabase;
use flamenco_core::store::mongo::MongoStore;
use mongodb::bson::{doc, Bson, Document};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn bson_id(id: ObjectId) -> Bson {
    Bson::ObjectId(mongodb::bson::oid::ObjectId::from_bytes(id.bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v2_task_goes_out_with_v2_numbers() {
    let Some(db) = TestDatabase::new("a_v2_task_goes_out_with_v2_numbers") else {
        return;
    };
    let task_id = oid("5941a6d1c379cf4c1b4f9a1e");
    // As the Go Manager wrote a downloaded task: ObjectIds, int priorities, and every
    // number of the Server's JSON settings a double.
    let v2_task = doc! {
        "_id": bson_id(task_id),
        "_etag": "4f7f9bdf9fbf0641c5627b90bb35f6b0917248b3",
        "job": bson_id(oid("b827de5b89d3fc0890e56413")),
        "manager": bson_id(oid("8d2e2e02b8c8578f9083ee3d")),
        "project": bson_id(oid("5b975c4ccfa63497f689e8cd")),
        "user": bson_id(oid("5ce418a8501f48426c3db756")),
        "name": "blender-render-chunk-0001-0004",
        "status": "claimed-by-manager",
        "priority": 50_i32,
        "job_priority": 50_i32,
        "job_type": "blender-render-progressive",
        "task_type": "blender-render",
        "commands": [
            { "name": "blender_render_progressive", "settings": {
                "blender_cmd": "{blender}",
                "filepath": "/shared/shot.blend",
                "format": "EXR",
                "frames": "1..4",
                "cycles_num_chunks": 30.0_f64,
                "cycles_chunk": 2.0_f64,
                "cycles_samples_from": 101.0_f64,
                "cycles_samples_to": 200.0_f64,
                "render_output": "/render/shot/chunk-2",
            } },
            { "name": "merge_progressive_renders", "settings": {
                "input1": "/render/shot/chunk-1.exr",
                "input2": "/render/shot/chunk-2.exr",
                "output": "/render/shot/merged.exr",
                "weight1": 100.0_f64,
                "weight2": 100.0_f64,
                "blender_cmd": "{blender}",
            } },
            { "name": "sleep", "settings": { "time_in_seconds": 1.5_f64 } },
        ],
        "worker": "",
        "last_updated": mongodb::bson::DateTime::from_millis(1_497_000_000_000),
    };
    let client = mongodb::Client::with_uri_str(&db.url)
        .await
        .expect("raw client");
    client
        .database(&db.name)
        .collection::<Document>("flamenco_tasks")
        .insert_one(v2_task)
        .await
        .expect("insert the v2 task");

    let store = MongoStore::connect(&db.url).await.expect("connect");
    let tm = TestManager::start_with_store(v2_test_config(), Arc::new(store)).await;
    let w = tm.register("node1", "linux", &["blender-render"]).await;
    let resp = w.post_empty("/task").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.expect("body");

    // The bytes on the wire, not a re-encoding of them.
    for want in [
        "\"cycles_num_chunks\":30,",
        "\"cycles_chunk\":2,",
        "\"cycles_samples_from\":101,",
        "\"weight1\":100,",
        "\"weight2\":100}",
        "\"time_in_seconds\":1.5}",
    ] {
        assert!(text.contains(want), "{want} in {text}");
    }
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(body["_id"], json!(task_id.to_hex()));
    assert!(body["commands"][0]["settings"]["cycles_chunk"].is_u64());
    assert!(body["commands"][1]["settings"]["weight2"].is_u64());
    assert!(body["commands"][2]["settings"]["time_in_seconds"].is_f64());
    // v2's other fields go out as v2 sent them; variables are substituted.
    assert_eq!(
        body["_etag"],
        json!("4f7f9bdf9fbf0641c5627b90bb35f6b0917248b3")
    );
    assert_eq!(body["manager"], json!("8d2e2e02b8c8578f9083ee3d"));
    assert_eq!(body["priority"], json!(50));
    assert_eq!(
        body["commands"][0]["settings"]["blender_cmd"],
        json!("/opt/myblenderbuild/blender")
    );
    tm.stop().await;
}

//! Browser test of the dashboard's worker tag editor (issue 16 item 3, docs/jobs.md "Worker
//! tags"): in headless Chromium (the harness of tests/browser.rs), open a worker's page,
//! see its tags, replace them (one request adding and removing), and check the store and
//! the page; an invalid tag is refused with the Manager's message and changes nothing;
//! saving the same tags again sends nothing. Skips with a `NOTICE:` without Chromium (a
//! failure under `CI=true`).

mod browser_harness;
mod common;

use std::panic::AssertUnwindSafe;

use browser_harness::{Browser, ONE_BROWSER};
use common::{v2_test_config, TestManager};
use futures::FutureExt;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_worker_tag_editor() {
    let _guard = ONE_BROWSER.lock().await;
    let Some(b) = Browser::start("dashboard_worker_tag_editor").await else {
        return;
    };
    let tm = TestManager::start_with(v2_test_config()).await;
    let outcome = AssertUnwindSafe(scenario(&b, &tm)).catch_unwind().await;
    b.finish("dashboard_worker_tag_editor", outcome).await;
    tm.stop().await;
}

/// The worker's tags in the store.
async fn stored_tags(tm: &TestManager, id: flamenco_core::model::ObjectId) -> Vec<String> {
    tm.worker(id).await.tags
}

/// Type `value` into the tag field and press "Save tags".
async fn save_tags(b: &Browser, value: &str) {
    let done = b
        .js_with(
            "const i = document.querySelector('#detail-tags');
             i.focus();
             i.value = arguments[0];
             document.querySelector('#detail-tags-save').click();
             return 'ok';",
            json!(value),
        )
        .await;
    assert_eq!(done, json!("ok"));
}

async fn scenario(b: &Browser, tm: &TestManager) {
    let w = tm
        .register_as("render-07", "linux", &["sleep"], "Flamenco-Worker/2.5")
        .await;
    let status = w
        .sign_on(json!({"supported_task_types": ["sleep"], "nickname": "render-07"}))
        .await;
    assert!(status.is_success(), "sign-on: {status}");
    let other = tm
        .register_as("render-08", "linux", &["sleep"], "Flamenco-Worker/2.5")
        .await;
    tm.manager
        .tag_workers(&[w.id], &["win".to_string()], &[])
        .await
        .expect("tag the worker");

    // The worker's page shows its tags, in the subtitle and in the editor.
    b.goto(&tm.url(&format!("/#/workers/{}", w.id))).await;
    b.wait_js(
        "the tag editor with the worker's tag",
        "const f = document.querySelector('#detail-tags-form');
         return !f.hidden && document.querySelector('#detail-tags').value === 'win'
             && document.querySelector('#detail-sub').textContent.startsWith('Tags: win ·');",
    )
    .await;

    // Replace "win" by "gpu" and "linux" (a duplicate typed twice is sent once): one
    // request that removes and adds.
    save_tags(b, "gpu, linux gpu").await;
    b.wait_for("the store to hold the new tags", || async {
        match stored_tags(tm, w.id).await {
            t if t == ["gpu", "linux"] => Ok(()),
            t => Err(format!("{t:?}")),
        }
    })
    .await;
    assert!(
        stored_tags(tm, other.id).await.is_empty(),
        "only this worker is tagged"
    );
    b.wait_js(
        "the page to show the new tags",
        "return document.querySelector('#detail-sub').textContent.startsWith('Tags: gpu, linux ·')
             && document.querySelector('#detail-tags').value === 'gpu, linux'
             && document.querySelector('#action-message').textContent.includes('done');",
    )
    .await;
    let shot = b.screenshot("worker-tags").await;
    assert!(shot.exists(), "{shot:?}");

    // An invalid tag: refused with the Manager's reason, nothing changes.
    save_tags(b, "gpu, linux, bad!tag").await;
    let message = b
        .wait_js(
            "the refusal",
            "const m = document.querySelector('#action-message');
             return m && !m.hidden && m.classList.contains('is-error')
                 && m.textContent.includes('refused') ? m.textContent : null;",
        )
        .await;
    let text = message.as_str().unwrap_or_default();
    assert!(text.contains("(400)"), "{text}");
    assert!(
        text.contains("bad!tag"),
        "the message names the tag: {text}"
    );
    assert_eq!(stored_tags(tm, w.id).await, ["gpu", "linux"]);

    // The same tags again: nothing to send, and the page says so.
    save_tags(b, "linux gpu").await;
    b.wait_js(
        "the 'already' message",
        "const m = document.querySelector('#action-message');
         return !m.hidden && m.textContent === 'The worker has these tags already.'
             && !m.classList.contains('is-error');",
    )
    .await;
    assert_eq!(stored_tags(tm, w.id).await, ["gpu", "linux"]);

    // Removing every tag.
    save_tags(b, "").await;
    b.wait_for("the tags removed", || async {
        match stored_tags(tm, w.id).await {
            t if t.is_empty() => Ok(()),
            t => Err(format!("{t:?}")),
        }
    })
    .await;
    b.wait_js(
        "the page to show no tags",
        "return document.querySelector('#detail-sub').textContent.startsWith('Tags: none ·');",
    )
    .await;

    // The overview lists the worker's tags in its row.
    tm.manager
        .tag_workers(&[w.id], &["gpu".to_string()], &[])
        .await
        .expect("tag again");
    b.goto(&tm.url("/")).await;
    b.wait_js(
        "the worker row with its tag",
        &format!(
            "const r = document.querySelector('#workers-table tr[data-worker-id=\"{}\"]');
             return r && [...r.querySelectorAll('span.tag')].map((s) => s.textContent).join(',') === 'gpu';",
            w.id
        ),
    )
    .await;
}

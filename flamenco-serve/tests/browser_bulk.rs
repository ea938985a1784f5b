//! Browser test of the dashboard's multi-select (issue 16 item 5): in headless Chromium
//! (the harness of tests/browser.rs), select jobs with the checkboxes and "select all", set
//! their priority, cancel them, delete them (with the second click), and put workers to
//! sleep with one request, a Flamenco Worker 2.0.x refused per worker; each outcome is
//! checked in the store and on the page. Skips with a `NOTICE:` without Chromium (a failure
//! under `CI=true`). `FLAMENCO_UPDATE_DOC_SCREENSHOTS=1` copies the screenshot to
//! `docs/img/dashboard-bulk.png`.

mod browser_harness;
mod common;

use std::panic::AssertUnwindSafe;
use std::path::Path;

use browser_harness::{Browser, ONE_BROWSER};
use common::{v2_test_config, TestManager, TestWorker};
use flamenco_core::jobs::JobSubmission;
use flamenco_core::model::{JobStatus, ObjectId, RequestedStatus};
use futures::FutureExt;
use serde_json::{json, Value};

async fn submit(tm: &TestManager, name: &str) -> ObjectId {
    let Value::Object(settings) = json!({"frames": "1-8", "chunk_size": 2, "time_in_seconds": 30})
    else {
        unreachable!("a JSON object")
    };
    tm.manager
        .submit_job(JobSubmission::new("sleep", settings).named(name))
        .await
        .expect("submit")
        .id
}

async fn worker(tm: &TestManager, nickname: &str, software: &str) -> TestWorker {
    let w = tm
        .register_as(nickname, "linux", &["sleep"], software)
        .await;
    let status = w
        .sign_on(json!({"supported_task_types": ["sleep"], "nickname": nickname}))
        .await;
    assert!(status.is_success(), "sign-on of {nickname}: {status}");
    w
}

/// Click `selector` (scrolled into view first).
async fn click(b: &Browser, selector: &str) {
    let found = b
        .js_with(
            "const e = document.querySelector(arguments[0]);
             if (!e) return 'missing';
             if (e.disabled) return 'disabled';
             e.scrollIntoView({block: 'center'});
             return 'ok';",
            json!(selector),
        )
        .await;
    assert_eq!(found, json!("ok"), "clicking {selector}");
    b.client
        .find(fantoccini::Locator::Css(selector))
        .await
        .unwrap_or_else(|e| panic!("finding {selector}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking {selector}: {e}"));
}

async fn wait_text(b: &Browser, selector: &str, want: &str) {
    b.wait_for(&format!("{selector} to read {want:?}"), || async {
        match b.text(selector).await {
            Some(t) if t == want => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

async fn jobs_with(
    tm: &TestManager,
    ids: &[ObjectId],
    check: impl Fn(&flamenco_core::model::Job) -> bool,
) -> Result<(), String> {
    for id in ids {
        match tm.manager.get_job(*id).await.expect("get job") {
            Some(j) if check(&j) => {}
            other => return Err(format!("{id}: {other:?}")),
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_bulk_actions() {
    let _guard = ONE_BROWSER.lock().await;
    let Some(b) = Browser::start("dashboard_bulk_actions").await else {
        return;
    };
    let tm = TestManager::start_with(v2_test_config()).await;
    let outcome = AssertUnwindSafe(scenario(&b, &tm)).catch_unwind().await;
    b.finish("dashboard_bulk_actions", outcome).await;
    tm.stop().await;
}

async fn scenario(b: &Browser, tm: &TestManager) {
    let a = submit(tm, "shot-010 lighting").await;
    let c = submit(tm, "shot-020 lighting").await;
    let d = submit(tm, "shot-030 comp").await;
    let new = worker(tm, "render-01", "Flamenco-Worker/2.5").await;
    let new2 = worker(tm, "render-02", "Flamenco-Worker/2.5").await;
    let old = worker(tm, "render-old", "Flamenco-Worker/2.0.6").await;

    b.goto(&tm.url("/")).await;
    b.wait_js(
        "three job rows and three worker rows with checkboxes",
        "return document.querySelectorAll('#jobs-table input.row-select').length === 3
             && document.querySelectorAll('#workers-table input.row-select').length === 3;",
    )
    .await;
    assert_eq!(
        b.js("return document.querySelector('#jobs-bulk').hidden;")
            .await,
        json!(true),
        "no bar while nothing is selected"
    );

    // Select all jobs, then leave one out: the count follows, the header box is mixed.
    click(b, "input.select-all[data-select-all=\"jobs\"]").await;
    wait_text(b, "#jobs-bulk-count", "3 jobs selected").await;
    click(b, &format!("input.row-select[data-id=\"{d}\"]")).await;
    wait_text(b, "#jobs-bulk-count", "2 jobs selected").await;
    assert_eq!(
        b.js(
            "const a = document.querySelector('input.select-all[data-select-all=\"jobs\"]');
              return [a.checked, a.indeterminate];"
        )
        .await,
        json!([false, true])
    );

    // Set priority 80 on the two: one request, both jobs and their tasks.
    b.js("document.querySelector('#jobs-bulk-priority').value = '80';")
        .await;
    click(b, "#jobs-bulk button[data-bulk=\"priority\"]").await;
    b.wait_for("priority 80 on the two selected jobs", || async {
        jobs_with(tm, &[a, c], |j| j.priority == 80).await
    })
    .await;
    assert_eq!(tm.manager.get_job(d).await.unwrap().unwrap().priority, 50);
    b.wait_for("the page to show priority 80", || async {
        let v = b
            .js(&format!(
                "return [...document.querySelectorAll('#jobs-table tr[data-job-id=\"{a}\"] td.priority, #jobs-table tr[data-job-id=\"{c}\"] td.priority')].map((t) => t.textContent);"
            ))
            .await;
        if v == json!(["80", "80"]) {
            Ok(())
        } else {
            Err(v.to_string())
        }
    })
    .await;

    // The jobs done left the selection: nothing is selected, the bar is gone.
    b.wait_js(
        "the bar hidden after the action",
        "return document.querySelector('#jobs-bulk').hidden
             && document.querySelectorAll('#jobs-table input.row-select:checked').length === 0;",
    )
    .await;

    // Jobs and workers selected: the screenshot for the docs.
    click(b, "input.select-all[data-select-all=\"jobs\"]").await;
    wait_text(b, "#jobs-bulk-count", "3 jobs selected").await;
    click(b, &format!("input.row-select[data-id=\"{}\"]", new.id)).await;
    click(b, &format!("input.row-select[data-id=\"{}\"]", old.id)).await;
    wait_text(b, "#workers-bulk-count", "2 workers selected").await;
    b.js("document.querySelector('#jobs').scrollIntoView({block: 'start'});")
        .await;
    let shot = b.screenshot("dashboard-bulk").await;
    if std::env::var("FLAMENCO_UPDATE_DOC_SCREENSHOTS").as_deref() == Ok("1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/img");
        std::fs::create_dir_all(&docs).expect("docs/img");
        std::fs::copy(&shot, docs.join("dashboard-bulk.png")).expect("copy the screenshot");
        eprintln!("updated docs/img/dashboard-bulk.png");
    }

    // Workers: sleep both selected; the 2.0 one is refused, and the message says so.
    click(b, "#workers-bulk button[data-bulk=\"sleep\"]").await;
    b.wait_for("the 2.5 worker asked to sleep", || async {
        match tm
            .manager
            .get_worker(new.id)
            .await
            .expect("get")
            .map(|w| w.status_requested)
        {
            Some(Some(RequestedStatus::Asleep)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let message = b
        .wait_js(
            "the outcome message",
            "const m = document.querySelector('#action-message');
             return m && !m.hidden && m.textContent.includes('refused') ? [m.textContent, m.classList.contains('is-error')] : null;",
        )
        .await;
    assert!(
        message[0]
            .as_str()
            .unwrap_or("")
            .contains("1 done, 1 refused"),
        "{message}"
    );
    assert!(
        message[0].as_str().unwrap_or("").contains("2.0.6"),
        "{message}"
    );
    assert_eq!(message[1], json!(true));
    assert_eq!(tm.worker(old.id).await.status_requested, None);
    assert_eq!(
        tm.worker(new2.id).await.status_requested,
        None,
        "not selected"
    );
    wait_text(b, "#workers-bulk-count", "1 worker selected").await;

    // Cancel the three jobs with one click.
    click(b, "#jobs-bulk button[data-bulk=\"cancel\"]").await;
    b.wait_for("the three jobs canceled", || async {
        jobs_with(tm, &[a, c, d], |j| j.status == JobStatus::Canceled).await
    })
    .await;

    // Delete needs a second click.
    b.wait_for("the page to show the jobs canceled", || async {
        let v = b
            .js("return [...document.querySelectorAll('#jobs-table .job-status')].map((s) => s.textContent);")
            .await;
        if v == json!(["canceled", "canceled", "canceled"]) {
            Ok(())
        } else {
            Err(v.to_string())
        }
    })
    .await;
    click(b, "input.select-all[data-select-all=\"jobs\"]").await;
    wait_text(b, "#jobs-bulk-count", "3 jobs selected").await;
    click(b, "#jobs-bulk button[data-bulk=\"delete\"]").await;
    wait_text(
        b,
        "#jobs-bulk button[data-bulk=\"delete\"]",
        "Really delete 3?",
    )
    .await;
    assert!(
        tm.manager.get_job(a).await.unwrap().is_some(),
        "nothing deleted yet"
    );
    click(b, "#jobs-bulk button[data-bulk=\"delete\"]").await;
    b.wait_for("the three jobs deleted", || async {
        for id in [a, c, d] {
            if tm.manager.get_job(id).await.expect("get").is_some() {
                return Err(format!("{id} still there"));
            }
        }
        Ok(())
    })
    .await;
    b.wait_js(
        "the rows gone and the bar hidden",
        "return document.querySelectorAll('#jobs-table tbody tr').length === 0
             && document.querySelector('#jobs-bulk').hidden;",
    )
    .await;
}

//! Conformance cases for worker tags ([`crate::store::TagStore`] and the claim's tag
//! filter): a tagged task goes only to workers with its tag, an untagged one to anyone,
//! tags survive the worker's own requests, and tagging many workers is one operation that
//! refuses as a whole.

use std::sync::Arc;

use super::{
    add_tasks, add_worker, at, claimed_id, nth_id, prio_task, seen, task, test_job, test_worker,
    worker,
};
use crate::model::{ObjectId, Worker};
use crate::store::{SignOn, Store, TagOutcome};
use crate::tags::{TagChange, TagError};

fn tags(list: &[&str]) -> Vec<String> {
    list.iter().map(|t| t.to_string()).collect()
}

async fn tag(
    store: &Arc<dyn Store>,
    ids: &[ObjectId],
    add: &[&str],
    remove: &[&str],
) -> TagOutcome {
    let change = TagChange::new(&tags(add), &tags(remove)).expect("valid change");
    store.tag_workers(ids, &change).await.expect("tag workers")
}

async fn tagged_worker(store: &Arc<dyn Store>, n: u32, name: &str, with: &[&str]) -> Worker {
    let w = test_worker(nth_id(0xa7, n), name, &["sleeping", "sleep"]);
    add_worker(store, &w).await;
    if !with.is_empty() {
        assert_eq!(tag(store, &[w.id], with, &[]).await, TagOutcome::Changed(1));
    }
    worker(store, w.id).await
}

/// A task that requires a tag goes only to a worker with that tag; an untagged task goes
/// to any worker; between the two, the scheduler's order decides.
pub async fn claim_follows_worker_tags(store: Arc<dyn Store>) {
    let mut gpu = prio_task(nth_id(0x7a, 1), "sleeping", 90, 50);
    gpu.worker_tag = Some("gpu".into());
    let mut win = prio_task(nth_id(0x7a, 2), "sleeping", 80, 50);
    win.worker_tag = Some("win".into());
    let any = prio_task(nth_id(0x7a, 3), "sleeping", 10, 50);
    let mut gpu_late = prio_task(nth_id(0x7a, 4), "sleeping", 5, 50);
    gpu_late.worker_tag = Some("gpu".into());
    add_tasks(
        &store,
        &[gpu.clone(), win.clone(), any.clone(), gpu_late.clone()],
    )
    .await;
    assert_eq!(
        task(&store, gpu.id).await.worker_tag.as_deref(),
        Some("gpu")
    );
    assert_eq!(task(&store, any.id).await.worker_tag, None);

    let plain = tagged_worker(&store, 1, "plain", &[]).await;
    let other = tagged_worker(&store, 2, "other", &["ssd"]).await;
    let both = tagged_worker(&store, 3, "both", &["win", "gpu"]).await;
    let gpu_only = tagged_worker(&store, 4, "gpu-only", &["gpu"]).await;
    assert_eq!(gpu_only.tags, tags(&["gpu"]));

    // The untagged worker gets the untagged task, despite its lower priority.
    assert_eq!(claimed_id(&store, &plain, at(1)).await, Some(any.id));
    // A worker with another tag gets nothing: the rest all require a tag.
    assert_eq!(claimed_id(&store, &other, at(2)).await, None);
    // A worker with both tags takes the best of them.
    assert_eq!(claimed_id(&store, &both, at(3)).await, Some(gpu.id));
    // The gpu worker skips the `win` task (higher priority than what it gets).
    assert_eq!(
        claimed_id(&store, &gpu_only, at(4)).await,
        Some(gpu_late.id)
    );
    assert_eq!(
        task(&store, win.id).await.status,
        crate::model::TaskStatus::Queued
    );
    // Untagged tasks are for tagged workers too, in the scheduler's order.
    let late_any = prio_task(nth_id(0x7a, 5), "sleeping", 99, 50);
    add_tasks(&store, std::slice::from_ref(&late_any)).await;
    let both2 = tagged_worker(&store, 5, "both2", &["win"]).await;
    assert_eq!(claimed_id(&store, &both2, at(5)).await, Some(late_any.id));
    let both3 = tagged_worker(&store, 6, "both3", &["win"]).await;
    assert_eq!(claimed_id(&store, &both3, at(6)).await, Some(win.id));
}

/// A job's tag is stored with it and with each of its tasks.
pub async fn job_worker_tag_reaches_its_tasks(store: Arc<dyn Store>) {
    let (mut job, mut job_tasks) = test_job(nth_id(0x7b, 1), 0x7c, 3);
    job.worker_tag = Some("gpu".into());
    for t in &mut job_tasks {
        t.worker_tag = Some("gpu".into());
    }
    store
        .insert_job(&job, &job_tasks)
        .await
        .expect("insert job");
    let stored = store.get_job(job.id).await.expect("get").expect("job");
    assert_eq!(stored.worker_tag.as_deref(), Some("gpu"));
    for t in &job_tasks {
        assert_eq!(task(&store, t.id).await.worker_tag.as_deref(), Some("gpu"));
    }
    let plain = tagged_worker(&store, 10, "plain", &[]).await;
    assert_eq!(claimed_id(&store, &plain, at(1)).await, None);
    let gpu = tagged_worker(&store, 11, "gpu", &["gpu"]).await;
    assert_eq!(claimed_id(&store, &gpu, at(2)).await, Some(job_tasks[0].id));
}

/// Tags are the Manager's: contact, sign-on and sign-off keep them.
pub async fn tags_survive_sign_on_and_off(store: Arc<dyn Store>) {
    let w = tagged_worker(&store, 20, "kept", &["gpu", "win"]).await;
    let sign_on = SignOn {
        nickname: Some("renamed".into()),
        supported_task_types: Some(tags(&["sleeping", "blender"])),
    };
    assert!(store
        .worker_sign_on(
            w.id,
            &sign_on,
            &seen(at(1), "10.0.0.9", "Flamenco-Worker/2.5", true)
        )
        .await
        .expect("sign on"));
    assert!(store
        .worker_seen(w.id, &seen(at(2), "10.0.0.9", "Flamenco-Worker/2.5", true))
        .await
        .expect("seen"));
    store.sign_off_worker(w.id, at(3)).await.expect("sign off");
    assert!(store
        .worker_sign_on(
            w.id,
            &sign_on,
            &seen(at(4), "10.0.0.9", "Flamenco-Worker/2.5", true)
        )
        .await
        .expect("sign on again"));
    let after = worker(&store, w.id).await;
    assert_eq!(after.nickname, "renamed");
    assert_eq!(after.tags, tags(&["gpu", "win"]));
    let listed = store.list_workers().await.expect("list");
    let listed = listed.iter().find(|x| x.id == w.id).expect("listed");
    assert_eq!(listed.tags, tags(&["gpu", "win"]));
}

/// One call tags many workers; it counts the workers that changed; an unknown id or a
/// broken limit refuses the whole call and changes nothing.
pub async fn tag_workers_on_many(store: Arc<dyn Store>) {
    let a = tagged_worker(&store, 30, "a", &[]).await;
    let b = tagged_worker(&store, 31, "b", &["win"]).await;
    let c = tagged_worker(&store, 32, "c", &["gpu"]).await;
    let ids = [a.id, b.id, c.id];
    assert_eq!(
        tag(&store, &ids, &["gpu", "ssd"], &[]).await,
        TagOutcome::Changed(3)
    );
    assert_eq!(worker(&store, a.id).await.tags, tags(&["gpu", "ssd"]));
    assert_eq!(
        worker(&store, b.id).await.tags,
        tags(&["win", "gpu", "ssd"])
    );
    assert_eq!(worker(&store, c.id).await.tags, tags(&["gpu", "ssd"]));
    // Nothing new: nothing changed.
    assert_eq!(
        tag(&store, &ids, &["gpu"], &[]).await,
        TagOutcome::Changed(0)
    );
    // Remove from some; a repeated id counts once.
    assert_eq!(
        tag(&store, &[a.id, b.id, a.id], &[], &["gpu", "win"]).await,
        TagOutcome::Changed(2)
    );
    assert_eq!(worker(&store, a.id).await.tags, tags(&["ssd"]));
    assert_eq!(worker(&store, b.id).await.tags, tags(&["ssd"]));

    // An unknown worker: refused as a whole.
    let unknown = nth_id(0xa7, 999);
    assert_eq!(
        tag(&store, &[a.id, unknown], &["farm"], &[]).await,
        TagOutcome::Unknown(vec![unknown])
    );
    assert_eq!(worker(&store, a.id).await.tags, tags(&["ssd"]));

    // Past 32 tags on one worker: refused as a whole, the other worker unchanged too.
    let many: Vec<String> = (0..30).map(|i| format!("t{i}")).collect();
    let change = TagChange::new(&many, &[]).expect("30 tags");
    assert_eq!(
        store.tag_workers(&[c.id], &change).await.expect("tag"),
        TagOutcome::Changed(1)
    );
    let two_more = TagChange::new(&tags(&["x1", "x2"]), &[]).expect("two");
    match store
        .tag_workers(&[a.id, c.id], &two_more)
        .await
        .expect("tag")
    {
        TagOutcome::Refused(TagError::TooMany { worker, count }) => {
            assert_eq!((worker, count), (c.id.to_string(), 34));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(worker(&store, a.id).await.tags, tags(&["ssd"]));
    assert_eq!(worker(&store, c.id).await.tags.len(), 32);
}

//! The leader lease on MongoDB (`FLAMENCO_TEST_MONGODB_URL`): the store's compare-and-set
//! (`CoordinationStore`) and two Managers on one database running `leader::run`: one leads
//! at a time, a clean stop hands over at once (before the old lease would have expired),
//! and the lease document never names two holders for one term. The process test with
//! `kill -9` is in flamenco-cli/tests/leader.rs.
//!
//! Without `FLAMENCO_TEST_MONGODB_URL` these tests skip with a notice, except under
//! `CI=true`, where they fail.

use flamenco_core::store::prelude::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flamenco_core::config::Config;
use flamenco_core::store::mongo::testing::TestDatabase;
use flamenco_core::store::mongo::MongoStore;
use flamenco_core::store::{CoordinationStore, Lease, LEADER_LEASE};
use flamenco_core::Manager;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("a leader test")
        .to_string()
}

async fn store(db: &TestDatabase) -> MongoStore {
    MongoStore::connect(&db.url)
        .await
        .expect("connect to the test MongoDB server")
}

/// Wait until `cond` holds, checking every 10 ms; panic with `what` after `limit`.
async fn until<F: FnMut() -> bool>(limit: Duration, what: &str, mut cond: F) -> Duration {
    let start = Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_is_a_compare_and_set_on_the_servers_clock() {
    let Some(db) = TestDatabase::new(&test_name()) else {
        return;
    };
    let s = store(&db).await;
    assert!(s.coordination_shared());
    let d = Duration::from_secs(2);
    assert_eq!(s.lease_current(LEADER_LEASE).await.expect("read"), None);

    let a = s.lease_acquire(LEADER_LEASE, "a", d).await.expect("a");
    let now = a.store_now.expect("the server's time");
    assert!(a.held_by("a", now), "{a:?}");
    assert_eq!(a.term, 1);
    let left = a.remaining().expect("expires");
    assert!(
        left > chrono::Duration::milliseconds(1900) && left <= chrono::Duration::seconds(2),
        "{left:?}"
    );

    // Another asker gets the holder's lease back, unchanged.
    let b = s.lease_acquire(LEADER_LEASE, "b", d).await.expect("b");
    assert_eq!((b.holder.as_str(), b.term), ("a", 1), "{b:?}");
    assert_eq!(b.expires, a.expires);

    // The holder renews: same term, same start, later expiry.
    let renewed = s.lease_acquire(LEADER_LEASE, "a", d).await.expect("renew");
    assert_eq!((renewed.holder.as_str(), renewed.term), ("a", 1));
    assert_eq!(renewed.acquired, a.acquired);
    assert!(renewed.expires >= a.expires);

    // Only the holder releases; then anyone takes it at once, as a new term.
    assert!(!s.lease_release(LEADER_LEASE, "b").await.expect("release b"));
    assert!(s.lease_release(LEADER_LEASE, "a").await.expect("release a"));
    assert!(!s.lease_release(LEADER_LEASE, "a").await.expect("twice"));
    let released = s
        .lease_current(LEADER_LEASE)
        .await
        .expect("read")
        .expect("stored");
    assert!(released.released);
    assert!(!released.is_valid(released.store_now.expect("now")));
    let b = s
        .lease_acquire(LEADER_LEASE, "b", d)
        .await
        .expect("b takes");
    assert_eq!((b.holder.as_str(), b.term), ("b", 2), "{b:?}");
    assert!(b.acquired < renewed.expires, "taken before the old expiry");

    // Not renewed, it expires on the server's clock and "a" takes it: term 3, not before.
    let mut a = s.lease_acquire(LEADER_LEASE, "a", d).await.expect("a");
    let start = Instant::now();
    while a.holder != "a" {
        assert!(start.elapsed() < WAIT, "the lease never expired: {a:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        a = s.lease_acquire(LEADER_LEASE, "a", d).await.expect("a");
    }
    assert_eq!(a.term, 3, "{a:?}");
    assert!(
        a.acquired >= b.expires,
        "taken at {:?}, before b's lease expired at {:?}",
        a.acquired,
        b.expires
    );
    flamenco_core::store::Store::close(&s).await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_first_attempts_at_once_give_one_holder() {
    let Some(db) = TestDatabase::new(&test_name()) else {
        return;
    };
    let s = Arc::new(store(&db).await);
    let d = Duration::from_secs(30);
    let mut tasks = Vec::new();
    for i in 0..12 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.lease_acquire(LEADER_LEASE, &format!("m{i}"), d).await
        }));
    }
    let mut answers: Vec<Lease> = Vec::new();
    for t in tasks {
        answers.push(
            t.await
                .expect("join")
                .expect("no error, duplicate keys included"),
        );
    }
    let holder = answers[0].holder.clone();
    for a in &answers {
        assert_eq!(
            (a.holder.as_str(), a.term),
            (holder.as_str(), 1),
            "{answers:#?}"
        );
    }
}

fn config(db: &TestDatabase, name: &str, lease: Duration) -> Config {
    Config {
        database_url: db.url.clone(),
        leader_lease: lease,
        instance_name: name.to_string(),
        ..Config::default()
    }
}

/// A Manager named `name` on `db` running its leader loop, once it leads: the Manager,
/// the loop's stop token and its task.
async fn start_leading(
    db: &TestDatabase,
    name: &str,
    lease: Duration,
) -> (Arc<Manager>, CancellationToken, tokio::task::JoinHandle<()>) {
    let m = Arc::new(
        Manager::open(config(db, name, lease))
            .await
            .expect("open a Manager"),
    );
    let stop = CancellationToken::new();
    let run = tokio::spawn(flamenco_core::leader::run(m.clone(), stop.clone()));
    until(WAIT, &format!("{name} leads"), || {
        m.leadership().is_leader()
    })
    .await;
    (m, stop, run)
}

/// Two Managers on one database, each running the leader election.
struct Pair {
    managers: Vec<Arc<Manager>>,
    stops: Vec<CancellationToken>,
    runs: Vec<Option<tokio::task::JoinHandle<()>>>,
}

impl Pair {
    async fn start(db: &TestDatabase, lease: Duration) -> Pair {
        Pair::start_named(db, lease, ["m1", "m2"]).await
    }

    /// Two Managers with these `instance_name`s.
    async fn start_named(db: &TestDatabase, lease: Duration, names: [&str; 2]) -> Pair {
        let mut pair = Pair {
            managers: Vec::new(),
            stops: Vec::new(),
            runs: Vec::new(),
        };
        for name in names {
            let m = Arc::new(
                Manager::open(config(db, name, lease))
                    .await
                    .expect("open a Manager"),
            );
            assert_eq!(m.instance_name(), name);
            let stop = CancellationToken::new();
            pair.runs.push(Some(tokio::spawn(flamenco_core::leader::run(
                m.clone(),
                stop.clone(),
            ))));
            pair.managers.push(m);
            pair.stops.push(stop);
        }
        pair
    }

    fn leaders(&self) -> Vec<usize> {
        (0..2)
            .filter(|&i| self.managers[i].leadership().is_leader())
            .collect()
    }

    fn running(&self) -> Vec<usize> {
        (0..2)
            .filter(|&i| self.managers[i].leadership().loops_running())
            .collect()
    }

    /// Watch the pair for `period`: never both leading, never both running the singleton
    /// loops, and the lease document names the leader. The (term, holder) pairs seen.
    /// Sampling every 50 ms over a fixed period is the thing tested: an invariant over
    /// time, not a condition to wait for.
    async fn watch(
        &self,
        s: &MongoStore,
        period: Duration,
    ) -> std::collections::BTreeSet<(i64, String)> {
        let start = Instant::now();
        let mut terms = std::collections::BTreeSet::new();
        while start.elapsed() < period {
            let leaders = self.leaders();
            assert!(leaders.len() <= 1, "two leaders: {leaders:?}");
            let running = self.running();
            assert!(running.len() <= 1, "singleton loops on both: {running:?}");
            let doc = s
                .lease_current(LEADER_LEASE)
                .await
                .expect("read")
                .expect("stored");
            if let Some(&i) = leaders.first() {
                assert_eq!(doc.holder, self.managers[i].lease_holder());
                assert_eq!(
                    flamenco_core::leader::holder_instance(&doc.holder),
                    self.managers[i].instance_name()
                );
            }
            terms.insert((doc.term, doc.holder));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        terms
    }

    async fn stop(&mut self, i: usize) {
        self.stops[i].cancel();
        if let Some(run) = self.runs[i].take() {
            tokio::time::timeout(WAIT, run)
                .await
                .expect("leader::run ends after its token")
                .expect("join");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_managers_one_leader_and_a_clean_stop_hands_over_at_once() {
    let Some(db) = TestDatabase::new(&test_name()) else {
        return;
    };
    let lease = Duration::from_secs(3);
    let mut pair = Pair::start(&db, lease).await;
    let s = store(&db).await;

    until(WAIT, "one Manager leads", || pair.leaders().len() == 1).await;
    let terms = pair.watch(&s, 2 * lease).await;
    assert_eq!(
        terms.len(),
        1,
        "the leader changed with nobody stopping: {terms:?}"
    );
    let leader = pair.leaders()[0];
    let follower = 1 - leader;
    assert!(pair.managers[leader].leadership().loops_running());
    assert!(!pair.managers[follower].leadership().loops_running());
    // Both see the same holder (the follower from its own attempts).
    let holder = pair.managers[leader].lease_holder();
    until(WAIT, "the follower knows the holder", || {
        pair.managers[follower].leader_status().holder.as_deref() == Some(&holder)
    })
    .await;

    // A clean stop: loops stopped, lease released; the follower takes over before the
    // released lease would have expired.
    let before = s
        .lease_current(LEADER_LEASE)
        .await
        .expect("read")
        .expect("stored");
    pair.stop(leader).await;
    assert!(!pair.managers[leader].leadership().is_leader());
    assert!(!pair.managers[leader].leadership().loops_running());
    let took = until(WAIT, "the follower leads", || {
        pair.managers[follower].leadership().is_leader()
    })
    .await;
    let after = s
        .lease_current(LEADER_LEASE)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(after.holder, pair.managers[follower].lease_holder());
    assert_eq!(after.term, before.term + 1);
    assert!(
        after.acquired < before.expires,
        "taken at {:?}, not before the old lease's expiry {:?}: the release did not hand over",
        after.acquired,
        before.expires
    );
    eprintln!("handover after a clean stop: {took:?} (lease {lease:?})");
    assert!(pair.managers[follower].leadership().loops_running());
    pair.stop(follower).await;
    let last = s
        .lease_current(LEADER_LEASE)
        .await
        .expect("read")
        .expect("stored");
    assert!(last.released, "{last:?}");
}

/// Two Managers given the same `instance_name` (a configuration file copied to a second
/// machine): the lease holder is the name plus a per-process token, so they are two
/// holders and only one leads, over several renewals; when it stops, the other takes
/// over as a new term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_managers_with_the_same_instance_name_one_leader() {
    let Some(db) = TestDatabase::new(&test_name()) else {
        return;
    };
    let lease = Duration::from_secs(2);
    let mut pair = Pair::start_named(&db, lease, ["render", "render"]).await;
    let s = store(&db).await;
    assert_ne!(
        pair.managers[0].lease_holder(),
        pair.managers[1].lease_holder()
    );
    until(WAIT, "one Manager leads", || pair.leaders().len() == 1).await;
    // Over two lease periods (six renewals): never both.
    let terms = pair.watch(&s, 2 * lease).await;
    assert_eq!(terms.len(), 1, "the lease changed hands: {terms:?}");
    let leader = pair.leaders()[0];
    let follower = 1 - leader;
    let (_, holder) = terms.iter().next().expect("one term");
    assert_eq!(holder, &pair.managers[leader].lease_holder());
    assert_eq!(flamenco_core::leader::holder_instance(holder), "render");
    // What the displays say: the instance name, and which of the two holds the lease.
    let status = pair.managers[follower].leader_status();
    assert_eq!(status.instance, "render");
    assert!(!status.leading);
    until(WAIT, "the follower sees the holder", || {
        pair.managers[follower].leader_status().holder.as_deref() == Some(holder.as_str())
    })
    .await;
    let line = flamenco_core::leader::describe_holder(&pair.managers[follower])
        .await
        .expect("describe");
    assert!(
        line.starts_with("leader: render (term ") && line.contains(holder.as_str()),
        "{line}"
    );

    pair.stop(leader).await;
    until(WAIT, "the other one leads", || {
        pair.managers[follower].leadership().is_leader()
    })
    .await;
    let after = s
        .lease_current(LEADER_LEASE)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(after.holder, pair.managers[follower].lease_holder());
    let (first_term, _) = terms.iter().next().expect("one term");
    assert_eq!(after.term, first_term + 1);
    pair.stop(follower).await;
}

/// The push loop's fence (`upstream::push::check_still_leading`): right before a push the
/// leader reads the lease from the store, and a lease another Manager holds stops the
/// push even while this Manager's own view (renewed every third of the lease) still says
/// it leads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_checks_the_lease_in_the_store_first() {
    use flamenco_core::upstream::push::{check_still_leading, PushError};
    let Some(db) = TestDatabase::new(&test_name()) else {
        return;
    };
    // A long lease: no renewal during the test, so only the store read can notice.
    let lease = Duration::from_secs(60);
    let (m, stop, run) = start_leading(&db, "pusher", lease).await;
    check_still_leading(&m).await.expect("the leader may push");

    // Another Manager gets the lease behind its back (here: released by hand, then
    // taken), as after a partition that outlasted the lease.
    let s = store(&db).await;
    assert!(s
        .lease_release(LEADER_LEASE, &m.lease_holder())
        .await
        .expect("release"));
    let taken = s
        .lease_acquire(LEADER_LEASE, "intruder#00000001", lease)
        .await
        .expect("take");
    assert_eq!(taken.holder, "intruder#00000001");
    assert!(
        m.leadership().is_leader(),
        "its own view has not noticed yet"
    );
    match check_still_leading(&m).await {
        Err(PushError::NotLeader(why)) => {
            assert!(why.contains("intruder#00000001"), "{why}")
        }
        other => panic!("a push went ahead without the lease: {other:?}"),
    }
    stop.cancel();
    run.await.expect("join");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_renew_stops_its_loops_before_another_takes_over() {
    let Some(db) = TestDatabase::new(&test_name()) else {
        return;
    };
    // One Manager leads; then its store is closed under it (every renewal fails, as
    // when it loses the database): it must stop leading before its lease expires on the
    // server, and a second Manager takes over only after that expiry.
    let lease = Duration::from_secs(2);
    let (m1, stop1, run1) = start_leading(&db, "m1", lease).await;
    let s = store(&db).await;
    let held = s
        .lease_current(LEADER_LEASE)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(held.holder, m1.lease_holder());
    m1.store().close().await.expect("close m1's store");
    let stepped_down = until(WAIT, "m1 steps down", || !m1.leadership().is_leader()).await;
    assert!(
        stepped_down < lease,
        "m1 led for {stepped_down:?} without a renewal (lease {lease:?})"
    );
    until(WAIT, "m1's loops stop", || !m1.leadership().loops_running()).await;
    assert!(m1.leadership().store_error().is_some());

    let (m2, stop2, run2) = start_leading(&db, "m2", lease).await;
    let taken = s
        .lease_current(LEADER_LEASE)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(
        (taken.holder, taken.term),
        (m2.lease_holder(), held.term + 1)
    );
    // m1 renewed until its store closed; m2 took over only after m1's last expiry.
    let last_m1 = m1.leadership().last_seen().expect("m1 saw its lease");
    assert!(
        taken.acquired >= last_m1.expires,
        "m2 took the lease at {:?}, while m1's ran until {:?}",
        taken.acquired,
        last_m1.expires
    );
    stop1.cancel();
    stop2.cancel();
    run1.await.expect("join m1");
    run2.await.expect("join m2");
}

/// `store_operation_duration_seconds` calls of `operation` this Manager made.
async fn store_calls(m: &Manager, operation: &str) -> u64 {
    let text = flamenco_core::metrics::scrape(m).await;
    let prefix =
        format!("flamenco_store_operation_duration_seconds_count{{operation=\"{operation}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().expect("a count"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_fire_once_per_task_on_the_leader_only() {
    use flamenco_core::model::TaskStatus;
    use flamenco_core::store::conformance::{at, oid, test_task};

    let Some(db) = TestDatabase::new(&test_name()) else {
        return;
    };
    // A task active on a worker that went silent long ago.
    let s = store(&db).await;
    let mut silent = test_task(oid("1aaaaaaaaaaaaaaaaaaaaaaa"), "sleeping");
    silent.status = TaskStatus::Active;
    silent.last_worker_ping = Some(at(1_000));
    s.insert_tasks(&[silent.clone()]).await.expect("insert");

    // Three Managers, timeouts checked as soon as one leads.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut managers = Vec::new();
    let mut stops = Vec::new();
    let mut runs = Vec::new();
    for name in ["m1", "m2", "m3"] {
        let mut c = config(&db, name, Duration::from_secs(3));
        c.active_task_timeout_startup_delay = Duration::ZERO;
        c.active_task_timeout_interval = Duration::from_secs(1);
        // Upstream mode against a closed port: nothing drains the outbox, so it shows
        // every timeout update written.
        c.flamenco = format!("http://127.0.0.1:{closed}/");
        c.manager_id = "5f0000000000000000000001".into();
        c.manager_secret = "leader-test".into();
        let m = Arc::new(Manager::open(c).await.expect("open"));
        let stop = CancellationToken::new();
        runs.push(tokio::spawn(flamenco_core::leader::run(
            m.clone(),
            stop.clone(),
        )));
        managers.push(m);
        stops.push(stop);
    }
    let start = Instant::now();
    loop {
        let t = s.get_task(silent.id).await.expect("get").expect("task");
        if t.status == TaskStatus::Failed {
            break;
        }
        assert!(start.elapsed() < WAIT, "the silent task never timed out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let updates = s.outbox_peek(1000).await.expect("outbox");
    let failed: Vec<_> = updates
        .iter()
        .filter(|u| u.task_id == silent.id && u.task_status == Some(TaskStatus::Failed))
        .collect();
    assert_eq!(failed.len(), 1, "{updates:#?}");
    // Only the leader ran the timeout check.
    let mut checked = Vec::new();
    for m in &managers {
        if store_calls(m, "fail_timed_out_tasks").await > 0 {
            checked.push(m.instance_name().to_string());
        }
    }
    let leaders: Vec<String> = managers
        .iter()
        .filter(|m| m.leadership().is_leader())
        .map(|m| m.instance_name().to_string())
        .collect();
    assert_eq!(leaders.len(), 1, "{leaders:?}");
    assert_eq!(checked, leaders, "the timeout check ran on {checked:?}");
    for stop in &stops {
        stop.cancel();
    }
    for run in runs {
        run.await.expect("join");
    }
}

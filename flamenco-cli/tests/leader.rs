//! Two `flamenco serve` processes on one MongoDB database (`FLAMENCO_TEST_MONGODB_URL`):
//! one leads (`/metrics`, `/healthz`, `flamenco config check --connect` agree with the
//! lease document); after `kill -9` of the leader the other takes over within the lease,
//! and only after the dead leader's lease expired; after SIGTERM the lease is released
//! and the other takes over before it would have expired.
//!
//! Without `FLAMENCO_TEST_MONGODB_URL` it skips with a notice, except under `CI=true`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use flamenco_core::leader::holder_instance;
use flamenco_core::store::mongo::testing::TestDatabase;
use flamenco_core::store::mongo::MongoStore;
use flamenco_core::store::{CoordinationStore, Lease, LEADER_LEASE};
use tokio::process::{Child, Command};

const WAIT: Duration = Duration::from_secs(60);
const LEASE: Duration = Duration::from_secs(3);

fn write_config(dir: &Path, name: &str, port: u16, url: &str) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            "listen: '127.0.0.1:{port}'\ndata_dir: '{}'\ndatabase_url: '{url}'\n\
             leader_lease: 3s\ninstance_name: {name}\n",
            dir.join(format!("data-{name}")).display()
        ),
    )
    .expect("write config");
    path
}

struct Daemon {
    name: &'static str,
    port: u16,
    config: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    async fn start(dir: &Path, name: &'static str, url: &str) -> Daemon {
        let port = support::free_port();
        let config = write_config(dir, name, port, url);
        let mut d = Daemon {
            name,
            port,
            config,
            child: None,
        };
        d.spawn(dir).await;
        d
    }

    async fn spawn(&mut self, dir: &Path) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_flamenco"))
            .current_dir(dir)
            .env_remove("RUST_LOG")
            .arg("-c")
            .arg(&self.config)
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn flamenco serve");
        support::wait_until_listening(&mut child, WAIT).await;
        self.child = Some(child);
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `Some(true|false)` from `flamenco_leader{instance=…}`; `None` when not answering.
    async fn leads(&self, http: &reqwest::Client) -> Option<bool> {
        let text = http
            .get(self.url("/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let prefix = format!("flamenco_leader{{instance=\"{}\"}} ", self.name);
        let line = text.lines().find(|l| l.starts_with(&prefix))?;
        Some(line.ends_with(" 1"))
    }

    async fn signal(&mut self, signal: &str) {
        let mut child = self.child.take().expect("running");
        let pid = child.id().expect("pid").to_string();
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .await
            .expect("run kill");
        assert!(status.success());
        tokio::time::timeout(WAIT, child.wait())
            .await
            .expect("the daemon ends")
            .expect("wait");
    }
}

async fn lease(store: &MongoStore) -> Lease {
    store
        .lease_current(LEADER_LEASE)
        .await
        .expect("read the lease")
        .expect("a lease document")
}

/// Wait until exactly one of `daemons` says it leads; its index.
async fn one_leader(http: &reqwest::Client, daemons: &[&Daemon]) -> usize {
    let start = Instant::now();
    loop {
        let mut leaders = Vec::new();
        for (i, d) in daemons.iter().enumerate() {
            if d.leads(http).await == Some(true) {
                leaders.push(i);
            }
        }
        assert!(leaders.len() <= 1, "two leaders at once: {leaders:?}");
        if leaders.len() == 1 {
            return leaders[0];
        }
        assert!(start.elapsed() < WAIT, "nobody leads");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_within_the_lease_and_a_stopped_one_at_once() {
    let Some(db) = TestDatabase::new("leader process test") else {
        return;
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let http = reqwest::Client::new();
    let store = MongoStore::connect(&db.url).await.expect("connect");
    let mut a = Daemon::start(dir.path(), "a", &db.url).await;
    let mut b = Daemon::start(dir.path(), "b", &db.url).await;

    let first = one_leader(&http, &[&a, &b]).await;
    let (leader, follower) = if first == 0 {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    let held = lease(&store).await;
    // The holder is the instance name and the process's token.
    assert_eq!(holder_instance(&held.holder), leader.name);

    // /healthz: both healthy, and each knows whether it leads.
    for (d, leads) in [(&*leader, true), (&*follower, false)] {
        // 503 while a lease round could not reach the store: on a loaded machine the test
        // database can miss one round's deadline, so wait for the next good round.
        let answer = std::sync::Mutex::new(serde_json::Value::Null);
        flamenco_core::testing::wait_until(&format!("/healthz of {} answers 200", d.name), || {
            let (http, url, answer) = (&http, d.url("/healthz"), &answer);
            async move {
                let resp = http.get(url).send().await.expect("healthz");
                if resp.status().as_u16() != 200 {
                    return false;
                }
                let body = resp.json().await.expect("json");
                *answer.lock().expect("not poisoned") = body;
                true
            }
        })
        .await;
        let body = answer.into_inner().expect("not poisoned");
        assert_eq!(body["status"], "ok");
        assert_eq!(body["instance"], d.name);
        assert_eq!(body["leader"], leads, "{body}");
    }
    // The dashboard's status names the holder on both Managers.
    let status: serde_json::Value = http
        .get(follower.url("/api/status"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    assert_eq!(status["leader"]["instance"], follower.name);
    assert_eq!(status["leader"]["leading"], false);
    // `config check --connect` prints the holder from the lease document.
    let out = support::flamenco(dir.path())
        .arg("-c")
        .arg(&follower.config)
        .args(["config", "check", "--connect"])
        .output()
        .expect("config check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "# leader: {} (term {}), expires in",
            leader.name, held.term
        )),
        "{stdout}"
    );

    // kill -9 the leader: the follower takes over within the lease (plus a round trip),
    // and not before the dead leader's lease expired.
    let before = lease(&store).await;
    let killed = Instant::now();
    leader.signal("-KILL").await;
    loop {
        if follower.leads(&http).await == Some(true) {
            break;
        }
        assert!(killed.elapsed() < WAIT, "nobody took over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = killed.elapsed();
    eprintln!("takeover after kill -9: {took:?} (leader_lease {LEASE:?})");
    assert!(
        took < LEASE + Duration::from_secs(1),
        "takeover took {took:?} with a lease of {LEASE:?}"
    );
    let after = lease(&store).await;
    assert_eq!(holder_instance(&after.holder), follower.name);
    assert_eq!(after.term, before.term + 1, "{before:?} then {after:?}");
    assert!(
        after.acquired >= before.expires,
        "taken at {:?} before the killed leader's lease expired at {:?}",
        after.acquired,
        before.expires
    );

    // The killed Manager comes back as a follower; then the leader gets SIGTERM: it
    // releases the lease, and the other takes it before it would have expired.
    leader.spawn(dir.path()).await;
    let mut seen_leader = false;
    let start = Instant::now();
    while !seen_leader {
        assert!(start.elapsed() < WAIT);
        seen_leader = leader.leads(&http).await == Some(false);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(follower.leads(&http).await, Some(true));
    let before = lease(&store).await;
    follower.signal("-TERM").await;
    // Released, or already taken by the other.
    let released = lease(&store).await;
    assert!(
        released.released || holder_instance(&released.holder) == leader.name,
        "SIGTERM left the lease held: {released:?}"
    );
    assert_eq!(one_leader(&http, &[&*leader]).await, 0);
    let after = lease(&store).await;
    assert_eq!(
        (holder_instance(&after.holder), after.term),
        (leader.name, before.term + 1)
    );
    assert!(
        after.acquired < before.expires,
        "taken at {:?}, not before the released lease's expiry {:?}",
        after.acquired,
        before.expires
    );
    leader.signal("-TERM").await;
    assert!(lease(&store).await.released);
}

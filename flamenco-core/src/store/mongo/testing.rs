//! Test support for the MongoDB store (used by the test suites of this workspace, not part
//! of the SDK proper): where the test server is, and throwaway databases.
//!
//! `scripts/test.sh` starts a SecantusDB server and exports its URL as
//! [`URL_VAR`] (`mongodb://127.0.0.1:PORT/`; tests append their own database names) and
//! the server program as [`SERVER_VAR`] (for tests that start and stop a private server).
//! Without the URL, MongoDB tests skip visibly ([`crate::testing::skip_or_fail`]), except
//! under `CI=true`, where they fail: CI must run them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mongodb::event::command::CommandEvent;
use mongodb::event::EventHandler;
use mongodb::Client;

use super::MongoStore;
use crate::model::ObjectId;
use crate::store::StoreResult;

/// The test server's URL, without a database: `mongodb://127.0.0.1:PORT/`.
pub const URL_VAR: &str = "FLAMENCO_TEST_MONGODB_URL";
/// The test server's program (`secantusd-py`), for tests that run a private server.
pub const SERVER_VAR: &str = "FLAMENCO_TEST_SECANTUSD";

/// The value of `var`, or `None` after a visible skip notice (`test` names the test; see
/// [`crate::testing::skip_or_fail`]). Under `CI=true` a missing value is a failure (panic).
pub fn required_env(var: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Some(v.trim().to_string()),
        _ => {
            crate::testing::skip_or_fail(
                "MongoDB",
                test,
                &format!("{var} is not set"),
                "./scripts/test.sh starts a test MongoDB server and sets it",
            );
            None
        }
    }
}

/// The test server's URL ([`URL_VAR`]), or `None` (see [`required_env`]).
pub fn server_url(test: &str) -> Option<String> {
    required_env(URL_VAR, test)
}

/// `base` (a URL without a database, or with one) pointing at database `name`; the query
/// string is kept.
pub fn with_database(base: &str, name: &str) -> String {
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let (head, query) = match base.find('?') {
        Some(q) => (&base[..q], &base[q..]),
        None => (base, ""),
    };
    let hosts_end = head[after_scheme..]
        .find('/')
        .map_or(head.len(), |i| after_scheme + i);
    format!("{}/{name}{query}", &head[..hosts_end])
}

/// A database of its own for one test, dropped when this guard is dropped.
pub struct TestDatabase {
    /// The URL of the test database.
    pub url: String,
    pub name: String,
}

impl TestDatabase {
    /// A fresh database name on the test server; `None` when there is no test server
    /// (see [`server_url`]).
    pub fn new(test: &str) -> Option<TestDatabase> {
        let base = server_url(test)?;
        let name = format!("flamenco_test_{}", ObjectId::new());
        Some(TestDatabase {
            url: with_database(&base, &name),
            name,
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop may run inside a runtime (or while a test panics): use a thread of our own.
        let url = self.url.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let drop = async {
                    let client = Client::with_uri_str(&url).await?;
                    client.database(&name).drop().await?;
                    client.shutdown().immediate(true).await;
                    Ok::<(), mongodb::error::Error>(())
                };
                match tokio::time::timeout(Duration::from_secs(10), drop).await {
                    Ok(result) => result.map_err(|e| e.to_string()),
                    Err(_) => Err("timed out".to_string()),
                }
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!(
                "warning: could not drop the test database {}: {e}",
                self.name
            );
        }
    }
}

/// The commands a store sent to the server, in order, each as `"<command> <collection>"`
/// (e.g. `"find flamenco_tasks"`, `"update flamenco_tasks"`): the driver's
/// command monitoring, for counting the round trips of an operation (docs/performance.md).
/// Server monitoring (heartbeats) is not included.
#[derive(Clone, Default)]
pub struct CommandLog(Arc<Mutex<Vec<String>>>);

impl CommandLog {
    /// The commands sent since the last `take`, and forget them.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn push(&self, command: String) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(command);
    }
}

/// Like [`MongoStore::connect`], with every command the store sends recorded in the
/// returned [`CommandLog`].
pub async fn connect_logged(url: &str) -> StoreResult<(MongoStore, CommandLog)> {
    let (mut options, name) = super::connect::options(url).await?;
    let log = CommandLog::default();
    let sink = log.clone();
    options.command_event_handler = Some(EventHandler::callback(move |event| {
        if let CommandEvent::Started(started) = event {
            // The collection is the value of the command's first field (for `getMore`,
            // its `collection` field).
            let collection = match started.command_name.as_str() {
                "getMore" => started.command.get_str("collection").ok(),
                _ => started.command.iter().next().and_then(|(_, v)| v.as_str()),
            }
            .unwrap_or("");
            sink.push(format!("{} {collection}", started.command_name));
        }
    }));
    let client = super::connect::client(url, options).await?;
    let database = client.database(&name);
    let store = MongoStore::prepare(url, client, database).await?;
    log.take(); // the ping and the indices
    Ok((store, log))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_go_into_the_path() {
        assert_eq!(
            with_database("mongodb://127.0.0.1:27017/", "t1"),
            "mongodb://127.0.0.1:27017/t1"
        );
        assert_eq!(
            with_database("mongodb://127.0.0.1:27017", "t1"),
            "mongodb://127.0.0.1:27017/t1"
        );
        assert_eq!(
            with_database("mongodb://u:p@h1,h2/old?replicaSet=rs", "t1"),
            "mongodb://u:p@h1,h2/t1?replicaSet=rs"
        );
        assert_eq!(
            with_database("mongodb://h/?directConnection=true", "t1"),
            "mongodb://h/t1?directConnection=true"
        );
    }
}

//! The bodies exchanged with the Flamenco Server, field for field as in
//! server-protocol.md §2 (what the Go Manager 2.0.x sent, plus the documented additions).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{Config, VariableMap};
use crate::model::{ObjectId, Task, TaskStatus, TaskUpdate};

/// `POST …/startup` (§2.1): the four keys the Server requires, plus `worker_task_types`
/// (read by Servers from 2018-11 on, ignored by 2.0.4).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StartupBody {
    pub manager_url: String,
    /// `null` when the configuration has none (as Go sent a nil map).
    pub variables: Option<VariableMap>,
    pub path_replacement: Option<VariableMap>,
    /// Workers in the store; −1 when they could not be counted.
    pub nr_of_workers: i64,
    /// Every task type some worker supports, sorted.
    pub worker_task_types: Vec<String>,
}

impl StartupBody {
    /// The body for this configuration and these workers' task types.
    pub fn new(config: &Config, nr_of_workers: i64, worker_task_types: Vec<String>) -> Self {
        let non_empty = |m: &VariableMap| (!m.is_empty()).then(|| m.clone());
        StartupBody {
            manager_url: manager_url(config),
            variables: non_empty(&config.variables),
            path_replacement: non_empty(&config.path_replacement),
            nr_of_workers,
            worker_task_types,
        }
    }
}

/// `own_url` with v2's scheme rewrite (manager-v2.md §1.5): with both `tlscert` and
/// `tlskey` the first `http://` becomes `https://`, otherwise the first `https://` becomes
/// `http://`.
pub fn manager_url(config: &Config) -> String {
    let tls = !config.tlscert.is_empty() && !config.tlskey.is_empty();
    if tls {
        config.own_url.replacen("http://", "https://", 1)
    } else {
        config.own_url.replacen("https://", "http://", 1)
    }
}

/// One element of a `task-update-batch` push (§2.3): the Go Manager's fields, plus
/// `current_command_index`, the name the Server actually reads.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PushUpdate<'a> {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub task_id: ObjectId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_status: Option<&'a TaskStatus>,
    pub received_on_manager: DateTime<Utc>,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub activity: &'a str,
    pub task_progress_percentage: i64,
    pub current_command_idx: i64,
    pub current_command_index: i64,
    pub command_progress_percentage: i64,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub log: &'a str,
    pub worker: &'a str,
}

impl<'a> From<&'a TaskUpdate> for PushUpdate<'a> {
    fn from(u: &'a TaskUpdate) -> Self {
        PushUpdate {
            id: u.id,
            task_id: u.task_id,
            task_status: u.task_status.as_ref(),
            received_on_manager: u.received_on_manager,
            activity: &u.activity,
            task_progress_percentage: u.task_progress_percentage,
            current_command_idx: u.current_command_idx,
            current_command_index: u.current_command_idx,
            command_progress_percentage: u.command_progress_percentage,
            log: &u.log,
            worker: &u.worker,
        }
    }
}

/// A push body: always a JSON array, `[]` when empty (v2 sent `null`).
pub fn push_body(updates: &[TaskUpdate]) -> Vec<u8> {
    let items: Vec<PushUpdate<'_>> = updates.iter().map(PushUpdate::from).collect();
    serde_json::to_vec(&items).unwrap_or_else(|_| b"[]".to_vec())
}

/// The answer to a push (§2.3). `handled_update_ids` and `cancel_task_ids` may be
/// missing; ids that are not ObjectIds are ignored.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct BatchAnswer {
    #[serde(default)]
    pub modified_count: i64,
    #[serde(default, deserialize_with = "lenient_ids")]
    pub handled_update_ids: Vec<ObjectId>,
    #[serde(default, deserialize_with = "lenient_ids")]
    pub cancel_task_ids: Vec<ObjectId>,
}

fn lenient_ids<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ObjectId>, D::Error> {
    let raw: Option<Vec<serde_json::Value>> = Option::deserialize(d)?;
    Ok(raw
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.as_str().and_then(|s| ObjectId::parse(s).ok()))
        .collect())
}

/// A `depsgraph` answer body: `{"depsgraph": [task, …]}`. Tasks that do not decode are
/// counted, not fatal.
#[derive(Clone, Debug, Default)]
pub struct DepsgraphBody {
    pub tasks: Vec<Task>,
    /// Tasks of the answer that could not be decoded (logged in one line).
    pub undecodable: usize,
}

impl DepsgraphBody {
    pub fn parse(bytes: &[u8]) -> Result<DepsgraphBody, String> {
        #[derive(Deserialize)]
        struct Raw {
            depsgraph: Option<Vec<serde_json::Value>>,
        }
        let raw: Raw = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let mut body = DepsgraphBody::default();
        // One log line per answer, however many of its tasks do not decode.
        let mut first_error = None;
        for value in raw.depsgraph.unwrap_or_default() {
            let id = value.get("_id").cloned();
            match serde_json::from_value::<Task>(value) {
                Ok(task) => body.tasks.push(task),
                Err(e) => {
                    first_error.get_or_insert((id, e));
                    body.undecodable += 1;
                }
            }
        }
        if let Some((id, e)) = first_error {
            tracing::warn!(
                first = ?id,
                "ignoring {} task(s) of the depsgraph that do not decode; the first: {e}",
                body.undecodable
            );
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::{json, Value};

    use super::*;

    fn keys(v: &Value) -> BTreeSet<String> {
        v.as_object().expect("object").keys().cloned().collect()
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// server-protocol.md §2.3: every key the Go Manager sent, `task_status`, `activity`
    /// and `log` omitted when empty, plus `current_command_index`.
    #[test]
    fn push_update_has_the_protocol_keys() {
        let mut u = TaskUpdate::new(ObjectId::new(), Utc::now());
        u.task_status = Some(TaskStatus::Active);
        u.activity = "Rendering frame 3".into();
        u.log = "line1\nline2".into();
        u.worker = "worker-1 (192.168.1.5)".into();
        u.current_command_idx = 1;
        u.task_progress_percentage = 10;
        u.command_progress_percentage = 50;
        let v: Value = serde_json::from_slice(&push_body(std::slice::from_ref(&u))).unwrap();
        let full = &v[0];
        assert_eq!(
            keys(full),
            set(&[
                "_id",
                "task_id",
                "task_status",
                "received_on_manager",
                "activity",
                "task_progress_percentage",
                "current_command_idx",
                "current_command_index",
                "command_progress_percentage",
                "log",
                "worker",
            ])
        );
        assert_eq!(full["_id"], u.id.to_hex());
        assert_eq!(full["task_id"], u.task_id.to_hex());
        assert_eq!(full["task_status"], "active");
        assert_eq!(full["current_command_idx"], 1);
        assert_eq!(full["current_command_index"], 1);
        assert_eq!(full["task_progress_percentage"], 10);
        assert_eq!(full["command_progress_percentage"], 50);
        // RFC 3339 with a `Z`, as Go's time.Time marshals.
        let rom = full["received_on_manager"].as_str().unwrap();
        assert!(rom.ends_with('Z'), "{rom}");
        assert_eq!(
            DateTime::parse_from_rfc3339(rom).unwrap(),
            u.received_on_manager
        );

        let bare = TaskUpdate::new(ObjectId::new(), Utc::now());
        let v: Value = serde_json::from_slice(&push_body(&[bare])).unwrap();
        assert_eq!(
            keys(&v[0]),
            set(&[
                "_id",
                "task_id",
                "received_on_manager",
                "task_progress_percentage",
                "current_command_idx",
                "current_command_index",
                "command_progress_percentage",
                "worker",
            ])
        );
        assert_eq!(v[0]["worker"], "");
        // The empty push is `[]`, never `null`.
        assert_eq!(push_body(&[]), b"[]");
    }

    /// server-protocol.md §2.1: the four required keys (maps `null` when absent) plus
    /// `worker_task_types`.
    #[test]
    fn startup_body_has_the_protocol_keys() {
        let mut config = Config {
            own_url: "https://manager.local:8083/".into(),
            ..Config::default()
        };
        let body = StartupBody::new(&config, 3, vec!["blender-render".into(), "sleep".into()]);
        let v = serde_json::to_value(&body).unwrap();
        assert_eq!(
            keys(&v),
            set(&[
                "manager_url",
                "variables",
                "path_replacement",
                "nr_of_workers",
                "worker_task_types"
            ])
        );
        assert_eq!(
            v["manager_url"], "http://manager.local:8083/",
            "no TLS: http"
        );
        assert_eq!(v["variables"], Value::Null);
        assert_eq!(v["path_replacement"], Value::Null);
        assert_eq!(v["nr_of_workers"], 3);
        assert_eq!(v["worker_task_types"], json!(["blender-render", "sleep"]));

        config.tlscert = "c.pem".into();
        config.tlskey = "k.pem".into();
        config.own_url = "http://manager.local:8083/".into();
        config
            .path_replacement
            .entry("render".into())
            .or_default()
            .insert("windows".into(), "r:".into());
        let v = serde_json::to_value(StartupBody::new(&config, 0, vec![])).unwrap();
        assert_eq!(v["manager_url"], "https://manager.local:8083/");
        assert_eq!(v["path_replacement"], json!({"render": {"windows": "r:"}}));
    }

    /// server-protocol.md §2.3: `handled_update_ids` always, `cancel_task_ids` only when
    /// non-empty; anything may be missing.
    #[test]
    fn batch_answers_decode_leniently() {
        let a: BatchAnswer = serde_json::from_str(
            r#"{"modified_count": 2, "handled_update_ids": ["5a0000000000000000000001", "junk"],
                "cancel_task_ids": ["6b0a8063686c824d22bdc97b"]}"#,
        )
        .unwrap();
        assert_eq!(a.modified_count, 2);
        assert_eq!(a.handled_update_ids.len(), 1);
        assert_eq!(a.cancel_task_ids.len(), 1);
        let a: BatchAnswer =
            serde_json::from_str(r#"{"modified_count":0,"handled_update_ids":[]}"#).unwrap();
        assert!(a.cancel_task_ids.is_empty());
        let a: BatchAnswer = serde_json::from_str("{}").unwrap();
        assert_eq!(a, BatchAnswer::default());
    }

    /// The depsgraph task of server-protocol.md §3.1, as the Server returns it.
    #[test]
    fn depsgraph_task_decodes() {
        let body = br#"{"depsgraph": [
            {"_id": "6b0a8063686c824d22bdc97b", "job": "6b0a8063686c824d22bdc97a",
             "manager": "6b0a8063686c824d22bdc978", "user": "6b0a8063686c824d22bdc972",
             "name": "sleep-1-3", "status": "claimed-by-manager", "job_type": "sleep",
             "task_type": "sleep",
             "commands": [{"name": "echo", "settings": {"message": "Preparing to sleep"}},
                          {"name": "sleep", "settings": {"time_in_seconds": 3}}],
             "job_priority": 50, "priority": 50, "project": "6b0a8063686c824d22bdc973",
             "_updated": "Sat, 28 Nov 2026 07:18:59 GMT",
             "_created": "Sat, 28 Nov 2026 07:18:59 GMT",
             "_etag": "42ebc5b2b448489f8606a2ca5e0d9a50"},
            {"_id": "not an id"}
        ]}"#;
        let parsed = DepsgraphBody::parse(body).unwrap();
        assert_eq!(parsed.undecodable, 1);
        let t = &parsed.tasks[0];
        assert_eq!(t.id.to_hex(), "6b0a8063686c824d22bdc97b");
        assert_eq!(t.etag, "42ebc5b2b448489f8606a2ca5e0d9a50");
        assert_eq!(t.status, TaskStatus::ClaimedByManager);
        assert_eq!(t.commands.len(), 2);
        assert!(t.parents.is_empty());
        assert!(DepsgraphBody::parse(b"not json").is_err());
    }
}

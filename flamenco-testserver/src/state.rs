//! The Server's data (managers, tokens, jobs, tasks, task logs) and the 2.0.4 semantics of
//! the Manager API on it: depsgraph claiming, the per-update rules of task-update-batch,
//! and the job/task status cascades (server-protocol.md §2–§4). No HTTP here.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use crate::formats::{new_etag, now_ms, rfc1123};

/// Task statuses the 2.0.4 schema allows.
pub const TASK_STATUSES: [&str; 8] = [
    "under-construction",
    "queued",
    "claimed-by-manager",
    "completed",
    "active",
    "cancel-requested",
    "canceled",
    "failed",
];

/// A Manager document plus its service account's token.
#[derive(Clone, Debug)]
pub struct ManagerDoc {
    pub id: String,
    pub service_account: String,
    pub url: Value,
    pub variables: Value,
    pub path_replacement: Value,
    pub nr_of_workers: Value,
    pub worker_task_types: Option<Value>,
}

/// A job document (the fields the Manager API touches).
#[derive(Clone, Debug)]
pub struct JobDoc {
    pub id: String,
    pub manager: String,
    pub name: String,
    pub job_type: String,
    pub status: String,
    pub priority: i64,
    pub project: String,
    pub user: String,
}

/// A task document: its JSON fields (without the Eve meta fields) and the meta fields.
#[derive(Clone, Debug)]
pub struct TaskDoc {
    pub fields: Map<String, Value>,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    pub etag: String,
}

impl JobDoc {
    pub fn to_json(&self) -> Value {
        json!({"_id": self.id, "manager": self.manager, "name": self.name,
               "job_type": self.job_type, "status": self.status, "priority": self.priority,
               "project": self.project, "user": self.user})
    }
}

impl TaskDoc {
    pub fn id(&self) -> &str {
        self.str("_id")
    }
    pub fn str(&self, key: &str) -> &str {
        self.fields.get(key).and_then(Value::as_str).unwrap_or("")
    }
    pub fn status(&self) -> &str {
        self.str("status")
    }
    pub fn manager(&self) -> &str {
        self.str("manager")
    }
    pub fn job(&self) -> &str {
        self.str("job")
    }

    /// The document as Pillar's JSON encoder writes it.
    pub fn to_json(&self) -> Value {
        let mut m = self.fields.clone();
        m.insert("_created".into(), Value::String(rfc1123(self.created)));
        m.insert("_updated".into(), Value::String(rfc1123(self.updated)));
        m.insert("_etag".into(), Value::String(self.etag.clone()));
        Value::Object(m)
    }
}

/// One stored task log entry (`flamenco_task_logs`, keyed by the update id).
#[derive(Clone, Debug, PartialEq)]
pub struct TaskLog {
    pub update_id: String,
    pub task: String,
    pub received_on_manager: String,
    pub log: String,
}

/// Everything the Server keeps.
#[derive(Default)]
pub struct Data {
    pub managers: BTreeMap<String, ManagerDoc>,
    /// token → user id
    pub tokens: HashMap<String, String>,
    pub jobs: BTreeMap<String, JobDoc>,
    /// Natural (insertion) order, as MongoDB returns them.
    pub task_order: Vec<String>,
    pub tasks: HashMap<String, TaskDoc>,
    pub logs: Vec<TaskLog>,
    /// update id → its entry in `logs` (a re-sent update replaces its log in O(1), so
    /// throughput measurements are not dominated by this double).
    log_index: HashMap<String, usize>,
    /// Every task-update element that was processed, in arrival order (duplicates too).
    pub received_updates: Vec<Value>,
    /// Every successful startup body, per manager id.
    pub startups: Vec<(String, Value)>,
}

/// A Manager API failure as Pillar/Eve answers it.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiFailure {
    pub status: u16,
    pub message: String,
}

impl ApiFailure {
    pub fn new(status: u16, message: impl Into<String>) -> ApiFailure {
        ApiFailure {
            status,
            message: message.into(),
        }
    }

    /// Eve/Pillar's error body.
    pub fn body(&self) -> Value {
        json!({"_status": "ERR", "_error": {"code": self.status, "message": self.message}})
    }
}

/// The answer to a task-update batch.
#[derive(Clone, Debug, Default)]
pub struct BatchAnswer {
    pub modified_count: u64,
    pub handled_update_ids: Vec<String>,
    pub cancel_task_ids: Vec<String>,
}

impl BatchAnswer {
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("modified_count".into(), json!(self.modified_count));
        m.insert("handled_update_ids".into(), json!(self.handled_update_ids));
        // Present only when non-empty (server-protocol.md §2.3).
        if !self.cancel_task_ids.is_empty() {
            m.insert("cancel_task_ids".into(), json!(self.cancel_task_ids));
        }
        Value::Object(m)
    }
}

/// What a depsgraph request gets.
pub enum Depsgraph {
    /// 204: no runnable job.
    NoJobs,
    /// 304: incremental and nothing changed.
    NotModified,
    /// 200.
    Tasks {
        tasks: Vec<TaskDoc>,
        last_updated: Option<DateTime<Utc>>,
    },
}

impl Data {
    /// The caller's user id for a Basic-auth username/password, if the token is valid.
    pub fn user_for(&self, token: &str, password: &str) -> Option<&String> {
        // A non-empty password is taken as a Blender ID sub-client id: the lookup fails.
        if !password.is_empty() {
            return None;
        }
        self.tokens.get(token)
    }

    /// Is `user` the service account of some Manager (roles service + flamenco_manager)?
    pub fn is_manager_account(&self, user: &str) -> bool {
        self.managers.values().any(|m| m.service_account == user)
    }

    fn job_tasks<'a>(&'a self, job: &'a str) -> impl Iterator<Item = &'a TaskDoc> + 'a {
        self.task_order
            .iter()
            .filter_map(|id| self.tasks.get(id))
            .filter(move |t| t.job() == job)
    }

    // ---- depsgraph ----

    pub fn depsgraph(&mut self, mid: &str, since: Option<DateTime<Utc>>) -> Depsgraph {
        let runnable: HashSet<String> = self
            .jobs
            .values()
            .filter(|j| {
                j.manager == mid && ["queued", "active", "cancel-requested"].contains(&&*j.status)
            })
            .map(|j| j.id.clone())
            .collect();
        if runnable.is_empty() {
            return Depsgraph::NoJobs;
        }
        let statuses: &[&str] = if since.is_some() {
            &["queued", "claimed-by-manager"]
        } else {
            &["queued", "claimed-by-manager", "active", "cancel-requested"]
        };
        let ids: Vec<String> = self
            .task_order
            .iter()
            .filter(|id| {
                let t = &self.tasks[*id];
                t.manager() == mid
                    && runnable.contains(t.job())
                    && statuses.contains(&t.status())
                    && since.is_none_or(|s| t.updated > s)
            })
            .cloned()
            .collect();
        if ids.is_empty() {
            return match since {
                Some(_) => Depsgraph::NotModified,
                None => Depsgraph::Tasks {
                    tasks: Vec::new(),
                    last_updated: None,
                },
            };
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in &ids {
            let t = self.tasks.get_mut(id).expect("listed task");
            // The claim: a bare $set, `_updated` and `_etag` untouched.
            if t.status() == "queued" {
                t.fields
                    .insert("status".into(), Value::String("claimed-by-manager".into()));
            }
            out.push(t.clone());
        }
        let last_updated = out.iter().map(|t| t.updated).max();
        Depsgraph::Tasks {
            tasks: out,
            last_updated,
        }
    }

    // ---- task-update-batch ----

    /// Apply a batch (server-protocol.md §2.3). `never_ack` says which update ids (or
    /// updates of which tasks) are applied but not acknowledged.
    pub fn apply_batch(
        &mut self,
        mid: &str,
        updates: &[Value],
        never_ack: &dyn Fn(&str, &str) -> bool,
    ) -> Result<BatchAnswer, ApiFailure> {
        let mut answer = BatchAnswer::default();
        for update in updates {
            self.received_updates.push(update.clone());
            let Some(obj) = update.as_object() else {
                return Err(ApiFailure::new(500, "update is not an object"));
            };
            let (Some(uid), Some(tid)) = (obj.get("_id"), obj.get("task_id")) else {
                return Err(ApiFailure::new(500, "KeyError"));
            };
            let (Some(uid), Some(tid)) = (uid.as_str(), tid.as_str()) else {
                return Err(ApiFailure::new(400, "Invalid object ID"));
            };
            if !crate::formats::is_object_id(uid) || !crate::formats::is_object_id(tid) {
                return Err(ApiFailure::new(
                    400,
                    format!("Invalid object ID '{uid}' or '{tid}'"),
                ));
            }
            let (uid, tid) = (uid.to_ascii_lowercase(), tid.to_ascii_lowercase());
            let Some(task) = self.tasks.get(&tid) else {
                // Unknown task: handled, ignored.
                if !never_ack(&uid, &tid) {
                    answer.handled_update_ids.push(uid);
                }
                continue;
            };
            if task.manager() != mid {
                // Another manager's task: skipped and not handled.
                continue;
            }
            let log = obj.get("log").and_then(Value::as_str).unwrap_or("");
            if !log.is_empty() {
                let Some(rom) = obj.get("received_on_manager") else {
                    return Err(ApiFailure::new(500, "KeyError: 'received_on_manager'"));
                };
                let entry = TaskLog {
                    update_id: uid.clone(),
                    task: tid.clone(),
                    received_on_manager: rom.as_str().unwrap_or_default().to_string(),
                    log: log.to_string(),
                };
                match self.log_index.get(&uid) {
                    Some(&i) => self.logs[i] = entry,
                    None => {
                        self.log_index.insert(uid.clone(), self.logs.len());
                        self.logs.push(entry);
                    }
                }
            }
            let task = self.tasks.get_mut(&tid).expect("task exists");
            let before = task.fields.clone();
            let int = |key: &str| obj.get(key).and_then(Value::as_i64).unwrap_or(0);
            // Note: `current_command_idx` is not read (2.0.4).
            for key in [
                "task_progress_percentage",
                "current_command_index",
                "command_progress_percentage",
            ] {
                task.fields.insert(key.into(), json!(int(key)));
            }
            for key in ["activity", "worker"] {
                if let Some(v) = obj.get(key).and_then(Value::as_str) {
                    if !v.is_empty() {
                        task.fields.insert(key.into(), Value::String(v.to_string()));
                    }
                }
            }
            let mut new_status = None;
            if let Some(st) = obj.get("task_status").and_then(Value::as_str) {
                let current = task.status().to_string();
                let allowed_from_cancel = ["canceled", "failed", "completed"];
                if st != current
                    && TASK_STATUSES.contains(&st)
                    && (current != "cancel-requested" || allowed_from_cancel.contains(&st))
                {
                    task.fields
                        .insert("status".into(), Value::String(st.to_string()));
                    new_status = Some(st.to_string());
                }
            }
            if task.fields != before {
                answer.modified_count += 1;
            }
            if !never_ack(&uid, &tid) {
                answer.handled_update_ids.push(uid);
            }
            if let Some(st) = new_status {
                let job = self.tasks[&tid].job().to_string();
                self.job_after_task_status_change(&job, &st);
            }
        }
        answer.cancel_task_ids = self
            .task_order
            .iter()
            .filter(|id| {
                let t = &self.tasks[*id];
                t.manager() == mid && t.status() == "cancel-requested"
            })
            .cloned()
            .collect();
        Ok(answer)
    }

    // ---- cascades ----

    /// `update_job_after_task_status_change` (§4.2).
    pub fn job_after_task_status_change(&mut self, job_id: &str, new_task_status: &str) {
        let Some(job_status) = self.jobs.get(job_id).map(|j| j.status.clone()) else {
            return;
        };
        let tasks: Vec<&TaskDoc> = self.job_tasks(job_id).collect();
        let total = tasks.len();
        let count = |st: &str| tasks.iter().filter(|t| t.status() == st).count();
        let new_job_status = match new_task_status {
            "queued" if job_status == "completed" => Some("queued"),
            "canceled" if count("cancel-requested") == 0 => Some("canceled"),
            "failed" => {
                if total > 0 && count("failed") * 10 >= total {
                    Some("failed")
                } else if job_status == "queued" {
                    Some("active")
                } else {
                    None
                }
            }
            "active" | "processing" if job_status != "active" => Some("active"),
            "completed" => {
                if count("completed") == total {
                    Some("completed")
                } else if job_status == "queued" {
                    Some("active")
                } else {
                    None
                }
            }
            _ => None,
        };
        if let Some(st) = new_job_status {
            self.set_job_status(job_id, st);
        }
    }

    /// A job status change and its effect on the tasks (§4.3). Every task write bumps
    /// `_updated` and gives the touched tasks one shared new `_etag`.
    pub fn set_job_status(&mut self, job_id: &str, new_status: &str) {
        let Some(job) = self.jobs.get_mut(job_id) else {
            return;
        };
        let old = std::mem::replace(&mut job.status, new_status.to_string());
        let ids: Vec<String> = self.job_tasks(job_id).map(|t| t.id().to_string()).collect();
        match new_status {
            "cancel-requested" | "failed" => {
                let mut to_cancel = Vec::new();
                let mut to_request = Vec::new();
                for id in &ids {
                    match self.tasks[id].status() {
                        "queued" => to_cancel.push(id.clone()),
                        "active" | "claimed-by-manager" => to_request.push(id.clone()),
                        _ => {}
                    }
                }
                self.write_statuses(&to_cancel, "canceled");
                self.write_statuses(&to_request, "cancel-requested");
                let activity = format!(
                    "Server cancelled this task because the job got status '{new_status}'."
                );
                for id in to_cancel.iter().chain(&to_request) {
                    let t = self.tasks.get_mut(id).expect("task");
                    if t.str("activity").is_empty() {
                        t.fields
                            .insert("activity".into(), Value::String(activity.clone()));
                    }
                }
                if new_status == "cancel-requested" && to_request.is_empty() {
                    if let Some(job) = self.jobs.get_mut(job_id) {
                        job.status = "canceled".into();
                    }
                }
            }
            "queued" if old == "under-construction" => {}
            "queued" if old == "completed" => {
                let ids: Vec<String> = ids
                    .into_iter()
                    .filter(|id| self.tasks[id].status() != "cancel-requested")
                    .collect();
                self.write_statuses(&ids, "queued");
            }
            "queued" => {
                let ids: Vec<String> = ids
                    .into_iter()
                    .filter(|id| {
                        !["completed", "cancel-requested"].contains(&self.tasks[id].status())
                    })
                    .collect();
                self.write_statuses(&ids, "queued");
            }
            _ => {}
        }
    }

    /// `update_status_q`: one write, one timestamp and one etag for all the tasks.
    pub fn write_statuses(&mut self, ids: &[String], status: &str) {
        if ids.is_empty() {
            return;
        }
        let now = now_ms();
        let etag = new_etag();
        for id in ids {
            if let Some(t) = self.tasks.get_mut(id) {
                t.fields
                    .insert("status".into(), Value::String(status.to_string()));
                t.updated = now;
                t.etag.clone_from(&etag);
            }
        }
    }

    /// Insert a task document as given (`_id` must be set).
    pub fn insert_task(&mut self, doc: TaskDoc) {
        let id = doc.id().to_string();
        if !self.tasks.contains_key(&id) {
            self.task_order.push(id.clone());
        }
        self.tasks.insert(id, doc);
    }
}

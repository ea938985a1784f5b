//! Documents: how tasks, workers and queued updates are written to BSON and read back,
//! with v2's field names and types (manager-v2.md §3.3–3.5).
//!
//! * Ids are BSON ObjectIds, times BSON datetimes (milliseconds), priorities int32.
//! * Empty optional fields are omitted, as v2 did (`_etag`, `job`, `log`, `activity`,
//!   `parents`, `worker`, `worker_id`, the times, `current_task`, …); a missing field
//!   reads as empty.
//! * `hashed_secret` is written as BSON binary (v2's type) and read from binary or string;
//!   it stays bcrypt, so a v2 Manager still accepts the worker. `secret_sha256` (ours: the
//!   fast hash, `auth::digest`) is a string next to it, omitted when empty; v2 ignores it.
//! * Command settings are free-form: JSON integers become int32/int64, other numbers
//!   doubles (an integer above `i64::MAX` too). v2 stored every number as a double and
//!   its JSON encoder (Go's) wrote whole ones without a fraction, so in command settings a
//!   whole double within the i64 range reads back as a JSON integer (`2.0` → `2`: Flamenco
//!   Worker 2.0.x checks `cycles_chunk` & co. with `isinstance(value, int)`), at any
//!   depth; other doubles read as JSON floats. Other BSON types a foreign writer may have
//!   used read as strings (ObjectId as hex, datetime as RFC 3339).
//!
//! Decoding never panics: a field of the wrong type is a [`StoreError::Corrupt`] that
//! names the collection, the document and the field.

use chrono::{DateTime, Utc};
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{self, Binary, Bson, Document};
use serde_json::{Map, Number, Value};

use crate::model::{
    Command, Job, JobStatus, ObjectId, RequestedStatus, Task, TaskCounts, TaskStatus, TaskUpdate,
    Worker,
};
use crate::store::{StoreError, StoreResult};

pub(super) const TASKS: &str = "flamenco_tasks";
pub(super) const WORKERS: &str = "flamenco_workers";
pub(super) const UPDATES: &str = "task_update_queue";
/// Jobs (standalone mode), v2's Server collection name.
pub(super) const JOBS: &str = "flamenco_jobs";
pub(super) const SETTINGS: &str = "settings";
/// Ours: the outbox's arrival-order sequence (see `outbox`).
pub(super) const COUNTERS: &str = "flamenco_counters";

// ---- writing values ----

pub(super) fn oid(id: ObjectId) -> Bson {
    Bson::ObjectId(bson::oid::ObjectId::from_bytes(id.bytes()))
}

/// An optional id, `null` when absent (for filters: `null` also matches a missing field).
pub(super) fn oid_or_null(id: Option<ObjectId>) -> Bson {
    id.map_or(Bson::Null, oid)
}

pub(super) fn date(t: DateTime<Utc>) -> Bson {
    Bson::DateTime(bson::DateTime::from_millis(t.timestamp_millis()))
}

/// An integer as int32 when it fits, int64 otherwise.
pub(super) fn int(i: i64) -> Bson {
    i32::try_from(i).map_or(Bson::Int64(i), Bson::Int32)
}

fn ids(list: &[ObjectId]) -> Bson {
    Bson::Array(list.iter().map(|id| oid(*id)).collect())
}

/// A JSON value as BSON (command settings).
pub(super) fn json_to_bson(v: &Value) -> Bson {
    match v {
        Value::Null => Bson::Null,
        Value::Bool(b) => Bson::Boolean(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => int(i),
            (None, Some(f)) => Bson::Double(f),
            (None, None) => Bson::Null,
        },
        Value::String(s) => Bson::String(s.clone()),
        Value::Array(items) => Bson::Array(items.iter().map(json_to_bson).collect()),
        Value::Object(map) => Bson::Document(json_object_to_doc(map)),
    }
}

pub(super) fn json_object_to_doc(map: &Map<String, Value>) -> Document {
    map.iter()
        .map(|(k, v)| (k.clone(), json_to_bson(v)))
        .collect()
}

/// What a whole BSON double becomes when read.
#[derive(Clone, Copy)]
enum Doubles {
    /// A JSON float, as written (job settings, ours).
    Keep,
    /// A JSON integer when it is whole and within the i64 range, as v2's Go encoder wrote
    /// it (command settings).
    WholeAsInteger,
}

/// A whole double in the i64 range as that integer (`-0.0` too: `0`).
fn whole_double(f: f64) -> Option<i64> {
    // 2^63 is exactly representable; every double below it and at least -2^63 fits.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    (f.is_finite() && f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f)).then_some(f as i64)
}

/// A BSON value as JSON; whole doubles as `doubles` says.
fn bson_to_json_as(b: &Bson, doubles: Doubles) -> Value {
    match b {
        Bson::Null | Bson::Undefined => Value::Null,
        Bson::Boolean(v) => Value::Bool(*v),
        Bson::Int32(i) => Value::Number(Number::from(*i)),
        Bson::Int64(i) => Value::Number(Number::from(*i)),
        Bson::Double(f) => match (doubles, whole_double(*f)) {
            (Doubles::WholeAsInteger, Some(i)) => Value::Number(Number::from(i)),
            _ => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        },
        Bson::String(s) | Bson::Symbol(s) => Value::String(s.clone()),
        Bson::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| bson_to_json_as(item, doubles))
                .collect(),
        ),
        Bson::Document(d) => Value::Object(doc_to_json_object(d, doubles)),
        Bson::ObjectId(id) => Value::String(id.to_hex()),
        Bson::DateTime(t) => match DateTime::from_timestamp_millis(t.timestamp_millis()) {
            Some(t) => Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            None => Value::String(t.to_string()),
        },
        other => Value::String(other.to_string()),
    }
}

fn doc_to_json_object(d: &Document, doubles: Doubles) -> Map<String, Value> {
    d.iter()
        .map(|(k, v)| (k.clone(), bson_to_json_as(v, doubles)))
        .collect()
}

// ---- reading fields ----

/// Reads the fields of one stored document; errors name the collection, the document's
/// `_id` and the field.
pub(super) struct Fields<'a> {
    doc: &'a Document,
    collection: &'static str,
}

fn type_name(b: &Bson) -> String {
    format!("{:?}", b.element_type()).to_lowercase()
}

impl<'a> Fields<'a> {
    pub(super) fn new(doc: &'a Document, collection: &'static str) -> Fields<'a> {
        Fields { doc, collection }
    }

    pub(super) fn corrupt(&self, field: &str, what: impl std::fmt::Display) -> StoreError {
        let id = match self.doc.get("_id") {
            Some(Bson::ObjectId(id)) => id.to_hex(),
            Some(other) => other.to_string(),
            None => "(no _id)".to_string(),
        };
        StoreError::Corrupt(format!(
            "{} document {id}: field `{field}`: {what}",
            self.collection
        ))
    }

    fn expected(&self, field: &str, what: &str, found: &Bson) -> StoreError {
        self.corrupt(
            field,
            format!("expected {what}, found {}", type_name(found)),
        )
    }

    /// The value, `None` when missing or null.
    fn get(&self, field: &str) -> Option<&'a Bson> {
        match self.doc.get(field) {
            None | Some(Bson::Null) | Some(Bson::Undefined) => None,
            Some(v) => Some(v),
        }
    }

    fn to_id(&self, field: &str, v: &Bson) -> StoreResult<ObjectId> {
        match v {
            Bson::ObjectId(id) => Ok(ObjectId::from_bytes(id.bytes())),
            other => Err(self.expected(field, "an ObjectId", other)),
        }
    }

    pub(super) fn id(&self, field: &str) -> StoreResult<ObjectId> {
        match self.get(field) {
            Some(v) => self.to_id(field, v),
            None => Err(self.corrupt(field, "missing")),
        }
    }

    /// Missing, null and `""` are "no id".
    pub(super) fn opt_id(&self, field: &str) -> StoreResult<Option<ObjectId>> {
        match self.get(field) {
            None => Ok(None),
            Some(Bson::String(s)) if s.is_empty() => Ok(None),
            Some(v) => self.to_id(field, v).map(Some),
        }
    }

    pub(super) fn opt_string(&self, field: &str) -> StoreResult<Option<String>> {
        match self.get(field) {
            None => Ok(None),
            Some(Bson::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.expected(field, "a string", other)),
        }
    }

    /// Missing and null read as `""`.
    pub(super) fn string(&self, field: &str) -> StoreResult<String> {
        Ok(self.opt_string(field)?.unwrap_or_default())
    }

    /// Missing and null read as 0; int32, int64 and integral doubles are accepted.
    pub(super) fn i64(&self, field: &str) -> StoreResult<i64> {
        match self.get(field) {
            None => Ok(0),
            Some(Bson::Int32(i)) => Ok(i64::from(*i)),
            Some(Bson::Int64(i)) => Ok(*i),
            Some(Bson::Double(f))
                if f.fract() == 0.0 && *f >= i64::MIN as f64 && *f <= i64::MAX as f64 =>
            {
                Ok(*f as i64)
            }
            Some(other) => Err(self.expected(field, "an integer", other)),
        }
    }

    pub(super) fn i32(&self, field: &str) -> StoreResult<i32> {
        let i = self.i64(field)?;
        i32::try_from(i).map_err(|_| self.corrupt(field, format!("{i} is out of range")))
    }

    pub(super) fn opt_time(&self, field: &str) -> StoreResult<Option<DateTime<Utc>>> {
        match self.get(field) {
            None => Ok(None),
            Some(Bson::DateTime(t)) => DateTime::from_timestamp_millis(t.timestamp_millis())
                .map(Some)
                .ok_or_else(|| self.corrupt(field, format!("time {t} is out of range"))),
            Some(other) => Err(self.expected(field, "a date", other)),
        }
    }

    fn array(&self, field: &str) -> StoreResult<&'a [Bson]> {
        match self.get(field) {
            None => Ok(&[]),
            Some(Bson::Array(items)) => Ok(items),
            Some(other) => Err(self.expected(field, "an array", other)),
        }
    }

    pub(super) fn id_list(&self, field: &str) -> StoreResult<Vec<ObjectId>> {
        self.array(field)?
            .iter()
            .map(|v| self.to_id(field, v))
            .collect()
    }

    pub(super) fn string_list(&self, field: &str) -> StoreResult<Vec<String>> {
        self.array(field)?
            .iter()
            .map(|v| match v {
                Bson::String(s) => Ok(s.clone()),
                other => Err(self.expected(field, "strings", other)),
            })
            .collect()
    }

    /// A document of free-form settings, as a JSON object (missing: empty).
    pub(super) fn json_object(&self, field: &str) -> StoreResult<Map<String, Value>> {
        match self.get(field) {
            None => Ok(Map::new()),
            Some(Bson::Document(d)) => Ok(doc_to_json_object(d, Doubles::Keep)),
            Some(other) => Err(self.expected(field, "a document", other)),
        }
    }

    /// A document of counts (`{status: n}`).
    fn counts(&self, field: &str) -> StoreResult<TaskCounts> {
        let mut counts = TaskCounts::default();
        match self.get(field) {
            None => {}
            Some(Bson::Document(d)) => {
                for (status, n) in d {
                    let n = match n {
                        Bson::Int32(i) => u64::try_from(*i).ok(),
                        Bson::Int64(i) => u64::try_from(*i).ok(),
                        _ => None,
                    }
                    .ok_or_else(|| self.corrupt(field, format!("count of {status:?} is {n}")))?;
                    counts.add(&TaskStatus::from_str_lossy(status), n);
                }
            }
            Some(other) => return Err(self.expected(field, "a document", other)),
        }
        Ok(counts)
    }

    fn commands(&self, field: &str) -> StoreResult<Vec<Command>> {
        self.array(field)?
            .iter()
            .map(|v| {
                let Bson::Document(cmd) = v else {
                    return Err(self.expected(field, "command documents", v));
                };
                let name = match cmd.get("name") {
                    Some(Bson::String(s)) => s.clone(),
                    None | Some(Bson::Null) => String::new(),
                    Some(other) => return Err(self.expected(field, "a command name", other)),
                };
                let settings = match cmd.get("settings") {
                    Some(Bson::Document(d)) => doc_to_json_object(d, Doubles::WholeAsInteger),
                    None | Some(Bson::Null) => Map::new(),
                    Some(other) => {
                        return Err(self.expected(field, "command settings (a document)", other))
                    }
                };
                Ok(Command { name, settings })
            })
            .collect()
    }

    /// A bcrypt hash stored as binary (v2) or as a string.
    fn secret(&self, field: &str) -> StoreResult<String> {
        match self.get(field) {
            None => Ok(String::new()),
            Some(Bson::String(s)) => Ok(s.clone()),
            Some(Bson::Binary(b)) => String::from_utf8(b.bytes.clone())
                .map_err(|_| self.corrupt(field, "binary that is not UTF-8 text")),
            Some(other) => Err(self.expected(field, "binary or a string", other)),
        }
    }
}

// ---- tasks ----

/// A task as a `flamenco_tasks` document.
pub(super) fn task_to_doc(t: &Task) -> Document {
    let mut d = Document::new();
    d.insert("_id", oid(t.id));
    if !t.etag.is_empty() {
        d.insert("_etag", t.etag.as_str());
    }
    for (field, id) in [
        ("job", t.job),
        ("manager", t.manager),
        ("project", t.project),
        ("user", t.user),
    ] {
        if let Some(id) = id {
            d.insert(field, oid(id));
        }
    }
    d.insert("name", t.name.as_str());
    d.insert("status", t.status.as_str());
    d.insert("priority", Bson::Int32(t.priority));
    d.insert("job_priority", Bson::Int32(t.job_priority));
    d.insert("job_type", t.job_type.as_str());
    d.insert("task_type", t.task_type.as_str());
    let commands: Vec<Bson> = t
        .commands
        .iter()
        .map(|c| {
            let mut cmd = Document::new();
            cmd.insert("name", c.name.as_str());
            cmd.insert("settings", json_object_to_doc(&c.settings));
            Bson::Document(cmd)
        })
        .collect();
    d.insert("commands", commands);
    if !t.log.is_empty() {
        d.insert("log", t.log.as_str());
    }
    if !t.activity.is_empty() {
        d.insert("activity", t.activity.as_str());
    }
    if !t.parents.is_empty() {
        d.insert("parents", ids(&t.parents));
    }
    if !t.worker.is_empty() {
        d.insert("worker", t.worker.as_str());
    }
    if let Some(w) = t.worker_id {
        d.insert("worker_id", oid(w));
    }
    if let Some(at) = t.last_worker_ping {
        d.insert("last_worker_ping", date(at));
    }
    if let Some(at) = t.last_updated {
        d.insert("last_updated", date(at));
    }
    if let Some(tag) = &t.worker_tag {
        d.insert("worker_tag", tag.as_str());
    }
    d
}

/// A `flamenco_tasks` document as a task. Fields a projection left out read as empty.
/// A task document's `status`, which every task has.
pub(super) fn task_status(f: &Fields<'_>) -> StoreResult<TaskStatus> {
    match f.opt_string("status")? {
        Some(s) => Ok(TaskStatus::from_str_lossy(&s)),
        None => Err(f.corrupt("status", "missing")),
    }
}

pub(super) fn task_from_doc(d: &Document) -> StoreResult<Task> {
    let f = Fields::new(d, TASKS);
    let status = task_status(&f)?;
    Ok(Task {
        id: f.id("_id")?,
        etag: f.string("_etag")?,
        job: f.opt_id("job")?,
        manager: f.opt_id("manager")?,
        project: f.opt_id("project")?,
        user: f.opt_id("user")?,
        name: f.string("name")?,
        status,
        priority: f.i32("priority")?,
        job_priority: f.i32("job_priority")?,
        job_type: f.string("job_type")?,
        task_type: f.string("task_type")?,
        commands: f.commands("commands")?,
        log: f.string("log")?,
        activity: f.string("activity")?,
        parents: f.id_list("parents")?,
        worker: f.string("worker")?,
        worker_id: f.opt_id("worker_id")?,
        last_worker_ping: f.opt_time("last_worker_ping")?,
        last_updated: f.opt_time("last_updated")?,
        worker_tag: f.opt_string("worker_tag")?.filter(|t| !t.is_empty()),
    })
}

// ---- workers ----

/// A worker as a `flamenco_workers` document (`status_requested` is ours).
pub(super) fn worker_to_doc(w: &Worker) -> Document {
    let mut d = Document::new();
    d.insert("_id", oid(w.id));
    d.insert(
        "hashed_secret",
        Binary {
            subtype: BinarySubtype::Generic,
            bytes: w.hashed_secret.as_bytes().to_vec(),
        },
    );
    d.insert("nickname", w.nickname.as_str());
    d.insert("address", w.address.as_str());
    d.insert("status", w.status.as_str());
    d.insert("platform", w.platform.as_str());
    if let Some(task) = w.current_task {
        d.insert("current_task", oid(task));
    }
    d.insert("time_cost", int(w.time_cost));
    if let Some(at) = w.last_activity {
        d.insert("last_activity", date(at));
    }
    let types: Vec<Bson> = w
        .supported_task_types
        .iter()
        .map(|t| Bson::String(t.clone()))
        .collect();
    d.insert("supported_task_types", types);
    d.insert("software", w.software.as_str());
    if !w.current_task_status.is_empty() {
        d.insert("current_task_status", w.current_task_status.as_str());
    }
    if let Some(at) = w.current_task_updated {
        d.insert("current_task_updated", date(at));
    }
    if let Some(r) = w.status_requested {
        d.insert("status_requested", r.as_str());
    }
    if !w.secret_sha256.is_empty() {
        d.insert("secret_sha256", w.secret_sha256.as_str());
    }
    if !w.tags.is_empty() {
        let tags: Vec<Bson> = w.tags.iter().map(|t| Bson::String(t.clone())).collect();
        d.insert("tags", tags);
    }
    d
}

pub(super) fn worker_from_doc(d: &Document) -> StoreResult<Worker> {
    let f = Fields::new(d, WORKERS);
    let status_requested = match f.opt_string("status_requested")?.as_deref() {
        None | Some("") => None,
        Some(s) => Some(RequestedStatus::parse(s).ok_or_else(|| {
            f.corrupt(
                "status_requested",
                format!("unknown requested status {s:?}"),
            )
        })?),
    };
    Ok(Worker {
        id: f.id("_id")?,
        hashed_secret: f.secret("hashed_secret")?,
        nickname: f.string("nickname")?,
        address: f.string("address")?,
        status: f.string("status")?,
        platform: f.string("platform")?,
        time_cost: f.i64("time_cost")?,
        supported_task_types: f.string_list("supported_task_types")?,
        software: f.string("software")?,
        current_task: f.opt_id("current_task")?,
        last_activity: f.opt_time("last_activity")?,
        current_task_status: f.string("current_task_status")?,
        current_task_updated: f.opt_time("current_task_updated")?,
        status_requested,
        secret_sha256: f.string("secret_sha256")?,
        tags: f.string_list("tags")?,
    })
}

// ---- task updates ----

/// A queued update as a `task_update_queue` document; `seq` is our arrival order.
pub(super) fn update_to_doc(u: &TaskUpdate, seq: i64) -> Document {
    let mut d = Document::new();
    d.insert("_id", oid(u.id));
    d.insert("task_id", oid(u.task_id));
    if let Some(st) = &u.task_status {
        if !st.as_str().is_empty() {
            d.insert("task_status", st.as_str());
        }
    }
    d.insert("received_on_manager", date(u.received_on_manager));
    if !u.activity.is_empty() {
        d.insert("activity", u.activity.as_str());
    }
    d.insert("task_progress_percentage", int(u.task_progress_percentage));
    d.insert("current_command_idx", int(u.current_command_idx));
    d.insert(
        "command_progress_percentage",
        int(u.command_progress_percentage),
    );
    if !u.log.is_empty() {
        d.insert("log", u.log.as_str());
    }
    d.insert("worker", u.worker.as_str());
    d.insert("seq", Bson::Int64(seq));
    d
}

pub(super) fn update_from_doc(d: &Document) -> StoreResult<TaskUpdate> {
    let f = Fields::new(d, UPDATES);
    let received_on_manager = f
        .opt_time("received_on_manager")?
        .ok_or_else(|| f.corrupt("received_on_manager", "missing"))?;
    Ok(TaskUpdate {
        id: f.id("_id")?,
        task_id: f.id("task_id")?,
        task_status: f
            .opt_string("task_status")?
            .filter(|s| !s.is_empty())
            .map(|s| TaskStatus::from_str_lossy(&s)),
        received_on_manager,
        activity: f.string("activity")?,
        task_progress_percentage: f.i64("task_progress_percentage")?,
        current_command_idx: f.i64("current_command_idx")?,
        command_progress_percentage: f.i64("command_progress_percentage")?,
        log: f.string("log")?,
        worker: f.string("worker")?,
    })
}

// ---- jobs ----

pub(super) fn counts_doc(counts: &TaskCounts) -> Document {
    counts
        .0
        .iter()
        .map(|(status, n)| {
            (
                status.clone(),
                Bson::Int64(i64::try_from(*n).unwrap_or(i64::MAX)),
            )
        })
        .collect()
}

/// A job as a `flamenco_jobs` document.
pub(super) fn job_to_doc(j: &Job) -> Document {
    let mut d = Document::new();
    d.insert("_id", oid(j.id));
    d.insert("name", j.name.as_str());
    d.insert("job_type", j.job_type.as_str());
    d.insert("priority", Bson::Int32(j.priority));
    d.insert("status", j.status.as_str());
    d.insert("settings", json_object_to_doc(&j.settings));
    d.insert("_created", date(j.created));
    d.insert("_updated", date(j.updated));
    d.insert("task_counts", counts_doc(&j.task_counts));
    if let Some(tag) = &j.worker_tag {
        d.insert("worker_tag", tag.as_str());
    }
    d
}

pub(super) fn job_from_doc(d: &Document) -> StoreResult<Job> {
    let f = Fields::new(d, JOBS);
    let status = match f.opt_string("status")? {
        Some(s) => JobStatus::from_str_lossy(&s),
        None => return Err(f.corrupt("status", "missing")),
    };
    Ok(Job {
        id: f.id("_id")?,
        name: f.string("name")?,
        job_type: f.string("job_type")?,
        priority: f.i32("priority")?,
        status,
        settings: f.json_object("settings")?,
        created: f
            .opt_time("_created")?
            .ok_or_else(|| f.corrupt("_created", "missing"))?,
        updated: f
            .opt_time("_updated")?
            .ok_or_else(|| f.corrupt("_updated", "missing"))?,
        task_counts: f.counts("task_counts")?,
        worker_tag: f.opt_string("worker_tag")?.filter(|t| !t.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn settings_keep_integers_and_floats_apart() {
        let v = json!({"i": 3, "big": 5_000_000_000i64, "f": 1.5, "two": 2.0, "n": null,
                        "nested": {"list": [1, "x", false, -7]}});
        let back = bson_to_json_as(&json_to_bson(&v), Doubles::Keep);
        assert_eq!(back, v);
        assert_eq!(back["two"].as_f64(), Some(2.0));
        assert!(back["two"].is_f64());
        assert!(back["i"].is_i64());
    }

    #[test]
    fn v2_numbers_and_secrets_read() {
        let id = bson::oid::ObjectId::new();
        let d = bson::doc! {
            "_id": id, "status": "queued", "priority": 50.0_f64, "job_priority": 7_i64,
            "commands": [{"name": "sleep", "settings": {"time_in_seconds": 3.0_f64}}],
        };
        let t = task_from_doc(&d).expect("task");
        assert_eq!(t.priority, 50);
        assert_eq!(t.job_priority, 7);
        assert_eq!(t.commands[0].settings["time_in_seconds"], json!(3));
        assert!(t.commands[0].settings["time_in_seconds"].is_i64());

        let w = bson::doc! {
            "_id": id,
            "hashed_secret": Binary { subtype: BinarySubtype::Generic, bytes: b"$2a$10$x".to_vec() },
        };
        assert_eq!(
            worker_from_doc(&w).expect("worker").hashed_secret,
            "$2a$10$x"
        );
    }

    /// v2's doubles in command settings: whole ones become integers at any depth (as Go's
    /// encoder wrote them), the others stay floats; job settings keep their doubles.
    #[test]
    fn whole_doubles_in_command_settings_read_as_integers() {
        let settings = bson::doc! {
            "cycles_chunk": 2.0_f64, "weight1": 1.0_f64, "neg": -3.0_f64, "zero": -0.0_f64,
            "half": 2.5_f64, "tiny": 1e-9_f64, "huge": 1e19_f64, "edge": 9.223372036854775e18_f64,
            "nan": f64::NAN, "int": 7_i32,
            "nested": {"list": [4.0_f64, 4.25_f64, {"deep": 8.0_f64}]},
        };
        let d = bson::doc! {
            "_id": bson::oid::ObjectId::new(), "status": "queued",
            "commands": [{"name": "blender_render", "settings": settings.clone()}],
        };
        let got = &task_from_doc(&d).expect("task").commands[0].settings;
        let text = serde_json::to_string(got).expect("json");
        for want in [
            "\"cycles_chunk\":2,",
            "\"weight1\":1,",
            "\"neg\":-3,",
            "\"zero\":0}",
            "\"half\":2.5,",
            "\"tiny\":1e-9,",
            "\"huge\":1e+19,",
            "\"edge\":9223372036854774784,",
            "\"nan\":null,",
            "\"int\":7,",
            "\"list\":[4,4.25,{\"deep\":8}]",
        ] {
            assert!(text.contains(want), "{want} in {text}");
        }
        // Job settings (ours) keep what was written.
        let job = bson::doc! {
            "_id": bson::oid::ObjectId::new(), "status": "queued", "settings": settings,
            "_created": bson::DateTime::from_millis(0), "_updated": bson::DateTime::from_millis(0),
        };
        let job = job_from_doc(&job).expect("job");
        assert!(job.settings["cycles_chunk"].is_f64());
    }

    #[test]
    fn decode_errors_name_the_field() {
        let id = bson::oid::ObjectId::new();
        let d = bson::doc! { "_id": id, "status": "queued", "priority": "high" };
        let err = task_from_doc(&d).expect_err("corrupt").to_string();
        assert!(err.contains("flamenco_tasks"), "{err}");
        assert!(err.contains(&id.to_hex()), "{err}");
        assert!(err.contains("`priority`"), "{err}");
        let d = bson::doc! { "_id": id };
        let err = task_from_doc(&d).expect_err("corrupt").to_string();
        assert!(err.contains("`status`: missing"), "{err}");
    }
}

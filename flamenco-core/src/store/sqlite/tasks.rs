//! The `tasks` and `task_parents` tables: insert, read, list, count, the claim's candidate
//! search, and saving a task's local bookkeeping columns.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, Params};

use super::rows::{
    blob, col_opt_id, col_opt_text, is_duplicate, map_err, opt_blob, opt_ms, pack_ids,
    task_from_row, to_json, Db, TASK_COLUMNS, TASK_STATE_COLUMNS,
};
use super::SqliteStore;
use crate::model::{ObjectId, Task, TaskStatus};
use crate::store::{StoreError, StoreResult, TaskOrder, TaskQuery};
use crate::updates::TaskRunState;

/// Insert new tasks and their parents. A duplicate id fails the whole job with
/// `Duplicate` (the writer rolls the job back, so nothing is inserted).
pub(super) fn insert(conn: &Connection, tasks: &[Task]) -> StoreResult<()> {
    let mut insert_task = conn
        .prepare_cached(
            "INSERT INTO tasks (id, etag, job, manager, project, user, name, status, priority, \
               job_priority, job_type, task_type, commands, log, activity, worker, worker_id, \
               last_worker_ping, last_updated, parents, worker_tag) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, \
               ?17, ?18, ?19, ?20, ?21)",
        )
        .db()?;
    let mut insert_parent = conn
        .prepare_cached("INSERT INTO task_parents (task_id, idx, parent_id) VALUES (?1, ?2, ?3)")
        .db()?;
    for t in tasks {
        let commands = to_json(&t.commands)?;
        insert_task
            .execute(params![
                blob(t.id),
                t.etag,
                opt_blob(t.job),
                opt_blob(t.manager),
                opt_blob(t.project),
                opt_blob(t.user),
                t.name,
                t.status.as_str(),
                t.priority,
                t.job_priority,
                t.job_type,
                t.task_type,
                commands,
                t.log,
                t.activity,
                t.worker,
                opt_blob(t.worker_id),
                opt_ms(t.last_worker_ping),
                opt_ms(t.last_updated),
                pack_ids(&t.parents),
                t.worker_tag.as_deref().unwrap_or_default(),
            ])
            .map_err(|e| {
                if is_duplicate(&e) {
                    StoreError::Duplicate(t.id)
                } else {
                    map_err(e)
                }
            })?;
        for (idx, parent) in t.parents.iter().enumerate() {
            insert_parent
                .execute(params![blob(t.id), idx as i64, blob(*parent)])
                .db()?;
        }
    }
    Ok(())
}

/// Insert tasks, replacing existing ones wholly (their parent links too).
pub(super) fn upsert(conn: &Connection, tasks: &[Task]) -> StoreResult<()> {
    let mut delete = conn
        .prepare_cached("DELETE FROM tasks WHERE id = ?1")
        .db()?;
    for t in tasks {
        // task_parents rows go with the task (ON DELETE CASCADE).
        delete.execute(params![blob(t.id)]).db()?;
    }
    insert(conn, tasks)
}

fn query<P: Params>(conn: &Connection, sql: &str, params: P) -> StoreResult<Vec<Task>> {
    let mut stmt = conn.prepare_cached(sql).db()?;
    let mut rows = stmt.query(params).db()?;
    let mut tasks = Vec::new();
    while let Some(row) = rows.next().db()? {
        tasks.push(task_from_row(row)?);
    }
    Ok(tasks)
}

fn query_one<P: Params>(conn: &Connection, sql: &str, params: P) -> StoreResult<Option<Task>> {
    let mut stmt = conn.prepare_cached(sql).db()?;
    let mut rows = stmt.query(params).db()?;
    match rows.next().db()? {
        Some(row) => task_from_row(row).map(Some),
        None => Ok(None),
    }
}

static GET: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {TASK_COLUMNS} FROM tasks t WHERE t.id = ?1"));
static GET_STATE: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {TASK_STATE_COLUMNS} FROM tasks t WHERE t.id = ?1"));

/// The whole task.
pub(super) fn get(conn: &Connection, id: ObjectId) -> StoreResult<Option<Task>> {
    query_one(conn, &GET, [blob(id)])
}

/// The task without `commands`, `log` and `parents`: enough for status decisions.
pub(super) fn get_state(conn: &Connection, id: ObjectId) -> StoreResult<Option<Task>> {
    query_one(conn, &GET_STATE, [blob(id)])
}

/// A task's status and worker: may-i-run's one read, two columns by primary key.
pub(super) fn run_state(conn: &Connection, id: ObjectId) -> StoreResult<Option<TaskRunState>> {
    let mut stmt = conn
        .prepare_cached("SELECT status, worker_id FROM tasks WHERE id = ?1")
        .db()?;
    let mut rows = stmt.query([blob(id)]).db()?;
    match rows.next().db()? {
        Some(row) => Ok(Some(TaskRunState {
            status: TaskStatus::from_str_lossy(col_opt_text(row, 0)?.unwrap_or_default()),
            worker_id: col_opt_id(row, 1)?,
        })),
        None => Ok(None),
    }
}

static ACTIVE_FOR_WORKER: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {TASK_COLUMNS} FROM tasks t INDEXED BY tasks_active_by_worker \
         WHERE t.worker_id = ?1 AND t.status = 'active' ORDER BY t.id LIMIT 1"
    )
});

/// The (oldest) `active` task assigned to this worker.
pub(super) fn active_for_worker(conn: &Connection, worker: ObjectId) -> StoreResult<Option<Task>> {
    query_one(conn, &ACTIVE_FOR_WORKER, [blob(worker)])
}

static ACTIVE_STATES_FOR_WORKER: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {TASK_STATE_COLUMNS} FROM tasks t INDEXED BY tasks_active_by_worker \
         WHERE t.worker_id = ?1 AND t.status = 'active' ORDER BY t.id"
    )
});

/// Every `active` task assigned to this worker, without the bulky fields.
pub(super) fn active_states_for_worker(
    conn: &Connection,
    worker: ObjectId,
) -> StoreResult<Vec<Task>> {
    query(conn, &ACTIVE_STATES_FOR_WORKER, [blob(worker)])
}

/// The claim query's parameters: the worker's id is `?1`, its task types `?2, ?3, …`,
/// then its tags.
///
/// The conditions a task meets to be claimed by worker `?1`, besides its type and tag:
/// its status (`soft-failed` included: retries), no parent that exists locally and is not
/// `completed`, and not failed by this worker before (its failure record,
/// `task_failures`, a primary-key lookup). The blocklist (`job_blocklist`) is not among
/// them: it is checked once per claim for the winner ([`BLOCKED_COLUMN`]), and the rare
/// blocklisted worker skips its blocked jobs by job ([`next_schedulable_past_blocks`]).
const READY_CONDITIONS: &str = "t.status IN ('queued', 'claimed-by-manager', 'soft-failed') \
    AND NOT EXISTS ( \
        SELECT 1 FROM task_parents p JOIN tasks pt ON pt.id = p.parent_id \
        WHERE p.task_id = t.id AND pt.status <> 'completed') \
    AND NOT EXISTS ( \
        SELECT 1 FROM task_failures f WHERE f.task_id = t.id AND f.worker_id = ?1)";

/// Whether worker `?1` is blocklisted for the task's job and type: one primary-key lookup.
/// It is a column of the claim query, not a condition, so it is evaluated for a branch's
/// winner only, never for every index entry the walk passes.
const BLOCKED_COLUMN: &str = "EXISTS (SELECT 1 FROM job_blocklist b \
    WHERE b.job = t.job AND b.task_type = t.task_type AND b.worker_id = ?1) AS blocked";

/// The position of [`BLOCKED_COLUMN`] in a row of the claim query, after the
/// [`TASK_COLUMNS`].
const BLOCKED_IDX: usize = 21;

/// The conditions of one branch of the claim query, whatever its tag: [`READY_CONDITIONS`]
/// and one of the worker's types (`?2` … `?types+1`). Every branch (one per tag) checks
/// these, so a condition added here holds for all of them.
fn schedulable_conditions(types: usize) -> String {
    let marks: Vec<String> = (2..=types.max(1) + 1).map(|i| format!("?{i}")).collect();
    format!(
        "t.status IN ('queued', 'claimed-by-manager', 'soft-failed') \
           AND t.task_type IN ({}) AND {READY_CONDITIONS}",
        marks.join(", ")
    )
}

/// The best task requiring the tag `tag` (an SQL expression: `''` or a parameter) that
/// meets the conditions, blocklist aside: one walk of `tasks_schedule` from the head of
/// that tag's range.
fn branch_sql(types: usize, tag: &str) -> String {
    format!(
        "SELECT {TASK_COLUMNS}, {BLOCKED_COLUMN} FROM tasks t INDEXED BY tasks_schedule \
         WHERE t.worker_tag = {tag} AND {} \
         ORDER BY t.job_priority DESC, t.priority DESC, t.id \
         LIMIT 1",
        schedulable_conditions(types)
    )
}

/// The claim query for a worker of `types` task types and `tags` tags: one branch for
/// untagged tasks, plus one per tag (parameters `?types+2` …), the best of them first.
fn next_schedulable_sql_for(types: usize, tags: usize) -> String {
    let types = types.max(1);
    if tags == 0 {
        return branch_sql(types, "''");
    }
    let branches: Vec<String> = std::iter::once(branch_sql(types, "''"))
        .chain((1..=tags).map(|i| branch_sql(types, &format!("?{}", types + 1 + i))))
        .map(|b| format!("SELECT * FROM ({b})"))
        .collect();
    format!(
        "{} ORDER BY job_priority DESC, priority DESC, id LIMIT 1",
        branches.join(" UNION ALL ")
    )
}

/// Task types and tags up to which the claim queries are built once.
const PREBUILT_TYPES: usize = 8;
const PREBUILT_TAGS: usize = 4;

/// The claim query for 1 to 8 task types and 0 to 4 tags, built once; more are rare.
static NEXT_SCHEDULABLE: LazyLock<Vec<Vec<String>>> = LazyLock::new(|| {
    (1..=PREBUILT_TYPES)
        .map(|types| {
            (0..=PREBUILT_TAGS)
                .map(|tags| next_schedulable_sql_for(types, tags))
                .collect()
        })
        .collect()
});

/// The SQL of [`next_schedulable`] for one task type and `tags` tags, for plan checks in
/// tests.
#[cfg(test)]
pub(super) fn next_schedulable_sql(tags: usize) -> String {
    next_schedulable_sql_for(1, tags)
}

/// The best schedulable task for these task types and worker tags (v2 §6.2 step 3,
/// §6.3): status `queued`/`claimed-by-manager` (or `soft-failed`: retries), a matching
/// type, no tag required or one of `worker_tags`, no parent that exists locally and is
/// not `completed`, not failed by this worker before, not of a job and type it is
/// blocklisted for; by `job_priority` desc, `priority` desc, id asc.
///
/// `EXPLAIN QUERY PLAN` (SQLite 3.54; checked by a test, also after `ANALYZE` of a table
/// of mostly finished tasks), for a worker without tags:
///
/// ```text
/// SEARCH t USING INDEX tasks_schedule (worker_tag=?)   -- the partial index, in its order
/// CORRELATED SCALAR SUBQUERY 1                         -- NOT EXISTS: a parent that blocks
///   SEARCH p USING PRIMARY KEY (task_id=?)
///   SEARCH pt USING INDEX sqlite_autoindex_tasks_1 (id=?)
/// ```
///
/// No temporary B-tree for the ORDER BY: the claim reads index entries from the head of
/// the untagged range (the type is checked from the index itself) until the first one
/// whose parents are done, then stops. `INDEXED BY` pins this plan whatever the
/// statistics say. The index holds only schedulable tasks, so the walk is bounded by the
/// queue length; usually it is one entry. It grows only when the head of the queue is
/// blocked: tasks of other types, or tasks waiting for parents.
///
/// A worker with tags runs the same walk once more per tag, each over its own range of
/// the index (`worker_tag` is its first column), as branches of one `UNION ALL`; the
/// best of those few rows wins (a temporary B-tree over at most one row per branch).
/// Tasks of tags the worker lacks are never read, however many there are.
///
/// The blocklist is looked up once, for the winner ([`BLOCKED_COLUMN`]): a walk that
/// checked it per entry would pass every task of a job the worker is blocklisted for
/// (100,000 entries at every poll of that worker, docs/performance.md). When the winner's
/// job is blocked, [`next_schedulable_past_blocks`] finds the answer job by job.
///
/// The types are bound as `?1, ?2, …` rather than as one JSON array: `json_each` costs a
/// virtual table and a bloom filter per claim, about half the query's time.
pub(super) fn next_schedulable(
    conn: &Connection,
    worker_id: ObjectId,
    task_types: &[String],
    worker_tags: &[String],
) -> StoreResult<Option<Task>> {
    if task_types.is_empty() {
        return Ok(None);
    }
    let args: Vec<Value> = std::iter::once(Value::Blob(worker_id.bytes().to_vec()))
        .chain(task_types.iter().map(|t| Value::Text(t.clone())))
        .chain(worker_tags.iter().map(|t| Value::Text(t.clone())))
        .collect();
    let built;
    let sql = match NEXT_SCHEDULABLE
        .get(task_types.len() - 1)
        .and_then(|by_tags| by_tags.get(worker_tags.len()))
    {
        Some(sql) => sql,
        None => {
            built = next_schedulable_sql_for(task_types.len(), worker_tags.len());
            &built
        }
    };
    let (head, blocked) = {
        let mut stmt = conn.prepare_cached(sql).db()?;
        let mut rows = stmt.query(params_from_iter(args)).db()?;
        match rows.next().db()? {
            Some(row) => (task_from_row(row)?, row.get::<_, bool>(BLOCKED_IDX).db()?),
            None => return Ok(None),
        }
    };
    if !blocked {
        return Ok(Some(head));
    }
    next_schedulable_past_blocks(
        conn,
        worker_id,
        task_types,
        worker_tags,
        i64::from(head.job_priority),
    )
}

/// The statuses of `tasks_schedule_by_job` (its partial index condition, repeated in each
/// query so that SQLite may use it).
const SCHEDULABLE: &str = "t.status IN ('queued', 'claimed-by-manager', 'soft-failed')";

/// The first (job priority, job) of tag `?1` at job priority `?2` or lower, in the claim's
/// order: one seek of `tasks_schedule_by_job`.
static FIRST_JOB_FROM_BAND: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT t.job_priority, t.job FROM tasks t INDEXED BY tasks_schedule_by_job \
         WHERE t.worker_tag = ?1 AND {SCHEDULABLE} AND t.job_priority <= ?2 \
         ORDER BY t.job_priority DESC, t.job LIMIT 1"
    )
});

/// The next job after `?3` of tag `?1` at job priority `?2`: one seek. Tasks of no job
/// come first (`NULL`); after them, `?3` is the empty blob, below every job id.
static NEXT_JOB_IN_BAND: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT t.job_priority, t.job FROM tasks t INDEXED BY tasks_schedule_by_job \
         WHERE t.worker_tag = ?1 AND {SCHEDULABLE} AND t.job_priority = ?2 AND t.job > ?3 \
         ORDER BY t.job LIMIT 1"
    )
});

/// The best task worker `?1` may take of tag `?2`, job priority `?3`, job `?4` (`NULL`:
/// no job) and type `?5`, blocklist aside: a walk of that one run of
/// `tasks_schedule_by_job`, which is in the claim's order.
static BEST_OF_JOB_AND_TYPE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {TASK_COLUMNS} FROM tasks t INDEXED BY tasks_schedule_by_job \
         WHERE t.worker_tag = ?2 AND t.job_priority = ?3 AND t.job IS ?4 \
           AND t.task_type = ?5 AND {READY_CONDITIONS} \
         ORDER BY t.priority DESC, t.id LIMIT 1"
    )
});

/// A (job priority, job) pair of `tasks_schedule_by_job`; the job as stored (`None`: tasks
/// of no job).
type JobRun = (i64, Option<Vec<u8>>);

fn job_run(conn: &Connection, sql: &str, args: &[Value]) -> StoreResult<Option<JobRun>> {
    let mut stmt = conn.prepare_cached(sql).db()?;
    let mut rows = stmt.query(params_from_iter(args)).db()?;
    match rows.next().db()? {
        Some(row) => Ok(Some((row.get(0).db()?, row.get(1).db()?))),
        None => Ok(None),
    }
}

/// Is worker `?3` blocklisted for job `?1` (as stored) and type `?2`?
const IS_BLOCKED: &str =
    "SELECT 1 FROM job_blocklist WHERE job = ?1 AND task_type = ?2 AND worker_id = ?3";

/// [`IS_BLOCKED`]: one primary-key lookup.
fn is_blocked(conn: &Connection, job: &[u8], task_type: &str, worker: &[u8]) -> StoreResult<bool> {
    conn.prepare_cached(IS_BLOCKED)
        .db()?
        .exists(params![job, task_type, worker])
        .db()
}

/// The statements of [`next_schedulable_past_blocks`], for plan and cost checks in tests.
#[cfg(test)]
pub(super) fn past_blocks_sql() -> [&'static str; 4] {
    [
        FIRST_JOB_FROM_BAND.as_str(),
        NEXT_JOB_IN_BAND.as_str(),
        BEST_OF_JOB_AND_TYPE.as_str(),
        IS_BLOCKED,
    ]
}

/// The claim's order: `job_priority` desc, `priority` desc, id asc (ids compare like
/// SQLite compares their blobs).
fn schedule_key(t: &Task) -> (std::cmp::Reverse<i32>, std::cmp::Reverse<i32>, ObjectId) {
    (
        std::cmp::Reverse(t.job_priority),
        std::cmp::Reverse(t.priority),
        t.id,
    )
}

/// [`next_schedulable`] for a worker that is blocklisted for the job of the best task it
/// could otherwise take, whose job priority is `from_band`: nothing above that priority is
/// schedulable for it. In each tag's range, job priority by job priority from there, each
/// job's best task of each of the worker's types it is not blocklisted for (one seek of
/// `tasks_schedule_by_job` per job and type, one walk per allowed run), until a job
/// priority that has an answer is done. A blocked job costs one seek past its tasks and
/// a primary-key lookup per type, however many tasks it has; each other job of that job
/// priority costs a seek and a short walk per type.
fn next_schedulable_past_blocks(
    conn: &Connection,
    worker_id: ObjectId,
    task_types: &[String],
    worker_tags: &[String],
    from_band: i64,
) -> StoreResult<Option<Task>> {
    let worker = worker_id.bytes().to_vec();
    let mut types: Vec<&str> = task_types.iter().map(String::as_str).collect();
    types.sort_unstable();
    types.dedup();
    let mut tags: Vec<&str> = std::iter::once("")
        .chain(worker_tags.iter().map(String::as_str))
        .collect();
    tags.sort_unstable();
    tags.dedup();
    let mut best: Option<Task> = None;
    for tag in tags {
        let mut run = job_run(
            conn,
            &FIRST_JOB_FROM_BAND,
            &[Value::Text(tag.into()), Value::Integer(from_band)],
        )?;
        while let Some((band, job)) = run {
            if best
                .as_ref()
                .is_some_and(|b| i64::from(b.job_priority) > band)
            {
                break; // a better job priority has an answer
            }
            for task_type in &types {
                if let Some(job) = &job {
                    if is_blocked(conn, job, task_type, &worker)? {
                        continue;
                    }
                }
                let args = [
                    Value::Blob(worker.clone()),
                    Value::Text(tag.into()),
                    Value::Integer(band),
                    job.clone().map_or(Value::Null, Value::Blob),
                    Value::Text((*task_type).into()),
                ];
                if let Some(task) = query_one(conn, &BEST_OF_JOB_AND_TYPE, params_from_iter(args))?
                {
                    if best
                        .as_ref()
                        .is_none_or(|b| schedule_key(&task) < schedule_key(b))
                    {
                        best = Some(task);
                    }
                }
            }
            let after = job.unwrap_or_default();
            run = match job_run(
                conn,
                &NEXT_JOB_IN_BAND,
                &[
                    Value::Text(tag.into()),
                    Value::Integer(band),
                    Value::Blob(after),
                ],
            )? {
                Some(next) => Some(next),
                None => match band.checked_sub(1) {
                    Some(lower) => job_run(
                        conn,
                        &FIRST_JOB_FROM_BAND,
                        &[Value::Text(tag.into()), Value::Integer(lower)],
                    )?,
                    None => None,
                },
            };
        }
    }
    Ok(best)
}

/// Write the local bookkeeping columns (status, activity, worker, worker_id,
/// last_worker_ping, last_updated) of `after` that differ from `before`, the same task as
/// loaded in this transaction. Other columns are never written here.
///
/// Writing only what changed keeps untouched indexes untouched: a may-i-run ping does not
/// rewrite the status and worker index entries.
pub(super) fn save_changes(conn: &Connection, before: &Task, after: &Task) -> StoreResult<()> {
    let mut sets: Vec<&str> = Vec::with_capacity(6);
    let mut args: Vec<Value> = vec![Value::Blob(after.id.bytes().to_vec())];
    let mut set = |column: &'static str, changed: bool, value: Value| {
        if changed {
            sets.push(column);
            args.push(value);
        }
    };
    set(
        "status",
        before.status != after.status,
        Value::Text(after.status.as_str().to_string()),
    );
    set(
        "activity",
        before.activity != after.activity,
        Value::Text(after.activity.clone()),
    );
    set(
        "worker",
        before.worker != after.worker,
        Value::Text(after.worker.clone()),
    );
    set(
        "worker_id",
        before.worker_id != after.worker_id,
        after
            .worker_id
            .map_or(Value::Null, |id| Value::Blob(id.bytes().to_vec())),
    );
    set(
        "last_worker_ping",
        before.last_worker_ping != after.last_worker_ping,
        opt_ms(after.last_worker_ping).map_or(Value::Null, Value::Integer),
    );
    set(
        "last_updated",
        before.last_updated != after.last_updated,
        opt_ms(after.last_updated).map_or(Value::Null, Value::Integer),
    );
    if sets.is_empty() {
        return Ok(());
    }
    let assignments: Vec<String> = sets
        .iter()
        .enumerate()
        .map(|(i, column)| format!("{column} = ?{}", i + 2))
        .collect();
    let sql = format!("UPDATE tasks SET {} WHERE id = ?1", assignments.join(", "));
    conn.prepare_cached(&sql)
        .db()?
        .execute(params_from_iter(args))
        .db()?;
    Ok(())
}

/// Tasks matching `q`, ordered by id.
pub(super) fn list(conn: &Connection, q: &TaskQuery) -> StoreResult<Vec<Task>> {
    let mut sql = format!("SELECT {TASK_COLUMNS} FROM tasks t");
    let mut conds: Vec<String> = Vec::new();
    let mut args: Vec<Value> = Vec::new();
    if !q.statuses.is_empty() {
        let marks = vec!["?"; q.statuses.len()].join(", ");
        conds.push(format!("t.status IN ({marks})"));
        args.extend(
            q.statuses
                .iter()
                .map(|s| Value::Text(s.as_str().to_string())),
        );
    }
    if let Some(task_type) = &q.task_type {
        conds.push("t.task_type = ?".into());
        args.push(Value::Text(task_type.clone()));
    }
    if let Some(job) = q.job {
        conds.push("t.job = ?".into());
        args.push(Value::Blob(job.bytes().to_vec()));
    }
    if let Some(worker) = q.worker_id {
        conds.push("t.worker_id = ?".into());
        args.push(Value::Blob(worker.bytes().to_vec()));
    }
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    sql.push_str(match q.order {
        TaskOrder::Id => " ORDER BY t.id",
        TaskOrder::Schedule => " ORDER BY t.job_priority DESC, t.priority DESC, t.id",
        TaskOrder::RecentlyUpdated => " ORDER BY t.last_updated IS NULL, t.last_updated DESC, t.id",
    });
    sql.push_str(" LIMIT ? OFFSET ?");
    let limit = q.limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
    args.push(Value::Integer(limit));
    args.push(Value::Integer(i64::try_from(q.offset).unwrap_or(i64::MAX)));
    query(conn, &sql, params_from_iter(args))
}

/// Number of tasks per status string.
/// Task counts per (status, task type): one grouped query.
pub(super) fn count_by_status_and_type(
    conn: &Connection,
) -> StoreResult<BTreeMap<(String, String), u64>> {
    let mut stmt = conn
        .prepare_cached("SELECT status, task_type, count(*) FROM tasks GROUP BY status, task_type")
        .db()?;
    let mut rows = stmt.query([]).db()?;
    let mut counts = BTreeMap::new();
    while let Some(row) = rows.next().db()? {
        let status: String = row.get(0).db()?;
        let task_type: String = row.get(1).db()?;
        let n: i64 = row.get(2).db()?;
        counts.insert((status, task_type), u64::try_from(n).unwrap_or_default());
    }
    Ok(counts)
}

pub(super) fn count_by_status(conn: &Connection) -> StoreResult<BTreeMap<String, u64>> {
    let mut stmt = conn
        .prepare_cached("SELECT status, count(*) FROM tasks GROUP BY status")
        .db()?;
    let mut rows = stmt.query([]).db()?;
    let mut counts = BTreeMap::new();
    while let Some(row) = rows.next().db()? {
        let status: String = row.get(0).db()?;
        let n: i64 = row.get(1).db()?;
        counts.insert(status, u64::try_from(n).unwrap_or_default());
    }
    Ok(counts)
}

#[async_trait::async_trait]
impl crate::store::TaskStore for SqliteStore {
    async fn insert_tasks(&self, new: &[Task]) -> StoreResult<()> {
        let new = new.to_vec();
        self.writer
            .run(move |c| super::tasks::insert(c, &new))
            .await
    }

    async fn upsert_tasks(&self, new: &[Task]) -> StoreResult<()> {
        let new = new.to_vec();
        self.writer
            .run(move |c| super::tasks::upsert(c, &new))
            .await
    }

    async fn get_task(&self, id: ObjectId) -> StoreResult<Option<Task>> {
        self.readers.run(move |c| super::tasks::get(c, id)).await
    }

    async fn list_tasks(&self, query: &TaskQuery) -> StoreResult<Vec<Task>> {
        let query = query.clone();
        self.readers
            .run(move |c| super::tasks::list(c, &query))
            .await
    }

    async fn count_tasks_by_status(&self) -> StoreResult<BTreeMap<String, u64>> {
        self.readers.run(super::tasks::count_by_status).await
    }

    async fn count_tasks_by_status_and_type(&self) -> StoreResult<BTreeMap<(String, String), u64>> {
        self.readers
            .run(super::tasks::count_by_status_and_type)
            .await
    }
}

//! The task manager (seed 003 without a session file): tasks created by hand, in workflows,
//! with parents, claimed by agents through the same queue as a session's agent tasks
//! (`crate::agent_tasks::claim`, `complete`, `fail`, `release`). A task goes `pending` ->
//! `in_progress` (claimed) -> `completed`, `failed` or `cancelled`; a claim not settled within
//! its timeout puts it back to `pending`. Records and counts are kept by the store, changed in
//! the same atomic step as the queue.

use crate::error::{Error, Result};
use crate::outage::retrying;
use events::{ManagedTask, NewTask, TaskFilter, TaskManager, TaskPage, WorkflowSummary};
use serde_json::{Map, Value};

/// How long a claim holds unless told otherwise: a day, as the seed's task manager.
pub const DEFAULT_CLAIM_TIMEOUT_MS: u64 = 24 * 3600 * 1000;

/// The longest workflow name and task type, in bytes.
const LONGEST_NAME: usize = 200;

/// Creates a pending task of `kind` in `workflow`, under `parent` (a task of the same workflow)
/// if given; returns its id (`<type>_<16 hex digits>`).
pub async fn create(
    store: &dyn TaskManager,
    workflow: &str,
    kind: &str,
    data: Value,
    parent: Option<&str>,
    claim_timeout_ms: u64,
) -> Result<String> {
    check_workflow(workflow)?;
    if kind.is_empty()
        || kind.len() > LONGEST_NAME
        || !kind
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c))
    {
        return Err(Error::InvalidTask(format!(
            "task type `{kind}` must be 1 to {LONGEST_NAME} letters, digits, `_`, `-`, `.` or `:`"
        )));
    }
    if claim_timeout_ms == 0 {
        return Err(Error::InvalidTask(
            "a claim timeout must be at least 1 ms".into(),
        ));
    }
    let id = format!(
        "{kind}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    );
    let task = NewTask {
        id: id.clone(),
        workflow: workflow.to_string(),
        kind: kind.to_string(),
        data,
        parent: parent.map(str::to_string),
        claim_timeout_ms,
    };
    retrying("creating a task", || store.task_create(&task)).await?;
    Ok(id)
}

/// The task of that id, if there is one.
pub async fn get(store: &dyn TaskManager, id: &str) -> Result<Option<ManagedTask>> {
    Ok(retrying("reading a task", || store.task_get(id)).await?)
}

/// The children of task `id`, in the order they were created; refused for an unknown id.
pub async fn children(store: &dyn TaskManager, id: &str) -> Result<Vec<ManagedTask>> {
    if get(store, id).await?.is_none() {
        return Err(no_task(id));
    }
    Ok(retrying("reading a task's children", || store.task_children(id)).await?)
}

/// Cancels a pending or claimed task; refused, naming why, when it ended already.
pub async fn cancel(store: &dyn TaskManager, id: &str) -> Result<()> {
    Ok(retrying("cancelling a task", || store.task_cancel(id)).await?)
}

/// The workflow's tasks counted by status and by type.
pub async fn summary(store: &dyn TaskManager, workflow: &str) -> Result<WorkflowSummary> {
    check_workflow(workflow)?;
    Ok(retrying("reading a workflow's summary", || {
        store.task_summary(workflow)
    })
    .await?)
}

/// Sets `set`'s keys in the workflow's metadata (none for an empty map); returns it as it
/// then is.
pub async fn metadata(
    store: &dyn TaskManager,
    workflow: &str,
    set: &Map<String, Value>,
) -> Result<Map<String, Value>> {
    check_workflow(workflow)?;
    Ok(retrying("writing a workflow's metadata", || {
        store.workflow_metadata(workflow, set)
    })
    .await?)
}

/// The most tasks one page of [`list`] holds.
pub const LONGEST_PAGE: usize = 1_000;

/// A page of the workflow's tasks, in creation order from position `from`: those `filter`
/// keeps, at most `limit` (1 to [`LONGEST_PAGE`]); `next` says where the next page starts.
pub async fn list(
    store: &dyn TaskManager,
    workflow: &str,
    filter: &TaskFilter,
    from: u64,
    limit: usize,
) -> Result<TaskPage> {
    check_workflow(workflow)?;
    if !(1..=LONGEST_PAGE).contains(&limit) {
        return Err(Error::InvalidTask(format!(
            "a page holds 1 to {LONGEST_PAGE} tasks, not {limit}"
        )));
    }
    Ok(retrying("listing a workflow's tasks", || {
        store.task_list(workflow, filter, from, limit)
    })
    .await?)
}

/// A task as JSON, its times also as ISO 8601 (UTC) beside the milliseconds: `created_at`,
/// `updated_at`, `locked_at`, `completed_at` (seed 003's names).
pub fn described(task: &ManagedTask) -> Value {
    let mut value = serde_json::to_value(task).unwrap_or(Value::Null);
    let times = [
        ("created_at", Some(task.created_at_ms)),
        ("updated_at", Some(task.updated_at_ms)),
        ("locked_at", task.locked_at_ms),
        ("completed_at", task.completed_at_ms),
    ];
    if let Value::Object(fields) = &mut value {
        for (name, ms) in times {
            fields.insert(name.into(), ms.map(taskgroup::iso8601).into());
        }
    }
    value
}

/// The error for a task id that names no task.
pub fn no_task(id: &str) -> Error {
    Error::InvalidTask(format!("no task `{id}`"))
}

fn check_workflow(workflow: &str) -> Result<()> {
    if workflow.is_empty() || workflow.len() > LONGEST_NAME {
        return Err(Error::InvalidTask(format!(
            "a workflow name must be 1 to {LONGEST_NAME} bytes, not {}",
            workflow.len()
        )));
    }
    Ok(())
}

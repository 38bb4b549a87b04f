//! The queue for agents and the task manager in Redis. The scripts are the files of
//! `crates/events/lua/agents/` (the Python client runs the same files), each opened with
//! `common.lua`; every key carries the `{agents}` hash tag, so each call touches one Cluster
//! slot:
//!
//! - `agency:{agents}:items`: item id -> the item's JSON;
//! - `agency:{agents}:meta`: item id -> `<claim timeout ms>|<type>`;
//! - `agency:{agents}:pending:<type>`: waiting ids, pushed left (requeued right), claimed from
//!   the right; ids claimed or gone since are skipped there;
//! - `agency:{agents}:types`: every type an item was queued under;
//! - `agency:{agents}:seq` (`seq:counter`): item id -> place in line across types (requeued
//!   items count down from zero);
//! - `agency:{agents}:claims`: item id -> `<token>|<deadline ms>|<agent>`;
//! - `agency:{agents}:deadlines`: claimed ids by deadline (ms by Redis's clock);
//! - `agency:{agents}:tokens`: token -> item id;
//! - `agency:{agents}:counts`: item id -> times claimed;
//! - `agency:{agents}:reports`: item id -> an instance's report (`Reported` JSON) to record;
//! - `agency:{agents}:reports:due`: reported ids by when they may be taken (0, or a lease's end);
//! - `agency:{agents}:task:<id>`: a task of the task manager (hash: `workflow`, `type`,
//!   `status`, `data`, `parent`, `claims`, `claim_timeout_ms`, `locked_by`, `locked_ms`,
//!   `created_ms`, `updated_ms`, `completed_ms`, `result`, `error`);
//! - `agency:{agents}:children:<id>`: its children's ids, in creation order;
//! - `agency:{agents}:workflow:<W>:counts`: `<status>|<type>` -> tasks;
//! - `agency:{agents}:workflow:<W>:metadata`: key -> JSON value;
//! - `agency:{agents}:workflow:<W>:times`: `initialized_ms`, `updated_ms`;
//! - `agency:{agents}:workflow:<W>:tasks`: its task ids, in creation order;
//! - `agency:{agents}:workflow:<W>:pending:<type>`, `...:types`: its waiting tasks, as above.

use super::Connection;
use super::{corrupt, unavailable};
use crate::agent_queue::{
    with_times, AgentClaim, AgentItem, AgentReport, ManagedTask, NewTask, Reported, TaskFilter,
    TaskPage, TaskState, Wanted, WorkflowSummary,
};
use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::time::Duration;

/// Every script's first key: it routes the call to the `{agents}` slot.
const ITEMS: &str = "agency:{agents}:items";
const REPORTS: &str = "agency:{agents}:reports";
const REPORTS_DUE: &str = "agency:{agents}:reports:due";

fn task_key(id: &str) -> String {
    format!("agency:{{agents}}:task:{id}")
}

fn workflow_key(workflow: &str, what: &str) -> String {
    format!("agency:{{agents}}:workflow:{workflow}:{what}")
}

/// A script of `lua/agents/`, opened with `common.lua`.
fn script(body: &str) -> redis::Script {
    redis::Script::new(&format!(
        "{}\n{body}",
        include_str!("../../lua/agents/common.lua")
    ))
}

/// The queue's scripts.
#[derive(Clone)]
pub(super) struct AgentScripts {
    offer: redis::Script,
    claim: redis::Script,
    settle: redis::Script,
    release: redis::Script,
    expire: redis::Script,
    reports: redis::Script,
    create: redis::Script,
    cancel: redis::Script,
    list: redis::Script,
    metadata: redis::Script,
}

impl AgentScripts {
    pub(super) fn new() -> Self {
        Self {
            offer: script(include_str!("../../lua/agents/offer.lua")),
            claim: script(include_str!("../../lua/agents/claim.lua")),
            settle: script(include_str!("../../lua/agents/settle.lua")),
            release: script(include_str!("../../lua/agents/release.lua")),
            expire: script(include_str!("../../lua/agents/expire.lua")),
            reports: script(include_str!("../../lua/agents/reports.lua")),
            create: script(include_str!("../../lua/agents/create.lua")),
            cancel: script(include_str!("../../lua/agents/cancel.lua")),
            list: script(include_str!("../../lua/agents/list.lua")),
            metadata: script(include_str!("../../lua/agents/metadata.lua")),
        }
    }

    pub(super) async fn offer(
        &self,
        mut connection: Connection,
        items: &[AgentItem],
    ) -> Result<()> {
        // Bounded calls: a range of thousands of instances is offered in slices.
        for slice in items.chunks(512) {
            let mut invocation = self.offer.key(ITEMS);
            for item in slice {
                let json = crate::encode("an item for agents", item)?;
                invocation
                    .arg(&item.id)
                    .arg(&item.kind)
                    .arg(item.claim_timeout_ms)
                    .arg(json);
            }
            let _: i64 = invocation
                .invoke_async(&mut connection)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    pub(super) async fn claim(
        &self,
        mut connection: Connection,
        agent: &str,
        wanted: Wanted<'_>,
        token: &str,
    ) -> Result<Option<AgentClaim>> {
        let mut invocation = self.claim.key(ITEMS);
        invocation
            .arg(agent)
            .arg(token)
            .arg(wanted.workflow.unwrap_or_default());
        for kind in wanted.types {
            invocation.arg(kind);
        }
        let found: Option<Vec<Vec<u8>>> = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        found.map(|parts| claim_of(&parts)).transpose()
    }

    pub(super) async fn settle(
        &self,
        mut connection: Connection,
        token: &str,
        report: &AgentReport,
    ) -> Result<Option<AgentClaim>> {
        let (state, field, answer) = report.for_task();
        let found: Option<Vec<Vec<u8>>> = self
            .settle
            .key(ITEMS)
            .arg(token)
            .arg(crate::encode("an agent's report", report)?)
            .arg(state.as_str())
            .arg(field)
            .arg(answer)
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        found.map(|parts| claim_of(&parts)).transpose()
    }

    pub(super) async fn release(
        &self,
        mut connection: Connection,
        token: &str,
    ) -> Result<Option<AgentItem>> {
        let found: Option<Vec<u8>> = self
            .release
            .key(ITEMS)
            .arg(token)
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        found
            .map(|json| serde_json::from_slice(&json).map_err(|e| corrupt("an item for agents", e)))
            .transpose()
    }

    pub(super) async fn expire(&self, mut connection: Connection, limit: usize) -> Result<usize> {
        self.expire
            .key(ITEMS)
            .arg(limit)
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)
    }

    pub(super) async fn reports(
        &self,
        mut connection: Connection,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Reported>> {
        let found: Vec<Vec<u8>> = self
            .reports
            .key(ITEMS)
            .arg(limit)
            .arg(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX))
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let mut reports = Vec::with_capacity(found.len() / 2);
        let mut unreadable = Vec::new();
        for pair in found.chunks(2) {
            let [id, json] = pair else {
                return Err(corrupt("agents' reports", "an id without its report"));
            };
            match serde_json::from_slice(json) {
                Ok(report) => reports.push(report),
                // One that cannot be read must not hold back the others: it goes, said.
                Err(error) => {
                    let id = String::from_utf8_lossy(id).into_owned();
                    tracing::warn!(%id, %error, "an agent's report in Redis cannot be read; dropped");
                    unreadable.push(id);
                }
            }
        }
        self.reported(connection, &unreadable).await?;
        Ok(reports)
    }

    pub(super) async fn reported(&self, mut connection: Connection, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        redis::pipe()
            .atomic()
            .hdel(REPORTS, ids)
            .ignore()
            .zrem(REPORTS_DUE, ids)
            .ignore()
            .query_async::<()>(&mut connection)
            .await
            .map_err(unavailable)
    }

    pub(super) async fn create(&self, mut connection: Connection, task: &NewTask) -> Result<()> {
        let why: String = self
            .create
            .key(ITEMS)
            .arg(&task.id)
            .arg(&task.workflow)
            .arg(&task.kind)
            .arg(task.claim_timeout_ms)
            .arg(task.data.to_string())
            .arg(task.parent.as_deref().unwrap_or(""))
            .arg(crate::encode("an item for agents", &task.item())?)
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        refused_unless_empty("creating a task", why)
    }

    /// A page of the workflow's tasks (`list.lua` finds their ids; one pipeline reads them).
    pub(super) async fn list(
        &self,
        mut connection: Connection,
        workflow: &str,
        filter: &TaskFilter,
        from: u64,
        limit: usize,
    ) -> Result<TaskPage> {
        let found: Vec<redis::Value> = self
            .list
            .key(ITEMS)
            .arg(workflow)
            .arg(filter.status.map_or("", TaskState::as_str))
            .arg(filter.kind.as_deref().unwrap_or_default())
            .arg(from)
            .arg(limit)
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let mut found = found.into_iter();
        let next: i64 = match found.next() {
            Some(next) => {
                redis::from_redis_value(next).map_err(|e| corrupt("a task listing", e))?
            }
            None => return Err(corrupt("a task listing", "no position")),
        };
        let ids: Vec<String> = found
            .map(|id| redis::from_redis_value(id).map_err(|e| corrupt("a task listing", e)))
            .collect::<Result<_>>()?;
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HGETALL").arg(task_key(id));
        }
        let hashes: Vec<HashMap<String, String>> = if ids.is_empty() {
            Vec::new()
        } else {
            pipe.query_async(&mut connection)
                .await
                .map_err(unavailable)?
        };
        let mut tasks = Vec::with_capacity(ids.len());
        for (id, fields) in ids.iter().zip(&hashes) {
            tasks.extend(task_of(id, fields)?);
        }
        Ok(TaskPage {
            tasks,
            next: u64::try_from(next).ok(),
        })
    }

    /// Sets `set`'s keys in the workflow's metadata (`metadata.lua`, a change of the
    /// workflow); returns the metadata with the workflow's times.
    pub(super) async fn metadata(
        &self,
        mut connection: Connection,
        workflow: &str,
        set: &Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        let mut invocation = self.metadata.key(ITEMS);
        invocation.arg(workflow);
        for (key, value) in set {
            invocation.arg(key).arg(value.to_string());
        }
        let (stored, times): (HashMap<String, String>, HashMap<String, u64>) = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let metadata = stored
            .into_iter()
            .map(|(k, v)| {
                let value =
                    serde_json::from_str(&v).map_err(|e| corrupt("workflow metadata", e))?;
                Ok((k, value))
            })
            .collect::<Result<Map<String, Value>>>()?;
        let times = times.get("initialized_ms").zip(times.get("updated_ms"));
        Ok(with_times(metadata, times.map(|(a, b)| (*a, *b))))
    }

    pub(super) async fn cancel(&self, mut connection: Connection, id: &str) -> Result<()> {
        let why: String = self
            .cancel
            .key(ITEMS)
            .arg(id)
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        refused_unless_empty("cancelling a task", why)
    }
}

fn refused_unless_empty(operation: &str, why: String) -> Result<()> {
    if why.is_empty() {
        return Ok(());
    }
    Err(Error::Refused {
        backend: "redis",
        operation: operation.into(),
        message: why,
    })
}

/// The task of that id.
pub(super) async fn task(mut connection: Connection, id: &str) -> Result<Option<ManagedTask>> {
    let fields: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(task_key(id))
        .query_async(&mut connection)
        .await
        .map_err(unavailable)?;
    task_of(id, &fields)
}

/// The children of task `id`, in creation order.
pub(super) async fn children(mut connection: Connection, id: &str) -> Result<Vec<ManagedTask>> {
    let ids: Vec<String> = redis::cmd("LRANGE")
        .arg(format!("agency:{{agents}}:children:{id}"))
        .arg(0)
        .arg(-1)
        .query_async(&mut connection)
        .await
        .map_err(unavailable)?;
    let mut children = Vec::with_capacity(ids.len());
    // Pages of 512 tasks per pipeline.
    for page in ids.chunks(512) {
        let mut pipe = redis::pipe();
        for child in page {
            pipe.cmd("HGETALL").arg(task_key(child));
        }
        let found: Vec<HashMap<String, String>> = pipe
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        for (child, fields) in page.iter().zip(&found) {
            children.extend(task_of(child, fields)?);
        }
    }
    Ok(children)
}

/// The workflow's counts.
pub(super) async fn summary(mut connection: Connection, workflow: &str) -> Result<WorkflowSummary> {
    let counts: HashMap<String, i64> = redis::cmd("HGETALL")
        .arg(workflow_key(workflow, "counts"))
        .query_async(&mut connection)
        .await
        .map_err(unavailable)?;
    let mut parsed = Vec::with_capacity(counts.len());
    for (field, count) in counts {
        let (state, kind) = field
            .split_once('|')
            .and_then(|(state, kind)| Some((TaskState::parse(state)?, kind)))
            .ok_or_else(|| corrupt("a workflow's counts", format!("field `{field}`")))?;
        parsed.push((state, kind.to_string(), u64::try_from(count).unwrap_or(0)));
    }
    Ok(WorkflowSummary::of(workflow, parsed))
}

/// A task from its hash; `None` when the hash is empty (no such task).
fn task_of(id: &str, fields: &HashMap<String, String>) -> Result<Option<ManagedTask>> {
    if fields.is_empty() {
        return Ok(None);
    }
    let what = || format!("task `{id}`");
    let text = |name: &str| -> Result<&String> {
        fields
            .get(name)
            .ok_or_else(|| corrupt(what(), format!("no `{name}`")))
    };
    let number = |name: &str| -> Result<Option<u64>> {
        fields
            .get(name)
            .map(|n| {
                n.parse()
                    .map_err(|e| corrupt(what(), format!("`{name}`: {e}")))
            })
            .transpose()
    };
    let json = |name: &str| -> Result<Option<Value>> {
        fields
            .get(name)
            .map(|v| serde_json::from_str(v).map_err(|e| corrupt(what(), format!("`{name}`: {e}"))))
            .transpose()
    };
    let status = text("status")?;
    Ok(Some(ManagedTask {
        id: id.to_string(),
        workflow: text("workflow")?.clone(),
        kind: text("type")?.clone(),
        status: TaskState::parse(status)
            .ok_or_else(|| corrupt(what(), format!("status `{status}`")))?,
        parent_id: fields.get("parent").filter(|p| !p.is_empty()).cloned(),
        data: json("data")?.unwrap_or(Value::Null),
        locked_by: fields.get("locked_by").cloned(),
        locked_at_ms: number("locked_ms")?,
        created_at_ms: number("created_ms")?.unwrap_or_default(),
        updated_at_ms: number("updated_ms")?.unwrap_or_default(),
        completed_at_ms: number("completed_ms")?,
        claims: number("claims")?
            .unwrap_or_default()
            .try_into()
            .unwrap_or(u32::MAX),
        claim_timeout_ms: number("claim_timeout_ms")?.unwrap_or_default(),
        result: json("result")?,
        error: fields.get("error").cloned(),
    }))
}

/// A claim from a script's answer: the item's JSON, its claim count, `<token>|<deadline>|<agent>`.
fn claim_of(parts: &[Vec<u8>]) -> Result<AgentClaim> {
    let [item, count, claim] = parts else {
        return Err(corrupt("a claim", format!("{} parts, not 3", parts.len())));
    };
    let item: AgentItem =
        serde_json::from_slice(item).map_err(|e| corrupt("an item for agents", e))?;
    let count = String::from_utf8_lossy(count);
    let claim = String::from_utf8_lossy(claim);
    let mut fields = claim.splitn(3, '|');
    let (Some(token), Some(_deadline), Some(agent)) = (fields.next(), fields.next(), fields.next())
    else {
        return Err(corrupt("a claim", format!("`{claim}`")));
    };
    Ok(AgentClaim {
        token: token.to_string(),
        agent: agent.to_string(),
        item,
        claims: count.parse().map_err(|e| corrupt("a claim count", e))?,
    })
}

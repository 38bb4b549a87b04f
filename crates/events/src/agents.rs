//! Work that external agents claim (seed 003): items wait by type; an agent claims the oldest
//! of the types it takes, atomically, and gets a token; only the token's holder may settle or
//! release the item, until its claim times out.
//!
//! Items come from two places. A session's task with `"executor": "agent"` offers its
//! instances; what an agent reports of one is kept as a report ([`Reported`]) until a worker
//! records it as the instance's outcome, so an agent that goes away after settling loses
//! nothing. The task manager's tasks ([`NewTask`], seed 003 without a session) are items too:
//! their record ([`ManagedTask`]) and their workflow's counts change in the same step as the
//! queue, and a claim that times out puts the task back to pending.
//!
//! The queue is part of the [`crate::Store`] (`agent_*` and `task_*`). Its in-memory form is
//! [`AgentQueue`](crate::AgentQueue); Redis keeps the same rules in Lua (`crates/events/lua/agents/`, which the
//! Python client runs too), both checked by the conformance suite.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// One item for agents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentItem {
    /// Unique among items: offering an id again changes nothing.
    pub id: String,
    /// The agent type that takes it (`agent.type` of its task).
    #[serde(rename = "type")]
    pub kind: String,
    /// What the agent works on: the instance's rendered input, or a task's data.
    pub input: Value,
    /// A claim not settled within this long is released (and counts as an attempt).
    pub claim_timeout_ms: u64,
    /// Where it comes from, so its outcome can be recorded there.
    pub origin: AgentOrigin,
}

/// Where an item comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "from")]
pub enum AgentOrigin {
    /// An attempt of an instance of a session's task with `"executor": "agent"`.
    Instance {
        /// The session id.
        session: String,
        /// Its run.
        run: String,
        /// The task's group, by index.
        group: usize,
        /// The task, by index in its group.
        task: usize,
        /// Its id.
        task_id: String,
        /// The instance.
        instance: u64,
        /// The attempt.
        attempt: u32,
    },
    /// A task of the task manager; the item's id is the task's.
    Task {
        /// Its workflow.
        workflow: String,
        /// Its parent task, if it has one.
        parent: Option<String>,
    },
}

/// An item claimed by an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentClaim {
    /// Settles or releases the item while the claim holds.
    pub token: String,
    /// The agent holding it.
    pub agent: String,
    /// The item.
    pub item: AgentItem,
    /// How many times it was claimed, this claim included.
    pub claims: u32,
}

/// What became of a claimed item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentReport {
    /// Done, with this result.
    Completed(Value),
    /// Failed with this error.
    Failed(String),
    /// Not settled within its claim timeout (written by the store itself).
    TimedOut,
}

impl AgentReport {
    /// What a task of the task manager becomes: its status, and the field holding the answer
    /// with the answer as stored (`result` as JSON text, `error` as text).
    pub fn for_task(&self) -> (TaskState, &'static str, String) {
        match self {
            Self::Completed(result) => (TaskState::Completed, "result", result.to_string()),
            Self::Failed(error) => (TaskState::Failed, "error", error.clone()),
            Self::TimedOut => (TaskState::Failed, "error", "its claim timed out".into()),
        }
    }
}

/// An instance's outcome an agent reported (or its claim's timeout), waiting for a worker to
/// record it; taken under a lease (`AgentQueue::agent_reports`), deleted once recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reported {
    /// The agent that held the claim.
    pub agent: String,
    /// How many times the item was claimed.
    pub claims: u32,
    /// What the agent reported.
    pub outcome: AgentReport,
    /// The item, with its origin.
    pub item: AgentItem,
}

/// Why a token cannot settle or release its item.
pub fn stale_token(token: &str) -> String {
    format!(
        "claim token `{token}` does not hold an item: it was settled or released already, or it timed out (and the item was released)"
    )
}

/// Where a task of the task manager stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for an agent.
    Pending,
    /// Claimed by an agent.
    InProgress,
    /// Completed by its agent.
    Completed,
    /// Failed by its agent.
    Failed,
    /// Cancelled before it ended.
    Cancelled,
}

impl TaskState {
    /// Every state, in the order a task goes through them.
    pub const ALL: [TaskState; 5] = [
        Self::Pending,
        Self::InProgress,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];

    /// Its name, as stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// The state of that name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == name)
    }
}

/// A task to create in the task manager.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    /// Its id (unique among tasks).
    pub id: String,
    /// The workflow it belongs to.
    pub workflow: String,
    /// The agent type that takes it.
    pub kind: String,
    /// What the agent works on.
    pub data: Value,
    /// Its parent task, of the same workflow.
    pub parent: Option<String>,
    /// A claim not settled within this long puts the task back to pending.
    pub claim_timeout_ms: u64,
}

impl NewTask {
    /// The item agents claim.
    pub fn item(&self) -> AgentItem {
        AgentItem {
            id: self.id.clone(),
            kind: self.kind.clone(),
            input: self.data.clone(),
            claim_timeout_ms: self.claim_timeout_ms,
            origin: AgentOrigin::Task {
                workflow: self.workflow.clone(),
                parent: self.parent.clone(),
            },
        }
    }
}

/// A task of the task manager as it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManagedTask {
    /// Its id.
    pub id: String,
    /// Its workflow.
    pub workflow: String,
    /// The agent type that takes it.
    #[serde(rename = "type")]
    pub kind: String,
    /// Where it stands.
    pub status: TaskState,
    /// Its parent task.
    pub parent_id: Option<String>,
    /// What the agent works on.
    pub data: Value,
    /// The agent holding it, or that held it last (kept once it ended).
    pub locked_by: Option<String>,
    /// When that agent claimed it (ms since the epoch, the store's clock).
    pub locked_at_ms: Option<u64>,
    /// When it was created.
    pub created_at_ms: u64,
    /// When its status last changed.
    pub updated_at_ms: u64,
    /// When it was completed, failed or cancelled.
    pub completed_at_ms: Option<u64>,
    /// How many times it was claimed.
    pub claims: u32,
    /// How long a claim holds.
    pub claim_timeout_ms: u64,
    /// What its agent completed it with.
    pub result: Option<Value>,
    /// What its agent failed it with.
    pub error: Option<String>,
}

/// A workflow's tasks counted by status and by type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkflowSummary {
    /// The workflow.
    pub workflow: String,
    /// Every task of it.
    pub total_tasks: u64,
    /// Tasks per status; every status is listed.
    pub status_counts: BTreeMap<String, u64>,
    /// Tasks per type.
    pub type_counts: BTreeMap<String, u64>,
    /// Tasks per type, then per status (only statuses it has).
    pub by_type: BTreeMap<String, BTreeMap<String, u64>>,
}

impl WorkflowSummary {
    /// The summary of `counts` (tasks per status and type).
    pub fn of(workflow: &str, counts: impl IntoIterator<Item = (TaskState, String, u64)>) -> Self {
        let mut summary = Self {
            workflow: workflow.to_string(),
            status_counts: TaskState::ALL
                .iter()
                .map(|state| (state.as_str().to_string(), 0))
                .collect(),
            ..Self::default()
        };
        for (state, kind, count) in counts {
            if count == 0 {
                continue;
            }
            summary.total_tasks += count;
            *summary
                .status_counts
                .entry(state.as_str().to_string())
                .or_default() += count;
            *summary.type_counts.entry(kind.clone()).or_default() += count;
            *summary
                .by_type
                .entry(kind)
                .or_default()
                .entry(state.as_str().to_string())
                .or_default() += count;
        }
        summary
    }
}

/// How long an instance's settled item id is kept, so it is not offered anew (ms).
const SETTLED_KEPT_MS: u64 = 3_600_000;

/// The queue and the task manager in memory: the embedded twin of the Redis keys.
#[derive(Debug, Default)]
pub(crate) struct AgentQueue {
    /// Every item offered and not settled, with its claim if it has one.
    items: HashMap<String, Entry>,
    /// Item ids waiting, oldest first, per type.
    pending: HashMap<String, VecDeque<String>>,
    /// Claims by deadline (ms on the store's clock).
    deadlines: BTreeSet<(u64, String)>,
    /// Item id per claim token.
    tokens: HashMap<String, String>,
    /// Instances' reports by id, with when they may be taken (ms).
    reports: HashMap<String, (Reported, u64)>,
    /// Instances' item ids settled in the last hour, with when: a range delivered again does
    /// not offer them anew.
    settled: HashMap<String, u64>,
    /// The task manager's tasks.
    tasks: HashMap<String, ManagedTask>,
    /// Child task ids per parent, in creation order.
    children: HashMap<String, Vec<String>>,
    /// Tasks per status and type, per workflow.
    counts: HashMap<String, BTreeMap<(TaskState, String), u64>>,
    /// Metadata per workflow.
    metadata: HashMap<String, Map<String, Value>>,
}

#[derive(Debug)]
struct Entry {
    item: AgentItem,
    claims: u32,
    /// Token, agent and deadline of its claim.
    claim: Option<(String, String, u64)>,
}

impl AgentQueue {
    pub(crate) fn offer(&mut self, items: &[AgentItem], now: u64) {
        self.settled
            .retain(|_, at| now.saturating_sub(*at) < SETTLED_KEPT_MS);
        for item in items {
            if self.items.contains_key(&item.id) || self.settled.contains_key(&item.id) {
                continue;
            }
            self.pending
                .entry(item.kind.clone())
                .or_default()
                .push_back(item.id.clone());
            self.items.insert(
                item.id.clone(),
                Entry {
                    item: item.clone(),
                    claims: 0,
                    claim: None,
                },
            );
        }
    }

    pub(crate) fn claim(
        &mut self,
        agent: &str,
        types: &[String],
        token: &str,
        now: u64,
    ) -> Option<AgentClaim> {
        // Claims past their deadline end first, as in Redis.
        self.expire(now, 64);
        for kind in types {
            let Some(waiting) = self.pending.get_mut(kind) else {
                continue;
            };
            while let Some(id) = waiting.pop_front() {
                let Some(entry) = self.items.get_mut(&id) else {
                    continue;
                };
                let deadline = now + entry.item.claim_timeout_ms;
                entry.claims += 1;
                entry.claim = Some((token.to_string(), agent.to_string(), deadline));
                let claim = AgentClaim {
                    token: token.to_string(),
                    agent: agent.to_string(),
                    item: entry.item.clone(),
                    claims: entry.claims,
                };
                self.deadlines.insert((deadline, id.clone()));
                self.tokens.insert(token.to_string(), id.clone());
                self.set_status(&id, TaskState::InProgress, now, |task| {
                    task.locked_by = Some(agent.to_string());
                    task.locked_at_ms = Some(now);
                    task.claims = claim.claims;
                });
                return Some(claim);
            }
        }
        None
    }

    /// The claim `token` holds, ended with `report`: a task takes its status, an instance's
    /// report waits for a worker to record it.
    pub(crate) fn settle(
        &mut self,
        token: &str,
        report: &AgentReport,
        now: u64,
    ) -> Option<AgentClaim> {
        let claim = self.take(token)?;
        let (state, _, _) = report.for_task();
        let is_task = self.set_status(&claim.item.id, state, now, |task| {
            task.completed_at_ms = Some(now);
            match report {
                AgentReport::Completed(result) => task.result = Some(result.clone()),
                AgentReport::Failed(error) => task.error = Some(error.clone()),
                AgentReport::TimedOut => task.error = Some(report.for_task().2),
            }
        });
        if !is_task {
            self.report(&claim, report.clone(), now);
        }
        Some(claim)
    }

    /// Puts the item `token` holds back at the head of its type's queue.
    pub(crate) fn release(&mut self, token: &str, now: u64) -> Option<AgentItem> {
        let id = self.tokens.remove(token)?;
        let entry = self.items.get_mut(&id)?;
        let (_, _, deadline) = entry.claim.take()?;
        let item = entry.item.clone();
        self.deadlines.remove(&(deadline, id.clone()));
        self.requeue(&id, now);
        Some(item)
    }

    /// Ends claims past their deadline at `now`, at most `limit`: an instance's attempt is
    /// reported timed out, a task is pending again. Returns how many.
    pub(crate) fn expire(&mut self, now: u64, limit: usize) -> usize {
        let due: Vec<(u64, String)> = self
            .deadlines
            .iter()
            .take_while(|(deadline, _)| *deadline <= now)
            .take(limit)
            .cloned()
            .collect();
        for (deadline, id) in &due {
            if self.tasks.contains_key(id) {
                let Some(entry) = self.items.get_mut(id) else {
                    continue;
                };
                if let Some((token, _, _)) = entry.claim.take() {
                    self.tokens.remove(&token);
                }
                self.deadlines.remove(&(*deadline, id.clone()));
                self.requeue(id, now);
            } else if let Some(token) = self
                .items
                .get(id)
                .and_then(|entry| entry.claim.as_ref())
                .map(|claim| claim.0.clone())
            {
                if let Some(claim) = self.take(&token) {
                    self.report(&claim, AgentReport::TimedOut, now);
                }
            }
        }
        due.len()
    }

    /// Reports due at `now`, at most `limit`, leased for `lease_ms`.
    pub(crate) fn reports(&mut self, now: u64, limit: usize, lease_ms: u64) -> Vec<Reported> {
        let mut due: Vec<(&String, &mut (Reported, u64))> = self
            .reports
            .iter_mut()
            .filter(|(_, (_, at))| *at <= now)
            .collect();
        due.sort_by(|a, b| a.0.cmp(b.0));
        due.into_iter()
            .take(limit)
            .map(|(_, (reported, at))| {
                *at = now + lease_ms;
                reported.clone()
            })
            .collect()
    }

    /// Deletes recorded reports.
    pub(crate) fn reported(&mut self, ids: &[String]) {
        for id in ids {
            self.reports.remove(id);
        }
    }

    pub(crate) fn create(&mut self, task: &NewTask, now: u64) -> Result<(), String> {
        if self.tasks.contains_key(&task.id) {
            return Err(format!("task `{}` exists already", task.id));
        }
        if let Some(parent) = &task.parent {
            let theirs = &self
                .tasks
                .get(parent)
                .ok_or_else(|| format!("parent task `{parent}` does not exist"))?
                .workflow;
            if *theirs != task.workflow {
                return Err(format!(
                    "parent task `{parent}` is of workflow `{theirs}`, not `{}`",
                    task.workflow
                ));
            }
            self.children
                .entry(parent.clone())
                .or_default()
                .push(task.id.clone());
        }
        self.tasks.insert(
            task.id.clone(),
            ManagedTask {
                id: task.id.clone(),
                workflow: task.workflow.clone(),
                kind: task.kind.clone(),
                status: TaskState::Pending,
                parent_id: task.parent.clone(),
                data: task.data.clone(),
                locked_by: None,
                locked_at_ms: None,
                created_at_ms: now,
                updated_at_ms: now,
                completed_at_ms: None,
                claims: 0,
                claim_timeout_ms: task.claim_timeout_ms,
                result: None,
                error: None,
            },
        );
        *self
            .counts
            .entry(task.workflow.clone())
            .or_default()
            .entry((TaskState::Pending, task.kind.clone()))
            .or_default() += 1;
        self.offer(&[task.item()], now);
        Ok(())
    }

    pub(crate) fn task(&self, id: &str) -> Option<ManagedTask> {
        self.tasks.get(id).cloned()
    }

    pub(crate) fn children(&self, id: &str) -> Vec<ManagedTask> {
        self.children
            .get(id)
            .into_iter()
            .flatten()
            .filter_map(|child| self.task(child))
            .collect()
    }

    pub(crate) fn cancel(&mut self, id: &str, now: u64) -> Result<(), String> {
        let status = self
            .tasks
            .get(id)
            .ok_or_else(|| format!("task `{id}` does not exist"))?
            .status;
        if !matches!(status, TaskState::Pending | TaskState::InProgress) {
            return Err(format!("task `{id}` is {} already", status.as_str()));
        }
        if let Some(entry) = self.items.remove(id) {
            if let Some((token, _, deadline)) = entry.claim {
                self.tokens.remove(&token);
                self.deadlines.remove(&(deadline, id.to_string()));
            }
            if let Some(waiting) = self.pending.get_mut(&entry.item.kind) {
                waiting.retain(|waiting| waiting != id);
            }
        }
        self.set_status(id, TaskState::Cancelled, now, |task| {
            task.completed_at_ms = Some(now);
            task.locked_by = None;
            task.locked_at_ms = None;
        });
        Ok(())
    }

    pub(crate) fn summary(&self, workflow: &str) -> WorkflowSummary {
        let counts = self.counts.get(workflow).into_iter().flatten();
        WorkflowSummary::of(
            workflow,
            counts.map(|((state, kind), count)| (*state, kind.clone(), *count)),
        )
    }

    pub(crate) fn metadata(
        &mut self,
        workflow: &str,
        set: &Map<String, Value>,
    ) -> Map<String, Value> {
        let metadata = self.metadata.entry(workflow.to_string()).or_default();
        metadata.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
        metadata.clone()
    }

    /// Takes the claim `token` holds off the queue with its item.
    fn take(&mut self, token: &str) -> Option<AgentClaim> {
        let id = self.tokens.remove(token)?;
        let entry = self.items.remove(&id)?;
        let (token, agent, deadline) = entry.claim?;
        self.deadlines.remove(&(deadline, id));
        Some(AgentClaim {
            token,
            agent,
            item: entry.item,
            claims: entry.claims,
        })
    }

    fn report(&mut self, claim: &AgentClaim, outcome: AgentReport, now: u64) {
        self.settled.insert(claim.item.id.clone(), now);
        let reported = Reported {
            agent: claim.agent.clone(),
            claims: claim.claims,
            outcome,
            item: claim.item.clone(),
        };
        self.reports.insert(claim.item.id.clone(), (reported, 0));
    }

    /// Puts item `id` back first in line of its type; a task is pending again.
    fn requeue(&mut self, id: &str, now: u64) {
        let Some(entry) = self.items.get(id) else {
            return;
        };
        self.pending
            .entry(entry.item.kind.clone())
            .or_default()
            .push_front(id.to_string());
        self.set_status(id, TaskState::Pending, now, |task| {
            task.locked_by = None;
            task.locked_at_ms = None;
        });
    }

    /// Moves task `id` to `state`, in its record (changed by `change` too) and its workflow's
    /// counts; false when `id` is no task (an instance's item).
    fn set_status(
        &mut self,
        id: &str,
        state: TaskState,
        now: u64,
        change: impl FnOnce(&mut ManagedTask),
    ) -> bool {
        let Some(task) = self.tasks.get_mut(id) else {
            return false;
        };
        let counts = self.counts.entry(task.workflow.clone()).or_default();
        if let Some(count) = counts.get_mut(&(task.status, task.kind.clone())) {
            *count = count.saturating_sub(1);
        }
        *counts.entry((state, task.kind.clone())).or_default() += 1;
        task.status = state;
        task.updated_at_ms = now;
        change(task);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::{AgentItem, AgentOrigin, AgentQueue, AgentReport};
    use serde_json::json;

    fn item(id: &str, timeout: u64) -> AgentItem {
        AgentItem {
            id: id.into(),
            kind: "analyze".into(),
            input: json!({}),
            claim_timeout_ms: timeout,
            origin: AgentOrigin::Instance {
                session: "s".into(),
                run: "r".into(),
                group: 0,
                task: 0,
                task_id: "t".into(),
                instance: 0,
                attempt: 1,
            },
        }
    }

    #[test]
    fn claims_expire_at_their_deadline_and_only_then() {
        let mut queue = AgentQueue::default();
        queue.offer(&[item("x", 100), item("y", 500)], 1_000);
        let types = ["analyze".to_string()];
        assert!(queue.claim("a", &types, "t1", 1_000).is_some());
        assert!(queue.claim("a", &types, "t2", 1_000).is_some());
        assert_eq!(queue.expire(1_099, 10), 0);
        assert_eq!(queue.expire(1_100, 10), 1);
        let reported = queue.reports(1_100, 10, 1_000);
        assert_eq!(reported.len(), 1);
        assert_eq!(
            (reported[0].item.id.as_str(), &reported[0].outcome),
            ("x", &AgentReport::TimedOut)
        );
        let done = AgentReport::Completed(json!(1));
        assert!(queue.settle("t1", &done, 1_100).is_none());
        assert!(queue.settle("t2", &done, 1_100).is_some());
    }
}

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
//! The queue is two capabilities of the store, [`AgentQueue`](crate::AgentQueue) (`agent_*`) and
//! [`TaskManager`](crate::TaskManager) (`task_*`). Its in-memory form is `memory.rs`'s
//! `MemoryAgentQueue`; Redis keeps the same rules in Lua (`crates/events/lua/agents/`, which the
//! Python client runs too), both checked by the conformance suite.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

mod memory;

pub(crate) use memory::MemoryAgentQueue;

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

/// Which waiting items a claim takes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wanted<'a> {
    /// The types, in order of preference: the oldest waiting item of the first that has one.
    /// None for any: the oldest waiting item of every type.
    pub types: &'a [String],
    /// Only tasks of the task manager's workflow of this name (no session's items).
    pub workflow: Option<&'a str>,
}

/// The most tasks one page of a listing looks at: a filter that keeps few of them gives short
/// pages, each with where to go on ([`TaskPage::next`]).
pub const LIST_SCAN: usize = 10_000;

/// Which of a workflow's tasks a listing keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only tasks with this status.
    pub status: Option<TaskState>,
    /// Only tasks of this type.
    pub kind: Option<String>,
}

impl TaskFilter {
    /// Whether `task` is kept.
    pub fn keeps(&self, task: &ManagedTask) -> bool {
        self.status.is_none_or(|status| status == task.status)
            && self.kind.as_ref().is_none_or(|kind| *kind == task.kind)
    }
}

/// A page of a workflow's tasks, in creation order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskPage {
    /// The tasks of the page the filter kept.
    pub tasks: Vec<ManagedTask>,
    /// The position to ask for the next page from, `None` at the end.
    pub next: Option<u64>,
}

/// A workflow's metadata with what is kept for it by itself (seed 003's): `initialized_at`
/// and `last_updated` (ISO 8601, UTC), from `times` (ms: its first task created or first key
/// set, its last change), and `workflow_type` (`generic` unless set).
pub fn with_times(
    mut metadata: Map<String, Value>,
    times: Option<(u64, u64)>,
) -> Map<String, Value> {
    if let Some((initialized, updated)) = times {
        metadata.insert(
            "initialized_at".into(),
            taskgroup::iso8601(initialized).into(),
        );
        metadata.insert("last_updated".into(), taskgroup::iso8601(updated).into());
        metadata
            .entry("workflow_type")
            .or_insert_with(|| Value::from("generic"));
    }
    metadata
}

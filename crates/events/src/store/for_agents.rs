//! The capabilities of external agents: the queue they claim from and the task manager.

use crate::agent_queue::{
    AgentClaim, AgentItem, AgentReport, ManagedTask, NewTask, Reported, TaskFilter, TaskPage,
    Wanted, WorkflowSummary,
};
use crate::error::{Error, Result};
use async_trait::async_trait;
use serde_json::{Map, Value};
use std::time::Duration;

/// The answer of a store that keeps no queue for agents.
pub(crate) fn no_agent_queue() -> Error {
    Error::Refused {
        backend: "store",
        operation: "an agent queue call".into(),
        message: "this store keeps no queue for agents: run with Redis (the distributed mode) or in memory".into(),
    }
}

/// Items external agents claim (`crate::agent_queue`): instances of `agent` tasks and the task
/// manager's tasks. A store that keeps no queue leaves the defaults, which refuse.
#[async_trait]
pub trait AgentQueue: Send + Sync + 'static {
    /// Adds items for agents to claim (`crate::agent_queue`); an id offered before, claimed or not,
    /// is left as it is.
    async fn agent_offer(&self, items: &[AgentItem]) -> Result<()> {
        let _ = items;
        Err(no_agent_queue())
    }

    /// Claims, for `agent` under `token`, the item [`Wanted`] says (the oldest waiting item of
    /// the first of its types that has one, or of any type; of one workflow's tasks, or of
    /// all); its claim lasts the item's `claim_timeout_ms` by the store's clock.
    async fn agent_claim(
        &self,
        agent: &str,
        wanted: Wanted<'_>,
        token: &str,
    ) -> Result<Option<AgentClaim>> {
        let _ = (agent, wanted, token);
        Err(no_agent_queue())
    }

    /// Ends the claim `token` holds with `report`: a task of the task manager takes its status
    /// (`completed` with its result, `failed` with its error); an instance's report is kept for
    /// a worker to record ([`AgentQueue::agent_reports`]). `None` when the token holds none
    /// ([`crate::agent_queue::stale_token`]), and then nothing changed.
    async fn agent_settle(&self, token: &str, report: &AgentReport) -> Result<Option<AgentClaim>> {
        let _ = (token, report);
        Err(no_agent_queue())
    }

    /// Puts the item `token` holds back first in its type's queue (a task is pending again);
    /// `None` when the token holds none.
    async fn agent_release(&self, token: &str) -> Result<Option<AgentItem>> {
        let _ = token;
        Err(no_agent_queue())
    }

    /// Ends claims past their deadline, at most `limit`: an instance's attempt is reported timed
    /// out, a task is pending again. Returns how many ended.
    async fn agent_expire(&self, limit: usize) -> Result<usize> {
        let _ = limit;
        Err(no_agent_queue())
    }

    /// Takes instances' reports to record, at most `limit`, each leased for `lease`: another
    /// caller gets it only once the lease ran out (its taker went away before
    /// [`AgentQueue::agent_reported`]).
    async fn agent_reports(&self, limit: usize, lease: Duration) -> Result<Vec<Reported>> {
        let _ = (limit, lease);
        Err(no_agent_queue())
    }

    /// Deletes the reports of these item ids: they are recorded.
    async fn agent_reported(&self, ids: &[String]) -> Result<()> {
        let _ = ids;
        Err(no_agent_queue())
    }
}

/// The task manager (seed 003): tasks in workflows, with parents, claimed through the
/// [`AgentQueue`]. A store that keeps no queue leaves the defaults, which refuse.
#[async_trait]
pub trait TaskManager: Send + Sync + 'static {
    /// Creates a task of the task manager, pending, for agents of its type to claim. Refused
    /// (`Error::Refused`, naming why) when its id exists, or its parent does not or is of
    /// another workflow.
    async fn task_create(&self, task: &NewTask) -> Result<()> {
        let _ = task;
        Err(no_agent_queue())
    }

    /// The task of that id, if there is one.
    async fn task_get(&self, id: &str) -> Result<Option<ManagedTask>> {
        let _ = id;
        Err(no_agent_queue())
    }

    /// The children of task `id`, in the order they were created.
    async fn task_children(&self, id: &str) -> Result<Vec<ManagedTask>> {
        let _ = id;
        Err(no_agent_queue())
    }

    /// Cancels a pending or claimed task (its claim, if any, ends); refused, naming why, when
    /// it does not exist or ended already.
    async fn task_cancel(&self, id: &str) -> Result<()> {
        let _ = id;
        Err(no_agent_queue())
    }

    /// A page of the workflow's tasks, in creation order from position `from`: those `filter`
    /// keeps, at most `limit`, looking at [`LIST_SCAN`](crate::agent_queue::LIST_SCAN) tasks
    /// at most; [`TaskPage::next`] says where to go on.
    async fn task_list(
        &self,
        workflow: &str,
        filter: &TaskFilter,
        from: u64,
        limit: usize,
    ) -> Result<TaskPage> {
        let _ = (workflow, filter, from, limit);
        Err(no_agent_queue())
    }

    /// The workflow's tasks counted by status and by type.
    async fn task_summary(&self, workflow: &str) -> Result<WorkflowSummary> {
        let _ = workflow;
        Err(no_agent_queue())
    }

    /// Sets the keys of `set` in the workflow's metadata (nothing for an empty map); returns
    /// the metadata as it then is, with `initialized_at`, `last_updated` and `workflow_type`
    /// ([`with_times`](crate::agent_queue::with_times)) once the workflow has a task or a key.
    async fn workflow_metadata(
        &self,
        workflow: &str,
        set: &Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        let _ = (workflow, set);
        Err(no_agent_queue())
    }
}

//! The `Store` seam: durable session state and pub/sub wake-ups (Redis in production; the
//! in-memory twin is `memory_store.rs`).
//!
//! Recording rule, the same for every implementation (exactly-once recording under
//! at-least-once execution): per (session, task, instance), a success is final; a failure may be
//! replaced by a newer attempt; an outcome whose attempt is not newer than the stored one is
//! refused. Outcomes are written before they are announced, so a lost announcement loses nothing.

use crate::agents::{
    AgentClaim, AgentItem, AgentReport, ManagedTask, NewTask, Reported, WorkflowSummary,
};
use crate::error::{Error, Result};
use crate::messages::{Outcome, TaskRecord, TaskRef};
use crate::origin::Origin;
use async_trait::async_trait;
use serde_json::{Map, Value};
use std::ops::Range;
use std::time::Duration;

/// Where final and partial results are announced.
pub const RESULTS_CHANNEL: &str = "agency:results";
/// Coordinator-to-worker control messages.
pub const CONTROL_CHANNEL: &str = "agency:control";

/// The answer of a store that keeps no queue for agents.
fn no_agent_queue() -> Error {
    Error::Refused {
        backend: "store",
        operation: "an agent queue call".into(),
        message: "this store keeps no queue for agents: run with Redis (the distributed mode) or in memory".into(),
    }
}

/// The channel that announces a session's outcomes to its coordinator.
pub fn notices_channel(session: &str) -> String {
    format!("agency:notices:{{{session}}}")
}

/// The channel a session's live state is announced on each time a run writes it
/// ([`Store::save_state`] with `replace`): a follower subscribes, then reads the stored state to
/// catch up.
pub fn progress_channel(session: &str) -> String {
    format!("agency:progress:{{{session}}}")
}

/// Matches every session's notices channel: a coordinator reads all its sessions' notices over
/// one subscription.
pub const NOTICES_PATTERN: &str = "agency:notices:*";

/// Who may write a session's state. A coordinator running a session under a lease writes with
/// the token its [`Store::claim`] stored; once another claim replaces the token, every write
/// with the old one is refused ([`crate::Error::Fenced`]) in the same atomic step that checks it,
/// so a coordinator that was paused past its lease cannot overwrite what its successor wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence<'a> {
    /// No lease is involved: an embedded run, or a write outside any run (a client, a rejected
    /// session).
    Open,
    /// The token of the claim the writer holds.
    Token(&'a str),
}

impl Fence<'_> {
    /// The token, or `""` for [`Fence::Open`] (how the Lua scripts take it).
    pub fn token(&self) -> &str {
        match self {
            Self::Open => "",
            Self::Token(token) => token,
        }
    }
}

/// What [`Store::claim`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// First run of this session id: the caller holds the lease.
    Fresh,
    /// The id ran before from another action; that run's result is deleted and its working
    /// state, if any is left, must be cleaned up. The caller holds the lease.
    Stale,
    /// This very action started the session before and it has no result: a coordinator stopped
    /// running it. The caller holds the lease and resumes from the stored state.
    Resume,
    /// This action's session has its result: nothing to do.
    Finished,
    /// Another coordinator holds the lease.
    Held,
    /// A later action of the same topic partition started this session id: this one is old
    /// (delivered again) and must not run.
    Superseded,
}

/// What [`Store::renew`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// The caller holds the lease (again, if it had lapsed and nobody took it).
    Held,
    /// Another coordinator holds the lease.
    Taken,
    /// The session's origin is gone from the store, so its state is too: the store lost its data
    /// (a Redis restarted without persistence, a flush). Nothing can resume the session.
    StateLost,
}

/// Where a session's state lives (Redis, or the in-memory twin), and its pub/sub.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores what workers need to run a task's instances.
    async fn save_task(
        &self,
        session: &str,
        task: TaskRef,
        record: &TaskRecord,
        fence: Fence<'_>,
    ) -> Result<()>;
    /// The task's record, if the session still has one.
    async fn load_task(&self, session: &str, task: TaskRef) -> Result<Option<TaskRecord>>;
    /// Records outcomes by the recording rule; returns, per outcome, whether it was accepted.
    /// With a `notice`, when every outcome was accepted, also publishes it on the session's
    /// notices channel, after the writes and in the same call, so that a worker's batch costs
    /// one round trip. When some were refused nothing is published: the caller announces what
    /// was accepted.
    ///
    /// The outcomes belong to run `run` of the session; unless it is the session's current run
    /// ([`Store::start_run`]) every one is refused and nothing is written, so work of a run that
    /// ended (delivered late, or redelivered after cleanup) cannot recreate its state or mix into
    /// a later run. An empty `run` (a work item from before runs were named) is not checked.
    async fn record_outcomes(
        &self,
        session: &str,
        task: TaskRef,
        run: &str,
        outcomes: &[Outcome],
        notice: Option<&[u8]>,
    ) -> Result<Vec<bool>>;
    /// Makes `run` the session's current run, whose outcomes [`Store::record_outcomes`]
    /// accepts. Cleanup forgets it.
    async fn start_run(&self, session: &str, run: &str, fence: Fence<'_>) -> Result<()>;
    /// Ends run `run` while keeping the session's working state (a session that did not
    /// complete keeps it for a rerun): it is no longer the current run, so late work of it is
    /// refused like work of any ended run, and its cancel and pause marks go. Nothing changes
    /// when another run is current.
    async fn end_run(&self, session: &str, run: &str, fence: Fence<'_>) -> Result<()>;
    /// The session's current run ([`Store::start_run`]): `None` before one started and after
    /// cleanup.
    async fn current_run(&self, session: &str) -> Result<Option<String>>;
    /// Asks the session's current run to stop: marks it cancelled, for its coordinator to see
    /// ([`Store::cancel_requested`]) wherever it runs. Returns the run marked, or `None` when no
    /// run is current (nothing is written). The mark lives as long as the working state.
    async fn request_cancel(&self, session: &str) -> Result<Option<String>>;
    /// Whether a cancel of run `run` was requested ([`Store::request_cancel`]).
    async fn cancel_requested(&self, session: &str, run: &str) -> Result<bool>;
    /// Pauses (`paused`) the session's current run, or resumes it: marks it paused for its
    /// coordinator to see ([`Store::pause_requested`]), or removes the mark. Returns the run, or
    /// `None` when no run is current (nothing is written). The mark lives as long as the working
    /// state.
    async fn request_pause(&self, session: &str, paused: bool) -> Result<Option<String>>;
    /// Whether run `run` is marked paused ([`Store::request_pause`]).
    async fn pause_requested(&self, session: &str, run: &str) -> Result<bool>;
    /// Keeps the session document run `run` runs (as submitted, id included), so that a client
    /// submitting the id again can tell a repeat from another document. Part of the working
    /// state; fenced like every coordinator write.
    async fn save_document(
        &self,
        session: &str,
        run: &str,
        document: &[u8],
        fence: Fence<'_>,
    ) -> Result<()>;
    /// The run whose document [`Store::save_document`] kept last, and that document.
    async fn load_document(&self, session: &str) -> Result<Option<(String, Vec<u8>)>>;
    /// Notes what became of the intake action `run` when it started no run of its own (a
    /// coordinator attached it to the run under way, or refused it), for whoever waits for it.
    /// Kept as long as a result.
    async fn note_action(&self, session: &str, run: &str, note: &str) -> Result<()>;
    /// The note [`Store::note_action`] left for action `run`, if any.
    async fn action_note(&self, session: &str, run: &str) -> Result<Option<String>>;
    /// The store's clock, in milliseconds since the Unix epoch (Redis's `TIME`): every process
    /// stamps the times it shows by this one clock. Only for display; no decision reads it.
    async fn now_ms(&self) -> Result<u64>;
    /// Writes the session's live state (JSON, `docs/control.md`). With `replace` false it is
    /// written only when none is stored: a submission's `pending` must not overwrite the state of
    /// a run that already started. With `replace` it is also published on the session's
    /// [`progress_channel`], in the same call. Part of the working state; fenced. The session is
    /// also listed among the recent sessions ([`Store::sessions`]): a `pending` state moves it
    /// to the newest.
    async fn save_state(
        &self,
        session: &str,
        state: &[u8],
        replace: bool,
        fence: Fence<'_>,
    ) -> Result<()>;
    /// The session's live state, if one is stored.
    async fn load_state(&self, session: &str) -> Result<Option<Vec<u8>>>;
    /// The sessions listed most recently (by [`Store::save_state`]), newest first, with when
    /// ([`Store::now_ms`]), at most `limit`; a session is listed for as long as a result is kept.
    async fn sessions(&self, limit: usize) -> Result<Vec<(String, u64)>>;
    /// A process's heartbeat: what it says of itself (`info`, JSON), stamped with the store's
    /// clock. Members not heard from for a day are forgotten.
    async fn heartbeat(&self, member: &str, info: &[u8]) -> Result<()>;
    /// Every member heard from: its id, what it said last, and when (ms, [`Store::now_ms`]).
    async fn members(&self) -> Result<Vec<(String, Vec<u8>, u64)>>;
    /// Forgets a member that is stopping.
    async fn forget_member(&self, member: &str) -> Result<()>;
    /// Counts the workers that started a work item and did not finish it: a worker calls it with
    /// `Started(its name)` before it executes the range `item`
    /// (`<g>:<t>:<start>:<end>:<attempt>`) of run `run` and gets how many distinct workers
    /// started it since it last finished, itself included (calling it again, after an answer
    /// was lost, counts nothing more); with `Finished` once the range's outcomes are recorded,
    /// which clears the count. A range that many workers started and none finished kills or
    /// crashes its workers. `None` when `run` is not the session's current run (nothing is
    /// written: the range is late). The count lives as long as the working state.
    async fn track_range(
        &self,
        session: &str,
        run: &str,
        item: &str,
        step: RangeStep<'_>,
    ) -> Result<Option<u64>>;
    /// The stored outcomes of instances `range`, in index order.
    async fn outcomes(
        &self,
        session: &str,
        task: TaskRef,
        range: Range<u64>,
    ) -> Result<Vec<Option<Outcome>>>;
    /// How many instances of the task have an outcome stored. A coordinator compares it with
    /// the outcomes it counted: a store that failed over to a replica which missed writes holds
    /// fewer.
    async fn outcome_count(&self, session: &str, task: TaskRef) -> Result<u64>;
    /// Stores the session's whole context, replacing what was there.
    async fn save_context(
        &self,
        session: &str,
        context: &Map<String, Value>,
        fence: Fence<'_>,
    ) -> Result<()>;
    /// Sets one context key (a task's combined result), leaving the others.
    async fn set_context(
        &self,
        session: &str,
        key: &str,
        value: &Value,
        fence: Fence<'_>,
    ) -> Result<()>;
    /// The session's context, if it has one stored.
    async fn load_context(&self, session: &str) -> Result<Option<Map<String, Value>>>;
    /// Which context key each task's result is written to (seed 002's result key mappings).
    async fn save_mappings(
        &self,
        session: &str,
        mappings: &Map<String, Value>,
        fence: Fence<'_>,
    ) -> Result<()>;
    /// The mappings stored by [`Store::save_mappings`].
    async fn load_mappings(&self, session: &str) -> Result<Option<Map<String, Value>>>;
    /// Stores the session's final or partial result (kept after cleanup), then publishes
    /// `announcement` (an encoded [`crate::Announcement`]) on [`RESULTS_CHANNEL`]: in one call,
    /// and only once it is stored. Storing the same result again (retrying a write whose answer
    /// was lost) announces nothing. `result` is the JSON document, encoded once by the caller (a
    /// result can hold a million values; it is never copied to be stored, nor sent on pub/sub).
    async fn publish_result(
        &self,
        session: &str,
        result: &[u8],
        announcement: &[u8],
        fence: Fence<'_>,
    ) -> Result<()>;
    /// The session's stored result, if it has one.
    async fn load_result(&self, session: &str) -> Result<Option<Value>>;
    /// Forgets a stored result: a session submitted again under the same id starts fresh.
    async fn delete_result(&self, session: &str, fence: Fence<'_>) -> Result<()>;
    /// Takes the session's lease for `owner` unless another owner holds it, and says how the
    /// session stands for the action at `origin` (its position in the intake topic). For a fresh
    /// or stale start it records `origin` (kept as long as a result) and deletes an earlier
    /// result, atomically with taking the lease. Whenever it takes the lease it stores `token`
    /// as the session's fence: writes with any earlier token are refused from then on.
    async fn claim(
        &self,
        session: &str,
        owner: &str,
        origin: &Origin,
        token: &str,
        lease: Duration,
    ) -> Result<Claim>;
    /// Extends `owner`'s lease (or takes it again if it lapsed and nobody took it) and keeps the
    /// session's origin from expiring, unless another owner holds the lease, a later claim
    /// replaced `token` (both [`Renewal::Taken`]) or the origin is gone.
    async fn renew(
        &self,
        session: &str,
        owner: &str,
        token: &str,
        lease: Duration,
    ) -> Result<Renewal>;
    /// Gives the lease up if `owner` holds it.
    async fn release(&self, session: &str, owner: &str) -> Result<()>;
    /// Keeps a large value (an instance result stored by reference) under `name`.
    async fn save_blob(&self, session: &str, name: &str, bytes: Vec<u8>) -> Result<()>;
    /// The blob stored under `name`, if there is one.
    async fn load_blob(&self, session: &str, name: &str) -> Result<Option<Vec<u8>>>;
    /// Deletes the session's working state (tasks, outcomes, blobs, context, mappings), not its
    /// result, nor the outcomes [`Store::keep_results`] marked (and the blobs, while any are).
    async fn cleanup(&self, session: &str, fence: Fence<'_>) -> Result<()>;
    /// Marks `task`'s outcomes as results kept by reference: the session's next
    /// [`Store::cleanup`] or [`Store::cleanup_run`] leaves them, with the session's blobs,
    /// readable by [`Store::outcomes`] and [`Store::load_blob`] for as long as a result is kept,
    /// and drops the mark, so the cleanup after it (a new run of the id) deletes them. Fenced.
    async fn keep_results(&self, session: &str, task: TaskRef, fence: Fence<'_>) -> Result<()>;
    /// Keeps the session's recorded successes for a new run of it that reuses them (a rerun of
    /// what failed): deletes every other outcome, every outcome of the tasks in `forget` (exit
    /// handlers, which run again whatever they did), the cancel and pause marks and the range
    /// counts, and returns how many successes are kept. Fenced like every coordinator write.
    async fn keep_successes(
        &self,
        session: &str,
        forget: &[TaskRef],
        fence: Fence<'_>,
    ) -> Result<u64>;
    /// Deletes the session's working state, as [`Store::cleanup`], if `run` is still its current
    /// run ([`Store::start_run`]); otherwise does nothing. For a session found finished whose
    /// coordinator stopped between storing the result and cleaning up: it needs no claim, and a
    /// later run of the id (another run name, or none yet) is left alone.
    async fn cleanup_run(&self, session: &str, run: &str) -> Result<()>;
    /// Memoized results (a task's `memoize`): per key, the stored success, `None` where there is
    /// none or it expired. Kept apart from every session: any later session reads them.
    async fn memo_get(&self, keys: &[String]) -> Result<Vec<Option<Value>>>;
    /// Stores memoized successes under their keys, each kept for `ttl` (for ever when `None`);
    /// a key stored again takes the newer value.
    async fn memo_put(&self, entries: &[(String, Value)], ttl: Option<Duration>) -> Result<()>;
    /// Removes the memoized results whose key starts with `prefix` (every one for `""`);
    /// returns how many were removed.
    async fn memo_clear(&self, prefix: &str) -> Result<u64>;
    /// Adds items for agents to claim (`crate::agents`); an id offered before, claimed or not,
    /// is left as it is.
    async fn agent_offer(&self, items: &[AgentItem]) -> Result<()> {
        let _ = items;
        Err(no_agent_queue())
    }
    /// Claims, for `agent` under `token`, the oldest waiting item of the first of `types` that
    /// has one; its claim lasts the item's `claim_timeout_ms` by the store's clock.
    async fn agent_claim(
        &self,
        agent: &str,
        types: &[String],
        token: &str,
    ) -> Result<Option<AgentClaim>> {
        let _ = (agent, types, token);
        Err(no_agent_queue())
    }
    /// Ends the claim `token` holds with `report`: a task of the task manager takes its status
    /// (`completed` with its result, `failed` with its error); an instance's report is kept for
    /// a worker to record ([`Store::agent_reports`]). `None` when the token holds none
    /// ([`crate::agents::stale_token`]), and then nothing changed.
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
    /// [`Store::agent_reported`]).
    async fn agent_reports(&self, limit: usize, lease: Duration) -> Result<Vec<Reported>> {
        let _ = (limit, lease);
        Err(no_agent_queue())
    }
    /// Deletes the reports of these item ids: they are recorded.
    async fn agent_reported(&self, ids: &[String]) -> Result<()> {
        let _ = ids;
        Err(no_agent_queue())
    }
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
    /// The workflow's tasks counted by status and by type.
    async fn task_summary(&self, workflow: &str) -> Result<WorkflowSummary> {
        let _ = workflow;
        Err(no_agent_queue())
    }
    /// Sets the keys of `set` in the workflow's metadata (nothing for an empty map); returns
    /// the metadata as it then is.
    async fn workflow_metadata(
        &self,
        workflow: &str,
        set: &Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        let _ = (workflow, set);
        Err(no_agent_queue())
    }
    /// Sends `payload` to the channel's current subscribers (pub/sub: nothing is kept).
    async fn publish(&self, channel: &str, payload: Vec<u8>) -> Result<()>;
    /// Messages published on `channel` from now on.
    async fn subscribe(&self, channel: &str) -> Result<Box<dyn Subscription>>;
    /// Messages of every channel matching `pattern` (Redis glob: `*`, `?`, `\` escapes).
    async fn subscribe_pattern(&self, pattern: &str) -> Result<Box<dyn Subscription>>;
}

/// What a worker tells [`Store::track_range`] of a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeStep<'a> {
    /// The worker of this name (unique to its process) is about to execute the range.
    Started(&'a str),
    /// The range's outcomes are recorded.
    Finished,
}

/// A pub/sub subscription: messages in the order published.
#[async_trait]
pub trait Subscription: Send {
    /// The next message on the channel; waits until there is one.
    async fn next(&mut self) -> Result<Vec<u8>>;
}

/// Applies the recording rule to one slot; true when `outcome` is accepted.
pub fn accept(slot: &mut Option<Outcome>, outcome: Outcome) -> bool {
    let accepted = match slot {
        None => true,
        Some(stored) => !stored.succeeded() && outcome.attempt > stored.attempt,
    };
    if accepted {
        *slot = Some(outcome);
    }
    accepted
}

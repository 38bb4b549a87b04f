//! The capabilities that keep one session's state: its runs and lease, its outcomes, its
//! context, its result and what its clients read.

use super::{Claim, Fence, RangeStep, Renewal};
use crate::error::Result;
use crate::messages::{Outcome, TaskRecord, TaskRef};
use crate::origin::Origin;
use async_trait::async_trait;
use serde_json::{Map, Value};
use std::ops::Range;
use std::time::Duration;

/// A session's runs and its lease: who may run it ([`Runs::claim`], renewed and released,
/// with the fence that refuses a replaced coordinator's writes), which run is current, the
/// cancel and pause marks a client leaves for it, and deleting its working state.
#[async_trait]
pub trait Runs: Send + Sync + 'static {
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

    /// Makes `run` the session's current run, whose outcomes [`Outcomes::record_outcomes`]
    /// accepts. Cleanup forgets it.
    async fn start_run(&self, session: &str, run: &str, fence: Fence<'_>) -> Result<()>;

    /// Ends run `run` while keeping the session's working state (a session that did not
    /// complete keeps it for a rerun): it is no longer the current run, so late work of it is
    /// refused like work of any ended run, and its cancel and pause marks go. Nothing changes
    /// when another run is current.
    async fn end_run(&self, session: &str, run: &str, fence: Fence<'_>) -> Result<()>;

    /// The session's current run ([`Runs::start_run`]): `None` before one started and after
    /// cleanup.
    async fn current_run(&self, session: &str) -> Result<Option<String>>;

    /// Asks the session's current run to stop: marks it cancelled, for its coordinator to see
    /// ([`Runs::cancel_requested`]) wherever it runs. Returns the run marked, or `None` when no
    /// run is current (nothing is written). The mark lives as long as the working state.
    async fn request_cancel(&self, session: &str) -> Result<Option<String>>;

    /// Whether a cancel of run `run` was requested ([`Runs::request_cancel`]).
    async fn cancel_requested(&self, session: &str, run: &str) -> Result<bool>;

    /// Pauses (`paused`) the session's current run, or resumes it: marks it paused for its
    /// coordinator to see ([`Runs::pause_requested`]), or removes the mark. Returns the run, or
    /// `None` when no run is current (nothing is written). The mark lives as long as the working
    /// state.
    async fn request_pause(&self, session: &str, paused: bool) -> Result<Option<String>>;

    /// Whether run `run` is marked paused ([`Runs::request_pause`]).
    async fn pause_requested(&self, session: &str, run: &str) -> Result<bool>;

    /// Deletes the session's working state (tasks, outcomes, blobs, context, mappings), not its
    /// result, nor the outcomes [`Outcomes::keep_results`] marked (and the blobs, while any are).
    async fn cleanup(&self, session: &str, fence: Fence<'_>) -> Result<()>;

    /// Deletes the session's working state, as [`Runs::cleanup`], if `run` is still its current
    /// run ([`Runs::start_run`]); otherwise does nothing. For a session found finished whose
    /// coordinator stopped between storing the result and cleaning up: it needs no claim, and a
    /// later run of the id (another run name, or none yet) is left alone.
    async fn cleanup_run(&self, session: &str, run: &str) -> Result<()>;
}

/// What workers run from and record: the task records, the instances' outcomes by the recording
/// rule (stored, then announced), the workers counted on a range, and the outcomes kept for a
/// rerun or as results kept by reference.
#[async_trait]
pub trait Outcomes: Send + Sync + 'static {
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
    /// ([`Runs::start_run`]) every one is refused and nothing is written, so work of a run that
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

    /// Marks `task`'s outcomes as results kept by reference: the session's next
    /// [`Runs::cleanup`] or [`Runs::cleanup_run`] leaves them, with the session's blobs,
    /// readable by [`Outcomes::outcomes`] and [`Results::load_blob`] for as long as a result is kept,
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
}

/// The session's shared context, and which context key each task's result is written to.
#[async_trait]
pub trait Contexts: Send + Sync + 'static {
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

    /// The mappings stored by [`Contexts::save_mappings`].
    async fn load_mappings(&self, session: &str) -> Result<Option<Map<String, Value>>>;
}

/// Final and partial results (kept past cleanup), and blobs: values stored by reference.
#[async_trait]
pub trait Results: Send + Sync + 'static {
    /// Stores the session's final or partial result (kept after cleanup), then publishes
    /// `announcement` (an encoded [`crate::Announcement`]) on [`RESULTS_CHANNEL`](crate::RESULTS_CHANNEL): in one call,
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

    /// Keeps a large value (an instance result stored by reference) under `name`.
    async fn save_blob(&self, session: &str, name: &str, bytes: Vec<u8>) -> Result<()>;

    /// The blob stored under `name`, if there is one.
    async fn load_blob(&self, session: &str, name: &str) -> Result<Option<Vec<u8>>>;
}

/// What clients of a session read: the document it runs, notes on intake actions that started
/// no run, its live state, the list of recent sessions, and the withdrawal of submissions
/// cancelled before a coordinator took them.
#[async_trait]
pub trait Documents: Send + Sync + 'static {
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

    /// The run whose document [`Documents::save_document`] kept last, and that document.
    async fn load_document(&self, session: &str) -> Result<Option<(String, Vec<u8>)>>;

    /// Notes what became of the intake action `run` when it started no run of its own (a
    /// coordinator attached it to the run under way, or refused it), for whoever waits for it.
    /// Kept as long as a result.
    async fn note_action(&self, session: &str, run: &str, note: &str) -> Result<()>;

    /// The note [`Documents::note_action`] left for action `run`, if any.
    async fn action_note(&self, session: &str, run: &str) -> Result<Option<String>>;

    /// Writes the session's live state (JSON, `docs/control.md`). With `replace` false it is
    /// written only when none is stored: a submission's `pending` must not overwrite the state of
    /// a run that already started. With `replace` it is also published on the session's
    /// [`progress_channel`](crate::store::progress_channel), in the same call. Part of the working state; fenced. The session is
    /// also listed among the recent sessions ([`Documents::sessions`]): a `pending` state moves it
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

    /// Withdraws the session's submissions that no coordinator has taken yet, under `mark` (the
    /// one its cancel action carries, produced after this): a coordinator taking one while the
    /// mark is there runs nothing and stores a `cancelled` result. The mark replaces an earlier
    /// one and lives as long as the working state would.
    async fn withdraw(&self, session: &str, mark: &str) -> Result<()>;

    /// The mark [`Documents::withdraw`] left, if one is there.
    async fn withdrawal(&self, session: &str) -> Result<Option<String>>;

    /// Removes the mark if it is still `mark`: its cancel action was taken, after every
    /// submission before it, so the ones after it run.
    async fn end_withdrawal(&self, session: &str, mark: &str) -> Result<()>;

    /// The sessions listed most recently (by [`Documents::save_state`]), newest first, with when
    /// ([`Membership::now_ms`](crate::Membership::now_ms)), at most `limit`; a session is listed for as long as a result is kept.
    async fn sessions(&self, limit: usize) -> Result<Vec<(String, u64)>>;
}

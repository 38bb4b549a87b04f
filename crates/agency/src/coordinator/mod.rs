//! The coordinator (seed 002's AgencyTaskGroup): runs one session from start to final result.
//!
//! It writes the context and the result-key mappings, then carries out what the session's
//! [`taskgroup::SessionMachine`] decides: planning tasks against the current context,
//! dispatching instance ranges to workers, keeping retry and deadline timers, and combining a
//! settled task's results into the context. When every group has ended it publishes the final
//! result (or partial results) and deletes the session's working state.
//!
//! Outcomes reach it as notices on the session's channel (read through one pattern subscription
//! per coordinator, see `notice_router`), always after they were written to the store; the
//! store, not the notice, holds results.
//!
//! - `dispatch_log.rs`: noticing that the broker lost dispatched work, and saying so;
//! - `lease.rs`: one coordinator per session at a time, taking over from one that died;
//! - `run.rs`: the loop of one session's run, feeding the machine and carrying out its commands;
//! - `timers.rs`: its retries and deadlines, in one queue;
//! - `work.rs`: the IO those commands need (plan and store tasks, publish ranges, read back);
//! - `combine.rs`: combining a settled task's results, and what the final result reads.

mod combine;
mod dispatch_log;
mod lease;
mod run;
mod timers;
mod work;

pub(crate) use lease::exit_handlers;

use crate::error::{Error, Result};
use crate::notice_router::NoticeRouter;
use events::{Broker, Fence, Origin, Store};
use expansion::Limits;
use lease::{handed_over, Holder, Start, Taken, STOPPING};
use run::{SessionRun, Signals};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use taskgroup::{Counts, Session, SessionResult};
use tokio_util::sync::CancellationToken;
use work::Work;

/// How long a coordinator's hold on a session lasts unless renewed (every third of it). A
/// coordinator that dies is replaced after at most this long.
pub const LEASE: Duration = Duration::from_secs(10);

/// One run of a session id.
#[derive(Debug, Clone, Copy)]
struct RunOf<'a> {
    /// Names the run on its work items, task records and cancels, so that workers tell it from
    /// other runs of the same session id: the intake action's origin (a resumed run keeps it),
    /// or a fresh id when the session runs unleased.
    name: &'a str,
    /// The lease to keep renewed; `None` when the session runs unleased (embedded: one
    /// coordinator).
    lease: Option<Lease<'a>>,
    start: Start,
    /// The session as submitted, kept with the run (distributed only).
    document: Option<&'a [u8]>,
    /// When it was submitted, if its submission said.
    submitted_at: Option<&'a str>,
}

/// An embedded run kept in a state file ([`Coordinator::run_durably`]).
#[derive(Debug, Clone, Copy)]
pub struct Durable<'a> {
    /// The session id.
    pub id: &'a str,
    /// The run's name, kept in the store while it runs.
    pub run: &'a str,
    /// Resume the run from what the store holds of it, rather than start it.
    pub resume: bool,
    /// A rerun of what failed: the store keeps this many successes of the run before (see
    /// [`events::Outcomes::keep_successes`]), which the result reports as reused.
    pub reused: Option<u64>,
    /// The session as given, kept with the run, so a resume can tell it is the same session.
    pub document: &'a [u8],
}

/// A lease this coordinator holds on a session: who holds it, and the token its claim stored as
/// the session's fence, which every write for the session carries.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lease<'a> {
    /// The holder (`owner@origin`, see [`lease::Holder`]).
    pub(super) holder: &'a str,
    /// The claim's token.
    pub(super) token: &'a str,
}

/// What a run's writes carry: its lease's token, or no fence when it runs unleased.
pub(super) fn fence(lease: Option<Lease<'_>>) -> Fence<'_> {
    lease.map_or(Fence::Open, |lease| Fence::Token(lease.token))
}

/// Counters a progress display reads while a session runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Instances of the tasks planned so far.
    pub planned: AtomicU64,
    /// Instances with a final outcome.
    pub settled: AtomicU64,
    /// Instances that failed after their last attempt.
    pub failed: AtomicU64,
    /// Tasks not planned yet that may still run: `planned` grows when they are.
    pub to_plan: AtomicU64,
    /// Whether the run's result is stored: what is left of it is cleaning up.
    pub finished: AtomicBool,
}

impl Progress {
    /// Stores the machine's counts, for readers on other threads.
    fn record(&self, counts: Counts) {
        self.planned.store(counts.planned, Ordering::Relaxed);
        self.settled.store(counts.settled, Ordering::Relaxed);
        self.failed.store(counts.failed, Ordering::Relaxed);
        self.to_plan.store(counts.to_plan, Ordering::Relaxed);
    }
}

/// Runs sessions over a broker and a store: embedded (one coordinator, unleased) or
/// distributed (under leases, several coordinators sharing the intake).
#[derive(Clone)]
pub struct Coordinator {
    broker: Arc<dyn Broker>,
    store: Arc<dyn Store>,
    notices: Arc<NoticeRouter>,
    /// This coordinator's name on the session leases it holds.
    owner: Arc<str>,
    limits: Limits,
    chunk: u64,
    /// What it dispatched, to notice the broker losing it.
    dispatched: Arc<dispatch_log::DispatchLog>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("limits", &self.limits)
            .field("chunk", &self.chunk)
            .finish_non_exhaustive()
    }
}

impl Coordinator {
    /// A coordinator dispatching over `broker` and recording in `store`.
    pub fn new(broker: Arc<dyn Broker>, store: Arc<dyn Store>, limits: Limits) -> Self {
        Self {
            broker,
            notices: Arc::new(NoticeRouter::new(store.clone())),
            owner: uuid::Uuid::new_v4().to_string().into(),
            store,
            limits,
            chunk: taskgroup::DEFAULT_CHUNK,
            dispatched: Arc::default(),
        }
    }

    /// Instances per dispatched range.
    pub fn with_chunk(mut self, chunk: u64) -> Self {
        self.chunk = chunk.max(1);
        self
    }

    /// Runs `session` under id `id` until it finishes, times out or `cancel` fires; returns the
    /// final result, which is also stored, announced on `agency:results` and left after cleanup.
    pub async fn run(
        &self,
        session: &Session,
        id: &str,
        progress: &Progress,
        cancel: CancellationToken,
    ) -> Result<SessionResult> {
        let name = uuid::Uuid::new_v4().to_string();
        let run = RunOf {
            name: &name,
            lease: None,
            start: Start::Fresh,
            document: None,
            submitted_at: None,
        };
        // Unleased, the one token both stops and cancels: the run ends `cancelled`.
        self.drive(session, id, run, progress, cancel.clone(), cancel)
            .await
    }

    /// Runs `session` unleased as `durable` says: keeping the document with the run, and with
    /// `resume` from what an earlier process recorded under the same run in this coordinator's
    /// store (a state file), so recorded outcomes are not executed again. Ends as
    /// [`Coordinator::run`] does.
    pub async fn run_durably(
        &self,
        session: &Session,
        durable: Durable<'_>,
        progress: &Progress,
        cancel: CancellationToken,
    ) -> Result<SessionResult> {
        let run = RunOf {
            name: durable.run,
            lease: None,
            start: match (durable.reused, durable.resume) {
                (Some(kept), _) => Start::Rerun { kept },
                (None, true) => Start::Resume,
                (None, false) => Start::Fresh,
            },
            document: Some(durable.document),
            submitted_at: None,
        };
        self.drive(session, durable.id, run, progress, cancel.clone(), cancel)
            .await
    }

    /// Runs the session that the `agency_action` message at `origin` (`topic/partition/offset`)
    /// asked for, under a lease, so one coordinator runs it at a time:
    /// - while another coordinator holds the lease, waits: it finishes the session, or its lease
    ///   lapses (it died) and this one takes over;
    /// - if this action's session already finished (the action was delivered again), returns
    ///   its result if still stored, `None` otherwise; an older action than the one that last
    ///   started this session id is skipped (`None`);
    /// - if it started and has none (its coordinator stopped), resumes it from the store:
    ///   outcomes already recorded are not executed again.
    ///
    /// A session that fails with an error still gets a result: `failed`, with the error. When
    /// `stop` fires the session is left, without a result, for another coordinator to resume
    /// (the error is [`HandedOver`](crate::HandedOver)). When `cancel` fires, or a cancel of the run is requested
    /// in the store ([`events::Runs::request_cancel`], seen within a second), the run ends
    /// `cancelled`, with the results of what completed. `document` is the session as submitted,
    /// kept with the run ([`events::Documents::save_document`]) for clients submitting the id again.
    /// With `rerun`, a run of the id that did not complete is rerun: its recorded successes are
    /// reused and only what failed or never finished is executed.
    #[allow(clippy::too_many_arguments)]
    pub async fn run_action(
        &self,
        session: &Session,
        document: &[u8],
        id: &str,
        origin: &Origin,
        rerun: bool,
        progress: &Progress,
        stop: CancellationToken,
        cancel: CancellationToken,
    ) -> Result<Option<SessionResult>> {
        let holder = Holder {
            owner: &self.owner,
            origin,
        }
        .to_string();
        let name = origin.to_string();
        let submitted_at = self.submitted_at(id).await;
        let mut outage = events::Backoff::new();
        let mut token;
        let outcome = loop {
            // Each claim stores a token of its own: a run of this coordinator that an earlier
            // claim started is fenced out too.
            token = uuid::Uuid::new_v4().to_string();
            let lease = Lease {
                holder: &holder,
                token: &token,
            };
            let rerun = rerun.then_some(session);
            let outcome = match self.take(lease, id, origin, rerun, &stop).await {
                Ok(Taken::Done(result)) => {
                    return result
                        .map(|value| crate::results::read_result(id, value))
                        .transpose()
                }
                Ok(Taken::Run(start)) => {
                    let run = RunOf {
                        name: &name,
                        lease: Some(lease),
                        start,
                        document: Some(document),
                        submitted_at: submitted_at.as_deref(),
                    };
                    self.drive(session, id, run, progress, stop.clone(), cancel.clone())
                        .await
                        .map(Some)
                }
                Err(error) => Err(error),
            };
            // A server that could not be reached: wait, then resume from what was stored.
            match outcome {
                Err(error) if error.is_retryable() && !stop.is_cancelled() => {
                    tracing::warn!(session = id, %error, "session interrupted; resuming it from what the store holds");
                    if !outage.wait(&stop).await {
                        break Err(handed_over(id, STOPPING));
                    }
                }
                outcome => break outcome,
            }
        };
        match &outcome {
            Err(error) if error.is_handed_over() => {}
            // Fenced by the last claim: if another coordinator claimed the session since, the
            // session is its to finish, and this failure is not published.
            Err(error) => {
                self.publish_failure(id, &name, error, Fence::Token(&token))
                    .await
            }
            Ok(_) => {}
        }
        if let Err(error) = self.store.release(id, &holder).await {
            tracing::warn!(session = id, %error, "cannot release the session's lease; it lapses by itself");
        }
        outcome
    }

    /// When the session was submitted, as its submission's `pending` state says (read before
    /// the claim, which may delete an earlier run's state with it). Best effort: a time for
    /// display.
    async fn submitted_at(&self, id: &str) -> Option<String> {
        let state = self.store.load_state(id).await.ok()??;
        let state: taskgroup::LiveState = serde_json::from_slice(&state).ok()?;
        (state.status == taskgroup::LiveStatus::Pending).then_some(state.submitted_at)?
    }

    /// Best effort: whoever waits for the session hears that it failed, and why.
    async fn publish_failure(&self, id: &str, run: &str, error: &Error, fence: Fence<'_>) {
        let mut result = SessionResult::failed(id, vec![error.to_string()]);
        result.run = Some(run.to_string());
        if let Err(error) = publish_result(self.store.as_ref(), &result, fence).await {
            tracing::error!(session = id, %error, "cannot publish the failure of a session");
        }
    }

    /// Runs the session, then stores its result under its key, announces it on
    /// `agency:results` and deletes the working state. `stop` leaves a leased run to be resumed
    /// (an unleased one ends `cancelled`); `cancel` ends the run `cancelled`.
    async fn drive(
        &self,
        session: &Session,
        id: &str,
        RunOf {
            name,
            lease,
            start,
            document,
            submitted_at,
        }: RunOf<'_>,
        progress: &Progress,
        stop: CancellationToken,
        cancel: CancellationToken,
    ) -> Result<SessionResult> {
        let began = std::time::Instant::now();
        let _running = crate::metrics::METRICS.session_started();
        let work = Work {
            coordinator: self,
            session,
            id,
            run: name,
            fence: fence(lease),
        };
        let facts = taskgroup::RunFacts {
            run: Some(name.to_string()),
            submitted_at: submitted_at.map(str::to_string),
            started_ms: patiently("reading the store's clock", || self.store.now_ms()).await?,
            reused: match start {
                Start::Rerun { kept } => Some(kept),
                _ => None,
            },
            resuming: start != Start::Fresh,
        };
        let signals = Signals {
            lease,
            stop: stop.clone(),
            cancel,
        };
        let run = SessionRun::new(work, progress, facts);
        let mut result = run.drive(signals, document).await?;
        if lease.is_some() {
            // Under a lease the id can be submitted again: the result names its run.
            result.run = Some(name.to_string());
        }
        self.store_result(&result, fence(lease), &stop).await?;
        progress.finished.store(true, Ordering::Release);
        crate::metrics::METRICS.session_ended(result.status, began.elapsed());
        crate::failpoint::hit(crate::failpoint::RESULT_STORED);
        self.clean_up(&result, name, fence(lease), &stop).await;
        Ok(result)
    }
    /// After the result: a run that did not complete ends, its working state kept for a rerun;
    /// one that completed has its working state deleted. Neither can fail the session any more.
    async fn clean_up(
        &self,
        result: &SessionResult,
        name: &str,
        fence: Fence<'_>,
        stop: &CancellationToken,
    ) {
        let id = result.session_id.as_str();
        if !result.completed() {
            // Kept for a rerun of what failed (`agency rerun`); it expires by itself, and a new
            // submission of the id deletes it. The run ends, so late work of it is refused.
            let ended = events::retry("ending the run", stop, None, || {
                self.store.end_run(id, name, fence)
            })
            .await;
            if let Some(Err(error)) = ended {
                tracing::warn!(session = id, %error, "cannot end the run; its working state expires by itself");
            }
            tracing::info!(session = id, status = %result.status, "the session's working state is kept for a rerun");
            return;
        }
        // The result is out, so the session is over whatever happens next: deleting its working
        // state waits out an outage too. Left undeleted (a refusal, a stop), it expires by itself.
        let cleaned = events::retry(
            "deleting a finished session's working state",
            stop,
            None,
            || self.store.cleanup(id, fence),
        )
        .await;
        match cleaned {
            Some(Ok(())) => {}
            Some(Err(error)) => {
                tracing::warn!(session = id, %error, "cannot delete the session's working state; it expires by itself")
            }
            None => tracing::warn!(
                session = id,
                "stopping before the session's working state was deleted; it expires by itself"
            ),
        }
        crate::failpoint::hit(crate::failpoint::CLEANED_UP);
    }

    /// Stores the result under its session's key and announces it. It waits out an outage in
    /// place (it is the same write each time): a write whose answer was lost may have been
    /// done, and a run sent round again would find the session finished and never delete its
    /// working state.
    async fn store_result(
        &self,
        result: &SessionResult,
        fence: Fence<'_>,
        stop: &CancellationToken,
    ) -> Result<()> {
        let published = events::retry("storing the result", stop, None, || {
            publish_result(self.store.as_ref(), result, fence)
        })
        .await;
        match published {
            Some(published) => Ok(published?),
            None => Err(handed_over(&result.session_id, STOPPING)),
        }
    }
}

/// How long a coordinator retries one store or broker call in place before it gives the run up
/// to the outage loop of [`Coordinator::run_action`] (which resumes it from the store once the
/// server answers).
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

/// Runs `operation`, retrying it in place while it fails retryably, for up to [`PATIENCE`]: a
/// call lost to a dropped connection or a timeout costs a retry, not a restart of the session.
/// Every call it wraps can be repeated: reads, fenced writes of the same value, dispatches
/// (a range delivered twice is recorded once).
pub(super) async fn patiently<T, F, Fut>(what: &str, operation: F) -> events::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = events::Result<T>>,
{
    crate::outage::retrying_for(what, Some(PATIENCE), operation).await
}

/// Stores a result under its session's key and announces it on `agency:results`.
pub(crate) async fn publish_result(
    store: &dyn Store,
    result: &SessionResult,
    fence: Fence<'_>,
) -> events::Result<()> {
    let encoded = events::encode("the result", result)?;
    store
        .publish_result(&result.session_id, &encoded, &announce(result)?, fence)
        .await
}

/// What `agency:results` says of `result`: its session, run and status.
fn announce(result: &SessionResult) -> events::Result<Vec<u8>> {
    events::Announcement {
        session_id: result.session_id.clone(),
        run: result.run.clone(),
        status: result.status.as_str().to_string(),
    }
    .encode()
}

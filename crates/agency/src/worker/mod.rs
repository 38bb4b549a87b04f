//! The worker: takes ranges of instances from the dispatch topic, expands its own slice of the
//! task lazily, executes each instance with its timeout under the task's concurrency limit,
//! records outcomes in batches (written first), then announces them, then commits the message
//! (once every earlier message of its partition is done too).
//!
//! A malformed dispatch message goes to the dead-letter topic with the reason and the worker
//! keeps going. A task the worker cannot prepare fails its instances with the reason, so the
//! coordinator learns of it instead of waiting. A broker that is away, or an offset that cannot
//! be stored, is waited out or dropped, never fatal. Stopping, the worker starts nothing new,
//! gives the ranges it runs [`SHUTDOWN_GRACE`] to finish, and hands the rest back uncommitted.

mod instances;
mod taking;

use crate::executors::{Executor, Registry};
use crate::outage::{self, retrying};
use events::{
    Broker, Control, Event, EventManager, Message, Notice, Outcome, RangeStep, Source, Status,
    Store, TaskRecord, TaskRef, WorkItem, CONTROL_CHANNEL, DISPATCH_TOPIC,
};
use expansion::{Expansion, Limits};
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use taking::{Finished, Taking};
use taskgroup::{Failure, FailureKind};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

/// What a cancel reaches: one group of one run of a session, as dispatched under one claim
/// (session, run, claim, group; see [`events::WorkItem::claim`]).
type CancelScope = (String, String, String, usize);

/// A group's cancellation token and the guard its running ranges hold.
type GroupCancel = (CancellationToken, Arc<()>);

pub use crate::results::BLOB_THRESHOLD;

/// Planned tasks and cancellation tokens a worker keeps before it starts over.
const CACHE_LIMIT: usize = 1024;

/// The consumer group every worker joins.
pub const WORKER_GROUP: &str = "agency-workers";

/// How a worker runs: concurrency, batching, limits and its consumer group.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Instances in flight per task when the task sets no `concurrency`.
    pub concurrency: usize,
    /// Dispatched ranges processed at once.
    pub ranges_in_flight: usize,
    /// Outcomes written and announced together.
    pub batch: usize,
    /// Bounds on expansions, checked when planning a task.
    pub limits: Limits,
    /// The consumer group on the dispatch topic; every worker of a deployment joins the same one.
    pub group: String,
    /// How long a stopping worker lets the ranges it runs finish before it hands them back
    /// ([`SHUTDOWN_GRACE`] by default). An embedded engine stops its workers only once its
    /// session has ended, when no range left running matters: it waits for none.
    pub shutdown_grace: Duration,
    /// Once this many workers started a range and none finished it (each stopped while running
    /// it), the next worker to start it fails it instead ([`MAX_STARTS`] by default).
    pub max_starts: u64,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            concurrency: 1024,
            ranges_in_flight: 4,
            batch: 1024,
            limits: Limits::default(),
            group: WORKER_GROUP.to_string(),
            shutdown_grace: SHUTDOWN_GRACE,
            max_starts: MAX_STARTS,
        }
    }
}

/// A task made ready to execute: planned once per worker and shared by its ranges.
#[derive(Clone)]
struct Prepared {
    /// The task planned, or why it cannot be (each instance then fails with it).
    expansion: Result<Expansion, Failure>,
    executor: Option<Arc<dyn Executor>>,
    executor_name: String,
    permits: Arc<Semaphore>,
    /// The task's instances in flight per worker; `permits` enforces it across ranges.
    concurrency: usize,
    timeout: Option<Duration>,
    /// The task memoizes its instances (its expansion renders their keys), for this long (for
    /// ever when `None`).
    memo: Option<Option<Duration>>,
    session: Arc<str>,
    group: Arc<str>,
    task: Arc<str>,
    /// The tasks it depends on instance by instance, whose results its instances read.
    upstream: Vec<events::Upstream>,
    /// Agents of this type do its instances: they are offered to them, not run here.
    agent: Option<events::AgentTask>,
    /// Its executor's counters (`unknown` for a name this worker has no executor of, so the
    /// label's values stay the registry's).
    metrics: Arc<crate::metrics::ExecutorMetrics>,
    /// The task whose results kept by reference its expansion maps over.
    results_of: Option<TaskRef>,
}

/// How many workers may start a range without finishing it, by default, before the next fails
/// it: a worker killed, a rebalance and a stop with SIGTERM can each leave one start unfinished.
pub const MAX_STARTS: u64 = 3;

/// How long a stopping worker waits for the ranges it is running to finish, by default.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Ranges a worker takes ahead of running them before it pauses its partitions. Pausing drops
/// what the client had prefetched and resuming fetches again, which is slow (a 4-range queue
/// halved the 1M fan-out rate), so pausing is kept for a real backlog.
pub const WAITING: usize = 64;

/// How often a worker looks for what agents reported and for their claims past their timeout.
const REAP_EVERY: Duration = Duration::from_millis(200);

/// Records what agents reported, and their claims past their timeout as failed attempts, every
/// [`REAP_EVERY`], until `stop`; a store without a queue for agents (a state file) has none to
/// look for.
async fn reap_claims(store: Arc<dyn Store>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(REAP_EVERY) => {}
        }
        match crate::agent_tasks::reap(store.as_ref()).await {
            Ok((0, _)) => {}
            Ok((expired, _)) => tracing::info!(
                claims = expired,
                "agents' claims timed out; recorded as failed attempts"
            ),
            Err(crate::Error::Backend(error)) if !error.is_retryable() => {
                return tracing::debug!(%error, "no agents' claims to watch");
            }
            Err(error) => tracing::warn!(%error, "cannot look for agents' claims that timed out"),
        }
    }
}

/// A member of the dispatch group this young is not replaced when a coordinator says the broker
/// lost its log: it joined the group as it is now.
const REJOIN_QUIET: Duration = Duration::from_secs(10);

/// Takes dispatched ranges, runs their instances, and records and announces outcomes.
pub struct Worker {
    broker: Arc<dyn Broker>,
    store: Arc<dyn Store>,
    registry: Registry,
    options: WorkerOptions,
    /// Planned tasks per (session, run, task). Keyed by run too: a session id submitted again
    /// may hold other tasks.
    prepared: Mutex<HashMap<(String, String, TaskRef), Arc<Prepared>>>,
    /// Cancellation per (session, run, claim, group), fired by the coordinator's control
    /// messages, with a guard counting the ranges that use it.
    cancels: Mutex<HashMap<CancelScope, GroupCancel>>,
    /// Per run (session, run): a token cancelled while the run is paused, and the guard its
    /// running ranges hold.
    pauses: Mutex<HashMap<(String, String), GroupCancel>>,
    /// This worker's name on the ranges it starts (see [`Outcomes::track_range`]): unique to the
    /// process, so a worker started again counts as another.
    name: String,
    /// Instances executing now, for its heartbeats.
    running: Arc<AtomicU64>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker taking ranges from `broker`, recording outcomes in `store`, running `registry`'s executors.
    pub fn new(
        broker: Arc<dyn Broker>,
        store: Arc<dyn Store>,
        registry: Registry,
        options: WorkerOptions,
    ) -> Arc<Self> {
        Arc::new(Self {
            broker,
            store,
            registry,
            options,
            prepared: Mutex::new(HashMap::new()),
            name: uuid::Uuid::new_v4().to_string(),
            cancels: Mutex::new(HashMap::new()),
            pauses: Mutex::new(HashMap::new()),
            running: Arc::default(),
        })
    }

    /// The count of instances executing now (for [`crate::health::heartbeat`]).
    pub fn running(&self) -> Arc<AtomicU64> {
        self.running.clone()
    }

    /// Consumes work until `shutdown` fires.
    ///
    /// At most `ranges_in_flight` ranges run at once; up to [`WAITING`] more wait here, taken
    /// from the consumer ahead of time. With that many waiting the worker pauses its partitions
    /// but keeps awaiting the consumer, so the group never takes it for stuck however long its
    /// tasks run (Kafka's `max.poll.interval.ms`); it resumes when half of them have started.
    /// Offsets are committed per partition only past ranges that all finished.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> crate::Result<()> {
        let mut consumer = self.join().await?;
        // Through the EventManager: a dropped subscription is restored, not fatal.
        let mut control = EventManager::new(self.store.clone(), None)
            .subscribe(
                vec![Source::Channel(CONTROL_CHANNEL.into())],
                shutdown.child_token(),
            )
            .await?;
        let reaping = tokio::spawn(reap_claims(self.store.clone(), shutdown.child_token()));
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Finished>();
        let mut taking = Taking::new(self.clone(), done_tx);
        loop {
            let mut lost = None;
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(finished) = done_rx.recv() => taking.finished(finished, consumer.as_mut()).await,
                Some(event) = control.recv() => match event {
                    // Several coordinators may say the log was lost, and this member may have
                    // seen it first: one new member is enough.
                    Event::Message { payload, .. } => {
                        lost = self.control(&payload).filter(|_| taking.joined.elapsed() >= REJOIN_QUIET);
                    }
                    // Cancellations sent meanwhile are lost: that work runs on, and the
                    // coordinator ignores outcomes of groups that already finished.
                    Event::Resubscribed { .. } => tracing::warn!("control channel restored; cancellations sent meanwhile were missed"),
                    Event::Failed { error, .. } => tracing::error!(%error, "control channel failed; cancellations no longer reach this worker"),
                },
                message = outage::next_message(consumer.as_mut()) => match message {
                    Ok(message) => taking.took(message, consumer.as_mut()),
                    Err(events::Error::LogLost { detail, .. }) => lost = Some(detail),
                    Err(error) => return Err(error.into()),
                },
            }
            if let Some(detail) = lost {
                // What the old member took still runs (its outcomes are recorded once); the
                // coordinator dispatches what the broker lost again, to the group as it is now.
                tracing::warn!(%detail, running = taking.in_flight, queued = taking.waiting.len(), "the broker lost dispatched work; joining the dispatch group again");
                consumer = self.join().await?;
                taking.rejoined();
            }
        }
        self.wind_down(&mut taking, &mut done_rx, consumer.as_mut())
            .await;
        reaping.abort();
        Ok(())
    }

    /// Stopping: nothing new is started. Ranges running get a grace period to finish and have
    /// their offsets stored; what is left (running past it, or queued) is not committed, so
    /// the group delivers it again to another worker, and what was recorded stays recorded.
    async fn wind_down(
        &self,
        taking: &mut Taking,
        done: &mut mpsc::UnboundedReceiver<Finished>,
        consumer: &mut dyn events::Consumer,
    ) {
        let queued = taking.waiting.len();
        let grace = tokio::time::sleep(self.options.shutdown_grace);
        tokio::pin!(grace);
        let mut finished = 0usize;
        while taking.in_flight > 0 {
            tokio::select! {
                Some(range) = done.recv() => {
                    taking.in_flight -= 1;
                    finished += 1;
                    taking.commit(range, consumer).await;
                }
                () = &mut grace => break,
            }
        }
        tracing::info!(
            finished,
            unfinished = taking.in_flight,
            queued,
            "worker stopping; ranges not finished are delivered again to the group"
        );
    }

    /// A member of the dispatch group, waiting out a broker that is away.
    async fn join(&self) -> crate::Result<Box<dyn events::Consumer>> {
        Ok(retrying("joining the dispatch group", || {
            self.broker.subscribe(DISPATCH_TOPIC, &self.options.group)
        })
        .await?)
    }

    /// Acts on a control message; says why, when the broker lost dispatched work.
    fn control(&self, payload: &[u8]) -> Option<String> {
        match serde_json::from_slice::<Control>(payload) {
            Ok(Control::LogLost { topic, detail }) => {
                return (topic == self.broker.qualified(DISPATCH_TOPIC))
                    .then(|| format!("a coordinator saw {detail}"));
            }
            Ok(Control::CancelGroup {
                session,
                run,
                claim,
                group,
            }) => {
                tracing::debug!(session = %session, run = %run, group, "cancelling group");
                self.cancel_token((session, run, claim, group)).0.cancel();
            }
            Ok(Control::PauseRun { session, run }) => {
                tracing::debug!(session = %session, run = %run, "pausing run");
                self.pause_token(session, run).0.cancel();
            }
            Ok(Control::ResumeRun { session, run }) => {
                tracing::debug!(session = %session, run = %run, "resuming run");
                // Ranges running keep the cancelled token and start nothing more; new ones run.
                self.pauses
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&(session, run));
            }
            Err(error) => tracing::warn!(%error, "ignoring malformed control message"),
        }
        None
    }

    /// The run's pause token (cancelled while it is paused), and a guard to hold while running
    /// its work. Entries no running range holds are evicted, except paused ones.
    fn pause_token(&self, session: String, run: String) -> GroupCancel {
        let mut pauses = self.pauses.lock().unwrap_or_else(|e| e.into_inner());
        if pauses.len() >= CACHE_LIMIT {
            pauses
                .retain(|_, (token, in_use)| token.is_cancelled() || Arc::strong_count(in_use) > 1);
        }
        let (token, in_use) = pauses.entry((session, run)).or_default();
        (token.clone(), in_use.clone())
    }

    /// The group's cancellation token, and a guard to hold while running its work: entries no
    /// running range holds are the ones evicted, so a cancel always reaches running work.
    fn cancel_token(&self, scope: CancelScope) -> (CancellationToken, Arc<()>) {
        let mut cancels = self.cancels.lock().unwrap_or_else(|e| e.into_inner());
        if cancels.len() >= CACHE_LIMIT {
            cancels.retain(|_, (_, in_use)| Arc::strong_count(in_use) > 1);
        }
        let (token, in_use) = cancels.entry(scope).or_default();
        (token.clone(), in_use.clone())
    }

    /// Executes one dispatch message; never fails the loop.
    async fn handle(&self, message: &Message) {
        let item = match WorkItem::decode(&message.payload) {
            Ok(item) => item,
            Err(reason) => return self.dead_letter(message, &reason).await,
        };
        let (cancel, _in_use) = self.cancel_token((
            item.session.clone(),
            item.run.clone(),
            item.claim.clone(),
            item.task.group,
        ));
        if cancel.is_cancelled() {
            return;
        }
        let (paused, _running) = self.pause_token(item.session.clone(), item.run.clone());
        if paused.is_cancelled() {
            // Dropped: the coordinator dispatches what is left of the run when it resumes.
            return tracing::debug!(session = %item.session, run = %item.run, "skipping work of a paused run");
        }
        let prepared = match self.prepare(&item).await {
            Ok(Some(prepared)) => prepared,
            // Work for a session that already ended (cancelled, timed out), or for an earlier
            // run of its id: nothing to do.
            Ok(None) => {
                return tracing::debug!(session = %item.session, run = %item.run, group = item.task.group, task = item.task.task, "skipping work of a finished run");
            }
            Err(reason) => return self.dead_letter(message, &reason).await,
        };
        match self.track(&item, RangeStep::Started(&self.name)).await {
            // Late: the run ended or another started, and its state is gone.
            Ok(None) => return,
            Ok(Some(starts)) if starts > self.options.max_starts => {
                return self.quarantine(&item, &prepared, starts).await;
            }
            Ok(Some(_)) => {}
            Err(error) => {
                tracing::warn!(session = %item.session, %error, "cannot count the range's start; running it")
            }
        }
        let done = match &prepared.agent {
            Some(agent) => self.offer(&item, &prepared, agent).await,
            None => self.execute(&item, &prepared, &cancel, &paused).await,
        };
        if let Err(error) = done {
            // An outage is waited out where it happens: this is a refusal, which trying again
            // would not change.
            let error = format!("the store refused the outcome: {error}");
            tracing::error!(session = %item.session, group = item.task.group, task = item.task.task, "{error}; announcing the range's instances as failed attempts");
            let refused = Failure::new(FailureKind::Refused, error);
            return self.announce_failed(&item, &refused).await;
        }
        if let Err(error) = self.track(&item, RangeStep::Finished).await {
            tracing::warn!(session = %item.session, %error, "cannot clear the range's start count");
        }
    }

    /// Counts a start of the item's range, or clears the count once it finished (see
    /// [`Outcomes::track_range`]).
    async fn track(&self, item: &WorkItem, step: RangeStep<'_>) -> events::Result<Option<u64>> {
        let range = format!(
            "{}:{}:{}:{}:{}",
            item.task.group, item.task.task, item.start, item.end, item.attempt
        );
        retrying("tracking a range", || {
            self.store
                .track_range(&item.session, &item.run, &range, step)
        })
        .await
    }

    /// Fails a range that `starts - 1` workers started without finishing, each ending there
    /// (a task that kills or crashes the process running it): its instances are recorded as
    /// permanent failures, so the session goes on to a partial result instead of killing every
    /// worker in turn. Instances that did succeed keep their success.
    async fn quarantine(&self, item: &WorkItem, prepared: &Prepared, starts: u64) {
        let error = format!(
            "range {}..{} of task `{}` was started by {} workers and none finished it: each stopped while running it (does the task kill or crash the process?); it is not run again",
            item.start, item.end, prepared.task, starts - 1
        );
        tracing::error!(session = %item.session, group = item.task.group, task = item.task.task, "{error}");
        let outcomes = (item.start..item.end)
            .map(|instance| Outcome {
                instance,
                attempt: item.attempt,
                status: Status::Failed(Failure::permanent(error.clone())),
            })
            .collect();
        if let Err(error) = self.record(item, outcomes).await {
            tracing::error!(session = %item.session, %error, "cannot record the range's failure");
        }
    }

    /// Announces every instance of the range as a failed attempt with `error`, unrecorded (the
    /// store refused the range's outcomes): the coordinator retries them or fails them, as the
    /// task's policy says, instead of waiting for outcomes that will never come. Instances it
    /// counted already, or whose attempt it moved past, ignore it.
    async fn announce_failed(&self, item: &WorkItem, failure: &Failure) {
        let mut notice = Notice::new(&item.session, item.task);
        for instance in item.start..item.end {
            notice.add_failure(instance, item.attempt, failure);
        }
        let published = match events::encode("a notice", &notice) {
            Ok(notice) => {
                self.store
                    .publish(&events::notices_channel(&item.session), notice)
                    .await
            }
            Err(error) => Err(error),
        };
        if let Err(error) = published {
            tracing::error!(session = %item.session, %error, "cannot announce the range's failure either: its session waits for it until its deadline");
        }
    }

    async fn dead_letter(&self, message: &Message, reason: &str) {
        let kind = crate::metrics::DeadLetter::Malformed;
        crate::dead_letter::send(self.broker.as_ref(), message, kind, reason).await;
    }

    /// The item's task, planned; `None` when the store no longer has it (its session ended) or
    /// holds another run's.
    async fn prepare(&self, item: &WorkItem) -> Result<Option<Arc<Prepared>>, String> {
        let (session, task) = (item.session.as_str(), item.task);
        let key = (item.session.clone(), item.run.clone(), task);
        if let Some(found) = self
            .prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(Some(found.clone()));
        }
        let record = retrying("loading a task", || self.store.load_task(session, task))
            .await
            .map_err(|e| format!("cannot load task {task:?} of session {session}: {e}"))?;
        let Some(record) = record.filter(|record| record.run == item.run) else {
            return Ok(None);
        };
        let prepared = Arc::new(self.plan(session, task, record));
        let mut cache = self.prepared.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_LIMIT {
            // Planning again is cheap; an unbounded cache in a long-lived worker is not.
            cache.clear();
        }
        cache.insert(key, prepared.clone());
        Ok(Some(prepared))
    }

    fn plan(&self, session: &str, task: TaskRef, record: TaskRecord) -> Prepared {
        let upstream: Vec<String> = record.upstream.iter().map(|u| u.id.clone()).collect();
        let expansion = taskgroup::plan_task(
            (task.group, task.task),
            taskgroup::TaskPlan {
                id: &record.task_id,
                input: &record.input,
                expansion_config: record.expansion_config.as_ref(),
                memo_key: record.memo_key.as_deref(),
                upstream: &upstream,
            },
            &record.context,
            &self.options.limits,
        )
        .map_err(|e| Failure::permanent(e.to_string()));
        let permits = record
            .concurrency
            .map_or(self.options.concurrency, |c| c as usize)
            .max(1);
        let executor = self.registry.get(&record.executor);
        let label = if executor.is_some() {
            record.executor.as_str()
        } else {
            "unknown"
        };
        let metrics = crate::metrics::METRICS.executor(label);
        Prepared {
            expansion,
            executor,
            executor_name: record.executor,
            permits: Arc::new(Semaphore::new(permits)),
            concurrency: permits,
            timeout: record.timeout_ms.map(Duration::from_millis),
            memo: record
                .memo_key
                .is_some()
                .then(|| record.memo_ttl_s.map(Duration::from_secs)),
            session: session.into(),
            group: record.group_id.into(),
            task: record.task_id.into(),
            upstream: record.upstream,
            agent: record.agent,
            metrics,
            results_of: record.maps_results_of,
        }
    }
}

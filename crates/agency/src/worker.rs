//! The worker: takes ranges of instances from the dispatch topic, expands its own slice of the
//! task lazily, executes each instance with its timeout under the task's concurrency limit,
//! records outcomes in batches (written first), then announces them, then commits the message
//! (once every earlier message of its partition is done too).
//!
//! A malformed dispatch message goes to the dead-letter topic with the reason and the worker
//! keeps going. A task the worker cannot prepare fails its instances with the reason, so the
//! coordinator learns of it instead of waiting.

use crate::executors::{Call, ExecError, Executor, IdempotencyKey, Registry};
use crate::outage::retrying;
use events::{
    notices_channel, Broker, Control, Event, EventManager, Message, Notice, Outcome, Position,
    Source, Status, Store, TaskRecord, TaskRef, Watermarks, WorkItem, CONTROL_CHANNEL,
    DISPATCH_TOPIC,
};
use expansion::{Expansion, Limits};
use futures_util::{FutureExt as _, StreamExt as _};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

/// A group's cancellation token and the guard its running ranges hold.
type GroupCancel = (CancellationToken, Arc<()>);

/// Results larger than this (as JSON) are stored by reference, not inside their outcome.
pub const BLOB_THRESHOLD: usize = 64 * 1024;

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
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            concurrency: 1024,
            ranges_in_flight: 4,
            batch: 1024,
            limits: Limits::default(),
            group: WORKER_GROUP.to_string(),
        }
    }
}

/// A task made ready to execute: planned once per worker and shared by its ranges.
struct Prepared {
    expansion: Result<Expansion, String>,
    executor: Option<Arc<dyn Executor>>,
    executor_name: String,
    permits: Arc<Semaphore>,
    /// The task's instances in flight per worker; `permits` enforces it across ranges.
    concurrency: usize,
    timeout: Option<Duration>,
    session: Arc<str>,
    group: Arc<str>,
    task: Arc<str>,
}

/// Ranges a worker takes ahead of running them before it pauses its partitions. Pausing drops
/// what the client had prefetched and resuming fetches again, which is slow (a 4-range queue
/// halved the 1M fan-out rate), so pausing is kept for a real backlog.
pub const WAITING: usize = 64;

/// Takes dispatched ranges, runs their instances, and records and announces outcomes.
pub struct Worker {
    broker: Arc<dyn Broker>,
    store: Arc<dyn Store>,
    registry: Registry,
    options: WorkerOptions,
    /// Planned tasks per (session, run, task). Keyed by run too: a session id submitted again
    /// may hold other tasks.
    prepared: Mutex<HashMap<(String, String, TaskRef), Arc<Prepared>>>,
    /// Cancellation per (session, run, group), fired by the coordinator's control messages, with
    /// a guard counting the ranges that use it.
    cancels: Mutex<HashMap<(String, String, usize), GroupCancel>>,
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
            cancels: Mutex::new(HashMap::new()),
        })
    }

    /// Consumes work until `shutdown` fires.
    ///
    /// At most `ranges_in_flight` ranges run at once; up to [`WAITING`] more wait here, taken
    /// from the consumer ahead of time. With that many waiting the worker pauses its partitions
    /// but keeps awaiting the consumer, so the group never takes it for stuck however long its
    /// tasks run (Kafka's `max.poll.interval.ms`); it resumes when half of them have started.
    /// Offsets are committed per partition only past ranges that all finished.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> crate::Result<()> {
        let mut consumer = self
            .broker
            .subscribe(DISPATCH_TOPIC, &self.options.group)
            .await?;
        // Through the EventManager: a dropped subscription is restored, not fatal.
        let mut control = EventManager::new(self.store.clone(), None)
            .subscribe(
                vec![Source::Channel(CONTROL_CHANNEL.into())],
                shutdown.child_token(),
            )
            .await?;
        let limit = self.options.ranges_in_flight.max(1);
        let mut in_flight = 0usize;
        let mut waiting = VecDeque::new();
        let mut paused = false;
        let mut watermarks = Watermarks::default();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Position>();
        let start = |message: Message| {
            let worker = self.clone();
            let done = done_tx.clone();
            tokio::spawn(async move {
                let handled = AssertUnwindSafe(worker.handle(&message))
                    .catch_unwind()
                    .await;
                if handled.is_err() {
                    tracing::error!(topic = %message.topic, partition = message.partition, offset = message.offset, "handling a work item panicked");
                }
                let _ = done.send(Position::of(&message));
            });
        };
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(position) = done_rx.recv() => {
                    if let Some(next) = watermarks.done(&position) {
                        consumer.commit(&next).await?;
                    }
                    match waiting.pop_front() {
                        Some(message) => start(message),
                        None => in_flight -= 1,
                    }
                    if paused && waiting.len() <= WAITING / 2 {
                        consumer.resume()?;
                        paused = false;
                    }
                }
                Some(event) = control.recv() => match event {
                    Event::Message { payload, .. } => self.control(&payload),
                    // Cancellations sent meanwhile are lost: that work runs on, and the
                    // coordinator ignores outcomes of groups that already finished.
                    Event::Resubscribed { .. } => tracing::warn!("control channel restored; cancellations sent meanwhile were missed"),
                    Event::Failed { error, .. } => tracing::error!(%error, "control channel failed; cancellations no longer reach this worker"),
                },
                message = consumer.next() => {
                    let message = message?;
                    watermarks.taken(&Position::of(&message));
                    if in_flight < limit {
                        in_flight += 1;
                        start(message);
                    } else {
                        waiting.push_back(message);
                        // Also when already paused: a rebalance may have assigned new partitions.
                        if waiting.len() >= WAITING {
                            consumer.pause()?;
                            paused = true;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn control(&self, payload: &[u8]) {
        match serde_json::from_slice::<Control>(payload) {
            Ok(Control::CancelGroup {
                session,
                run,
                group,
            }) => {
                tracing::debug!(session = %session, run = %run, group, "cancelling group");
                self.cancel_token(&session, &run, group).0.cancel();
            }
            Err(error) => tracing::warn!(%error, "ignoring malformed control message"),
        }
    }

    /// The group's cancellation token, and a guard to hold while running its work: entries no
    /// running range holds are the ones evicted, so a cancel always reaches running work.
    fn cancel_token(&self, session: &str, run: &str, group: usize) -> (CancellationToken, Arc<()>) {
        let mut cancels = self.cancels.lock().unwrap_or_else(|e| e.into_inner());
        if cancels.len() >= CACHE_LIMIT {
            cancels.retain(|_, (_, in_use)| Arc::strong_count(in_use) > 1);
        }
        let (token, in_use) = cancels
            .entry((session.to_string(), run.to_string(), group))
            .or_default();
        (token.clone(), in_use.clone())
    }

    /// Executes one dispatch message; never fails the loop.
    async fn handle(&self, message: &Message) {
        let item = match WorkItem::decode(&message.payload) {
            Ok(item) => item,
            Err(reason) => return self.dead_letter(message, &reason).await,
        };
        let (cancel, _in_use) = self.cancel_token(&item.session, &item.run, item.task.group);
        if cancel.is_cancelled() {
            return;
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
        if let Err(error) = self.execute(&item, &prepared, &cancel).await {
            tracing::error!(session = %item.session, group = item.task.group, task = item.task.task, %error, "cannot record outcomes");
        }
    }

    async fn dead_letter(&self, message: &Message, reason: &str) {
        crate::dead_letter::send(self.broker.as_ref(), message, reason).await;
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
        let expansion = taskgroup::plan_task(
            (task.group, task.task),
            &record.task_id,
            &record.input,
            record.expansion_config.as_ref(),
            &record.context,
            &self.options.limits,
        )
        .map_err(|e| e.to_string());
        let permits = record
            .concurrency
            .map_or(self.options.concurrency, |c| c as usize)
            .max(1);
        Prepared {
            expansion,
            executor: self.registry.get(&record.executor),
            executor_name: record.executor,
            permits: Arc::new(Semaphore::new(permits)),
            concurrency: permits,
            timeout: record.timeout_ms.map(Duration::from_millis),
            session: session.into(),
            group: record.group_id.into(),
            task: record.task_id.into(),
        }
    }

    async fn execute(
        &self,
        item: &WorkItem,
        prepared: &Prepared,
        cancel: &CancellationToken,
    ) -> crate::Result<()> {
        let outcomes = futures_util::stream::iter(item.start..item.end)
            .map(|instance| self.run_instance(prepared, instance, item.attempt, cancel))
            .buffer_unordered(prepared.concurrency);
        let mut outcomes = std::pin::pin!(outcomes.ready_chunks(self.options.batch.max(1)));
        while let Some(batch) = outcomes.next().await {
            let batch: Vec<Outcome> = batch.into_iter().flatten().collect();
            if cancel.is_cancelled() {
                break;
            }
            self.record(item, batch).await?;
        }
        Ok(())
    }

    /// Writes outcomes, then announces the accepted ones.
    async fn record(&self, item: &WorkItem, batch: Vec<Outcome>) -> crate::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        // What the notice needs, taken before the outcomes move into the store.
        let summary: Vec<Announced> = batch
            .iter()
            .map(|outcome| (outcome.instance, outcome.attempt, outcome.status.failure()))
            .collect();
        let batch = self.store_large_results(item, batch).await?;
        let notice = |accepted: &[bool]| {
            let mut notice = Notice::new(&item.session, item.task);
            for ((instance, attempt, failure), _) in summary
                .iter()
                .zip(accepted)
                .filter(|(_, &accepted)| accepted)
            {
                match failure {
                    None => notice.add_success(*instance, *attempt),
                    Some((error, permanent)) => {
                        notice.add_failure(*instance, *attempt, error, *permanent)
                    }
                }
            }
            notice
        };
        // Announced with the writes when the whole batch is accepted, as it nearly always is.
        let whole = events::encode("a notice", &notice(&vec![true; batch.len()]))?;
        // An outage is waited out: the range's offset is not committed until its outcomes are in.
        let accepted = retrying("recording outcomes", || {
            self.store
                .record_outcomes(&item.session, item.task, &batch, Some(&whole))
        })
        .await?;
        if accepted.iter().all(|&a| a) {
            return Ok(());
        }
        let notice = notice(&accepted);
        if notice.is_empty() {
            return Ok(());
        }
        let notice = events::encode("a notice", &notice)?;
        let channel = notices_channel(&item.session);
        retrying("announcing outcomes", || {
            self.store.publish(&channel, notice.clone())
        })
        .await?;
        Ok(())
    }

    /// Moves results larger than [`BLOB_THRESHOLD`] out of their outcomes into blobs, so the
    /// outcome hash and the recording calls stay small.
    async fn store_large_results(
        &self,
        item: &WorkItem,
        mut batch: Vec<Outcome>,
    ) -> crate::Result<Vec<Outcome>> {
        for outcome in &mut batch {
            let Status::Succeeded(value) = &outcome.status else {
                continue;
            };
            if expansion::json_len(value) <= BLOB_THRESHOLD {
                continue;
            }
            let name = format!(
                "{}:{}:{}:{}",
                item.task.group, item.task.task, outcome.instance, outcome.attempt
            );
            let bytes = events::encode("a large result", value)?;
            retrying("storing a large result", || {
                self.store.save_blob(&item.session, &name, bytes.clone())
            })
            .await?;
            outcome.status = Status::Stored(name);
        }
        Ok(batch)
    }

    /// One attempt of one instance; `None` when the group was cancelled meanwhile.
    async fn run_instance(
        &self,
        prepared: &Prepared,
        instance: u64,
        attempt: u32,
        cancel: &CancellationToken,
    ) -> Option<Outcome> {
        let _permit = prepared.permits.acquire().await.ok()?;
        if cancel.is_cancelled() {
            return None;
        }
        // Nothing here changes on a retry: the instance's input or the worker is wrong.
        let failed = |error: String| {
            Some(Outcome {
                instance,
                attempt,
                status: Status::FailedPermanently(error),
            })
        };
        let expansion = match &prepared.expansion {
            Ok(expansion) => expansion,
            Err(error) => return failed(error.clone()),
        };
        let Some(executor) = &prepared.executor else {
            return failed(format!(
                "this worker has no executor `{}`",
                prepared.executor_name
            ));
        };
        let input = if executor.reads_input() {
            let Some(handle) = expansion.get(instance) else {
                return failed(format!(
                    "instance {instance} is beyond the task's {} instances",
                    expansion.len()
                ));
            };
            match expansion.render(&handle) {
                Ok(input) => input,
                Err(error) => return failed(error.to_string()),
            }
        } else {
            Value::Null
        };
        let call = Call {
            input,
            key: IdempotencyKey {
                session: prepared.session.clone(),
                group: prepared.group.clone(),
                task: prepared.task.clone(),
                instance,
                attempt,
            },
            // An attempt with a timeout gets its own token, so the timeout can stop just this
            // attempt; otherwise the group's token is enough and costs no allocation.
            cancel: match prepared.timeout {
                Some(_) => cancel.child_token(),
                None => cancel.clone(),
            },
        };
        let attempt_cancel = call.cancel.clone();
        let run = executor.execute(call);
        // `biased`: poll the executor first, so an instance that finishes at once never
        // registers a waiter on the shared cancellation token.
        let status = match prepared.timeout {
            None => tokio::select! {
                biased;
                result = run => status_of(result),
                () = cancel.cancelled() => return None,
            },
            Some(limit) => tokio::select! {
                biased;
                result = tokio::time::timeout(limit, run) => match result {
                    Ok(result) => status_of(result),
                    Err(_) => {
                        // Tell a cooperative executor to stop; an uncooperative one was dropped already.
                        attempt_cancel.cancel();
                        Status::TimedOut(format!("timed out after {} ms", limit.as_millis()))
                    }
                },
                () = cancel.cancelled() => return None,
            },
        };
        Some(Outcome {
            instance,
            attempt,
            status,
        })
    }
}

/// What a notice says of one outcome: instance, attempt, and the error (and whether it is
/// permanent) of a failure.
type Announced = (u64, u32, Option<(String, bool)>);

/// The outcome of an executor's attempt.
fn status_of(result: Result<Value, ExecError>) -> Status {
    match result {
        Ok(value) => Status::Succeeded(value),
        Err(error) if error.is_permanent() => Status::FailedPermanently(error.to_string()),
        Err(error) => Status::Failed(error.to_string()),
    }
}

//! The coordinator (seed 002's AgencyTaskGroup): runs one session from start to final result.
//!
//! It writes the context and the result-key mappings, starts every group whose dependencies are
//! met, and drives each group's state machine: planning tasks against the current context,
//! dispatching instance ranges to workers, scheduling retries, and, only once every instance of a
//! task is settled, combining its results into the context. When no group can make progress it
//! publishes the final result (or partial results) and deletes the session's working state.
//!
//! Outcomes reach it as notices on the session's channel (read through one pattern subscription
//! per coordinator, see `notice_router`), always after they were written to the store; the
//! store, not the notice, holds results.

use crate::notice_router::{NoticeRouter, Routed};
use crate::outage::is_outage;
use crate::report;
use events::{
    Broker, Claim, Control, Notice, Renewal, Status, Store, TaskRecord, TaskRef, WorkItem,
    CONTROL_CHANNEL, DISPATCH_TOPIC,
};
use expansion::{Expansion, FieldPath, Limits, OutputFormat, Task};
use serde_json::{Map, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use taskgroup::{Command, Event, GroupMachine, GroupStatus, Session, TaskSetup, TaskState};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Outcomes loaded from the store at a time when combining a task's results.
const PAGE: u64 = 65_536;

/// Ranges of at most [`PAGE`] instances covering `0..instances`, for reading outcomes a page at
/// a time.
fn pages(instances: u64) -> impl Iterator<Item = std::ops::Range<u64>> {
    (0..instances)
        .step_by(PAGE as usize)
        .map(move |start| start..(start + PAGE).min(instances))
}

/// How long a coordinator's hold on a session lasts unless renewed (every third of it). A
/// coordinator that dies is replaced after at most this long.
pub const LEASE: Duration = Duration::from_secs(10);

/// How a session starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// From nothing.
    Fresh,
    /// From what an earlier coordinator stored (only under a lease).
    Resume,
}

/// One run of a session id.
#[derive(Debug, Clone, Copy)]
struct RunOf<'a> {
    /// Names the run on its work items, task records and cancels, so that workers tell it from
    /// other runs of the same session id: the intake action's origin (a resumed run keeps it),
    /// or a fresh id when the session runs unleased.
    name: &'a str,
    /// The lease to keep renewed; `None` when the session runs unleased (embedded: one
    /// coordinator).
    holder: Option<&'a str>,
    start: Start,
}

/// What taking a session's lease found.
enum Taken {
    Run(Start),
    /// The action was delivered again and its session is done: its result, if still stored.
    Done(Option<Value>),
}

/// A session this coordinator stopped running without a result, for another coordinator to
/// resume: its lease went to another, or this coordinator is shutting down.
#[derive(Debug)]
pub struct HandedOver {
    pub session: String,
    pub why: &'static str,
}

impl std::fmt::Display for HandedOver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "session {} is left to another coordinator: {}",
            self.session, self.why
        )
    }
}

impl std::error::Error for HandedOver {}

fn handed_over(session: &str, why: &'static str) -> anyhow::Error {
    HandedOver {
        session: session.to_string(),
        why,
    }
    .into()
}

/// How often the coordinator checks whether notices have gone quiet; after quiet intervals it
/// reconciles running tasks from the store.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(1);

/// Counters a progress display reads while a session runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Instances of the tasks planned so far.
    pub planned: AtomicU64,
    /// Instances with a final outcome.
    pub settled: AtomicU64,
    pub failed: AtomicU64,
}

#[derive(Clone)]
pub struct Coordinator {
    broker: Arc<dyn Broker>,
    store: Arc<dyn Store>,
    notices: Arc<NoticeRouter>,
    /// This coordinator's name on the session leases it holds.
    owner: Arc<str>,
    limits: Limits,
    chunk: u64,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("limits", &self.limits)
            .field("chunk", &self.chunk)
            .finish_non_exhaustive()
    }
}

/// How a group ended, or that it never started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GroupEnd {
    Finished(GroupStatus),
    Skipped,
}

/// Timer events the coordinator sends itself.
#[derive(Debug)]
enum Timer {
    RetryDue {
        group: usize,
        task: usize,
        instance: u64,
        attempt: u32,
    },
    GroupTimeout(usize),
}

impl Coordinator {
    pub fn new(broker: Arc<dyn Broker>, store: Arc<dyn Store>, limits: Limits) -> Self {
        Self {
            broker,
            notices: Arc::new(NoticeRouter::new(store.clone())),
            owner: uuid::Uuid::new_v4().to_string().into(),
            store,
            limits,
            chunk: taskgroup::DEFAULT_CHUNK,
        }
    }

    /// Instances per dispatched range.
    pub fn with_chunk(mut self, chunk: u64) -> Self {
        self.chunk = chunk.max(1);
        self
    }

    /// Runs `session` under id `id` until it finishes, times out or `cancel` fires; returns the
    /// final result, which is also stored, published on `agency:results` and left after cleanup.
    pub async fn run(
        &self,
        session: &Session,
        id: &str,
        progress: &Progress,
        cancel: CancellationToken,
    ) -> anyhow::Result<Value> {
        let name = uuid::Uuid::new_v4().to_string();
        let run = RunOf {
            name: &name,
            holder: None,
            start: Start::Fresh,
        };
        self.drive(session, id, run, progress, cancel).await
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
    /// (the error is [`HandedOver`]).
    pub async fn run_action(
        &self,
        session: &Session,
        id: &str,
        origin: &str,
        progress: &Progress,
        stop: CancellationToken,
    ) -> anyhow::Result<Option<Value>> {
        // The lease names the action too, so an older action delivered again to this same
        // coordinator waits instead of taking over a newer run of the id.
        let holder = format!("{}@{origin}", self.owner);
        let mut wait = None;
        let outcome = loop {
            let outcome = match self.take(&holder, id, origin, &stop).await {
                Ok(Taken::Done(result)) => return Ok(result),
                Ok(Taken::Run(start)) => {
                    let run = RunOf {
                        name: origin,
                        holder: Some(&holder),
                        start,
                    };
                    self.drive(session, id, run, progress, stop.clone())
                        .await
                        .map(Some)
                }
                Err(error) => Err(error),
            };
            // A server that could not be reached: wait, then resume from what was stored.
            match outcome {
                Err(error) if is_outage(&error) && !stop.is_cancelled() => {
                    let next = events::backoff(wait);
                    tracing::warn!(session = id, error = %format!("{error:#}"), retry_in = ?next, "session interrupted by an outage; resuming it");
                    tokio::select! {
                        () = stop.cancelled() => break Err(handed_over(id, "this coordinator is stopping")),
                        () = tokio::time::sleep(next) => {}
                    }
                    wait = Some(next);
                }
                outcome => break outcome,
            }
        };
        match &outcome {
            Err(error) if error.is::<HandedOver>() => {}
            Err(error) => self.publish_failure(id, error).await,
            Ok(_) => {}
        }
        if let Err(error) = self.store.release(id, &holder).await {
            tracing::warn!(session = id, %error, "cannot release the session's lease; it lapses by itself");
        }
        outcome
    }

    /// Takes the session's lease: waits while another coordinator holds it, and while the store
    /// cannot be reached (the action is not lost to an outage).
    async fn take(
        &self,
        holder: &str,
        id: &str,
        origin: &str,
        stop: &CancellationToken,
    ) -> anyhow::Result<Taken> {
        let mut unreachable = None;
        loop {
            let wait = match self.store.claim(id, holder, origin, LEASE).await {
                Ok(Claim::Fresh) => return Ok(Taken::Run(Start::Fresh)),
                Ok(Claim::Stale) => {
                    // An earlier run under this id may have left working state behind.
                    self.store.cleanup(id).await?;
                    return Ok(Taken::Run(Start::Fresh));
                }
                Ok(Claim::Resume) => {
                    tracing::info!(session = id, "resuming a session another coordinator left");
                    return Ok(Taken::Run(Start::Resume));
                }
                // Another submission under this id may have deleted the result since.
                Ok(Claim::Finished) => return Ok(Taken::Done(self.store.load_result(id).await?)),
                Ok(Claim::Superseded) => {
                    tracing::info!(
                        session = id,
                        origin,
                        "an older action for this session id, delivered again: skipped"
                    );
                    return Ok(Taken::Done(None));
                }
                Ok(Claim::Held) => LEASE / 3,
                Err(error) if error.is_retryable() => {
                    tracing::warn!(session = id, %error, "cannot take the session's lease yet");
                    let next = events::backoff(unreachable);
                    unreachable = Some(next);
                    next
                }
                Err(error) => return Err(error.into()),
            };
            tokio::select! {
                () = stop.cancelled() => return Err(handed_over(id, "this coordinator is stopping")),
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Renews the session's lease every third of it, in a task of its own so that no long step of
    /// the session delays it. The returned receiver gets why the lease ended: another
    /// coordinator holds it ([`Renewal::Taken`]) or the store lost the session
    /// ([`Renewal::StateLost`]). Dropping it stops the renewing.
    fn keep_lease(&self, id: &str, holder: &str) -> oneshot::Receiver<Renewal> {
        let (mut ended, receiver) = oneshot::channel();
        let (store, holder, id) = (self.store.clone(), holder.to_string(), id.to_string());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = ended.closed() => return,
                    () = tokio::time::sleep(LEASE / 3) => {}
                }
                match store.renew(&id, &holder, LEASE).await {
                    Ok(Renewal::Held) => {}
                    Ok(end) => {
                        // The session may have ended meanwhile; then nobody listens.
                        let _ = ended.send(end);
                        return;
                    }
                    // Nobody can take the lease while the store is unreachable; try again.
                    Err(error) => {
                        tracing::warn!(session = %id, %error, "cannot renew the session's lease")
                    }
                }
            }
        });
        receiver
    }

    /// Stores the session's result under its key, then announces it on `agency:results`.
    async fn announce(&self, id: &str, result: &Value) -> events::Result<()> {
        self.store.publish_result(id, result).await
    }

    /// Best effort: whoever waits for the session hears that it failed, and why.
    async fn publish_failure(&self, id: &str, error: &anyhow::Error) {
        let result = report::failed_result(id, vec![format!("{error:#}")]);
        if let Err(error) = self.announce(id, &result).await {
            tracing::error!(session = id, %error, "cannot publish the failure of a session");
        }
    }

    /// Runs the session.
    async fn drive(
        &self,
        session: &Session,
        id: &str,
        RunOf {
            name,
            holder,
            start,
        }: RunOf<'_>,
        progress: &Progress,
        cancel: CancellationToken,
    ) -> anyhow::Result<Value> {
        // Registered before anything is dispatched, so no notice of this session is missed.
        let mut notices = self.notices.register(id).await?;
        let (timer_tx, mut timers) = mpsc::unbounded_channel();
        let mut run = SessionRun::new(self, session, id, name, progress, timer_tx);
        run.resuming = start == Start::Resume;
        // Independent writes, sent together with the first groups' task records: one round
        // trip. They are issued first (`join!` polls in order), so a context key the first
        // groups set comes after the initial context. A result stored under this id by an
        // earlier run no longer answers (under a lease, `claim` deleted it).
        let (context, mappings) = (run.context.clone(), run.mappings());
        let initial = async {
            tokio::try_join!(
                async {
                    match holder {
                        None => self.store.delete_result(id).await,
                        Some(_) => Ok(()),
                    }
                },
                self.store.save_context(id, &context),
                self.store.save_mappings(id, &mappings),
            )
        };
        let (initial, started) = tokio::join!(initial, run.start_ready_groups());
        initial?;
        started?;
        // Unleased, the lease never ends: its sender stays here.
        let (_unleased, mut lease_ended) = match holder {
            None => {
                let (sender, receiver) = oneshot::channel();
                (Some(sender), receiver)
            }
            Some(holder) => (None, self.keep_lease(id, holder)),
        };

        let deadline = session.timeout.map(|t| Instant::now() + t);
        let mut interrupted = false;
        let mut reconcile_timer = tokio::time::interval(RECONCILE_INTERVAL);
        reconcile_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut quiet_ticks = 0u32;
        while !run.finished() {
            tokio::select! {
                () = cancel.cancelled(), if !interrupted => {
                    if holder.is_some() {
                        return Err(handed_over(id, "this coordinator is stopping"));
                    }
                    interrupted = true;
                    run.errors.push("cancelled before the session finished".into());
                    run.stop_all(Event::Cancelled).await?;
                }
                () = sleep_until(deadline), if !interrupted => {
                    interrupted = true;
                    let limit = session.timeout.unwrap_or_default().as_millis();
                    run.errors.push(format!("session timed out after {limit} ms"));
                    run.stop_all(Event::TimedOut).await?;
                }
                Some(timer) = timers.recv() => match timer {
                    Timer::RetryDue { group, task, instance, attempt } => {
                        run.handle(group, Event::RetryDue { task, instance, attempt }).await?;
                    }
                    Timer::GroupTimeout(group) => {
                        if run.is_running(group) {
                            let limit = session.groups[group].timeout.unwrap_or_default().as_millis();
                            run.errors.push(format!("group `{}` timed out after {limit} ms", session.spec.groups[group].id));
                            run.handle(group, Event::TimedOut).await?;
                        }
                    }
                },
                routed = notices.recv() => match routed {
                    Some(Routed::Notice(notice)) => {
                        quiet_ticks = 0;
                        run.notice(notice).await?;
                    }
                    // Notices published while unsubscribed are gone: read them from the store.
                    Some(Routed::Resubscribed) => run.reconcile().await?,
                    Some(Routed::Failed(error)) => anyhow::bail!("notices of session {id}: {error}"),
                    None => anyhow::bail!("notices of session {id} ended"),
                },
                ended = &mut lease_ended => return Err(match ended {
                    Ok(Renewal::StateLost) => anyhow::anyhow!("the store lost the session's state (a Redis restarted without persistence, or flushed): it cannot be finished"),
                    _ => handed_over(id, "its lease went to another coordinator"),
                }),
                _ = reconcile_timer.tick() => {
                    // Pub/sub is only a wake-up: when it has been quiet for a while, read the
                    // store, so a lost notice cannot stall a group.
                    // Backing off (2, 4, 8, 16, then every 32 quiet seconds) keeps long, quiet
                    // tasks from re-reading their outcomes every second.
                    quiet_ticks += 1;
                    if quiet_ticks >= 2 && (quiet_ticks.is_power_of_two() || quiet_ticks.is_multiple_of(32)) {
                        run.reconcile().await?;
                    }
                }
            }
        }
        for timer in run.timers.drain(..) {
            timer.abort();
        }
        let result = report::final_result(&mut run).await?;
        self.announce(id, &result).await?;
        self.store.cleanup(id).await?;
        Ok(result)
    }
}

/// Sleeps until `deadline`, or forever when there is none (a `select!` branch that never fires).
pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// One session's run: its groups' machines and how they ended, the live context, errors.
pub(crate) struct SessionRun<'a> {
    pub coordinator: &'a Coordinator,
    pub session: &'a Session,
    pub id: &'a str,
    /// See [`RunOf::name`].
    run: &'a str,
    pub progress: &'a Progress,
    pub context: Map<String, Value>,
    pub machines: Vec<Option<GroupMachine>>,
    pub ends: Vec<Option<GroupEnd>>,
    pub errors: Vec<String>,
    /// How each planned task combines its results; `None` for a task without expansion, whose
    /// one result is written as it is.
    formats: HashMap<(usize, usize), Option<OutputFormat>>,
    started: Instant,
    timer_tx: mpsc::UnboundedSender<Timer>,
    timers: Vec<JoinHandle<()>>,
    /// Taking over from a coordinator that stopped: stored outcomes are read as groups start,
    /// and ranges whose outcomes are all stored are not dispatched again.
    resuming: bool,
}

impl<'a> SessionRun<'a> {
    fn new(
        coordinator: &'a Coordinator,
        session: &'a Session,
        id: &'a str,
        run: &'a str,
        progress: &'a Progress,
        timer_tx: mpsc::UnboundedSender<Timer>,
    ) -> Self {
        let groups = session.spec.groups.len();
        Self {
            coordinator,
            session,
            id,
            run,
            progress,
            context: session.spec.context.clone(),
            machines: (0..groups).map(|_| None).collect(),
            ends: vec![None; groups],
            errors: Vec::new(),
            formats: HashMap::new(),
            started: Instant::now(),
            timer_tx,
            timers: Vec::new(),
            resuming: false,
        }
    }

    /// Which context key each task writes (seed 002's result key mappings).
    fn mappings(&self) -> Map<String, Value> {
        self.session
            .spec
            .groups
            .iter()
            .flat_map(|group| &group.tasks)
            .map(|task| (task.id.clone(), Value::from(task.context_key())))
            .collect()
    }

    fn finished(&self) -> bool {
        self.ends.iter().all(Option::is_some)
    }

    fn is_running(&self, group: usize) -> bool {
        self.machines[group].is_some() && self.ends[group].is_none()
    }

    /// Starts every group whose dependencies completed; skips those with a dependency that did not.
    async fn start_ready_groups(&mut self) -> anyhow::Result<()> {
        loop {
            let mut changed = false;
            for g in 0..self.ends.len() {
                if self.machines[g].is_some() || self.ends[g].is_some() {
                    continue;
                }
                let deps = &self.session.groups[g].depends_on;
                let ends: Vec<Option<GroupEnd>> = deps.iter().map(|&d| self.ends[d]).collect();
                if ends.iter().all(|end| *end == Some(GroupEnd::Finished(GroupStatus::Completed))) {
                    self.start_group(g).await?;
                    changed = true;
                } else if ends.iter().any(|end| matches!(end, Some(e) if *e != GroupEnd::Finished(GroupStatus::Completed))) {
                    self.ends[g] = Some(GroupEnd::Skipped);
                    changed = true;
                }
            }
            if !changed {
                return Ok(());
            }
        }
    }

    async fn start_group(&mut self, g: usize) -> anyhow::Result<()> {
        let planned = &self.session.tasks[g];
        let setups = self.session.spec.groups[g]
            .tasks
            .iter()
            .zip(planned)
            .map(|(spec, plan)| TaskSetup {
                id: spec.id.clone(),
                depends_on: plan.depends_on.clone(),
                retry: plan.retry.clone(),
                continue_on_error: spec.continue_on_error,
            })
            .collect();
        let machine = GroupMachine::new(setups, self.session.groups[g].failure_policy)
            .with_chunk(self.coordinator.chunk);
        self.machines[g] = Some(machine);
        if let Some(limit) = self.session.groups[g].timeout {
            let timers = self.timer_tx.clone();
            self.timers.push(tokio::spawn(async move {
                tokio::time::sleep(limit).await;
                let _ = timers.send(Timer::GroupTimeout(g));
            }));
        }
        tracing::debug!(session = self.id, group = %self.session.spec.groups[g].id, "starting group");
        self.handle(g, Event::Start).await?;
        if self.resuming {
            self.reconcile_group(g).await?;
        }
        Ok(())
    }

    async fn stop_all(&mut self, event: Event) -> anyhow::Result<()> {
        for g in 0..self.machines.len() {
            if self.is_running(g) {
                self.handle(g, event.clone()).await?;
            }
        }
        // Groups that never started will not: they end skipped.
        for end in &mut self.ends {
            end.get_or_insert(GroupEnd::Skipped);
        }
        Ok(())
    }

    async fn notice(&mut self, notice: Notice) -> anyhow::Result<()> {
        let TaskRef { group, task } = notice.task;
        if notice.session != self.id || !self.is_running(group) {
            return Ok(());
        }
        let now = self.started.elapsed();
        let mut commands = Vec::new();
        let before = self.settled(group);
        if let Some(machine) = self.machines[group].as_mut() {
            for (instance, attempt) in notice.successes() {
                commands.extend(machine.handle(Event::Succeeded {
                    task,
                    instance,
                    attempt,
                }));
            }
            for (instance, attempt, error) in notice.failed {
                commands.extend(machine.handle(Event::Failed {
                    task,
                    instance,
                    attempt,
                    error,
                    now,
                }));
            }
        }
        let (settled, failed) = self.settled(group);
        self.progress
            .settled
            .fetch_add(settled.saturating_sub(before.0), Ordering::Relaxed);
        self.progress
            .failed
            .fetch_add(failed.saturating_sub(before.1), Ordering::Relaxed);
        self.execute(group, commands).await
    }

    /// Feeds every stored outcome of every running task to its machine. Outcomes the machine
    /// already counted are ignored by it, so this is safe to repeat.
    async fn reconcile(&mut self) -> anyhow::Result<()> {
        for group in 0..self.machines.len() {
            self.reconcile_group(group).await?;
        }
        Ok(())
    }

    async fn reconcile_group(&mut self, group: usize) -> anyhow::Result<()> {
        if !self.is_running(group) {
            return Ok(());
        }
        let running: Vec<(usize, u64)> = self.machines[group].as_ref().map_or(Vec::new(), |m| {
            m.tasks()
                .iter()
                .enumerate()
                .filter(|(_, t)| {
                    t.state == TaskState::Running && t.succeeded + t.failed < t.instances
                })
                .map(|(i, t)| (i, t.instances))
                .collect()
        });
        for (task, instances) in running {
            let mut notice = Notice::new(self.id, TaskRef { group, task });
            for range in pages(instances) {
                let page = self
                    .coordinator
                    .store
                    .outcomes(self.id, TaskRef { group, task }, range)
                    .await?;
                for outcome in page.into_iter().flatten() {
                    match outcome.status {
                        Status::Succeeded(_) | Status::Stored(_) => {
                            notice.add_success(outcome.instance, outcome.attempt)
                        }
                        Status::Failed(error) | Status::TimedOut(error) => {
                            notice
                                .failed
                                .push((outcome.instance, outcome.attempt, error))
                        }
                    }
                }
            }
            if !notice.succeeded.is_empty() || !notice.failed.is_empty() {
                self.notice(notice).await?;
            }
        }
        Ok(())
    }

    fn settled(&self, group: usize) -> (u64, u64) {
        self.machines[group].as_ref().map_or((0, 0), |m| {
            m.tasks().iter().fold((0, 0), |(s, f), t| {
                (s + t.succeeded + t.failed, f + t.failed)
            })
        })
    }

    async fn handle(&mut self, group: usize, event: Event) -> anyhow::Result<()> {
        let commands = match self.machines[group].as_mut() {
            Some(machine) => machine.handle(event),
            None => return Ok(()),
        };
        self.execute(group, commands).await
    }

    /// Carries out commands; commands that answer with an event feed it back to the machine.
    async fn execute(&mut self, group: usize, commands: Vec<Command>) -> anyhow::Result<()> {
        let mut queue: VecDeque<Command> = commands.into();
        let mut dispatches = Vec::new();
        while let Some(command) = queue.pop_front() {
            let event = match command {
                Command::Plan { task } => Some(self.plan_task(group, task).await?),
                Command::Dispatch {
                    task,
                    start,
                    end,
                    attempt,
                } => {
                    let item = WorkItem {
                        v: events::messages::VERSION,
                        session: self.id.to_string(),
                        run: self.run.to_string(),
                        task: TaskRef { group, task },
                        start,
                        end,
                        attempt,
                    };
                    dispatches.push(item);
                    None
                }
                Command::ScheduleRetry {
                    task,
                    instance,
                    attempt,
                    delay,
                } => {
                    self.schedule(
                        delay,
                        Timer::RetryDue {
                            group,
                            task,
                            instance,
                            attempt,
                        },
                    );
                    None
                }
                Command::UpdateContext { task } => Some(self.update_context(group, task).await?),
                Command::Cancel => {
                    let control = Control::CancelGroup {
                        session: self.id.to_string(),
                        run: self.run.to_string(),
                        group,
                    };
                    self.coordinator
                        .store
                        .publish(CONTROL_CHANNEL, serde_json::to_vec(&control)?)
                        .await?;
                    None
                }
                Command::Finish { status } => {
                    self.ends[group] = Some(GroupEnd::Finished(status));
                    tracing::debug!(session = self.id, group = %self.session.spec.groups[group].id, status = status.as_str(), "group finished");
                    None
                }
            };
            if let Some(event) = event {
                if let Some(machine) = self.machines[group].as_mut() {
                    queue.extend(machine.handle(event));
                }
            }
        }
        self.publish(dispatches).await?;
        if self.ends[group].is_some() {
            Box::pin(self.start_ready_groups()).await?;
        }
        Ok(())
    }

    /// Publishes work concurrently: awaiting each delivery in turn would serialize on the broker.
    async fn publish(&self, mut items: Vec<WorkItem>) -> anyhow::Result<()> {
        if self.resuming {
            items = self.not_yet_done(items).await?;
        }
        let broker = &self.coordinator.broker;
        // Keyed per range, so a session's ranges spread over partitions and so over workers.
        let keyed: Vec<(String, Vec<u8>)> = items
            .iter()
            .map(|item| {
                let key = format!(
                    "{}/{}/{}/{}",
                    item.session, item.task.group, item.task.task, item.start
                );
                Ok((key, item.encode()?))
            })
            .collect::<events::Result<_>>()?;
        let sends = keyed.into_iter().map(|(key, payload)| async move {
            broker.publish(DISPATCH_TOPIC, &key, payload).await
        });
        for sent in futures_util::future::join_all(sends).await {
            sent?;
        }
        Ok(())
    }

    /// The ranges with an instance whose outcome of this attempt (or a later one) is not stored.
    async fn not_yet_done(&self, items: Vec<WorkItem>) -> anyhow::Result<Vec<WorkItem>> {
        let mut left = Vec::with_capacity(items.len());
        let ranges = items.len();
        for item in items {
            let stored = self
                .coordinator
                .store
                .outcomes(self.id, item.task, item.start..item.end)
                .await?;
            let done = stored.iter().all(|outcome| {
                outcome
                    .as_ref()
                    .is_some_and(|o| o.succeeded() || o.attempt >= item.attempt)
            });
            if !done {
                left.push(item);
            }
        }
        if left.len() < ranges {
            tracing::info!(
                session = self.id,
                "{} of {ranges} ranges have every outcome stored: not dispatched again",
                ranges - left.len()
            );
        }
        Ok(left)
    }

    fn schedule(&mut self, delay: Duration, timer: Timer) {
        let timers = self.timer_tx.clone();
        self.timers.retain(|t| !t.is_finished());
        self.timers.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = timers.send(timer);
        }));
    }

    /// Plans a task against the context as it is now and stores what workers need.
    /// A store outage is an error (the session waits it out and resumes), not a failed task.
    async fn plan_task(&mut self, g: usize, t: usize) -> anyhow::Result<Event> {
        let spec = &self.session.spec.groups[g].tasks[t];
        let path = FieldPath::root()
            .key("groups")
            .index(g)
            .key("tasks")
            .index(t);
        let context = Value::Object(self.context.clone());
        let planned = Expansion::plan(
            Task {
                id: &spec.id,
                path: &path,
                input: &spec.input,
                expansion_config: spec.expansion_config.as_ref(),
            },
            &context,
            &self.coordinator.limits,
        );
        let expansion = match planned {
            Ok(expansion) => expansion,
            Err(error) => {
                return Ok(Event::PlanFailed {
                    task: t,
                    error: error.to_string(),
                })
            }
        };
        let record = TaskRecord {
            run: self.run.to_string(),
            task_id: spec.id.clone(),
            group_id: self.session.spec.groups[g].id.clone(),
            executor: spec.executor.clone(),
            input: spec.input.clone(),
            expansion_config: spec.expansion_config.clone(),
            context,
            timeout_ms: spec.timeout_ms,
            concurrency: spec.concurrency,
            instances: expansion.len(),
        };
        match self
            .coordinator
            .store
            .save_task(self.id, TaskRef { group: g, task: t }, &record)
            .await
        {
            Ok(()) => {}
            Err(error) if error.is_retryable() => return Err(error.into()),
            Err(error) => {
                return Ok(Event::PlanFailed {
                    task: t,
                    error: format!("cannot store the task for workers: {error}"),
                })
            }
        }
        self.formats
            .insert((g, t), expansion.kind().map(|_| expansion.output_format()));
        self.progress
            .planned
            .fetch_add(expansion.len(), Ordering::Relaxed);
        Ok(Event::Planned {
            task: t,
            instances: expansion.len(),
            now: self.started.elapsed(),
        })
    }

    /// Combines a settled task's results in instance order and writes them to the context.
    /// A store outage is an error (the session waits it out and resumes), not a failed task.
    async fn update_context(&mut self, g: usize, t: usize) -> anyhow::Result<Event> {
        let format = self.formats.get(&(g, t)).copied().flatten();
        let results = match self.results(g, t).await {
            Ok(results) => results,
            Err(error) if is_outage(&error) => return Err(error),
            Err(error) => {
                return Ok(Event::CombineFailed {
                    task: t,
                    error: format!("cannot load results: {error}"),
                })
            }
        };
        let combined = match format {
            Some(format) => format.combine(results),
            None => Ok(results.into_iter().next().flatten().unwrap_or_default()),
        };
        let value = match combined {
            Ok(value) => value,
            Err(error) => {
                return Ok(Event::CombineFailed {
                    task: t,
                    error: error.to_string(),
                })
            }
        };
        let key = self.session.spec.groups[g].tasks[t]
            .context_key()
            .to_string();
        match self
            .coordinator
            .store
            .set_context(self.id, &key, &value)
            .await
        {
            Ok(()) => {}
            Err(error) if error.is_retryable() => return Err(error.into()),
            Err(error) => {
                return Ok(Event::CombineFailed {
                    task: t,
                    error: format!("cannot store the context: {error}"),
                })
            }
        }
        self.context.insert(key, value);
        Ok(Event::ContextUpdated { task: t })
    }

    /// The task's results in instance order; `None` where an instance has no success.
    pub(crate) async fn results(&self, g: usize, t: usize) -> anyhow::Result<Vec<Option<Value>>> {
        let instances = self.machines[g]
            .as_ref()
            .map_or(0, |m| m.tasks()[t].instances);
        let mut results = Vec::with_capacity(instances as usize);
        for range in pages(instances) {
            let page = self
                .coordinator
                .store
                .outcomes(self.id, TaskRef { group: g, task: t }, range)
                .await?;
            for outcome in page {
                results.push(match outcome.map(|o| o.status) {
                    Some(Status::Succeeded(value)) => Some(value),
                    Some(Status::Stored(name)) => Some(self.blob(g, t, &name).await?),
                    _ => None,
                });
            }
        }
        Ok(results)
    }

    /// A result stored by reference.
    async fn blob(&self, g: usize, t: usize, name: &str) -> anyhow::Result<Value> {
        let bytes = self
            .coordinator
            .store
            .load_blob(self.id, name)
            .await?
            .ok_or_else(|| {
                anyhow::anyhow!("result {name} of group {g} task {t} is missing from the store")
            })?;
        Ok(serde_json::from_slice(&bytes)?)
    }
}

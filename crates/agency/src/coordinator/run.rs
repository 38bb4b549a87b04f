//! One session's run: the loop that feeds the [`SessionMachine`] what happened (notices, due
//! retries and deadlines, a cancel) and carries out what it decides. The decisions are the
//! machine's; this file only does the IO they need, through `work.rs`.

use super::lease::{handed_over, STOPPING};
use super::timers::Timers;
use super::work::merge_ranges;
use super::{patiently, Coordinator, Lease, Progress};
use crate::error::{Error, Result};
use crate::notice_router::Routed;
use events::{Control, Fence, Notice, Renewal, TaskRef, WorkItem, CONTROL_CHANNEL};
use expansion::OutputFormat;
use serde_json::{Map, Value};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;
use taskgroup::{
    Command, Deadline, Event, InstanceResult, Session, SessionCommand, SessionEvent,
    SessionMachine, SessionResult, TaskState,
};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often the coordinator checks whether notices have gone quiet; after quiet intervals it
/// reconciles running tasks from the store.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(1);

/// Retries come due on a grid of this step: those due within one step of each other are
/// dispatched together, as a few ranges in one publish, instead of one publish per notice of
/// failures. A retry waits at most this much longer than its policy says.
const RETRY_STEP: Duration = Duration::from_millis(10);

/// Notices taken into one batch at most.
const NOTICE_BATCH: usize = 1024;

/// What the loop's delay queue holds: retries and deadlines, due at their time.
#[derive(Debug)]
pub(super) enum Due {
    Retry {
        group: usize,
        task: usize,
        instance: u64,
        attempt: u32,
    },
    Deadline(Deadline),
}

/// One session's run: the machine, the live context, and what IO needs to remember.
pub(super) struct SessionRun<'a> {
    pub(super) coordinator: &'a Coordinator,
    pub(super) id: &'a str,
    /// Names the run on its work items, task records and cancels (see `RunOf::name`).
    pub(super) run: &'a str,
    pub(super) session: &'a Session,
    progress: &'a Progress,
    pub(super) machine: SessionMachine,
    pub(super) context: Map<String, Value>,
    /// How each planned task combines its results; `None` for a task without expansion, whose
    /// one result is written as it is.
    pub(super) formats: HashMap<(usize, usize), Option<OutputFormat>>,
    started: Instant,
    /// Retries and deadlines, owned by the loop: one timer for all of them.
    pub(super) timers: Timers<Due>,
    /// Taking over from a coordinator that stopped: stored outcomes are read as tasks are
    /// planned, and ranges whose outcomes are all stored are not dispatched again.
    pub(super) resuming: bool,
    /// What every write for the session carries (see [`Fence`]).
    pub(super) fence: Fence<'a>,
    /// The session as submitted, kept with the run (distributed only).
    pub(super) document: Option<&'a [u8]>,
    /// When the session was submitted, if its submission said.
    pub(super) submitted_at: Option<String>,
    /// When the run started, by the store's clock ([`events::Membership::now_ms`]).
    pub(super) started_ms: u64,
    /// When the live state was last written.
    pub(super) state_written: Instant,
    /// When each task's last instance settled (the runtime's clock, like [`Self::elapsed`]).
    pub(super) settled_at: HashMap<(usize, usize), Duration>,
    /// A rerun: how many successes of the run before it reuses.
    pub(super) reused: Option<u64>,
    /// Paused (`agency pause`): ranges to dispatch wait in `held` until it resumes.
    pub(super) paused: bool,
    pub(super) held: Vec<WorkItem>,
}

impl<'a> SessionRun<'a> {
    pub(super) fn new(
        coordinator: &'a Coordinator,
        session: &'a Session,
        id: &'a str,
        run: &'a str,
        progress: &'a Progress,
    ) -> Self {
        Self {
            coordinator,
            id,
            run,
            session,
            progress,
            machine: SessionMachine::new(session, coordinator.chunk),
            context: session.spec.context.clone(),
            formats: HashMap::new(),
            started: Instant::now(),
            timers: Timers::default(),
            resuming: false,
            fence: Fence::Open,
            document: None,
            submitted_at: None,
            started_ms: 0,
            state_written: Instant::now(),
            settled_at: HashMap::new(),
            reused: None,
            paused: false,
            held: Vec::new(),
        }
    }

    /// The runtime's clock for the machine: time since the run started.
    pub(super) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// When a retry `delay` from now comes due: the next point of the [`RETRY_STEP`] grid.
    fn retry_at(&self, delay: Duration) -> Instant {
        let due = self.started.elapsed() + delay;
        let steps = due.as_nanos().div_ceil(RETRY_STEP.as_nanos());
        self.started + RETRY_STEP * u32::try_from(steps).unwrap_or(u32::MAX)
    }

    /// The machine's view of a task's instance count (0 before it is planned).
    pub(super) fn instances(&self, group: usize, task: usize) -> u64 {
        self.machine
            .group(group)
            .map_or(0, |machine| machine.tasks()[task].instances)
    }

    /// Runs the session to its result. `lease` is the lease to watch (`None`: unleased, and
    /// `stop` ends the session `cancelled`; leased, `stop` hands it over). `cancel`, or a cancel
    /// of the run requested in the store (read every [`RECONCILE_INTERVAL`] under a lease),
    /// ends it `cancelled`: nothing more is dispatched, running work is cancelled, and the
    /// result keeps what completed.
    pub(super) async fn drive(
        mut self,
        lease: Option<Lease<'_>>,
        stop: CancellationToken,
        cancel: CancellationToken,
    ) -> Result<SessionResult> {
        let id = self.id;
        // Registered before anything is dispatched, so no notice of this session is missed.
        let mut notices = self.coordinator.notices.register(id).await?;
        let store = &self.coordinator.store;
        let fence = self.fence;
        // Before any work is dispatched, and finished before: workers' outcomes of other runs
        // are refused, and so would this run's be, recorded before the store knew the run (a
        // write issued first but delayed, or retried after a lost connection, lands late).
        patiently("starting the run", || store.start_run(id, self.run, fence)).await?;
        self.started_ms = patiently("reading the store's clock", || store.now_ms()).await?;
        // Independent writes, sent together with the first groups' task records: one round
        // trip. They are issued first (`join!` polls in order), so a context key the first
        // groups set comes after the initial context. A result stored under this id by an
        // earlier run no longer answers (under a lease, `claim` deleted it).
        let (context, mappings) = (self.context.clone(), mappings(self.session));
        let (document, run) = (self.document, self.run);
        let initial = async {
            tokio::try_join!(
                async {
                    match lease {
                        None => {
                            patiently("deleting an earlier result", || {
                                store.delete_result(id, fence)
                            })
                            .await
                        }
                        Some(_) => Ok(()),
                    }
                },
                patiently("storing the context", || store
                    .save_context(id, &context, fence)),
                patiently("storing the mappings", || store
                    .save_mappings(id, &mappings, fence)),
                async {
                    match document {
                        Some(document) => {
                            patiently("storing the session document", || {
                                store.save_document(id, run, document, fence)
                            })
                            .await
                        }
                        None => Ok(()),
                    }
                },
            )
        };
        let (initial, started) = tokio::join!(initial, self.apply(vec![SessionEvent::Start]));
        initial?;
        started?;
        self.write_state().await?;
        // Unleased, the lease never ends: its sender stays here.
        let (_unleased, mut lease_ended) = match lease {
            None => {
                let (sender, receiver) = oneshot::channel();
                (Some(sender), receiver)
            }
            Some(lease) => (None, self.coordinator.keep_lease(id, lease)),
        };
        let mut reconcile_timer = tokio::time::interval(RECONCILE_INTERVAL);
        reconcile_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut quiet_ticks = 0u32;
        let mut cancelled = false;
        let mut losses = self.coordinator.dispatched.losses();
        while !self.machine.finished() {
            tokio::select! {
                () = stop.cancelled(), if !cancelled || lease.is_some() => {
                    if lease.is_some() {
                        return Err(handed_over(id, STOPPING));
                    }
                    cancelled = true;
                    self.apply(vec![SessionEvent::Cancel]).await?;
                }
                () = cancel.cancelled(), if !cancelled => {
                    tracing::info!(session = id, "cancelling the session");
                    cancelled = true;
                    self.apply(vec![SessionEvent::Cancel]).await?;
                }
                () = super::sleep_until(self.timers.next()), if self.timers.next().is_some() => {
                    // Everything due by now goes in one batch, so retries due together are
                    // dispatched together, as ranges.
                    let events = self.expired();
                    self.apply(events).await?;
                }
                routed = notices.recv() => {
                    quiet_ticks = 0;
                    // What queued up while the last batch was carried out goes in one batch with
                    // it, and what is due with them: one publish for all the work they start.
                    let mut batch = vec![routed];
                    while batch.len() < NOTICE_BATCH {
                        match notices.try_recv() {
                            Some(routed) => batch.push(Some(routed)),
                            None => break,
                        }
                    }
                    let mut events = Vec::new();
                    let mut resubscribed = false;
                    for routed in batch {
                        match routed {
                            Some(Routed::Notice(notice)) => events.extend(self.notice_events(notice)),
                            // Notices published while unsubscribed are gone: read them from the store.
                            Some(Routed::Resubscribed) => resubscribed = true,
                            Some(Routed::Failed(error)) => return Err(Error::Notices { session: id.to_string(), message: error.to_string() }),
                            None => return Err(Error::Notices { session: id.to_string(), message: "the subscription ended".into() }),
                        }
                    }
                    events.extend(self.expired());
                    self.apply(events).await?;
                    if resubscribed {
                        self.reconcile().await?;
                    }
                }
                Ok(()) = losses.changed() => {
                    // The ranges dispatched may never arrive. A paused run dispatches what is
                    // left when it resumes; a cancelled one dispatches nothing more.
                    if !self.paused && !cancelled {
                        self.dispatch_unsettled().await?;
                    }
                }
                ended = &mut lease_ended => return Err(match ended {
                    Ok(Renewal::StateLost) => Error::StateLost { session: id.to_string() },
                    _ => handed_over(id, "its lease went to another coordinator"),
                }),
                _ = reconcile_timer.tick() => {
                    // A cancel sent to the coordinator that took the action may have to reach
                    // this one through the store; a pause always does.
                    if lease.is_some() && !cancelled {
                        let run = self.run;
                        if patiently("reading whether the session was cancelled", || store.cancel_requested(id, run)).await? {
                            tracing::info!(session = id, "cancelling the session, as asked through the store");
                            cancelled = true;
                            self.apply(vec![SessionEvent::Cancel]).await?;
                        }
                        let paused = patiently("reading whether the session is paused", || store.pause_requested(id, run)).await?;
                        if paused != self.paused && !cancelled {
                            self.set_paused(paused).await?;
                        }
                    }
                    // Pub/sub is only a wake-up: when it has been quiet for a while, read the
                    // store, so a lost notice cannot stall a group.
                    // Backing off (2, 4, 8, 16, then every 32 quiet seconds) keeps long, quiet
                    // tasks from re-reading their outcomes every second.
                    quiet_ticks += 1;
                    if quiet_ticks >= 2 && (quiet_ticks.is_power_of_two() || quiet_ticks.is_multiple_of(32)) {
                        self.reconcile().await?;
                    }
                }
            }
            if !self.machine.finished()
                && self.state_written.elapsed() >= super::work::STATE_INTERVAL
            {
                self.write_state().await?;
            }
        }
        self.result().await
    }

    /// Everything due by now, as events for the machine.
    fn expired(&mut self) -> Vec<SessionEvent> {
        self.timers
            .take_due(Instant::now())
            .into_iter()
            .map(due_event)
            .collect()
    }

    /// A notice's outcomes as events for the machine.
    fn notice_events(&self, notice: Notice) -> Vec<SessionEvent> {
        let TaskRef { group, task } = notice.task;
        if notice.session != self.id {
            return Vec::new();
        }
        let now = self.elapsed();
        let event = |instance, attempt, failure| SessionEvent::Group {
            group,
            event: Event::outcome(task, instance, attempt, failure, now),
        };
        let mut events: Vec<SessionEvent> = notice
            .successes()
            .map(|(instance, attempt)| event(instance, attempt, None))
            .collect();
        let failed = notice.failed.into_iter().map(|f| (f, false));
        let permanent = notice.permanent.into_iter().map(|f| (f, true));
        events.extend(
            failed
                .chain(permanent)
                .map(|((instance, attempt, error), permanent)| {
                    event(instance, attempt, Some((error, permanent)))
                }),
        );
        events
    }

    /// Feeds events to the machine and carries out what it decides, until nothing is left:
    /// commands that answer with an event (plan, combine) feed it back. Ranges to dispatch are
    /// published together at the end, adjacent ones merged.
    async fn apply(&mut self, events: Vec<SessionEvent>) -> Result<()> {
        let mut queue: VecDeque<SessionCommand> = VecDeque::new();
        for event in events {
            queue.extend(self.machine.handle(event));
        }
        loop {
            let mut dispatches = Vec::new();
            let mut planned = Vec::new();
            while let Some(command) = queue.pop_front() {
                let (group, command) = match command {
                    SessionCommand::Group { group, command } => (group, command),
                    SessionCommand::Arm { deadline, after } => {
                        self.timers
                            .insert(Instant::now() + after, Due::Deadline(deadline));
                        continue;
                    }
                    SessionCommand::Started { group } => {
                        tracing::debug!(session = self.id, group = %self.session.spec.groups[group].id, "starting group");
                        continue;
                    }
                    SessionCommand::Ended { group, status } => {
                        tracing::debug!(session = self.id, group = %self.session.spec.groups[group].id, status = status.as_str(), "group finished");
                        continue;
                    }
                    SessionCommand::WriteContext { key, value } => {
                        self.write_context(key, value).await?;
                        continue;
                    }
                    SessionCommand::Finish => continue,
                };
                let answer = match command {
                    Command::Plan { task } => {
                        let event = self.plan_task(group, task).await?;
                        if matches!(event, Event::Planned { .. }) {
                            planned.push((group, task));
                        }
                        Some(event)
                    }
                    Command::Dispatch {
                        task,
                        start,
                        end,
                        attempt,
                    } => {
                        dispatches.push(self.work_item(group, task, start, end, attempt));
                        None
                    }
                    Command::ScheduleRetry {
                        task,
                        instance,
                        attempt,
                        delay,
                    } => {
                        let due = Due::Retry {
                            group,
                            task,
                            instance,
                            attempt,
                        };
                        let at = self.retry_at(delay);
                        self.timers.insert(at, due);
                        crate::metrics::METRICS.retry();
                        None
                    }
                    Command::UpdateContext { task } => {
                        self.settled_at.insert((group, task), self.elapsed());
                        Some(self.update_context(group, task).await?)
                    }
                    Command::Cancel => {
                        let control = Control::CancelGroup {
                            session: self.id.to_string(),
                            run: self.run.to_string(),
                            claim: self.fence.token().to_string(),
                            group,
                        };
                        let control = events::encode("a cancel", &control)?;
                        let store = &self.coordinator.store;
                        patiently("sending a cancel", || {
                            store.publish(CONTROL_CHANNEL, control.clone())
                        })
                        .await?;
                        None
                    }
                    Command::Finish { .. } => None,
                };
                if let Some(event) = answer {
                    queue.extend(self.machine.handle(SessionEvent::Group { group, event }));
                }
            }
            self.publish(merge_ranges(dispatches, self.coordinator.chunk))
                .await?;
            self.progress.record(self.machine.counts());
            if !self.resuming || planned.is_empty() {
                return Ok(());
            }
            // Resuming: what the previous coordinator's workers stored counts now.
            for (group, task) in planned {
                for events in self.stored_outcomes(group, task).await? {
                    for event in events {
                        queue.extend(self.machine.handle(event));
                    }
                }
            }
        }
    }

    /// Feeds every stored outcome of every running task to the machine. Outcomes it already
    /// counted are ignored by it, so this is safe to repeat.
    async fn reconcile(&mut self) -> Result<()> {
        for (group, task, _) in self.machine.unsettled() {
            for events in self.stored_outcomes(group, task).await? {
                self.apply(events).await?;
            }
        }
        Ok(())
    }

    /// The final result: the machine's, with the results of tasks cut short loaded from the
    /// store. The context moves into it (the run is over), so it is never copied. A task cut
    /// short counts as succeeded the results it reports: outcomes recorded after the machine
    /// stopped (a cancel reaches running instances a moment later) completed all the same.
    async fn result(mut self) -> Result<SessionResult> {
        // A failover that lost outcomes after their tasks settled is found here, before the
        // result says they succeeded.
        for (g, group) in self.session.spec.groups.iter().enumerate() {
            for t in 0..group.tasks.len() {
                self.check_stored(g, t).await?;
            }
        }
        let context = std::mem::take(&mut self.context);
        let mut result = self.machine.result(self.id, context);
        for (g, t) in self.machine.cut_short() {
            let group = &self.session.spec.groups[g];
            let Some(summary) = result
                .groups
                .get_mut(&group.id)
                .and_then(|summary| summary.tasks.get_mut(&group.tasks[t].id))
            else {
                continue;
            };
            let instances = self.instances(g, t);
            if !self.session.tasks[g][t].inline.holds(instances, 0) {
                // Too many to list: they stay in the store (kept for a rerun too), by reference.
                summary.results_kept = Some(self.keep_by_reference(g, t).await?);
                // As with listed results: what the store holds counts as succeeded.
                let mut kept = 0;
                for range in super::work::pages(instances) {
                    kept += self.results(g, t, range).await?.iter().flatten().count() as u64;
                }
                summary.succeeded = summary.succeeded.max(kept);
                continue;
            }
            let mut results: Vec<InstanceResult> = Vec::new();
            for range in super::work::pages(instances) {
                let start = range.start;
                let page = self.results(g, t, range).await?;
                results.extend(page.into_iter().enumerate().filter_map(|(i, r)| {
                    r.map(|result| InstanceResult {
                        instance: start + i as u64,
                        result,
                    })
                }));
            }
            if !results.is_empty() {
                summary.succeeded = summary.succeeded.max(results.len() as u64);
                summary.results = Some(results);
            }
        }
        self.count_cached(&mut result).await?;
        result.reused = self.reused;
        self.stamp(&mut result);
        Ok(result)
    }

    /// Puts in each memoizing task's summary how many of its instances were not executed,
    /// their memoized result used instead: read from the stored outcomes.
    async fn count_cached(&self, result: &mut SessionResult) -> Result<()> {
        for (g, group) in self.session.spec.groups.iter().enumerate() {
            for (t, task) in group.tasks.iter().enumerate() {
                if self.session.tasks[g][t].memoize.is_none() {
                    continue;
                }
                let mut cached = 0;
                for range in super::work::pages(self.instances(g, t)) {
                    let store = &self.coordinator.store;
                    let page = super::patiently("reading outcomes", || {
                        store.outcomes(self.id, TaskRef { group: g, task: t }, range.clone())
                    })
                    .await?;
                    cached += page
                        .iter()
                        .flatten()
                        .filter(|o| matches!(o.status, events::Status::Cached(_)))
                        .count() as u64;
                }
                if let Some(summary) = result
                    .groups
                    .get_mut(&group.id)
                    .and_then(|summary| summary.tasks.get_mut(&task.id))
                {
                    summary.cached = cached;
                }
            }
        }
        Ok(())
    }

    /// Puts the times in the result, by the store's clock: the run's, each task's that ran
    /// (started when planned, finished when its last instance settled, or when the run ended
    /// for a task cut short), and each failed instance's last attempt.
    fn stamp(&self, result: &mut SessionResult) {
        let end = self.elapsed();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let at = |d: Duration| taskgroup::iso8601(self.started_ms.saturating_add(ms(d)));
        result.submitted_at = self.submitted_at.clone();
        result.started_at = Some(at(Duration::ZERO));
        result.finished_at = Some(at(end));
        result.duration_ms = Some(ms(end));
        for (g, group) in self.session.spec.groups.iter().enumerate() {
            let (Some(machine), Some(summary)) =
                (self.machine.group(g), result.groups.get_mut(&group.id))
            else {
                continue;
            };
            for (t, run) in machine.tasks().iter().enumerate() {
                let ran = !matches!(
                    run.state,
                    TaskState::Waiting | TaskState::Planning | TaskState::Skipped
                );
                let Some(task) = summary.tasks.get_mut(&group.tasks[t].id).filter(|_| ran) else {
                    continue;
                };
                let started = run.started();
                let finished = self
                    .settled_at
                    .get(&(g, t))
                    .copied()
                    .unwrap_or(end)
                    .max(started);
                task.started_at = Some(at(started));
                task.finished_at = Some(at(finished));
                task.duration_ms = Some(ms(finished - started));
                for failure in &mut task.failures {
                    if let Some(failed) = run.failures.get(&failure.instance) {
                        failure.last_attempt_at = Some(at(failed.at));
                    }
                }
            }
        }
    }
}

/// What a due timer means to the machine.
fn due_event(due: Due) -> SessionEvent {
    match due {
        Due::Retry {
            group,
            task,
            instance,
            attempt,
        } => SessionEvent::Group {
            group,
            event: Event::RetryDue {
                task,
                instance,
                attempt,
            },
        },
        Due::Deadline(deadline) => SessionEvent::Deadline(deadline),
    }
}

/// Which context key each task writes (seed 002's result key mappings).
fn mappings(session: &Session) -> Map<String, Value> {
    session
        .spec
        .groups
        .iter()
        .flat_map(|group| &group.tasks)
        .map(|task| (task.id.clone(), Value::from(task.context_key())))
        .collect()
}

//! One session's run: the loop that feeds the [`SessionMachine`] what happened (notices, due
//! retries and deadlines, a cancel or pause, lost work, quiet) and carries out what it decides.
//! The decisions are the machine's; this file only does the IO they need, through [`Work`].

use super::lease::{handed_over, STOPPING};
use super::timers::Timers;
use super::work::Work;
use super::{patiently, Lease, Progress};
use crate::error::{Error, Result};
use crate::notice_router::{Route, Routed};
use events::{Notice, Renewal, TaskRef};
use serde_json::{Map, Value};
use std::collections::VecDeque;
use std::time::Duration;
use taskgroup::{
    merge_ranges, Command, Deadline, Event, Range, RunFacts, SessionCommand, SessionEvent,
    SessionMachine, SessionResult,
};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often a run writes its live state at most (and at least, while it runs).
const STATE_INTERVAL: Duration = Duration::from_secs(1);

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

/// One session's run: the machine, the live context, its timers, and the IO handles.
pub(super) struct SessionRun<'a> {
    work: Work<'a>,
    progress: &'a Progress,
    machine: SessionMachine,
    context: Map<String, Value>,
    /// The runtime's clock starts here: what the machine is told as "now".
    started: Instant,
    /// Retries and deadlines, owned by the loop: one timer for all of them.
    timers: Timers<Due>,
}

/// What the loop listens to besides its notices.
pub(super) struct Signals<'l> {
    /// The lease to watch (`None`: unleased, and `stop` ends the session `cancelled`; leased,
    /// `stop` hands it over).
    pub(super) lease: Option<Lease<'l>>,
    pub(super) stop: CancellationToken,
    pub(super) cancel: CancellationToken,
}

impl<'a> SessionRun<'a> {
    pub(super) fn new(work: Work<'a>, progress: &'a Progress, facts: RunFacts) -> Self {
        Self {
            machine: SessionMachine::new(work.session, work.coordinator.chunk).with_facts(facts),
            context: work.session.spec.context.clone(),
            work,
            progress,
            started: Instant::now(),
            timers: Timers::default(),
        }
    }

    /// The runtime's clock for the machine: time since the run started.
    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// When a retry `delay` from now comes due: the next point of the [`RETRY_STEP`] grid.
    fn retry_at(&self, delay: Duration) -> Instant {
        let due = self.started.elapsed() + delay;
        let steps = due.as_nanos().div_ceil(RETRY_STEP.as_nanos());
        self.started + RETRY_STEP * u32::try_from(steps).unwrap_or(u32::MAX)
    }

    /// Runs the session to its result. `cancel`, or a cancel of the run requested in the store
    /// (read every [`RECONCILE_INTERVAL`] under a lease), ends it `cancelled`: nothing more is
    /// dispatched, running work is cancelled, and the result keeps what completed.
    pub(super) async fn drive(
        mut self,
        signals: Signals<'_>,
        document: Option<&[u8]>,
    ) -> Result<SessionResult> {
        let (id, lease) = (self.work.id, signals.lease);
        // Registered before anything is dispatched, so no notice of this session is missed.
        let mut notices = self.work.coordinator.notices.register(id).await?;
        self.begin(document, lease.is_some()).await?;
        // Unleased, the lease never ends: its sender stays here.
        let (_unleased, mut lease_ended) = match lease {
            None => {
                let (sender, receiver) = oneshot::channel();
                (Some(sender), receiver)
            }
            Some(lease) => (None, self.work.coordinator.keep_lease(id, lease)),
        };
        let mut reconcile_timer = tokio::time::interval(RECONCILE_INTERVAL);
        reconcile_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut state_timer =
            tokio::time::interval_at(Instant::now() + STATE_INTERVAL, STATE_INTERVAL);
        state_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut quiet_ticks, mut cancelled) = (0u32, false);
        let mut losses = self.work.coordinator.dispatched.losses();
        while !self.machine.finished() {
            tokio::select! {
                () = signals.stop.cancelled(), if !cancelled || lease.is_some() => {
                    if lease.is_some() {
                        return Err(handed_over(id, STOPPING));
                    }
                    cancelled = true;
                    self.apply(vec![SessionEvent::Cancel]).await?;
                }
                () = signals.cancel.cancelled(), if !cancelled => {
                    tracing::info!(session = id, "cancelling the session");
                    cancelled = true;
                    self.apply(vec![SessionEvent::Cancel]).await?;
                }
                () = crate::deadline::sleep_until(self.timers.next()), if self.timers.next().is_some() => {
                    // Everything due by now goes in one batch, so retries due together are
                    // dispatched together, as ranges.
                    let events = self.expired();
                    self.apply(events).await?;
                }
                routed = notices.recv() => {
                    quiet_ticks = 0;
                    let events = self.notice_batch(routed, &mut notices)?;
                    self.apply(events).await?;
                }
                // The ranges dispatched may never arrive.
                Ok(()) = losses.changed() => self.apply(vec![SessionEvent::WorkLost]).await?,
                ended = &mut lease_ended => return Err(match ended {
                    Ok(Renewal::StateLost) => Error::StateLost { session: id.to_string() },
                    _ => handed_over(id, "its lease went to another coordinator"),
                }),
                _ = reconcile_timer.tick() => {
                    if lease.is_some() && !cancelled {
                        cancelled = self.read_requests().await?;
                    }
                    quiet_ticks += 1;
                    // Pub/sub is only a wake-up: when it has been quiet for a while, read the
                    // store, so a lost notice cannot stall a group. Backing off (2, 4, 8, 16,
                    // then every 32 quiet seconds) keeps long, quiet tasks from re-reading their
                    // outcomes every second.
                    if quiet_ticks >= 2 && (quiet_ticks.is_power_of_two() || quiet_ticks.is_multiple_of(32)) {
                        self.apply(vec![SessionEvent::Quiet]).await?;
                    }
                }
                _ = state_timer.tick() => self.write_state().await?,
            }
        }
        self.result().await
    }

    /// Starts the run: in the store first, then its first writes, sent together with the first
    /// groups' task records (one round trip). The writes are issued first (`join!` polls in
    /// order), so a context key the first groups set comes after the initial context.
    async fn begin(&mut self, document: Option<&[u8]>, leased: bool) -> Result<()> {
        self.work.start_run().await?;
        let (work, context) = (self.work, self.context.clone());
        let (written, started) = tokio::join!(
            work.first_writes(&context, document, leased),
            self.apply(vec![SessionEvent::Start])
        );
        written?;
        started?;
        self.write_state().await
    }

    /// A cancel or a pause of the run asked through the store: a cancel sent to the coordinator
    /// that took the action may have to reach this one that way; a pause always does. Returns
    /// whether the run is cancelled.
    async fn read_requests(&mut self) -> Result<bool> {
        let (store, id, run) = (&self.work.coordinator.store, self.work.id, self.work.run);
        let cancel = patiently("reading whether the session was cancelled", || {
            store.cancel_requested(id, run)
        })
        .await?;
        if cancel {
            tracing::info!(
                session = id,
                "cancelling the session, as asked through the store"
            );
            self.apply(vec![SessionEvent::Cancel]).await?;
            return Ok(true);
        }
        let paused = patiently("reading whether the session is paused", || {
            store.pause_requested(id, run)
        })
        .await?;
        let event = match paused {
            true => SessionEvent::Pause,
            false => SessionEvent::Resume,
        };
        self.apply(vec![event]).await?;
        Ok(false)
    }

    /// A notice, with what queued up while the last batch was carried out and what is due with
    /// them, as one batch of events: one publish for all the work they start.
    fn notice_batch(
        &mut self,
        first: Option<Routed>,
        notices: &mut Route,
    ) -> Result<Vec<SessionEvent>> {
        let id = self.work.id;
        let mut batch = vec![first];
        while batch.len() < NOTICE_BATCH {
            match notices.try_recv() {
                Some(routed) => batch.push(Some(routed)),
                None => break,
            }
        }
        let mut events = Vec::new();
        for routed in batch {
            let failed = |message: String| Error::Notices {
                session: id.to_string(),
                message,
            };
            match routed {
                Some(Routed::Notice(notice)) => events.extend(self.notice_events(notice)),
                // Notices published while unsubscribed are gone: read them from the store.
                Some(Routed::Resubscribed) => events.push(SessionEvent::Quiet),
                Some(Routed::Failed(error)) => return Err(failed(error.to_string())),
                None => return Err(failed("the subscription ended".into())),
            }
        }
        events.extend(self.expired());
        Ok(events)
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
        if notice.session != self.work.id {
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
        let failed = notice.failed.into_iter();
        events.extend(
            failed.map(|(instance, attempt, failure)| event(instance, attempt, Some(failure))),
        );
        events
    }

    /// Feeds events to the machine and carries out what it decides, until nothing is left:
    /// commands that answer with events (plan, combine, read the store) feed them back. Ranges
    /// to dispatch are published together at the end, adjacent ones merged.
    async fn apply(&mut self, events: Vec<SessionEvent>) -> Result<()> {
        self.machine.advance(self.elapsed());
        let mut queue: VecDeque<SessionCommand> = VecDeque::new();
        for event in events {
            queue.extend(self.machine.handle(event));
        }
        let mut dispatches = Vec::new();
        while let Some(command) = queue.pop_front() {
            for event in self.carry(command, &mut dispatches).await? {
                self.machine.advance(self.elapsed());
                queue.extend(self.machine.handle(event));
            }
        }
        let chunk = self.work.coordinator.chunk;
        self.work.send(merge_ranges(dispatches, chunk)).await?;
        self.progress.record(self.machine.counts());
        Ok(())
    }

    /// Carries out one command; returns the events that answer it. Ranges to dispatch are
    /// gathered in `dispatches`.
    async fn carry(
        &mut self,
        command: SessionCommand,
        dispatches: &mut Vec<Range>,
    ) -> Result<Vec<SessionEvent>> {
        let groups = &self.work.session.spec.groups;
        match command {
            SessionCommand::Group { group, command } => {
                let event = self.carry_group(group, command).await?;
                return Ok(event
                    .map(|event| SessionEvent::Group { group, event })
                    .into_iter()
                    .collect());
            }
            SessionCommand::Dispatch(range) => dispatches.push(range),
            SessionCommand::CheckRecorded(range) => {
                let stored = self.work.recorded(range).await?;
                return Ok(vec![SessionEvent::Recorded { range, stored }]);
            }
            SessionCommand::ReadOutcomes { group, task } => {
                let instances = self.machine.instances(group, task);
                let work = self.work;
                return work
                    .stored_outcomes(group, task, instances, self.elapsed())
                    .await;
            }
            SessionCommand::Arm { deadline, after } => {
                self.timers
                    .insert(Instant::now() + after, Due::Deadline(deadline));
            }
            SessionCommand::Pause { paused } => {
                self.work.set_paused(paused).await?;
                self.write_state().await?;
            }
            SessionCommand::WriteContext { key, value } => {
                let work = self.work;
                work.write_context(key, value, &mut self.context).await?;
            }
            SessionCommand::Started { group } => {
                tracing::debug!(session = self.work.id, group = %groups[group].id, "starting group");
            }
            SessionCommand::Ended { group, status } => {
                tracing::debug!(session = self.work.id, group = %groups[group].id, status = status.as_str(), "group finished");
            }
            SessionCommand::Finish => {}
        }
        Ok(Vec::new())
    }

    /// Carries out a group's command; returns the event that answers it, if any.
    async fn carry_group(&mut self, group: usize, command: Command) -> Result<Option<Event>> {
        let work = self.work;
        Ok(match command {
            Command::Plan { task } => {
                let now = self.elapsed();
                Some(work.plan_task(group, task, &self.context, now).await?)
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
                self.timers.insert(self.retry_at(delay), due);
                crate::metrics::METRICS.retry();
                None
            }
            Command::UpdateContext { task } => {
                let Some(run) = self.machine.group(group).and_then(|m| m.tasks().get(task)) else {
                    return Ok(None);
                };
                Some(
                    work.update_context(group, task, run, &mut self.context)
                        .await?,
                )
            }
            Command::Cancel => {
                work.cancel_group(group).await?;
                None
            }
            // The machine sends ranges as its own commands, and ends as `Ended`.
            Command::Dispatch { .. } | Command::Finish { .. } => None,
        })
    }

    /// Writes the session's live state, as the machine reports it now.
    async fn write_state(&mut self) -> Result<()> {
        self.machine.advance(self.elapsed());
        self.work.save_state(&self.machine.live(self.work.id)).await
    }

    /// The final result: the machine's, finished with what it asks of the store. The context
    /// moves into it (the run is over), so it is never copied. A failover that lost outcomes
    /// after their tasks settled is found first, before the result says they succeeded.
    async fn result(mut self) -> Result<SessionResult> {
        for (g, group) in self.work.session.spec.groups.iter().enumerate() {
            for t in 0..group.tasks.len() {
                let counted = self.machine.succeeded(g, t);
                self.work.check_stored(g, t, counted).await?;
            }
        }
        self.machine.advance(self.elapsed());
        let answers = self.work.finish_reads(self.machine.finishing()).await?;
        let context = std::mem::take(&mut self.context);
        Ok(self.machine.finish(self.work.id, context, answers))
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

//! The IO a session's commands need: its first writes, planning a task and storing its record
//! for workers, publishing ranges, reading back what the store recorded, telling workers to
//! cancel or pause, and the live state. Combining results is in `combine.rs`. Each store and
//! broker call is retried in place for a while (`patiently`); an outage longer than that is an
//! error (the session waits it out and resumes), never a failed task.

use super::{patiently, Coordinator};
use crate::error::Result;
use events::{Control, Fence, TaskRecord, TaskRef, WorkItem, CONTROL_CHANNEL, DISPATCH_TOPIC};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::time::Duration;
use taskgroup::{Event, LiveState, Range, Session, SessionEvent, Stored};

/// Ranges of at most [`crate::results::PAGE`] instances covering `0..instances`, for reading
/// outcomes a page at a time.
pub(super) fn pages(instances: u64) -> impl Iterator<Item = std::ops::Range<u64>> {
    crate::results::pages(0..instances)
}

/// Sorts a store write's outcome: an unreachable store is the session's error (it waits the
/// outage out and resumes); a refusal is the task's failure, returned as its message.
pub(super) fn refused(written: events::Result<()>, doing: &str) -> Result<Option<String>> {
    match written {
        Ok(()) => Ok(None),
        // Fenced: the session is another coordinator's now, and nothing of it is this run's to
        // decide, least of all that a task failed.
        Err(error) if error.is_retryable() || matches!(error, events::Error::Fenced { .. }) => {
            Err(error.into())
        }
        Err(error) => Ok(Some(format!("{doing}: {error}"))),
    }
}

/// The IO handles of one session's run: what every store write and dispatch of it names.
#[derive(Clone, Copy)]
pub(super) struct Work<'a> {
    pub(super) coordinator: &'a Coordinator,
    pub(super) session: &'a Session,
    pub(super) id: &'a str,
    /// Names the run on its work items, task records and cancels (see `RunOf::name`).
    pub(super) run: &'a str,
    /// What every write for the session carries (see [`Fence`]).
    pub(super) fence: Fence<'a>,
}

impl Work<'_> {
    /// Starts the run in the store, before any work is dispatched, and finished before:
    /// workers' outcomes of other runs are refused, and so would this run's be, recorded before
    /// the store knew the run (a write issued first but delayed, or retried after a lost
    /// connection, lands late).
    pub(super) async fn start_run(&self) -> Result<()> {
        let store = &self.coordinator.store;
        patiently("starting the run", || {
            store.start_run(self.id, self.run, self.fence)
        })
        .await?;
        Ok(())
    }

    /// The run's first writes, independent of each other: the initial context, the result-key
    /// mappings, the session as submitted, and (unleased) deleting an earlier result under this
    /// id (under a lease, `claim` deleted it).
    pub(super) async fn first_writes(
        &self,
        context: &Map<String, Value>,
        document: Option<&[u8]>,
        leased: bool,
    ) -> Result<()> {
        let (store, id, fence) = (&self.coordinator.store, self.id, self.fence);
        let mappings = mappings(self.session);
        tokio::try_join!(
            async {
                match leased {
                    false => {
                        patiently("deleting an earlier result", || {
                            store.delete_result(id, fence)
                        })
                        .await
                    }
                    true => Ok(()),
                }
            },
            patiently("storing the context", || store
                .save_context(id, context, fence)),
            patiently("storing the mappings", || store
                .save_mappings(id, &mappings, fence)),
            async {
                match document {
                    Some(document) => {
                        patiently("storing the session document", || {
                            store.save_document(id, self.run, document, fence)
                        })
                        .await
                    }
                    None => Ok(()),
                }
            },
        )?;
        Ok(())
    }

    /// Plans a task (validation's plan when running cannot have changed it, otherwise against
    /// the context as it is now) and stores what workers need: the task and the context keys its
    /// expansion reads, not the whole context.
    pub(super) async fn plan_task(
        &self,
        g: usize,
        t: usize,
        context: &Map<String, Value>,
        now: Duration,
    ) -> Result<Event> {
        let expansion = match self.session.settled_plan(g, t) {
            Some(expansion) => Cow::Borrowed(expansion),
            None => match self.plan_now(g, t, context) {
                Ok(expansion) => Cow::Owned(expansion),
                Err(error) => return Ok(Event::PlanFailed { task: t, error }),
            },
        };
        let record = match self.record(g, t, &expansion, context) {
            Ok(record) => record,
            Err(error) => return Ok(Event::PlanFailed { task: t, error }),
        };
        let store = &self.coordinator.store;
        let saved = patiently("storing a task", || {
            store.save_task(self.id, TaskRef { group: g, task: t }, &record, self.fence)
        })
        .await;
        if let Some(error) = refused(saved, "cannot store the task for workers")? {
            return Ok(Event::PlanFailed { task: t, error });
        }
        Ok(Event::Planned {
            task: t,
            instances: expansion.len(),
            format: expansion.kind().map(|_| expansion.output_format()),
            now,
        })
    }

    /// Plans a task whose expansion reads what the run wrote to the context.
    fn plan_now(
        &self,
        g: usize,
        t: usize,
        context: &Map<String, Value>,
    ) -> std::result::Result<expansion::Expansion, String> {
        let spec = &self.session.spec.groups[g].tasks[t];
        let upstream = spec.upstream();
        let plan = taskgroup::TaskPlan {
            id: &spec.id,
            input: &spec.input,
            expansion_config: spec.expansion_config.as_ref(),
            memo_key: self.session.tasks[g][t]
                .memoize
                .as_ref()
                .map(|m| m.key.as_str()),
            upstream: &upstream,
        };
        let context = Value::Object(context.clone());
        taskgroup::plan_task((g, t), plan, &context, &self.coordinator.limits)
            .map_err(|error| error.to_string())
    }

    /// What workers read of a planned task.
    fn record(
        &self,
        g: usize,
        t: usize,
        expansion: &expansion::Expansion,
        context: &Map<String, Value>,
    ) -> std::result::Result<TaskRecord, String> {
        let (group, spec, plan) = (
            &self.session.spec.groups[g],
            &self.session.spec.groups[g].tasks[t],
            &self.session.tasks[g][t],
        );
        let memoize = plan.memoize.as_ref();
        let maps_results_of = match expansion.referenced() {
            None => None,
            Some(reference) => {
                let found = self
                    .session
                    .spec
                    .task_position(&reference.group, &reference.task);
                let Some((group, task)) = found else {
                    return Err(format!(
                        "it maps over the results of task `{}` of group `{}`, which this session does not have",
                        reference.task, reference.group
                    ));
                };
                Some(TaskRef { group, task })
            }
        };
        Ok(TaskRecord {
            run: self.run.to_string(),
            task_id: spec.id.clone(),
            group_id: group.id.clone(),
            executor: spec.executor.clone(),
            input: spec.input.clone(),
            expansion_config: spec.expansion_config.clone(),
            context: Value::Object(expansion.context_subset(context)),
            timeout_ms: spec.timeout_ms,
            concurrency: spec.concurrency,
            instances: expansion.len(),
            memo_key: memoize.map(|m| m.key.clone()),
            memo_ttl_s: memoize.and_then(|m| m.ttl).map(|ttl| ttl.as_secs()),
            upstream: plan
                .each
                .iter()
                .map(|&u| events::Upstream {
                    task: u,
                    id: group.tasks[u].id.clone(),
                })
                .collect(),
            agent: plan.agent.as_ref().map(|agent| events::AgentTask {
                kind: agent.kind.clone(),
                claim_timeout_ms: agent.claim_timeout_ms,
            }),
            maps_results_of,
        })
    }

    /// Dispatches ranges concurrently: awaiting each delivery in turn would serialize on the
    /// broker.
    pub(super) async fn send(&self, ranges: Vec<Range>) -> Result<()> {
        if ranges.is_empty() {
            return Ok(());
        }
        tracing::debug!(
            session = self.id,
            ranges = ranges.len(),
            instances = ranges.iter().map(Range::len).sum::<u64>(),
            "dispatching"
        );
        let broker = &self.coordinator.broker;
        // Keyed per range, so a session's ranges spread over partitions and so over workers.
        let keyed: Vec<(String, Vec<u8>)> = ranges
            .iter()
            .map(|range| {
                let key = format!("{}/{}/{}/{}", self.id, range.group, range.task, range.start);
                Ok((key, self.work_item(range).encode()?))
            })
            .collect::<events::Result<_>>()?;
        let sends = keyed.iter().map(|(key, payload)| async move {
            patiently("dispatching work", || {
                broker.publish(DISPATCH_TOPIC, key, payload.clone())
            })
            .await
        });
        let mut lost = None;
        for sent in futures_util::future::join_all(sends).await {
            lost = lost.or(self.coordinator.dispatched.published(&sent?));
        }
        crate::metrics::METRICS.dispatched(ranges.len());
        if let Some(detail) = lost {
            self.coordinator.lost(detail).await;
        }
        crate::failpoint::hit(crate::failpoint::DISPATCHED);
        Ok(())
    }

    /// A range of a task of this run, as workers take it.
    fn work_item(&self, range: &Range) -> WorkItem {
        WorkItem {
            v: events::messages::VERSION,
            session: self.id.to_string(),
            run: self.run.to_string(),
            claim: self.fence.token().to_string(),
            task: TaskRef {
                group: range.group,
                task: range.task,
            },
            start: range.start,
            end: range.end,
            attempt: range.attempt,
        }
    }

    /// What the store holds of each instance of `range`, for the machine to cut it around.
    pub(super) async fn recorded(&self, range: Range) -> Result<Vec<Option<Stored>>> {
        let store = &self.coordinator.store;
        let task = TaskRef {
            group: range.group,
            task: range.task,
        };
        let outcomes = patiently("reading outcomes", || {
            store.outcomes(self.id, task, range.start..range.end)
        })
        .await?;
        let stored: Vec<Option<Stored>> = outcomes
            .iter()
            .map(|outcome| {
                outcome.as_ref().map(|o| Stored {
                    attempt: o.attempt,
                    succeeded: o.succeeded(),
                })
            })
            .collect();
        let covered = stored
            .iter()
            .flatten()
            .filter(|s| s.covers(range.attempt))
            .count();
        if covered > 0 {
            tracing::info!(
                session = self.id,
                "{covered} of {} instances of a range have their outcome stored: not dispatched again",
                range.len()
            );
        }
        Ok(stored)
    }

    /// Every stored outcome of a task of `instances` instances, as events for the machine.
    pub(super) async fn stored_outcomes(
        &self,
        group: usize,
        task: usize,
        instances: u64,
        now: Duration,
    ) -> Result<Vec<SessionEvent>> {
        let mut events = Vec::new();
        for range in pages(instances) {
            let store = &self.coordinator.store;
            let page = patiently("reading outcomes", || {
                store.outcomes(self.id, TaskRef { group, task }, range.clone())
            })
            .await?;
            events.extend(page.into_iter().flatten().map(|outcome| {
                let failure = outcome.status.failure().cloned();
                let event = Event::outcome(task, outcome.instance, outcome.attempt, failure, now);
                SessionEvent::Group { group, event }
            }));
        }
        Ok(events)
    }

    /// Tells workers to cancel a group's running work.
    pub(super) async fn cancel_group(&self, group: usize) -> Result<()> {
        self.control(Control::CancelGroup {
            session: self.id.to_string(),
            run: self.run.to_string(),
            claim: self.fence.token().to_string(),
            group,
        })
        .await
    }

    /// Tells workers the run is paused (they start none of its instances), or resumed.
    pub(super) async fn set_paused(&self, paused: bool) -> Result<()> {
        let (session, run) = (self.id.to_string(), self.run.to_string());
        tracing::info!(session = self.id, paused, "pause changed");
        self.control(match paused {
            true => Control::PauseRun { session, run },
            false => Control::ResumeRun { session, run },
        })
        .await
    }

    async fn control(&self, control: Control) -> Result<()> {
        let control = events::encode("a control message", &control)?;
        let store = &self.coordinator.store;
        patiently("sending a control message", || {
            store.publish(CONTROL_CHANNEL, control.clone())
        })
        .await?;
        Ok(())
    }

    /// Writes the session's live state.
    pub(super) async fn save_state(&self, state: &LiveState) -> Result<()> {
        let encoded = events::encode("the live state", state)?;
        let (store, fence) = (&self.coordinator.store, self.fence);
        patiently("storing the live state", || {
            store.save_state(self.id, &encoded, true, fence)
        })
        .await?;
        Ok(())
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

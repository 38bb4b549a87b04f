//! The IO a session's commands need: planning a task and storing its record for workers,
//! publishing ranges, reading stored outcomes back, and combining a settled task's results into
//! the context. Each store and broker call is retried in place for a while (`patiently`); an
//! outage longer than that is an error (the session waits it out and resumes), never a failed
//! task.

use super::patiently;
use super::run::{Due, SessionRun};
use crate::error::Result;
use events::{Control, TaskRecord, TaskRef, WorkItem, CONTROL_CHANNEL, DISPATCH_TOPIC};
use expansion::OutputFormat;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::HashSet;
use std::time::Duration;
use taskgroup::{Event, SessionEvent, TaskState};
use tokio::time::Instant;

/// How often a run writes its live state at most (and at least, while it runs).
pub(super) const STATE_INTERVAL: Duration = Duration::from_secs(1);

/// Ranges of at most [`crate::results::PAGE`] instances covering `0..instances`, for reading
/// outcomes a page at a time.
pub(super) fn pages(instances: u64) -> impl Iterator<Item = std::ops::Range<u64>> {
    crate::results::pages(0..instances)
}

/// Sorts a store write's outcome: an unreachable store is the session's error (it waits the
/// outage out and resumes); a refusal is the task's failure, returned as its message.
fn refused(written: events::Result<()>, doing: &str) -> Result<Option<String>> {
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

impl SessionRun<'_> {
    /// Plans a task (validation's plan when running cannot have changed it, otherwise against
    /// the context as it is now) and stores what workers need: the task and the context keys its
    /// expansion reads, not the whole context.
    pub(super) async fn plan_task(&mut self, g: usize, t: usize) -> Result<Event> {
        let spec = &self.session.spec.groups[g].tasks[t];
        let memoize = self.session.tasks[g][t].memoize.as_ref();
        let expansion = match self.session.settled_plan(g, t) {
            Some(expansion) => Cow::Borrowed(expansion),
            None => {
                let upstream = spec.upstream();
                let planned = taskgroup::plan_task(
                    (g, t),
                    taskgroup::TaskPlan {
                        id: &spec.id,
                        input: &spec.input,
                        expansion_config: spec.expansion_config.as_ref(),
                        memo_key: memoize.map(|m| m.key.as_str()),
                        upstream: &upstream,
                    },
                    &Value::Object(self.context.clone()),
                    &self.coordinator.limits,
                );
                match planned {
                    Ok(expansion) => Cow::Owned(expansion),
                    Err(error) => {
                        return Ok(Event::PlanFailed {
                            task: t,
                            error: error.to_string(),
                        })
                    }
                }
            }
        };
        let mut record = TaskRecord {
            run: self.run.to_string(),
            task_id: spec.id.clone(),
            group_id: self.session.spec.groups[g].id.clone(),
            executor: spec.executor.clone(),
            input: spec.input.clone(),
            expansion_config: spec.expansion_config.clone(),
            context: Value::Object(expansion.context_subset(&self.context)),
            timeout_ms: spec.timeout_ms,
            concurrency: spec.concurrency,
            instances: expansion.len(),
            memo_key: memoize.map(|m| m.key.clone()),
            memo_ttl_s: memoize.and_then(|m| m.ttl).map(|ttl| ttl.as_secs()),
            upstream: self.session.tasks[g][t]
                .each
                .iter()
                .map(|&u| events::Upstream {
                    task: u,
                    id: self.session.spec.groups[g].tasks[u].id.clone(),
                })
                .collect(),
            agent: self.session.tasks[g][t]
                .agent
                .as_ref()
                .map(|agent| events::AgentTask {
                    kind: agent.kind.clone(),
                    claim_timeout_ms: agent.claim_timeout_ms,
                }),
            maps_results_of: None,
        };
        if let Some(reference) = expansion.referenced() {
            match self.session.spec.task_position(&reference.group, &reference.task) {
                Some((group, task)) => record.maps_results_of = Some(TaskRef { group, task }),
                None => {
                    return Ok(Event::PlanFailed {
                        task: t,
                        error: format!(
                            "it maps over the results of task `{}` of group `{}`, which this session does not have",
                            reference.task, reference.group
                        ),
                    })
                }
            }
        }
        let (instances, format) = (
            expansion.len(),
            expansion.kind().map(|_| expansion.output_format()),
        );
        let store = &self.coordinator.store;
        let saved = patiently("storing a task", || {
            store.save_task(self.id, TaskRef { group: g, task: t }, &record, self.fence)
        })
        .await;
        if let Some(error) = refused(saved, "cannot store the task for workers")? {
            return Ok(Event::PlanFailed { task: t, error });
        }
        self.formats.insert((g, t), format);
        Ok(Event::Planned {
            task: t,
            instances,
            now: self.elapsed(),
        })
    }

    /// Publishes work concurrently: awaiting each delivery in turn would serialize on the broker.
    /// While the run is paused, the work waits until it resumes.
    pub(super) async fn publish(&mut self, mut items: Vec<WorkItem>) -> Result<()> {
        if self.paused {
            self.held.extend(items);
            return Ok(());
        }
        if self.resuming {
            items = self.not_yet_done(items).await?;
        }
        self.send(items).await
    }

    /// Dispatches `items` as they are, concurrently.
    async fn send(&self, items: Vec<WorkItem>) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        tracing::debug!(
            session = self.id,
            ranges = items.len(),
            instances = items.iter().map(|i| i.end - i.start).sum::<u64>(),
            "dispatching"
        );
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
        crate::metrics::METRICS.dispatched(items.len());
        if let Some(detail) = lost {
            self.coordinator.lost(detail).await;
        }
        crate::failpoint::hit(crate::failpoint::DISPATCHED);
        Ok(())
    }

    /// Pauses the run (workers start no more of its instances, and what it would dispatch
    /// waits), or resumes it: workers start its instances again, and everything not settled is
    /// dispatched, what waited and what paused workers dropped, less what is recorded. Retries
    /// waiting for their delay are left to it. Deadlines are not stopped by a pause.
    pub(super) async fn set_paused(&mut self, paused: bool) -> Result<()> {
        let control = if paused {
            Control::PauseRun {
                session: self.id.to_string(),
                run: self.run.to_string(),
            }
        } else {
            Control::ResumeRun {
                session: self.id.to_string(),
                run: self.run.to_string(),
            }
        };
        let control = events::encode("a pause", &control)?;
        let store = &self.coordinator.store;
        patiently("sending a pause", || {
            store.publish(CONTROL_CHANNEL, control.clone())
        })
        .await?;
        self.paused = paused;
        tracing::info!(session = self.id, paused, "pause changed");
        if !paused {
            self.dispatch_unsettled().await?;
        }
        self.write_state().await
    }

    /// Dispatches everything not settled that is not waiting for a retry's delay: what waited
    /// while paused, what paused workers dropped, what the broker lost; less what is recorded.
    pub(super) async fn dispatch_unsettled(&mut self) -> Result<()> {
        let waiting: HashSet<(usize, usize, u64)> = self
            .timers
            .values()
            .filter_map(|due| match *due {
                Due::Retry {
                    group,
                    task,
                    instance,
                    ..
                } => Some((group, task, instance)),
                Due::Deadline(_) => None,
            })
            .collect();
        let mut items = std::mem::take(&mut self.held);
        for (group, task, _) in self.machine.unsettled() {
            let Some(machine) = self.machine.group(group) else {
                continue;
            };
            for (start, end, attempt) in machine.undone(task) {
                let mut from = start;
                for instance in start..=end {
                    if instance == end || waiting.contains(&(group, task, instance)) {
                        if from < instance {
                            items.push(self.work_item(group, task, from, instance, attempt));
                        }
                        from = instance + 1;
                    }
                }
            }
        }
        // Only groups still running: what a cancel or deadline stopped meanwhile stays stopped.
        items.retain(|item| self.machine.is_running(item.task.group));
        let left = self.not_yet_done(items).await?;
        self.send(merge_ranges(left, self.coordinator.chunk)).await
    }

    /// A range of a task of this run, to dispatch.
    pub(super) fn work_item(
        &self,
        group: usize,
        task: usize,
        start: u64,
        end: u64,
        attempt: u32,
    ) -> WorkItem {
        WorkItem {
            v: events::messages::VERSION,
            session: self.id.to_string(),
            run: self.run.to_string(),
            claim: self.fence.token().to_string(),
            task: TaskRef { group, task },
            start,
            end,
            attempt,
        }
    }

    /// What is left of each range to run: its stretches of instances whose outcome of this
    /// attempt (or a later one) is not stored. A range of which some instances were recorded
    /// before a coordinator or a whole process stopped is cut around them, so no recorded
    /// instance runs again.
    async fn not_yet_done(&self, items: Vec<WorkItem>) -> Result<Vec<WorkItem>> {
        let mut left = Vec::with_capacity(items.len());
        let (ranges, instances) = (
            items.len(),
            items.iter().map(|i| i.end - i.start).sum::<u64>(),
        );
        for item in items {
            let store = &self.coordinator.store;
            let stored = patiently("reading outcomes", || {
                store.outcomes(self.id, item.task, item.start..item.end)
            })
            .await?;
            let done = |outcome: &Option<events::Outcome>| {
                outcome
                    .as_ref()
                    .is_some_and(|o| o.succeeded() || o.attempt >= item.attempt)
            };
            let mut start = None;
            for (offset, outcome) in stored.iter().enumerate() {
                let instance = item.start + offset as u64;
                match (done(outcome), start) {
                    (false, None) => start = Some(instance),
                    (true, Some(from)) => {
                        left.push(WorkItem {
                            start: from,
                            end: instance,
                            ..item.clone()
                        });
                        start = None;
                    }
                    _ => {}
                }
            }
            if let Some(from) = start {
                left.push(WorkItem {
                    start: from,
                    ..item
                });
            }
        }
        let to_run: u64 = left.iter().map(|i| i.end - i.start).sum();
        if to_run < instances {
            tracing::info!(
                session = self.id,
                "{} of {instances} instances in {ranges} ranges have their outcome stored: not dispatched again",
                instances - to_run
            );
        }
        Ok(left)
    }

    /// Every stored outcome of a task, as events for the machine, a page at a time.
    pub(super) async fn stored_outcomes(
        &self,
        group: usize,
        task: usize,
    ) -> Result<Vec<Vec<SessionEvent>>> {
        let now = self.elapsed();
        let mut pages_of_events = Vec::new();
        for range in pages(self.instances(group, task)) {
            let store = &self.coordinator.store;
            let page = patiently("reading outcomes", || {
                store.outcomes(self.id, TaskRef { group, task }, range.clone())
            })
            .await?;
            let events: Vec<SessionEvent> = page
                .into_iter()
                .flatten()
                .map(|outcome| {
                    let failure = outcome.status.failure();
                    let event =
                        Event::outcome(task, outcome.instance, outcome.attempt, failure, now);
                    SessionEvent::Group { group, event }
                })
                .collect();
            if !events.is_empty() {
                pages_of_events.push(events);
            }
        }
        Ok(pages_of_events)
    }

    /// Combines a settled task's results in instance order, a page at a time, and writes them
    /// to the context: a `separate` task's over its `inline_results` limit stay in the store,
    /// and the context holds a reference to them.
    pub(super) async fn update_context(&mut self, g: usize, t: usize) -> Result<Event> {
        self.check_stored(g, t).await?;
        let format = self.formats.get(&(g, t)).copied().flatten();
        let combined = match format {
            Some(OutputFormat::Separate) => self.separate(g, t).await,
            Some(format) => self.fold(g, t, format).await,
            None => self
                .results(g, t, 0..1)
                .await
                .map(|first| Ok(first.into_iter().next().flatten().unwrap_or_default())),
        };
        let value = match combined {
            Ok(Ok(value)) => value,
            Ok(Err(error)) => return Ok(Event::CombineFailed { task: t, error }),
            Err(error) if error.is_retryable() => return Err(error),
            Err(error) => {
                return Ok(Event::CombineFailed {
                    task: t,
                    error: format!("cannot load results: {error}"),
                })
            }
        };
        let key = self.session.spec.groups[g].tasks[t]
            .context_key()
            .to_string();
        let store = &self.coordinator.store;
        let saved = patiently("storing the context", || {
            store.set_context(self.id, &key, &value, self.fence)
        })
        .await;
        if let Some(error) = refused(saved, "cannot store the context")? {
            return Ok(Event::CombineFailed { task: t, error });
        }
        self.context.insert(key, value);
        crate::failpoint::hit(crate::failpoint::CONTEXT_WRITTEN);
        Ok(Event::ContextUpdated { task: t })
    }

    /// `merge` or `single`, folded page by page: only the value folded so far is held.
    async fn fold(
        &self,
        g: usize,
        t: usize,
        format: OutputFormat,
    ) -> Result<Result<Value, String>> {
        let mut combiner = format.combiner();
        for range in pages(self.instances(g, t)) {
            for result in self.results(g, t, range).await? {
                if let Err(error) = combiner.push(result) {
                    return Ok(Err(error.to_string()));
                }
            }
        }
        Ok(Ok(combiner.finish()))
    }

    /// `separate`: the list of results while it stays within the task's `inline_results`,
    /// else a reference to them in the store (more instances than the limit's count are not
    /// read at all; a list outgrowing its bytes is dropped as soon as it does).
    async fn separate(&self, g: usize, t: usize) -> Result<Result<Value, String>> {
        let instances = self.instances(g, t);
        let limit = self.session.tasks[g][t].inline;
        if limit.holds(instances, 0) {
            if let Some(list) = self.inline_list(g, t, instances, limit).await? {
                return Ok(Ok(Value::Array(list)));
            }
        }
        match self.keep_by_reference(g, t).await {
            Ok(reference) => Ok(Ok(reference)),
            Err(error) => {
                let why = refused(Err(error), "cannot keep the results")?;
                Ok(Err(why.unwrap_or_default()))
            }
        }
    }

    /// Marks the task's outcomes to be kept past the session's cleanup, and the reference to
    /// them (`{"$results": ...}`) that the context, or a cut-short task's summary, holds.
    pub(super) async fn keep_by_reference(&self, g: usize, t: usize) -> events::Result<Value> {
        let store = &self.coordinator.store;
        let task = TaskRef { group: g, task: t };
        patiently("keeping the results in the store", || {
            store.keep_results(self.id, task, self.fence)
        })
        .await?;
        let group = &self.session.spec.groups[g];
        let reference = expansion::ResultsRef {
            group: group.id.clone(),
            task: group.tasks[t].id.clone(),
            count: self.instances(g, t),
        };
        tracing::info!(session = self.id, task = %reference.task, count = reference.count, "results kept in the store by reference");
        Ok(reference.to_value())
    }

    /// The task's results as a list, or `None` as soon as their JSON passes `limit`'s bytes.
    async fn inline_list(
        &self,
        g: usize,
        t: usize,
        instances: u64,
        limit: taskgroup::InlineResults,
    ) -> Result<Option<Vec<Value>>> {
        let (mut list, mut bytes) = (Vec::new(), 0u64);
        for range in pages(instances) {
            for result in self.results(g, t, range).await? {
                let result = result.unwrap_or_default();
                bytes += expansion::json_len(&result) as u64 + 1;
                if !limit.holds(instances, bytes) {
                    return Ok(None);
                }
                list.push(result);
            }
        }
        Ok(Some(list))
    }

    /// Writes a context key the machine sets itself (`_session` for exit handlers). A fenced
    /// write ends the run (another coordinator has the session); one refused for another reason
    /// is logged, and the key is still kept here, where planning reads it.
    pub(super) async fn write_context(&mut self, key: String, value: Value) -> Result<()> {
        let store = &self.coordinator.store;
        let saved = patiently("storing the context", || {
            store.set_context(self.id, &key, &value, self.fence)
        })
        .await;
        if let Some(error) = refused(saved, "cannot store the context")? {
            tracing::warn!(session = self.id, %key, %error, "context not stored");
        }
        self.context.insert(key, value);
        Ok(())
    }

    /// Fails with [`crate::Error::OutcomesLost`] when the store holds fewer outcomes of the
    /// task than the machine counted successes. Every success it counts was stored before it
    /// was announced (or read from the store), so fewer means the store lost writes it had
    /// acknowledged: a Redis master died and its replica, promoted, had not received them. The
    /// run then resumes from what the store holds (the error is retryable), and the instances
    /// whose outcomes were lost run again, rather than their results reading as missing.
    pub(super) async fn check_stored(&self, g: usize, t: usize) -> Result<()> {
        let counted = self
            .machine
            .group(g)
            .and_then(|group| group.tasks().get(t))
            .map_or(0, |task| task.succeeded);
        if counted == 0 {
            return Ok(());
        }
        let store = &self.coordinator.store;
        let task = TaskRef { group: g, task: t };
        let stored = patiently("counting outcomes", || store.outcome_count(self.id, task)).await?;
        if stored >= counted {
            return Ok(());
        }
        Err(crate::Error::OutcomesLost {
            session: self.id.to_string(),
            task: self.session.spec.groups[g].tasks[t].id.clone(),
            counted,
            stored,
        })
    }

    /// The task's results at `range`, in instance order; `None` where an instance has no
    /// success.
    pub(super) async fn results(
        &self,
        g: usize,
        t: usize,
        range: std::ops::Range<u64>,
    ) -> Result<Vec<Option<Value>>> {
        let task = TaskRef { group: g, task: t };
        let store = self.coordinator.store.as_ref();
        crate::results::page(store, self.id, task, range, Some(super::PATIENCE)).await
    }

    /// Writes the session's live state: the machine's counts, the run's times by the store's
    /// clock, and the rate and ETA since the run started.
    pub(super) async fn write_state(&mut self) -> Result<()> {
        let mut state = self.machine.live(self.id);
        let elapsed = self.elapsed();
        let settled = state.instances.succeeded + state.instances.failed;
        let seconds = elapsed.as_secs_f64();
        if settled > 0 && seconds > 0.0 {
            let rate = settled as f64 / seconds;
            state.rate_per_s = Some(rate);
            state.eta_s = Some(state.instances.total.saturating_sub(settled) as f64 / rate);
        }
        state.run = Some(self.run.to_string());
        if self.paused {
            state.status = taskgroup::LiveStatus::Paused;
        }
        state.submitted_at = self.submitted_at.clone();
        state.started_at = Some(taskgroup::iso8601(self.started_ms));
        let now = self.started_ms + u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        state.updated_at = Some(taskgroup::iso8601(now));
        self.timeline(&mut state);
        let encoded = events::encode("the live state", &state)?;
        let (store, fence) = (&self.coordinator.store, self.fence);
        patiently("storing the live state", || {
            store.save_state(self.id, &encoded, true, fence)
        })
        .await?;
        self.state_written = Instant::now();
        Ok(())
    }

    /// Puts in the live state when each task that started ran, and the latest failures.
    fn timeline(&self, state: &mut taskgroup::LiveState) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let mut latest: Vec<taskgroup::LiveFailure> = Vec::new();
        for (g, group) in self.session.spec.groups.iter().enumerate() {
            let Some(machine) = self.machine.group(g) else {
                continue;
            };
            for (t, run) in machine.tasks().iter().enumerate() {
                if matches!(
                    run.state,
                    TaskState::Waiting | TaskState::Planning | TaskState::Skipped
                ) {
                    continue;
                }
                let task = &group.tasks[t].id;
                state.timeline.push(taskgroup::LiveSpan {
                    group: group.id.clone(),
                    task: task.clone(),
                    started_ms: ms(run.started()),
                    finished_ms: self.settled_at.get(&(g, t)).map(|at| ms(*at)),
                });
                for (instance, failure) in &run.failures {
                    let at_ms = ms(failure.at);
                    let full = latest.len() == taskgroup::LATEST_FAILURES;
                    if full && latest.last().is_some_and(|last| last.at_ms >= at_ms) {
                        continue;
                    }
                    if full {
                        latest.pop();
                    }
                    let at = latest.partition_point(|kept| kept.at_ms >= at_ms);
                    latest.insert(
                        at,
                        taskgroup::LiveFailure {
                            group: group.id.clone(),
                            task: task.clone(),
                            instance: *instance,
                            attempts: failure.attempts,
                            error: failure.error.clone(),
                            at_ms,
                        },
                    );
                }
            }
        }
        state.failures = latest;
    }
}

/// Merges ranges of the same task and attempt that touch, up to `chunk` instances each: retries
/// due together (one instance each) leave as a few ranges, not one message per instance.
pub(super) fn merge_ranges(mut items: Vec<WorkItem>, chunk: u64) -> Vec<WorkItem> {
    if items.len() < 2 {
        return items;
    }
    items.sort_by_key(|item| (item.task.group, item.task.task, item.attempt, item.start));
    let mut merged: Vec<WorkItem> = Vec::with_capacity(items.len());
    for item in items {
        match merged.last_mut() {
            Some(last)
                if last.task == item.task
                    && last.attempt == item.attempt
                    && last.end == item.start
                    && item.end - last.start <= chunk =>
            {
                last.end = item.end;
            }
            _ => merged.push(item),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(task: usize, start: u64, end: u64, attempt: u32) -> WorkItem {
        WorkItem {
            v: events::messages::VERSION,
            session: "s".into(),
            run: "r".into(),
            claim: String::new(),
            task: TaskRef { group: 0, task },
            start,
            end,
            attempt,
        }
    }

    #[test]
    fn adjacent_ranges_of_one_task_and_attempt_merge_up_to_the_chunk() {
        let items = vec![
            item(0, 3, 4, 2),
            item(0, 0, 1, 2),
            item(0, 1, 2, 2),
            item(0, 2, 3, 2),
            item(0, 5, 6, 2),
            item(0, 4, 5, 3),
            item(1, 4, 5, 2),
        ];
        let ranges: Vec<(usize, u64, u64, u32)> = merge_ranges(items, 3)
            .iter()
            .map(|i| (i.task.task, i.start, i.end, i.attempt))
            .collect();
        assert_eq!(
            ranges,
            vec![
                (0, 0, 3, 2),
                (0, 3, 4, 2),
                (0, 5, 6, 2),
                (0, 4, 5, 3),
                (1, 4, 5, 2)
            ]
        );
    }
}

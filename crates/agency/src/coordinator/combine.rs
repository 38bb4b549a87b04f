//! Combining a settled task's results into the context, a page at a time, and reading what the
//! final result needs of tasks cut short. Results stay in the store: what is combined is read
//! back from it, never from notices.

use super::work::{pages, refused, Work};
use super::{patiently, PATIENCE};
use crate::error::Result;
use events::TaskRef;
use expansion::OutputFormat;
use serde_json::{Map, Value};
use taskgroup::{Event, FinishRead, Finished, InstanceResult, TaskRun};

impl Work<'_> {
    /// Combines a settled task's results in instance order, a page at a time, and writes them
    /// to the context: a `separate` task's over its `inline_results` limit stay in the store,
    /// and the context holds a reference to them.
    pub(super) async fn update_context(
        &self,
        g: usize,
        t: usize,
        run: &TaskRun,
        context: &mut Map<String, Value>,
    ) -> Result<Event> {
        self.check_stored(g, t, run.succeeded).await?;
        let combined = match run.format {
            Some(OutputFormat::Separate) => self.separate(g, t, run.instances).await,
            Some(format) => self.fold(g, t, run.instances, format).await,
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
        let key = self.session.spec.groups[g].tasks[t].context_key();
        if let Some(error) = self.set_context(key, &value).await? {
            return Ok(Event::CombineFailed { task: t, error });
        }
        context.insert(key.to_string(), value);
        crate::failpoint::hit(crate::failpoint::CONTEXT_WRITTEN);
        Ok(Event::ContextUpdated { task: t })
    }

    /// Writes one context key; `Some` is why the store refused it.
    async fn set_context(&self, key: &str, value: &Value) -> Result<Option<String>> {
        let store = &self.coordinator.store;
        let saved = patiently("storing the context", || {
            store.set_context(self.id, key, value, self.fence)
        })
        .await;
        refused(saved, "cannot store the context")
    }

    /// Writes a context key the machine sets itself (`_session` for exit handlers). A fenced
    /// write ends the run (another coordinator has the session); one refused for another reason
    /// is logged, and the key is still kept in `context`, where planning reads it.
    pub(super) async fn write_context(
        &self,
        key: String,
        value: Value,
        context: &mut Map<String, Value>,
    ) -> Result<()> {
        if let Some(error) = self.set_context(&key, &value).await? {
            tracing::warn!(session = self.id, %key, %error, "context not stored");
        }
        context.insert(key, value);
        Ok(())
    }

    /// `merge` or `single`, folded page by page: only the value folded so far is held.
    async fn fold(
        &self,
        g: usize,
        t: usize,
        instances: u64,
        format: OutputFormat,
    ) -> Result<Result<Value, String>> {
        let mut combiner = format.combiner();
        for range in pages(instances) {
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
    async fn separate(&self, g: usize, t: usize, instances: u64) -> Result<Result<Value, String>> {
        let limit = self.session.tasks[g][t].inline;
        if limit.holds(instances, 0) {
            if let Some(list) = self.inline_list(g, t, instances, limit).await? {
                return Ok(Ok(Value::Array(list)));
            }
        }
        match self.keep_by_reference(g, t, instances).await {
            Ok(reference) => Ok(Ok(reference)),
            Err(error) => {
                let why = refused(Err(error), "cannot keep the results")?;
                Ok(Err(why.unwrap_or_default()))
            }
        }
    }

    /// Marks the task's outcomes to be kept past the session's cleanup, and the reference to
    /// them (`{"$results": ...}`) that the context, or a cut-short task's summary, holds.
    async fn keep_by_reference(&self, g: usize, t: usize, count: u64) -> events::Result<Value> {
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
            count,
        };
        tracing::info!(session = self.id, task = %reference.task, count, "results kept in the store by reference");
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

    /// Fails with [`crate::Error::OutcomesLost`] when the store holds fewer outcomes of the
    /// task than the machine `counted` successes. Every success it counts was stored before it
    /// was announced (or read from the store), so fewer means the store lost writes it had
    /// acknowledged: a Redis master died and its replica, promoted, had not received them. The
    /// run then resumes from what the store holds (the error is retryable), and the instances
    /// whose outcomes were lost run again, rather than their results reading as missing.
    pub(super) async fn check_stored(&self, g: usize, t: usize, counted: u64) -> Result<()> {
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
    async fn results(
        &self,
        g: usize,
        t: usize,
        range: std::ops::Range<u64>,
    ) -> Result<Vec<Option<Value>>> {
        let task = TaskRef { group: g, task: t };
        let store = self.coordinator.store.as_ref();
        crate::results::page(store, self.id, task, range, Some(PATIENCE)).await
    }

    /// Reads what the final result needs ([`taskgroup::SessionMachine::finishing`]).
    pub(super) async fn finish_reads(&self, reads: Vec<FinishRead>) -> Result<Vec<Finished>> {
        let mut answers = Vec::with_capacity(reads.len());
        for read in reads {
            answers.push(match read {
                FinishRead::List {
                    group,
                    task,
                    instances,
                } => Finished::Listed {
                    group,
                    task,
                    results: self.listed(group, task, instances).await?,
                },
                FinishRead::Keep {
                    group,
                    task,
                    instances,
                } => {
                    // Too many to list: they stay in the store (kept for a rerun too).
                    let reference = self.keep_by_reference(group, task, instances).await?;
                    let mut count = 0;
                    for range in pages(instances) {
                        count += self
                            .results(group, task, range)
                            .await?
                            .iter()
                            .flatten()
                            .count();
                    }
                    Finished::Kept {
                        group,
                        task,
                        reference,
                        count: count as u64,
                    }
                }
                FinishRead::CountCached {
                    group,
                    task,
                    instances,
                } => Finished::Cached {
                    group,
                    task,
                    cached: self.cached(group, task, instances).await?,
                },
            });
        }
        Ok(answers)
    }

    /// The results the store holds of a task, with their instances.
    async fn listed(&self, g: usize, t: usize, instances: u64) -> Result<Vec<InstanceResult>> {
        let mut results = Vec::new();
        for range in pages(instances) {
            let start = range.start;
            let page = self.results(g, t, range).await?;
            results.extend(page.into_iter().enumerate().filter_map(|(i, r)| {
                r.map(|result| InstanceResult {
                    instance: start + i as u64,
                    result,
                })
            }));
        }
        Ok(results)
    }

    /// How many of a memoizing task's instances used their memoized result.
    async fn cached(&self, g: usize, t: usize, instances: u64) -> Result<u64> {
        let (store, task) = (&self.coordinator.store, TaskRef { group: g, task: t });
        let mut cached = 0;
        for range in pages(instances) {
            let page = patiently("reading outcomes", || {
                store.outcomes(self.id, task, range.clone())
            })
            .await?;
            cached += page
                .iter()
                .flatten()
                .filter(|o| matches!(o.status, events::Status::Cached(_)))
                .count() as u64;
        }
        Ok(cached)
    }
}

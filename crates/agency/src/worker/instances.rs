//! Running a range: each instance rendered and executed with its timeout under the task's
//! concurrency limit, outcomes recorded in batches (large results as blobs) and then announced.

use super::{Prepared, Worker};
use crate::executors::{Call, ExecError, IdempotencyKey};
use crate::metrics::Tally;
use crate::outage::retrying;
use crate::results::blob_if_large;
use events::{notices_channel, Notice, Outcome, Status, WorkItem};
use futures_util::{FutureExt as _, StreamExt as _};
use serde_json::Value;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use taskgroup::Failure;
use tokio_util::sync::CancellationToken;

/// Memoization keys read per store call.
const MEMO_PAGE: usize = 1024;

/// A memoizing range: the instances left to run, and their keys.
#[derive(Debug, Default)]
struct Memo {
    to_run: Vec<u64>,
    keys: std::collections::HashMap<u64, String>,
}

/// Counts an executing instance while it lives.
struct Running<'a>(&'a AtomicU64);

impl<'a> Running<'a> {
    fn count(running: &'a AtomicU64) -> Self {
        running.fetch_add(1, Ordering::Relaxed);
        Self(running)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Worker {
    /// Runs the range's instances; once `paused` fires no more start (those running finish and
    /// are recorded), once `cancel` fires nothing more is recorded either.
    pub(super) async fn execute(
        &self,
        item: &WorkItem,
        prepared: &Prepared,
        cancel: &CancellationToken,
        paused: &CancellationToken,
    ) -> crate::Result<()> {
        let windowed = self.with_results(item, prepared).await?;
        let prepared = windowed.as_ref().unwrap_or(prepared);
        let memo = match prepared.memo {
            Some(_) => Some(self.memoized(item, prepared).await?),
            None => None,
        };
        // Without memoization the range is walked as it is, nothing collected.
        let to_run: Box<dyn Iterator<Item = u64> + Send> = match &memo {
            None => Box::new(item.start..item.end),
            Some(memo) => Box::new(memo.to_run.iter().copied()),
        };
        let upstream = self.upstream_results(item, prepared).await?;
        let outcomes = futures_util::stream::iter(to_run)
            .map(|instance| {
                let upstream = upstream
                    .as_ref()
                    .and_then(|rows| rows.get((instance - item.start) as usize));
                self.run_instance(prepared, (instance, upstream), item.attempt, cancel, paused)
            })
            .buffer_unordered(prepared.concurrency);
        let mut outcomes = std::pin::pin!(outcomes.ready_chunks(self.options.batch.max(1)));
        while let Some(batch) = outcomes.next().await {
            let mut tally = Tally::default();
            let batch: Vec<Outcome> = batch
                .into_iter()
                .flatten()
                .map(|(outcome, took)| {
                    tally.attempt(&outcome.status, took);
                    outcome
                })
                .collect();
            prepared.metrics.add(&tally);
            if cancel.is_cancelled() {
                break;
            }
            if let (Some(memo), Some(ttl)) = (&memo, prepared.memo) {
                self.memoize(memo, &batch, ttl).await?;
            }
            self.record(item, batch).await?;
        }
        Ok(())
    }

    /// Offers the range's instances, rendered, to agents of `agent`'s type; an instance that
    /// cannot be rendered fails at once, as it would running.
    pub(super) async fn offer(
        &self,
        item: &WorkItem,
        prepared: &Prepared,
        agent: &events::AgentTask,
    ) -> crate::Result<()> {
        let windowed = self.with_results(item, prepared).await?;
        let prepared = windowed.as_ref().unwrap_or(prepared);
        let upstream = self.upstream_results(item, prepared).await?;
        // A range delivered again offers only what has no outcome of this attempt or later.
        let recorded = retrying("reading recorded outcomes", || {
            self.store
                .outcomes(&item.session, item.task, item.start..item.end)
        })
        .await?;
        let mut items = Vec::new();
        let mut failed = Vec::new();
        for instance in item.start..item.end {
            let done = recorded
                .get((instance - item.start) as usize)
                .and_then(Option::as_ref)
                .is_some_and(|o| o.succeeded() || o.attempt >= item.attempt);
            if done {
                continue;
            }
            let row = upstream
                .as_ref()
                .and_then(|rows| rows.get((instance - item.start) as usize));
            let rendered = match &prepared.expansion {
                Err(error) => Err(error.clone()),
                Ok(expansion) => render_input(expansion, instance, row),
            };
            match rendered {
                Ok(input) => items.push(events::AgentItem {
                    id: crate::agent_tasks::item_id(
                        &item.session,
                        &item.run,
                        item.task,
                        instance,
                        item.attempt,
                    ),
                    kind: agent.kind.clone(),
                    input,
                    claim_timeout_ms: agent.claim_timeout_ms,
                    origin: events::AgentOrigin::Instance {
                        session: item.session.clone(),
                        run: item.run.clone(),
                        group: item.task.group,
                        task: item.task.task,
                        task_id: prepared.task.to_string(),
                        instance,
                        attempt: item.attempt,
                    },
                }),
                Err(failure) => failed.push(Outcome {
                    instance,
                    attempt: item.attempt,
                    status: Status::Failed(failure),
                }),
            }
        }
        retrying("offering work to agents", || self.store.agent_offer(&items)).await?;
        self.record(item, failed).await
    }

    /// For a task depending instance by instance whose executor reads its input: per instance
    /// of the range, the results of the same instance of its upstream tasks, in their order,
    /// or why one cannot be had (it is dispatched only once they succeeded, so that means the
    /// store lost it).
    async fn upstream_results(
        &self,
        item: &WorkItem,
        prepared: &Prepared,
    ) -> crate::Result<Option<Vec<UpstreamRow>>> {
        // Agents get every instance's input whole.
        let reads =
            prepared.agent.is_some() || prepared.executor.as_ref().is_some_and(|e| e.reads_input());
        if prepared.upstream.is_empty() || !reads {
            return Ok(None);
        }
        let mut rows: Vec<UpstreamRow> = (item.start..item.end)
            .map(|_| Ok(Vec::with_capacity(prepared.upstream.len())))
            .collect();
        for upstream in &prepared.upstream {
            let task = events::TaskRef {
                group: item.task.group,
                task: upstream.task,
            };
            let page = retrying("reading upstream results", || {
                self.store
                    .outcomes(&item.session, task, item.start..item.end)
            })
            .await?;
            for (offset, outcome) in page.into_iter().enumerate() {
                let instance = item.start + offset as u64;
                let value = match outcome.map(|o| o.status) {
                    Some(Status::Succeeded(value) | Status::Cached(value)) => Ok(value),
                    Some(Status::Stored(name)) => self.stored_result(&item.session, &name).await?,
                    _ => Err(Failure::permanent(format!(
                        "instance {instance} of task `{}` has no stored success to read as `upstream.{}`",
                        upstream.id, upstream.id
                    ))),
                };
                match (value, rows.get_mut(offset)) {
                    (Ok(value), Some(Ok(row))) => row.push(value),
                    (Err(error), Some(slot @ Ok(_))) => *slot = Err(error),
                    _ => {}
                }
            }
        }
        Ok(Some(rows))
    }

    /// For a task mapping over results kept by reference: the task with the slice of them its
    /// range reads in hand (`None` for any other task).
    async fn with_results(
        &self,
        item: &WorkItem,
        prepared: &Prepared,
    ) -> crate::Result<Option<Prepared>> {
        let (Some(of), Ok(expansion)) = (prepared.results_of, &prepared.expansion) else {
            return Ok(None);
        };
        // An executor that never reads its input needs no result in hand, unless a memo key
        // or an agent's input is rendered from it.
        let reads = prepared.agent.is_some()
            || prepared.memo.is_some()
            || prepared.executor.as_ref().is_some_and(|e| e.reads_input());
        if !reads {
            return Ok(None);
        }
        let needed = expansion.results_needed(item.start..item.end);
        let mut results = Vec::with_capacity((needed.end - needed.start) as usize);
        for range in crate::results::pages(needed.clone()) {
            let page = crate::results::page(self.store.as_ref(), &item.session, of, range, None);
            results.extend(page.await?.into_iter().map(Option::unwrap_or_default));
        }
        let mut windowed = prepared.clone();
        windowed.expansion = Ok(expansion.with_results(needed.start, results));
        Ok(Some(windowed))
    }

    /// A result stored as a blob, or why it cannot be read.
    async fn stored_result(
        &self,
        session: &str,
        name: &str,
    ) -> crate::Result<Result<Value, Failure>> {
        let bytes = retrying("reading an upstream result", || {
            self.store.load_blob(session, name)
        })
        .await?;
        Ok(match bytes {
            None => Err(Failure::permanent(format!(
                "the upstream result {name} is missing from the store"
            ))),
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Failure::permanent(format!("the upstream result {name} is not JSON: {e}"))
            }),
        })
    }

    /// Looks the range's memoization keys up: instances with a stored success are recorded as
    /// `cached` now, the others are left to run (with their keys, to store what succeeds).
    async fn memoized(&self, item: &WorkItem, prepared: &Prepared) -> crate::Result<Memo> {
        let mut memo = Memo::default();
        let Ok(expansion) = &prepared.expansion else {
            // Every instance fails with the planning error when it runs.
            memo.to_run = (item.start..item.end).collect();
            return Ok(memo);
        };
        let mut unkeyed = Vec::new();
        let mut keyed: Vec<(u64, String)> = Vec::new();
        for instance in expansion.range(item.start..item.end) {
            match expansion.memo_key(&instance) {
                Some(Ok(key)) => keyed.push((instance.index(), key)),
                Some(Err(error)) => unkeyed.push(Outcome {
                    instance: instance.index(),
                    attempt: item.attempt,
                    status: Status::Failed(Failure::permanent(format!("memoize.key: {error}"))),
                }),
                None => memo.to_run.push(instance.index()),
            }
        }
        let mut cached = unkeyed;
        for page in keyed.chunks(MEMO_PAGE) {
            let keys: Vec<String> = page.iter().map(|(_, key)| key.clone()).collect();
            let found = retrying("reading memoized results", || self.store.memo_get(&keys)).await?;
            for ((instance, key), found) in page.iter().zip(found) {
                match found {
                    Some(value) => cached.push(Outcome {
                        instance: *instance,
                        attempt: item.attempt,
                        status: Status::Cached(value),
                    }),
                    None => {
                        memo.to_run.push(*instance);
                        memo.keys.insert(*instance, key.clone());
                    }
                }
            }
        }
        memo.to_run.sort_unstable();
        let mut tally = Tally::default();
        for outcome in &cached {
            tally.attempt(&outcome.status, None);
        }
        prepared.metrics.add(&tally);
        for batch in cached.chunks(self.options.batch.max(1)) {
            self.record(item, batch.to_vec()).await?;
        }
        Ok(memo)
    }

    /// Stores the batch's successes under their memoization keys (failures never).
    async fn memoize(
        &self,
        memo: &Memo,
        batch: &[Outcome],
        ttl: Option<std::time::Duration>,
    ) -> crate::Result<()> {
        let entries: Vec<(String, Value)> = batch
            .iter()
            .filter_map(|outcome| match &outcome.status {
                Status::Succeeded(value) => memo
                    .keys
                    .get(&outcome.instance)
                    .map(|key| (key.clone(), value.clone())),
                _ => None,
            })
            .collect();
        if entries.is_empty() {
            return Ok(());
        }
        retrying("storing memoized results", || {
            self.store.memo_put(&entries, ttl)
        })
        .await?;
        Ok(())
    }

    /// Writes outcomes, then announces the accepted ones.
    pub(super) async fn record(&self, item: &WorkItem, batch: Vec<Outcome>) -> crate::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        // What the notice needs, taken before the outcomes move into the store.
        let summary: Vec<Announced> = batch
            .iter()
            .map(|outcome| {
                (
                    outcome.instance,
                    outcome.attempt,
                    outcome.status.failure().cloned(),
                )
            })
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
                    Some(failure) => notice.add_failure(*instance, *attempt, failure),
                }
            }
            notice
        };
        // Announced with the writes when the whole batch is accepted, as it nearly always is.
        let whole = events::encode("a notice", &notice(&vec![true; batch.len()]))?;
        // An outage is waited out: the range's offset is not committed until its outcomes are in.
        let accepted = retrying("recording outcomes", || {
            self.store
                .record_outcomes(&item.session, item.task, &item.run, &batch, Some(&whole))
        })
        .await?;
        if accepted.iter().all(|&a| a) {
            return Ok(());
        }
        if accepted.iter().all(|&a| !a) {
            tracing::debug!(session = %item.session, run = %item.run, group = item.task.group, task = item.task.task, start = item.start, "outcomes refused: recorded before, or the run is not the session's current one");
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

    /// Moves results larger than [`BLOB_THRESHOLD`](crate::results::BLOB_THRESHOLD) out of their outcomes into blobs, so the
    /// outcome hash and the recording calls stay small.
    async fn store_large_results(
        &self,
        item: &WorkItem,
        mut batch: Vec<Outcome>,
    ) -> crate::Result<Vec<Outcome>> {
        for outcome in &mut batch {
            blob_if_large(self.store.as_ref(), &item.session, item.task, outcome).await?;
        }
        Ok(batch)
    }

    /// One attempt of one instance, and how long its executor took (`None` when it did not
    /// run: its input or executor is wrong); `None` when the group was cancelled or the run
    /// paused before it started.
    async fn run_instance(
        &self,
        prepared: &Prepared,
        (instance, upstream): (u64, Option<&UpstreamRow>),
        attempt: u32,
        cancel: &CancellationToken,
        paused: &CancellationToken,
    ) -> Option<(Outcome, Option<std::time::Duration>)> {
        let _permit = prepared.permits.acquire().await.ok()?;
        if cancel.is_cancelled() || paused.is_cancelled() {
            return None;
        }
        let _running = Running::count(&self.running);
        // Nothing here changes on a retry: the instance's input or the worker is wrong.
        let failed = |failure: Failure| {
            let status = Status::Failed(failure);
            Some((
                Outcome {
                    instance,
                    attempt,
                    status,
                },
                None,
            ))
        };
        let expansion = match &prepared.expansion {
            Ok(expansion) => expansion,
            Err(error) => return failed(error.clone()),
        };
        let Some(executor) = &prepared.executor else {
            return failed(Failure::permanent(format!(
                "this worker has no executor `{}`",
                prepared.executor_name
            )));
        };
        let input = if executor.reads_input() {
            match render_input(expansion, instance, upstream) {
                Ok(input) => input,
                Err(error) => return failed(error),
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
        let began = std::time::Instant::now();
        // A panicking executor fails its attempt, with the panic's message; it must not take
        // the range's other outcomes with it (the message would be committed without them).
        let name = &prepared.executor_name;
        let run = AssertUnwindSafe(executor.execute(call))
            .catch_unwind()
            .map(|result| result.unwrap_or_else(|panic| Err(panicked(name, panic.as_ref()))));
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
                        Status::Failed(Failure::timeout(limit))
                    }
                },
                () = cancel.cancelled() => return None,
            },
        };
        let outcome = Outcome {
            instance,
            attempt,
            status,
        };
        Some((outcome, Some(began.elapsed())))
    }
}

/// Instance `instance`'s input, rendered with its upstream instances' results when its task
/// has them; the error says why it cannot be.
fn render_input(
    expansion: &expansion::Expansion,
    instance: u64,
    upstream: Option<&UpstreamRow>,
) -> Result<Value, Failure> {
    let Some(handle) = expansion.get(instance) else {
        return Err(Failure::permanent(format!(
            "instance {instance} is beyond the task's {} instances",
            expansion.len()
        )));
    };
    let rendered = match upstream {
        None => expansion.render(&handle),
        Some(Ok(values)) => expansion.render_with(&handle, values),
        Some(Err(error)) => return Err(error.clone()),
    };
    rendered.map_err(|e| Failure::permanent(e.to_string()))
}

/// The results of one instance's upstream instances, or why they cannot be had.
type UpstreamRow = Result<Vec<Value>, Failure>;

/// What a notice says of one outcome: instance, attempt, and how it failed.
type Announced = (u64, u32, Option<Failure>);

/// The error of an attempt whose executor panicked: transient, so the retry policy applies.
fn panicked(executor: &str, panic: &(dyn std::any::Any + Send)) -> ExecError {
    let message = panic
        .downcast_ref::<&str>()
        .map(|message| message.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_string());
    ExecError::Transient(format!("executor `{executor}` panicked: {message}"))
}

/// The outcome of an executor's attempt.
fn status_of(result: Result<Value, ExecError>) -> Status {
    match result {
        Ok(value) => Status::Succeeded(value),
        Err(error) => Status::Failed(error.into_failure()),
    }
}

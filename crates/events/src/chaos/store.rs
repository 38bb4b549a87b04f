//! The memory store behind a layer of seeded faults: calls that fail, writes whose answer is
//! lost, delays, and pub/sub messages lost or delivered twice.

use super::Dice;
use crate::error::Result;
use crate::memory_store::MemoryStore;
use crate::messages::{Outcome, TaskRecord, TaskRef};
use crate::origin::Origin;
use crate::store::{
    Claim, Contexts, Documents, Fence, Outcomes, RangeStep, Renewal, Results, Runs,
};
use async_trait::async_trait;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const BACKEND: &str = "chaos store";

/// An instance of a session's task: session, task, instance.
type Instance = (String, TaskRef, u64);

/// A [`MemoryStore`] whose calls meet a [`Dice`]'s faults. It also counts, over its whole
/// life, how many times each instance's success was accepted: more than once means an
/// instance was recorded twice (by two runs of one session, say).
#[derive(Debug, Clone)]
pub struct ChaosStore {
    inner: MemoryStore,
    dice: Option<Arc<Dice>>,
    successes: Arc<Mutex<HashMap<Instance, usize>>>,
}

impl ChaosStore {
    /// An empty store whose calls meet `dice`'s faults.
    pub fn new(dice: Arc<Dice>) -> Self {
        Self {
            inner: MemoryStore::new(),
            dice: Some(dice),
            successes: Arc::default(),
        }
    }

    /// The same store without faults: for the harness's own reads and waits.
    pub fn calm(&self) -> Self {
        Self {
            dice: None,
            ..self.clone()
        }
    }

    /// The store underneath, to inspect what it holds.
    pub fn memory(&self) -> &MemoryStore {
        &self.inner
    }

    /// Instances whose success was accepted more than once: (session, task, instance, times).
    pub fn recorded_twice(&self) -> Vec<(String, TaskRef, u64, usize)> {
        let successes = self.successes.lock().map(|s| s.clone()).unwrap_or_default();
        let mut twice: Vec<_> = successes
            .into_iter()
            .filter(|(_, times)| *times > 1)
            .map(|((session, task, instance), times)| (session, task, instance, times))
            .collect();
        twice.sort_by_key(|(session, task, instance, _)| {
            (session.clone(), task.group, task.task, *instance)
        });
        twice
    }

    /// How many successes were accepted in all.
    pub fn successes_recorded(&self) -> usize {
        self.successes.lock().map_or(0, |s| s.values().sum())
    }

    async fn before(&self, what: &str) -> Result<()> {
        match &self.dice {
            Some(dice) => dice.before(BACKEND, what).await,
            None => Ok(()),
        }
    }

    fn after<T>(&self, what: &str, done: Result<T>) -> Result<T> {
        match &self.dice {
            Some(dice) => dice.after(BACKEND, what, done),
            None => done,
        }
    }

    fn roll(&self, p: impl Fn(&super::Faults) -> f64, what: impl FnOnce() -> String) -> bool {
        self.dice
            .as_ref()
            .is_some_and(|dice| dice.roll(p(&dice.faults()), what))
    }
}

/// Runs a store call between the dice's `before` and `after`.
macro_rules! faulty {
    ($self:ident, $what:expr, $call:expr) => {{
        let what = $what;
        $self.before(&what).await?;
        let done = $call.await;
        $self.after(&what, done)
    }};
}

// After the macro, which it uses: the capabilities shared by every session, and pub/sub.
mod shared;

#[async_trait]
impl Runs for ChaosStore {
    async fn claim(
        &self,
        s: &str,
        o: &str,
        at: &Origin,
        token: &str,
        l: Duration,
    ) -> Result<Claim> {
        faulty!(
            self,
            format!("claiming {s}"),
            self.inner.claim(s, o, at, token, l)
        )
    }

    async fn renew(&self, s: &str, o: &str, token: &str, l: Duration) -> Result<Renewal> {
        faulty!(
            self,
            format!("renewing the lease of {s}"),
            self.inner.renew(s, o, token, l)
        )
    }

    async fn release(&self, s: &str, o: &str) -> Result<()> {
        faulty!(
            self,
            format!("releasing the lease of {s}"),
            self.inner.release(s, o)
        )
    }

    async fn start_run(&self, s: &str, run: &str, f: Fence<'_>) -> Result<()> {
        faulty!(
            self,
            format!("starting run {run} of {s}"),
            self.inner.start_run(s, run, f)
        )
    }

    async fn end_run(&self, s: &str, run: &str, f: Fence<'_>) -> Result<()> {
        faulty!(
            self,
            format!("ending run {run} of {s}"),
            self.inner.end_run(s, run, f)
        )
    }

    async fn current_run(&self, s: &str) -> Result<Option<String>> {
        faulty!(
            self,
            format!("reading the current run of {s}"),
            self.inner.current_run(s)
        )
    }

    async fn request_cancel(&self, s: &str) -> Result<Option<String>> {
        faulty!(
            self,
            format!("cancelling {s}"),
            self.inner.request_cancel(s)
        )
    }

    async fn cancel_requested(&self, s: &str, run: &str) -> Result<bool> {
        faulty!(
            self,
            format!("reading whether {s} was cancelled"),
            self.inner.cancel_requested(s, run)
        )
    }

    async fn request_pause(&self, s: &str, paused: bool) -> Result<Option<String>> {
        faulty!(
            self,
            format!("pausing {s}: {paused}"),
            self.inner.request_pause(s, paused)
        )
    }

    async fn pause_requested(&self, s: &str, run: &str) -> Result<bool> {
        faulty!(
            self,
            format!("reading whether {s} is paused"),
            self.inner.pause_requested(s, run)
        )
    }

    async fn cleanup(&self, s: &str, f: Fence<'_>) -> Result<()> {
        faulty!(self, format!("cleaning up {s}"), self.inner.cleanup(s, f))
    }

    async fn cleanup_run(&self, s: &str, run: &str) -> Result<()> {
        faulty!(
            self,
            format!("cleaning up run {run} of {s}"),
            self.inner.cleanup_run(s, run)
        )
    }
}

#[async_trait]
impl Outcomes for ChaosStore {
    async fn save_task(&self, s: &str, t: TaskRef, r: &TaskRecord, f: Fence<'_>) -> Result<()> {
        faulty!(
            self,
            format!("saving task {t:?} of {s}"),
            self.inner.save_task(s, t, r, f)
        )
    }

    async fn load_task(&self, s: &str, t: TaskRef) -> Result<Option<TaskRecord>> {
        faulty!(
            self,
            format!("loading task {t:?} of {s}"),
            self.inner.load_task(s, t)
        )
    }

    async fn record_outcomes(
        &self,
        s: &str,
        t: TaskRef,
        run: &str,
        outcomes: &[Outcome],
        notice: Option<&[u8]>,
    ) -> Result<Vec<bool>> {
        let what = format!("recording {} outcomes of task {t:?} of {s}", outcomes.len());
        self.before(&what).await?;
        let notice = notice
            .filter(|_| !self.roll(|f| f.drop_notice, || format!("drop the notice of {what}")));
        let accepted = self
            .inner
            .record_outcomes(s, t, run, outcomes, notice)
            .await?;
        if let Ok(mut successes) = self.successes.lock() {
            for (outcome, _) in outcomes
                .iter()
                .zip(&accepted)
                .filter(|(o, a)| **a && o.succeeded())
            {
                *successes
                    .entry((s.to_string(), t, outcome.instance))
                    .or_default() += 1;
            }
        }
        self.after(&what, Ok(accepted))
    }

    async fn outcomes(&self, s: &str, t: TaskRef, r: Range<u64>) -> Result<Vec<Option<Outcome>>> {
        faulty!(
            self,
            format!("reading outcomes of task {t:?} of {s}"),
            self.inner.outcomes(s, t, r)
        )
    }

    async fn outcome_count(&self, s: &str, t: TaskRef) -> Result<u64> {
        faulty!(
            self,
            format!("counting outcomes of task {t:?} of {s}"),
            self.inner.outcome_count(s, t)
        )
    }

    async fn track_range(
        &self,
        s: &str,
        run: &str,
        item: &str,
        step: RangeStep<'_>,
    ) -> Result<Option<u64>> {
        faulty!(
            self,
            format!("tracking range {item} of {s}"),
            self.inner.track_range(s, run, item, step)
        )
    }

    async fn keep_results(&self, s: &str, task: TaskRef, f: Fence<'_>) -> Result<()> {
        faulty!(
            self,
            format!("keeping the results of {s} {task:?}"),
            self.inner.keep_results(s, task, f)
        )
    }

    async fn keep_successes(&self, s: &str, forget: &[TaskRef], f: Fence<'_>) -> Result<u64> {
        faulty!(
            self,
            format!("keeping the successes of {s}"),
            self.inner.keep_successes(s, forget, f)
        )
    }
}

#[async_trait]
impl Contexts for ChaosStore {
    async fn save_context(&self, s: &str, c: &Map<String, Value>, f: Fence<'_>) -> Result<()> {
        faulty!(
            self,
            format!("saving the context of {s}"),
            self.inner.save_context(s, c, f)
        )
    }

    async fn set_context(&self, s: &str, k: &str, v: &Value, f: Fence<'_>) -> Result<()> {
        faulty!(
            self,
            format!("setting context key {k} of {s}"),
            self.inner.set_context(s, k, v, f)
        )
    }

    async fn load_context(&self, s: &str) -> Result<Option<Map<String, Value>>> {
        faulty!(
            self,
            format!("loading the context of {s}"),
            self.inner.load_context(s)
        )
    }

    async fn save_mappings(&self, s: &str, m: &Map<String, Value>, f: Fence<'_>) -> Result<()> {
        faulty!(
            self,
            format!("saving the mappings of {s}"),
            self.inner.save_mappings(s, m, f)
        )
    }

    async fn load_mappings(&self, s: &str) -> Result<Option<Map<String, Value>>> {
        faulty!(
            self,
            format!("loading the mappings of {s}"),
            self.inner.load_mappings(s)
        )
    }
}

#[async_trait]
impl Results for ChaosStore {
    async fn publish_result(&self, s: &str, r: &[u8], a: &[u8], f: Fence<'_>) -> Result<()> {
        faulty!(
            self,
            format!("publishing the result of {s}"),
            self.inner.publish_result(s, r, a, f)
        )
    }

    async fn load_result(&self, s: &str) -> Result<Option<Value>> {
        faulty!(
            self,
            format!("loading the result of {s}"),
            self.inner.load_result(s)
        )
    }

    async fn delete_result(&self, s: &str, f: Fence<'_>) -> Result<()> {
        faulty!(
            self,
            format!("deleting the result of {s}"),
            self.inner.delete_result(s, f)
        )
    }

    async fn save_blob(&self, s: &str, n: &str, b: Vec<u8>) -> Result<()> {
        faulty!(
            self,
            format!("saving blob {n} of {s}"),
            self.inner.save_blob(s, n, b)
        )
    }

    async fn load_blob(&self, s: &str, n: &str) -> Result<Option<Vec<u8>>> {
        faulty!(
            self,
            format!("loading blob {n} of {s}"),
            self.inner.load_blob(s, n)
        )
    }
}

#[async_trait]
impl Documents for ChaosStore {
    async fn save_document(&self, s: &str, run: &str, d: &[u8], f: Fence<'_>) -> Result<()> {
        faulty!(
            self,
            format!("saving the document of run {run} of {s}"),
            self.inner.save_document(s, run, d, f)
        )
    }

    async fn load_document(&self, s: &str) -> Result<Option<(String, Vec<u8>)>> {
        faulty!(
            self,
            format!("loading the document of {s}"),
            self.inner.load_document(s)
        )
    }

    async fn note_action(&self, s: &str, run: &str, note: &str) -> Result<()> {
        faulty!(
            self,
            format!("noting action {run} of {s}"),
            self.inner.note_action(s, run, note)
        )
    }

    async fn action_note(&self, s: &str, run: &str) -> Result<Option<String>> {
        faulty!(
            self,
            format!("reading the note of action {run} of {s}"),
            self.inner.action_note(s, run)
        )
    }

    async fn save_state(&self, s: &str, state: &[u8], replace: bool, f: Fence<'_>) -> Result<()> {
        faulty!(
            self,
            format!("saving the state of {s}"),
            self.inner.save_state(s, state, replace, f)
        )
    }

    async fn load_state(&self, s: &str) -> Result<Option<Vec<u8>>> {
        faulty!(
            self,
            format!("loading the state of {s}"),
            self.inner.load_state(s)
        )
    }

    async fn withdraw(&self, s: &str, mark: &str) -> Result<()> {
        faulty!(
            self,
            format!("withdrawing {s}"),
            self.inner.withdraw(s, mark)
        )
    }

    async fn withdrawal(&self, s: &str) -> Result<Option<String>> {
        faulty!(
            self,
            format!("reading the withdrawal of {s}"),
            self.inner.withdrawal(s)
        )
    }

    async fn end_withdrawal(&self, s: &str, mark: &str) -> Result<()> {
        let ending = self.inner.end_withdrawal(s, mark);
        faulty!(self, format!("ending the withdrawal of {s}"), ending)
    }

    async fn sessions(&self, limit: usize) -> Result<Vec<(String, u64)>> {
        faulty!(
            self,
            "listing sessions".to_string(),
            self.inner.sessions(limit)
        )
    }
}

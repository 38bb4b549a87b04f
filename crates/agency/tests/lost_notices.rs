//! Redis pub/sub is only a wake-up: with every notice lost, the coordinator still finishes the
//! session by reading outcomes from the store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use agency::{Coordinator, Progress, Registry, Worker, WorkerOptions};
use async_trait::async_trait;
use events::{
    Broker, Claim, Fence, MemoryBroker, MemoryStore, Outcome, Store, Subscription, TaskRecord,
    TaskRef,
};
use expansion::Limits;
use serde_json::{json, Map, Value};
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use taskgroup::{Rules, Session};
use tokio_util::sync::CancellationToken;

/// A store whose notices never arrive; everything else is the memory store.
struct DeafStore {
    inner: MemoryStore,
    dropped: AtomicUsize,
}

#[async_trait]
impl Store for DeafStore {
    async fn save_task(
        &self,
        s: &str,
        t: TaskRef,
        r: &TaskRecord,
        f: Fence<'_>,
    ) -> events::Result<()> {
        self.inner.save_task(s, t, r, f).await
    }
    async fn load_task(&self, s: &str, t: TaskRef) -> events::Result<Option<TaskRecord>> {
        self.inner.load_task(s, t).await
    }
    async fn record_outcomes(
        &self,
        s: &str,
        t: TaskRef,
        run: &str,
        o: &[Outcome],
        notice: Option<&[u8]>,
    ) -> events::Result<Vec<bool>> {
        if notice.is_some() {
            self.dropped.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.record_outcomes(s, t, run, o, None).await
    }
    async fn end_run(&self, s: &str, run: &str, f: Fence<'_>) -> events::Result<()> {
        self.inner.end_run(s, run, f).await
    }
    async fn request_pause(&self, s: &str, paused: bool) -> events::Result<Option<String>> {
        self.inner.request_pause(s, paused).await
    }
    async fn pause_requested(&self, s: &str, run: &str) -> events::Result<bool> {
        self.inner.pause_requested(s, run).await
    }
    async fn keep_successes(
        &self,
        s: &str,
        forget: &[TaskRef],
        f: Fence<'_>,
    ) -> events::Result<u64> {
        self.inner.keep_successes(s, forget, f).await
    }
    async fn memo_get(&self, keys: &[String]) -> events::Result<Vec<Option<Value>>> {
        self.inner.memo_get(keys).await
    }
    async fn memo_put(
        &self,
        entries: &[(String, Value)],
        ttl: Option<Duration>,
    ) -> events::Result<()> {
        self.inner.memo_put(entries, ttl).await
    }
    async fn memo_clear(&self, prefix: &str) -> events::Result<u64> {
        self.inner.memo_clear(prefix).await
    }
    async fn track_range(
        &self,
        s: &str,
        run: &str,
        item: &str,
        step: events::RangeStep<'_>,
    ) -> events::Result<Option<u64>> {
        self.inner.track_range(s, run, item, step).await
    }
    async fn start_run(&self, s: &str, run: &str, f: Fence<'_>) -> events::Result<()> {
        self.inner.start_run(s, run, f).await
    }
    async fn current_run(&self, s: &str) -> events::Result<Option<String>> {
        self.inner.current_run(s).await
    }
    async fn request_cancel(&self, s: &str) -> events::Result<Option<String>> {
        self.inner.request_cancel(s).await
    }
    async fn cancel_requested(&self, s: &str, run: &str) -> events::Result<bool> {
        self.inner.cancel_requested(s, run).await
    }
    async fn save_document(
        &self,
        s: &str,
        run: &str,
        d: &[u8],
        f: Fence<'_>,
    ) -> events::Result<()> {
        self.inner.save_document(s, run, d, f).await
    }
    async fn load_document(&self, s: &str) -> events::Result<Option<(String, Vec<u8>)>> {
        self.inner.load_document(s).await
    }
    async fn note_action(&self, s: &str, run: &str, note: &str) -> events::Result<()> {
        self.inner.note_action(s, run, note).await
    }
    async fn action_note(&self, s: &str, run: &str) -> events::Result<Option<String>> {
        self.inner.action_note(s, run).await
    }
    async fn now_ms(&self) -> events::Result<u64> {
        self.inner.now_ms().await
    }
    async fn save_state(
        &self,
        s: &str,
        state: &[u8],
        replace: bool,
        f: Fence<'_>,
    ) -> events::Result<()> {
        self.inner.save_state(s, state, replace, f).await
    }
    async fn load_state(&self, s: &str) -> events::Result<Option<Vec<u8>>> {
        self.inner.load_state(s).await
    }
    async fn sessions(&self, limit: usize) -> events::Result<Vec<(String, u64)>> {
        self.inner.sessions(limit).await
    }
    async fn heartbeat(&self, member: &str, info: &[u8]) -> events::Result<()> {
        self.inner.heartbeat(member, info).await
    }
    async fn members(&self) -> events::Result<Vec<(String, Vec<u8>, u64)>> {
        self.inner.members().await
    }
    async fn forget_member(&self, member: &str) -> events::Result<()> {
        self.inner.forget_member(member).await
    }
    async fn outcomes(
        &self,
        s: &str,
        t: TaskRef,
        r: Range<u64>,
    ) -> events::Result<Vec<Option<Outcome>>> {
        self.inner.outcomes(s, t, r).await
    }
    async fn outcome_count(&self, s: &str, t: TaskRef) -> events::Result<u64> {
        self.inner.outcome_count(s, t).await
    }
    async fn save_context(
        &self,
        s: &str,
        c: &Map<String, Value>,
        f: Fence<'_>,
    ) -> events::Result<()> {
        self.inner.save_context(s, c, f).await
    }
    async fn set_context(&self, s: &str, k: &str, v: &Value, f: Fence<'_>) -> events::Result<()> {
        self.inner.set_context(s, k, v, f).await
    }
    async fn load_context(&self, s: &str) -> events::Result<Option<Map<String, Value>>> {
        self.inner.load_context(s).await
    }
    async fn save_mappings(
        &self,
        s: &str,
        m: &Map<String, Value>,
        f: Fence<'_>,
    ) -> events::Result<()> {
        self.inner.save_mappings(s, m, f).await
    }
    async fn load_mappings(&self, s: &str) -> events::Result<Option<Map<String, Value>>> {
        self.inner.load_mappings(s).await
    }
    async fn publish_result(
        &self,
        s: &str,
        r: &[u8],
        a: &[u8],
        f: Fence<'_>,
    ) -> events::Result<()> {
        self.inner.publish_result(s, r, a, f).await
    }
    async fn load_result(&self, s: &str) -> events::Result<Option<Value>> {
        self.inner.load_result(s).await
    }
    async fn delete_result(&self, s: &str, f: Fence<'_>) -> events::Result<()> {
        self.inner.delete_result(s, f).await
    }
    async fn save_blob(&self, s: &str, n: &str, b: Vec<u8>) -> events::Result<()> {
        self.inner.save_blob(s, n, b).await
    }
    async fn load_blob(&self, s: &str, n: &str) -> events::Result<Option<Vec<u8>>> {
        self.inner.load_blob(s, n).await
    }
    async fn cleanup(&self, s: &str, f: Fence<'_>) -> events::Result<()> {
        self.inner.cleanup(s, f).await
    }
    async fn keep_results(&self, s: &str, t: TaskRef, f: Fence<'_>) -> events::Result<()> {
        self.inner.keep_results(s, t, f).await
    }
    async fn cleanup_run(&self, s: &str, run: &str) -> events::Result<()> {
        self.inner.cleanup_run(s, run).await
    }
    async fn publish(&self, channel: &str, payload: Vec<u8>) -> events::Result<()> {
        if channel.starts_with("agency:notices:") {
            self.dropped.fetch_add(1, Ordering::SeqCst);
            return Ok(());
        }
        self.inner.publish(channel, payload).await
    }
    async fn subscribe(&self, channel: &str) -> events::Result<Box<dyn Subscription>> {
        self.inner.subscribe(channel).await
    }
    async fn claim(
        &self,
        s: &str,
        o: &str,
        at: &events::Origin,
        token: &str,
        l: Duration,
    ) -> events::Result<Claim> {
        self.inner.claim(s, o, at, token, l).await
    }
    async fn renew(
        &self,
        s: &str,
        o: &str,
        token: &str,
        l: Duration,
    ) -> events::Result<events::Renewal> {
        self.inner.renew(s, o, token, l).await
    }
    async fn release(&self, s: &str, o: &str) -> events::Result<()> {
        self.inner.release(s, o).await
    }
    async fn subscribe_pattern(&self, pattern: &str) -> events::Result<Box<dyn Subscription>> {
        self.inner.subscribe_pattern(pattern).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_session_completes_when_every_notice_is_lost() {
    let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new());
    let deaf = Arc::new(DeafStore {
        inner: MemoryStore::new(),
        dropped: AtomicUsize::new(0),
    });
    let store: Arc<dyn Store> = deaf.clone();
    let registry = Registry::builtin(broker.clone());
    let shutdown = CancellationToken::new();
    let worker = Worker::new(
        broker.clone(),
        store.clone(),
        registry.clone(),
        WorkerOptions::default(),
    );
    let running = tokio::spawn(worker.run(shutdown.clone()));

    let doc = json!({"session_id": "deaf", "groups": [
        {"id": "a", "tasks": [{"id": "xs", "executor": "echo", "input": {
            "n": "{{x}}", "xs": [1, 2, 3], "expansion_config": {"type": "array", "array_mapping": {"x": "xs"}}
        }}]},
        {"id": "b", "depends_on": ["a"], "tasks": [{"id": "count", "executor": "echo", "input": "{{context.xs}}"}]}
    ]});
    let rules = Rules {
        limits: Limits::default(),
        executors: Some(registry.names()),
    };
    let session = Session::from_json(&doc.to_string(), &rules).unwrap();
    let coordinator = Coordinator::new(broker, store, Limits::default());
    let result = coordinator
        .run(
            &session,
            "deaf",
            &Progress::default(),
            CancellationToken::new(),
        )
        .await
        .unwrap()
        .to_json();
    shutdown.cancel();
    running.await.unwrap().unwrap();

    assert_eq!(result["status"], "completed", "{result:#}");
    assert_eq!(result["context"]["count"].as_array().unwrap().len(), 3);
    assert!(
        deaf.dropped.load(Ordering::SeqCst) >= 2,
        "notices were published and lost"
    );
}

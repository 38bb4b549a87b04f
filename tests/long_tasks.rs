//! A worker whose ranges run longer than Kafka's `max.poll.interval.ms` keeps its place in the
//! consumer group (it pauses its partitions at its limit and keeps polling), so nothing is
//! redelivered and nothing runs twice. Worker and coordinator run in this process over the real
//! broker and Redis, with a short poll interval.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use agency::{Coordinator, Progress, Registry, Worker, WorkerOptions};
use async_trait::async_trait;
use events::{Broker, KafkaBroker, KafkaOptions, Namespaced, RedisStore, Store};
use expansion::Limits;
use integration_tests::{redis_url, unique};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use taskgroup::{Rules, Session};
use tokio_util::sync::CancellationToken;

/// Sleeps, counting how many times it was called.
struct CountedNap {
    calls: Arc<AtomicU64>,
    nap: Duration,
}

#[async_trait]
impl agency::executors::Executor for CountedNap {
    async fn execute(&self, _call: agency::executors::Call) -> Result<Value, agency::ExecError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.nap).await;
        Ok(json!("rested"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_longer_than_the_poll_interval_run_once() {
    // The shortest interval librdkafka accepts with this session timeout; each range naps longer.
    let options = KafkaOptions {
        session_timeout: Duration::from_secs(6),
        max_poll_interval: Duration::from_secs(6),
        ..integration_tests::kafka_options()
    };
    let kafka: Arc<dyn Broker> = Arc::new(KafkaBroker::connect(options).unwrap());
    let broker: Arc<dyn Broker> = Arc::new(Namespaced::new(kafka, &format!("{}.", unique("long"))));
    let store: Arc<dyn Store> = Arc::new(RedisStore::connect(&redis_url()).await.unwrap());

    let calls = Arc::new(AtomicU64::new(0));
    let mut registry = Registry::builtin(broker.clone());
    registry.register(
        "counted_nap",
        CountedNap {
            calls: calls.clone(),
            nap: Duration::from_secs(8),
        },
    );
    let shutdown = CancellationToken::new();
    // One range at a time: the worker sits at its limit while a range naps.
    let worker = Worker::new(
        broker.clone(),
        store.clone(),
        registry.clone(),
        WorkerOptions {
            ranges_in_flight: 1,
            ..WorkerOptions::default()
        },
    );
    let working = tokio::spawn(worker.run(shutdown.clone()));

    let id = unique("long-session");
    let doc = json!({"session_id": id, "groups": [{"id": "g", "tasks": [{"id": "naps", "executor": "counted_nap", "input": {
        "ns": [1, 2], "expansion_config": {"type": "array", "array_mapping": {"n": "ns"}}
    }}]}]});
    let rules = Rules {
        limits: Limits::default(),
        executors: Some(registry.names()),
    };
    let session = Session::from_json(&doc.to_string(), &rules).unwrap();
    // One instance per range: two ranges, one after the other on the one worker.
    let coordinator = Coordinator::new(broker, store, Limits::default()).with_chunk(1);
    let result = tokio::time::timeout(
        Duration::from_secs(120),
        coordinator.run(
            &session,
            &id,
            &Progress::default(),
            CancellationToken::new(),
        ),
    )
    .await
    .expect("the session finishes")
    .unwrap()
    .to_json();
    shutdown.cancel();
    working.await.unwrap().unwrap();

    assert_eq!(result["status"], "completed", "{result:#}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "each instance ran once: no range was redelivered"
    );
}

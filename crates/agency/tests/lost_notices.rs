//! Redis pub/sub is only a wake-up: with every notice lost, the coordinator still finishes the
//! session by reading outcomes from the store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use agency::{Coordinator, Progress, Registry, Worker, WorkerOptions};
use events::chaos::{ChaosStore, Dice, Faults};
use events::{Broker, MemoryBroker, Store};
use expansion::Limits;
use serde_json::json;
use std::sync::Arc;
use taskgroup::{Rules, Session};
use tokio_util::sync::CancellationToken;

#[tokio::test(start_paused = true)]
async fn a_session_completes_when_every_notice_is_lost() {
    let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new());
    // Every notice a worker sends and every pub/sub message is lost; nothing else fails.
    let faults = Faults {
        drop_notice: 1.0,
        ..Faults::default()
    };
    let dice = Arc::new(Dice::new(1, faults));
    let store: Arc<dyn Store> = Arc::new(ChaosStore::new(dice.clone()));
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
    let dropped = dice
        .log()
        .iter()
        .filter(|fault| fault.starts_with("drop the notice"))
        .count();
    assert!(dropped >= 2, "notices were sent and lost: {:?}", dice.log());
}

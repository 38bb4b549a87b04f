//! The conformance suite against the in-memory twins.

use events::{conformance, MemoryBroker, MemoryStore, Namespaced};
use std::sync::Arc;

#[tokio::test]
async fn memory_store_conforms() {
    conformance::store_suite(&MemoryStore::new(), "memory-session").await;
}

/// The sessions the runs suite cleans up leave nothing in memory, and the others hold no working
/// state of their own: a run started, cancelled or paused is not working state.
#[tokio::test]
async fn memory_store_cleanup_leaves_nothing_behind() {
    let store = MemoryStore::new();
    conformance::runs_suite(&store, "memory-runs").await;
    assert_eq!(store.working_sessions(), 0);
}

#[tokio::test]
async fn memory_store_keeps_successes_for_a_rerun() {
    conformance::rerun_suite(&MemoryStore::new(), "memory-rerun").await;
}

#[tokio::test]
async fn memory_store_keeps_results_by_reference() {
    conformance::kept_results_suite(&MemoryStore::new(), "memory-kept").await;
}

#[tokio::test]
async fn memory_store_memoizes() {
    conformance::memo_suite(&MemoryStore::new(), "memo:").await;
}

#[tokio::test]
async fn memory_store_claims_conform() {
    conformance::claim_suite(&MemoryStore::new(), "memory-claim").await;
}

#[tokio::test]
async fn memory_broker_conforms() {
    conformance::broker_suite(&MemoryBroker::new(), "memory-topic").await;
}

#[tokio::test]
async fn a_namespaced_broker_conforms_and_stays_in_its_namespace() {
    let shared = Arc::new(MemoryBroker::new());
    let namespaced = Namespaced::new(shared.clone(), "ns1.");
    conformance::broker_suite(&namespaced, "topic").await;
    // The messages went to the prefixed topic: the plain one is empty.
    use events::Broker as _;
    assert_eq!(namespaced.qualified("topic"), "ns1.topic");
    assert_eq!(shared.ends("topic").await.unwrap(), []);
    shared
        .publish("topic", "k", b"plain".to_vec())
        .await
        .unwrap();
    let mut plain = shared.subscribe("topic", "check").await.unwrap();
    assert_eq!(plain.next().await.unwrap().payload, b"plain");
}

#[tokio::test]
async fn memory_agent_queue_conforms() {
    conformance::agent_suite(&MemoryStore::new(), "memory-agents").await;
}

#[tokio::test]
async fn memory_task_manager_conforms() {
    conformance::task_suite(&MemoryStore::new(), "memory-tasks").await;
}

#[tokio::test]
async fn memory_claims_and_listings_conform() {
    let store = MemoryStore::new();
    conformance::workflow_claim_suite(&store, "memory-wanted").await;
    conformance::listing_suite(&store, "memory-listing").await;
    conformance::any_claim_suite(&MemoryStore::new(), "memory-any").await;
}

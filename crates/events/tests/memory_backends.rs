//! The conformance suite against the in-memory twins.

use events::{conformance, MemoryBroker, MemoryStore};

#[tokio::test]
async fn memory_store_conforms() {
    let store = MemoryStore::new();
    conformance::store_suite(&store, "memory-session").await;
    assert_eq!(store.working_sessions(), 0);
}

#[tokio::test]
async fn memory_broker_conforms() {
    conformance::broker_suite(&MemoryBroker::new(), "memory-topic").await;
}

//! The shared store suites on a real Redis Cluster (three masters, three replicas:
//! `scripts/services.sh up --redis-cluster`), as `tests/backends.rs` runs them on one Redis.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use events::{conformance, RedisStore};
use integration_tests::{redis_cluster_nodes, unique};

async fn cluster() -> RedisStore {
    RedisStore::connect_cluster(&redis_cluster_nodes())
        .await
        .expect("the Redis Cluster answers (run scripts/services.sh up --redis-cluster)")
}

#[tokio::test]
async fn the_store_conforms_on_a_cluster() {
    conformance::store_suite(&cluster().await, &unique("cluster-conformance")).await;
}

#[tokio::test]
async fn claims_conform_on_a_cluster() {
    conformance::claim_suite(&cluster().await, &unique("cluster-claim")).await;
}

#[tokio::test]
async fn reruns_conform_on_a_cluster() {
    conformance::rerun_suite(&cluster().await, &unique("cluster-rerun")).await;
}

#[tokio::test]
async fn memoization_conforms_on_a_cluster() {
    conformance::memo_suite(&cluster().await, &format!("{}:", unique("cluster-memo"))).await;
}

#[tokio::test]
async fn the_agent_queue_conforms_on_a_cluster() {
    conformance::agent_suite(&cluster().await, &unique("cluster-agents")).await;
}

#[tokio::test]
async fn the_task_manager_conforms_on_a_cluster() {
    conformance::task_suite(&cluster().await, &unique("cluster-tasks")).await;
}

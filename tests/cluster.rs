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
async fn kept_results_conform_on_a_cluster() {
    conformance::kept_results_suite(&cluster().await, &unique("cluster-kept")).await;
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
    conformance::workflow_claim_suite(&cluster().await, &unique("cluster-wanted")).await;
    conformance::listing_suite(&cluster().await, &unique("cluster-listing")).await;
}

/// A coordinator and two workers on the cluster (`AGENCY_REDIS_CLUSTER`): a session with a
/// fan-out and retries completes, each instance counted once, its result on the cluster and
/// none on the single Redis.
#[test]
fn a_fleet_on_the_cluster_runs_a_session_with_fan_outs_and_retries() {
    use integration_tests::{kafka_brokers, redis_url, Cluster};
    use serde_json::json;
    let nodes = redis_cluster_nodes().join(",");
    let cluster = Cluster::start_configured(
        "on-cluster",
        &["coordinator", "worker", "worker"],
        &kafka_brokers(),
        &redis_url(),
        &[("AGENCY_REDIS_CLUSTER", &nodes)],
    );
    let id = unique("on-cluster");
    let ns: Vec<u32> = (0..200).collect();
    let session = json!({"session_id": id, "groups": [
        {"id": "fan", "tasks": [
            {"id": "echoes", "executor": "echo", "input": {"ns": ns, "expansion_config": {"type": "array", "array_mapping": {"n": "ns"}}}},
            {"id": "flaky", "executor": "fail", "retry": {"max_retries": 1, "retry_delays": [10]},
             "input": {"times": 1, "ns": (0..50).collect::<Vec<u32>>(), "expansion_config": {"type": "array", "array_mapping": {"n": "ns"}}}}
        ]},
        {"id": "after", "depends_on": ["fan"], "tasks": [{"id": "count", "executor": "echo", "input": "{{context.echoes}}"}]}
    ]});
    let (code, result) = cluster.submit_wait(&session);
    assert_eq!(code, 0, "{result}");
    assert_eq!(result["status"], "completed");
    let tasks = &result["groups"]["fan"]["tasks"];
    assert_eq!(
        (
            tasks["echoes"]["succeeded"].clone(),
            tasks["echoes"]["attempts"].clone()
        ),
        (json!(200), json!(200))
    );
    assert_eq!(
        (
            tasks["flaky"]["succeeded"].clone(),
            tasks["flaky"]["attempts"].clone()
        ),
        (json!(50), json!(100))
    );
    assert_eq!(
        result["context"]["count"].as_array().map(Vec::len),
        Some(200)
    );

    let key = format!("agency:result:{{{id}}}");
    let on_cluster = redis::cluster::ClusterClient::new(
        redis_cluster_nodes()
            .iter()
            .map(|n| format!("redis://{n}"))
            .collect::<Vec<_>>(),
    )
    .unwrap()
    .get_connection()
    .unwrap();
    let mut on_cluster = on_cluster;
    let stored: Option<String> = redis::cmd("GET").arg(&key).query(&mut on_cluster).unwrap();
    assert!(stored.is_some(), "the result is on the cluster");
    let mut single = redis::Client::open(redis_url())
        .unwrap()
        .get_connection()
        .unwrap();
    let elsewhere: Option<String> = redis::cmd("GET").arg(&key).query(&mut single).unwrap();
    assert!(elsewhere.is_none(), "nothing of it on the single Redis");
    // `agency status` reads it from the cluster too.
    let status = cluster
        .command(&["status", &id, "--json"])
        .output()
        .unwrap();
    let shown: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(shown["status"], "completed");
}

/// Results kept by reference on the cluster: the outcome hash kept past the session's end, read
/// by workers and by `agency results`.
#[test]
fn results_kept_by_reference_work_on_the_cluster() {
    use integration_tests::{kafka_brokers, redis_url, results_kept_by_reference_on, Cluster};
    let nodes = redis_cluster_nodes().join(",");
    let fleet = Cluster::start_configured(
        "kept-cluster",
        &["coordinator", "worker", "worker"],
        &kafka_brokers(),
        &redis_url(),
        &[("AGENCY_REDIS_CLUSTER", &nodes)],
    );
    results_kept_by_reference_on(&fleet);
}

/// A failover case: a cluster of the test's own, a coordinator and two workers on it, and a
/// session of `n` naps of 50 ms (4 at a time on each worker) submitted; the session's id and
/// the key of its outcomes. The fleet is stopped before the cluster.
struct Failover {
    fleet: integration_tests::Cluster,
    redis: integration_tests::OwnRedisCluster,
    id: String,
    outcomes: String,
    n: u32,
}

impl Failover {
    fn start(name: &str, n: u32) -> Self {
        use integration_tests::{kafka_brokers, redis_url, Cluster, OwnRedisCluster};
        let redis = OwnRedisCluster::start(name);
        let nodes = redis.nodes().join(",");
        let fleet = Cluster::start_configured(
            name,
            &["coordinator", "worker", "worker"],
            &kafka_brokers(),
            &redis_url(),
            &[("AGENCY_REDIS_CLUSTER", &nodes)],
        );
        let id = unique(name);
        let session = serde_json::json!({"session_id": id, "groups": [{"id": "g", "tasks": [{"id": "naps",
            "executor": "sleep", "concurrency": 4, "input": {"ms": 50, "ns": (0..n).collect::<Vec<u32>>(),
            "expansion_config": {"type": "array", "array_mapping": {"n": "ns"}}}}]}]});
        fleet.submit(&session);
        let outcomes = format!("agency:{{{id}}}:outcomes:0:0");
        Self {
            fleet,
            redis,
            id,
            outcomes,
            n,
        }
    }

    /// The master serving the session's slot.
    fn master(&self) -> u16 {
        self.redis
            .master_of(&format!("{{{}}}", self.id), self.redis.ports[0])
    }

    /// Waits until node `port` holds at least `at_least` of the session's outcomes; how many.
    fn recorded(&self, port: u16, at_least: u64) -> u64 {
        use std::time::{Duration, Instant};
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let stored = self.redis.hlen(port, &self.outcomes);
            if stored >= at_least {
                return stored;
            }
            assert!(
                Instant::now() < deadline,
                "{stored} outcomes recorded, waiting for {at_least}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The session's result (`agency watch`), checked: completed, every nap succeeded once, and
    /// every result in place (none read as missing).
    fn completes(&self) {
        use serde_json::{json, Value};
        let watched = self
            .fleet
            .command(&["watch", &self.id, "--timeout", "180"])
            .output()
            .unwrap();
        let result: Value = serde_json::from_slice(&watched.stdout).unwrap_or_else(|error| {
            panic!(
                "no result ({error}): {}",
                String::from_utf8_lossy(&watched.stderr)
            )
        });
        assert_eq!(result["status"], "completed", "{result}");
        let naps = &result["groups"]["g"]["tasks"]["naps"];
        assert_eq!(
            (naps["succeeded"].clone(), naps["failed"].clone()),
            (json!(self.n), json!(0)),
            "{naps}"
        );
        let results = result["context"]["naps"].as_array().unwrap();
        assert_eq!(results.len(), self.n as usize);
        let missing = results
            .iter()
            .filter(|result| **result != json!({"slept_ms": 50}))
            .count();
        assert_eq!(missing, 0, "results missing from the context");
    }
}

/// `kill -9` of the master serving a running session's slot, on a cluster of the test's own:
/// its replica is promoted, and the session completes with every instance once in its result.
#[test]
fn a_master_killed_mid_session_fails_over_and_the_session_completes() {
    // About 5 s of naps.
    let case = Failover::start("failover", 800);
    let master = case.master();
    case.recorded(master, 50);
    let waited = case.redis.waits(master);
    case.redis.kill(master);
    case.completes();
    let promoted = case
        .redis
        .ports
        .iter()
        .copied()
        .filter(|port| *port != master)
        .any(|port| case.redis.ok(port));
    assert!(
        promoted,
        "the cluster is ok again without the killed master"
    );
    // The 50 outcomes recorded before the kill waited for a replica (`WAIT` in the recording
    // call's pipeline): only this test's fleet uses this cluster.
    assert!(
        waited > 0,
        "writes waited for a replica before the failover"
    );
}

/// A replica made to miss writes, then promoted: the replication connection of the master
/// serving a running session's slot is cut (nftables drops its packets both ways), so the
/// master goes on acknowledging outcomes its replica never receives (its `WAIT` answers 0:
/// writes stop waiting), and then the master is killed. The promoted replica lacks outcomes the
/// coordinator counted from their notices; the coordinator finds fewer stored than it counted,
/// resumes the run from what the store holds, and the lost instances run again: the session
/// completes with every instance once and every result in place, none read as missing.
#[test]
fn outcomes_a_promoted_replica_missed_are_recorded_again() {
    use integration_tests::network::LinkCut;
    // About 10 s of naps.
    let case = Failover::start("lost-writes", 1600);
    let master = case.master();
    case.recorded(master, 100);
    let (replica, link) = case.redis.replication_link(master);
    let cut = LinkCut::new(master, link);
    let at_cut = case.redis.hlen(master, &case.outcomes);
    let on_master = case.recorded(master, at_cut + 300);
    case.redis.kill(master);
    // Nothing reached the replica after the cut, and nothing is written to it before it is
    // promoted, seconds from now.
    let on_replica = case.redis.hlen(replica, &case.outcomes);
    assert!(
        on_replica < on_master,
        "the replica missed writes: it has {on_replica} outcomes, its master had {on_master}"
    );
    case.completes();
    drop(cut);
}

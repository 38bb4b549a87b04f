//! Apache Kafka failing under a running cluster: the one broker killed and restarted, and one
//! node of a three-node cluster lost for good.
use crate::checker::*;
use integration_tests::*;
use serde_json::json;
use std::time::Duration;

/// A session of 400 naps of 100 ms and a dependent group whose work is dispatched after the
/// fault, on a coordinator (given `coordinator` arguments) and two workers over `kafka`; once 40
/// naps are recorded, `fault` is done to Kafka. Every process rides it out, and the session
/// completes with each instance once and one result. Returns the cluster, for checks of its own.
fn one_session_through(
    kafka: &OwnKafka,
    (name, coordinator): (&str, &[&str]),
    env: &[(&str, &str)],
    case: (&'static str, &'static str),
    fault: impl FnOnce(&mut Cluster),
) -> Cluster {
    let published = Published::listen();
    let mut cluster = Cluster::start_configured(name, &[], &kafka.brokers(), &redis_url(), env);
    cluster.spawn_with("coordinator", coordinator);
    cluster.spawn("worker");
    cluster.spawn("worker");
    let id = unique(name);
    let (instances, ms) = (400, 100);
    let mut doc = naps(&id, instances, ms);
    doc["groups"].as_array_mut().unwrap().push(json!({"id": "after", "depends_on": ["g"],
        "tasks": [{"id": "count", "executor": "echo", "input": {"n": "{{context.naps.0.slept_ms}}"}}]}));
    cluster.submit(&doc);
    wait_for_outcomes(&published.redis, &id, 40);
    let case = Case::inject(case.0, case.1);
    fault(&mut cluster);
    check_one_right_result(&published, &id, instances, ms);
    assert_eq!(
        stored_result(&published.redis, &id, Duration::ZERO)["context"]["count"]["n"],
        json!(ms)
    );
    case.report(&published, &[&id], instances);
    for (n, process) in cluster.processes.iter_mut().enumerate() {
        assert!(process.try_wait().unwrap().is_none(), "process {n} exited");
    }
    cluster
}

/// Issue #13, defect 3 (reliability F8): the broker is killed with `kill -9` mid-session and
/// started again 10 s later with its log kept; no process exits meanwhile.
#[test]
fn a_broker_killed_and_restarted_mid_session_loses_nothing() {
    let kafka = OwnKafka::start("broker-outage");
    let case = (
        "F8 broker killed and restarted",
        "kill -9 of the Apache Kafka broker mid-session, started again 10 s later with its log",
    );
    one_session_through(&kafka, ("broker-outage", &[]), &[], case, |cluster| {
        kafka.kill();
        std::thread::sleep(Duration::from_secs(10));
        for (n, process) in cluster.processes.iter_mut().enumerate() {
            assert!(
                process.try_wait().unwrap().is_none(),
                "process {n} exited during the outage: {}",
                std::fs::read_to_string(cluster.dir.join(format!(
                    "{}-{n}.log",
                    if n == 0 { "coordinator" } else { "worker" }
                )))
                .unwrap_or_default()
            );
        }
        kafka.up();
    });
}

/// Issue #13, defect 3: "a session whose work can no longer arrive must end". The broker is
/// killed with `kill -9` mid-session, its data folder deleted (the log, the consumer groups'
/// offsets, the metadata) and started again empty. The coordinator finds the ranges it
/// dispatched gone and dispatches them again; the workers and the coordinator's intake find
/// their consumers' positions past the end of the new logs and join again. The session
/// completes with each instance once, and a session submitted afterwards runs too.
#[test]
fn a_broker_that_comes_back_without_its_log_loses_nothing() {
    let kafka = OwnKafka::start("broker-wiped");
    let case = (
        "F8 broker restarted without its log",
        "kill -9 of the Apache Kafka broker mid-session, its data deleted, started again empty 5 s later",
    );
    let published = Published::listen();
    // Submitted the moment the broker is back, before any consumer could see its partitions
    // empty: an action landing at the very offset the coordinator's intake had read up to
    // leaves nothing out of range, and nothing lower than seen.
    let right_after: Vec<String> = (0..12).map(|_| unique("right-after-wipe")).collect();
    let cluster = one_session_through(
        &kafka,
        ("broker-wiped", &["--chunk", "5"]),
        &[],
        case,
        |cluster| {
            kafka.kill();
            kafka.wipe();
            std::thread::sleep(Duration::from_secs(5));
            kafka.up();
            for id in &right_after {
                cluster.submit(&naps(id, 20, 10));
            }
        },
    );
    for id in &right_after {
        check_one_right_result(&published, id, 20, 10);
    }
    let id = unique("after-wipe");
    cluster.submit(&naps(&id, 20, 10));
    check_one_right_result(&published, &id, 20, 10);
}

/// Reliability F8 on a cluster: three Apache Kafka nodes, agency's topics replicated three ways
/// (two replicas in sync before a write returns), and one node killed with `kill -9` mid-session
/// and never started again. Partition leadership and the group coordinators move to the other
/// two.
#[test]
fn a_kafka_cluster_losing_a_node_mid_session_loses_nothing() {
    let kafka = OwnKafka::start_nodes("kafka-cluster", 3);
    let case = (
        "F8 a Kafka cluster node lost",
        "kill -9 of one of three Apache Kafka nodes (replication factor 3, min.insync.replicas 2) mid-session, not restarted",
    );
    let env = [("AGENCY_KAFKA_REPLICATION", "3")];
    // Node 1 is the first bootstrap address every process was given.
    let cluster = one_session_through(&kafka, ("kafka-cluster", &[]), &env, case, |_| {
        kafka.kill_node(1)
    });
    let topic = format!("{}agency_dispatch", cluster.namespace);
    assert_eq!(
        replication_of(&kafka.brokers(), &topic),
        (3, "2".to_string()),
        "{topic}: replicas of each partition, min.insync.replicas"
    );
}

/// The replica count of `topic`'s partitions (the same for each) and its `min.insync.replicas`.
fn replication_of(brokers: &str, topic: &str) -> (usize, String) {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let metadata = admin
        .inner()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let replicas: Vec<usize> = metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.replicas().len())
        .collect();
    assert!(
        replicas.iter().all(|&r| r == replicas[0]),
        "{topic}: replicas per partition {replicas:?}"
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let configs = runtime
        .block_on(admin.describe_configs(&[ResourceSpecifier::Topic(topic)], &AdminOptions::new()))
        .unwrap();
    let config = configs.into_iter().next().unwrap().unwrap();
    let in_sync = config
        .get("min.insync.replicas")
        .and_then(|entry| entry.value.clone())
        .unwrap();
    (replicas[0], in_sync)
}

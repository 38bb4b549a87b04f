//! Network partitions (reliability F9-F11): one process runs in a network namespace of its own
//! and is cut off, for 20 s, from Redis or from Kafka while the rest of the cluster reaches both.
//! The namespace's packets to the cut port are dropped (nftables), so its connections neither
//! fail nor answer, as in a real partition; one case resets them instead. Each case runs its own Redis and Kafka on a lab
//! address the namespace can reach (`integration_tests::network`).

use super::checker::*;
use integration_tests::network::{Lab, Netns};
use integration_tests::*;
use serde_json::json;
use std::time::Duration;

/// How long each cut lasts: twice Kafka's 10 s group session timeout and the 10 s lease.
const CUT: Duration = Duration::from_secs(20);

/// Which server the namespaced process is cut off from.
#[derive(Clone, Copy)]
enum Server {
    Redis,
    Kafka,
}

/// How the cut treats what is sent across it.
#[derive(Clone, Copy)]
enum Cut {
    /// Dropped without a word.
    Drop,
    /// Answered with a TCP reset.
    Reset,
}

/// The servers, the namespace and the cluster of one case. Fields drop in order: the processes
/// first, the namespace and the lab address last.
struct Partitioned {
    cluster: Cluster,
    published: Published,
    kafka: OwnKafka,
    redis: OwnRedis,
    netns: Netns,
    _lab: Lab,
}

impl Partitioned {
    /// A coordinator dispatching ranges of 20 and two workers; process `inside` (0 the
    /// coordinator, 1 or 2 a worker) runs in the namespace.
    fn start(name: &str, inside: usize) -> Self {
        let lab = Lab::new();
        let netns = Netns::new(&lab);
        let redis = OwnRedis::start_on(name, &lab.address);
        let kafka = OwnKafka::start_nodes_on(name, 1, &lab.address);
        let published = Published::listen_on(&redis.url());
        let mut cluster = Cluster::start_on_servers(name, &[], &kafka.brokers(), &redis.url());
        for (n, (role, args)) in [
            ("coordinator", &["--chunk", "20"][..]),
            ("worker", &[]),
            ("worker", &[]),
        ]
        .into_iter()
        .enumerate()
        {
            let via: &[&str] = if n == inside { &netns.via() } else { &[] };
            cluster.spawn_via(via, role, args, &[]);
        }
        Self {
            cluster,
            published,
            kafka,
            redis,
            netns,
            _lab: lab,
        }
    }

    /// The port of `server` on the lab address.
    fn port(&self, server: Server) -> u16 {
        match server {
            Server::Redis => self.redis.port,
            Server::Kafka => self.kafka.ports[0],
        }
    }
}

/// A session of 400 naps of 100 ms and a dependent group of 100 more; once 40 naps are
/// recorded, process `inside` is cut off from `server` for [`CUT`], then the cut heals. The
/// first group's ranges are all dispatched before the cut and the second group's during it.
/// Every process rides it out, and the session completes with each instance once and one
/// result.
fn one_session_through_a_cut(
    name: &str,
    case: (&'static str, &'static str),
    inside: usize,
    server: Server,
    how: Cut,
) {
    let mut lab = Partitioned::start(name, inside);
    let id = unique(name);
    let (instances, ms) = (400, 100);
    let mut doc = naps(&id, instances, ms);
    let mores: Vec<u32> = (0..100).collect();
    doc["groups"].as_array_mut().unwrap().push(json!({"id": "after", "depends_on": ["g"],
        "tasks": [{"id": "more", "executor": "sleep", "concurrency": 4,
            "input": {"ms": ms, "ns": mores, "expansion_config": {"type": "array", "array_mapping": {"n": "ns"}}}}]}));
    lab.cluster.submit(&doc);
    wait_for_outcomes(&lab.redis.url(), &id, 40);
    let case = Case::inject(case.0, case.1);
    match how {
        Cut::Drop => lab.netns.cut(&[lab.port(server)]),
        Cut::Reset => lab.netns.refuse(&[lab.port(server)]),
    }
    std::thread::sleep(CUT);
    lab.netns.heal();
    check_one_right_result(&lab.published, &id, instances, ms);
    let stored = stored_result(&lab.redis.url(), &id, Duration::ZERO);
    assert_eq!(
        stored["groups"]["after"]["tasks"]["more"]["succeeded"],
        json!(100),
        "{stored:#}"
    );
    case.report(&lab.published, &[&id], instances);
    for (n, process) in lab.cluster.processes.iter_mut().enumerate() {
        assert!(process.try_wait().unwrap().is_none(), "process {n} exited");
    }
}

/// Reliability F9: a worker cut off from Redis, still reaching Kafka.
#[test]
fn a_worker_cut_off_from_redis_loses_nothing() {
    one_session_through_a_cut(
        "cut-worker-redis",
        (
            "F9 worker cut off from Redis",
            "one of two workers in a network namespace; its packets to Redis dropped (nftables) for 20 s mid-session",
        ),
        1,
        Server::Redis,
        Cut::Drop,
    );
}

/// Reliability F9 with REJECT: a worker whose connections to Redis are reset.
#[test]
fn a_worker_refused_by_redis_loses_nothing() {
    one_session_through_a_cut(
        "refused-worker-redis",
        (
            "F9 worker refused by Redis",
            "one of two workers in a network namespace; its connections to Redis reset (nftables reject with tcp reset) for 20 s mid-session",
        ),
        1,
        Server::Redis,
        Cut::Reset,
    );
}

/// Reliability F10: a worker cut off from Kafka, still reaching Redis. Its group membership
/// lapses, the other worker takes its partitions and runs their ranges again.
#[test]
fn a_worker_cut_off_from_kafka_loses_nothing() {
    one_session_through_a_cut(
        "cut-worker-kafka",
        (
            "F10 worker cut off from Kafka",
            "one of two workers in a network namespace; its packets to Kafka dropped (nftables) for 20 s mid-session",
        ),
        1,
        Server::Kafka,
        Cut::Drop,
    );
}

/// Reliability F11: the coordinator cut off from Redis, still reaching Kafka. It misses the
/// notices of the outcomes recorded meanwhile and its lease lapses; once healed it takes the
/// session again and finishes it from what is stored.
#[test]
fn the_coordinator_cut_off_from_redis_loses_nothing() {
    one_session_through_a_cut(
        "cut-coordinator-redis",
        (
            "F11 coordinator cut off from Redis",
            "the coordinator in a network namespace; its packets to Redis dropped (nftables) for 20 s mid-session",
        ),
        0,
        Server::Redis,
        Cut::Drop,
    );
}

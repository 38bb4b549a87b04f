//! The fault matrix, against Apache Kafka and Redis: each case injects one fault into a running
//! cluster of `agency` processes and checks, with one checker, that every run still ends with
//! exactly one result, the right one.
// Test code: a failed step panics the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod checker;
mod clocks;
mod coordinator;
mod fleet;
mod kafka;
mod network;
mod store;

use checker::*;
use integration_tests::*;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Issue #13, defect 1 (reliability F8): a coordinator paused past its lease while its
/// sessions run. Another takes them over and finishes them; when the paused one wakes up, the
/// store refuses every write it tries for them (its lease token was replaced), so it publishes
/// no second result and overwrites nothing.
#[test]
fn a_coordinator_paused_past_its_lease_publishes_nothing_and_overwrites_nothing() {
    let published = Published::listen();
    let cluster = Cluster::start_with(
        "paused",
        &["coordinator", "coordinator", "worker", "worker"],
    );
    let (instances, ms) = (240, 250);
    let ids: Vec<String> = (0..6).map(|n| unique(&format!("paused-{n}"))).collect();
    for id in &ids {
        cluster.submit(&naps(id, instances, ms));
    }
    // Pause a coordinator once it runs a session, well before any can finish (each takes about
    // 240 x 250 ms / 8 = 7.5 s of sleeping alone): whichever took one first, since the group may
    // give every partition of these sessions to one of the two.
    let logs = [0, 1].map(|n| cluster.dir.join(format!("coordinator-{n}.log")));
    let deadline = Instant::now() + Duration::from_secs(60);
    let (which, log) = loop {
        let taking = logs.iter().enumerate().find(|(_, log)| {
            std::fs::read_to_string(log)
                .unwrap_or_default()
                .contains("session taken")
        });
        if let Some((which, log)) = taking {
            break (which, log.clone());
        }
        assert!(Instant::now() < deadline, "no coordinator took a session");
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_secs(1));
    let paused = cluster.processes[which].id();
    let case = Case::inject(
        "F3 coordinator paused past its lease (zombie coordinator)",
        "kill -STOP one of two coordinators mid-run until the other finished its sessions, then kill -CONT",
    );
    signal(paused, "STOP");
    // Its group membership and its leases lapse (10 s each); the other coordinator takes its
    // sessions over and finishes every session.
    let results: Vec<Value> = ids
        .iter()
        .map(|id| stored_result(&published.redis, id, Duration::from_secs(120)))
        .collect();
    assert!(results.iter().all(|r| r["status"] == "completed"));
    signal(paused, "CONT");
    // Give the woken coordinator time to act on what it saw before the pause: its notices, its
    // renewals, its loops.
    std::thread::sleep(Duration::from_secs(8));
    let taken: usize = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .matches("session taken")
        .count();
    assert!(taken > 0);
    for id in &ids {
        check_one_right_result(&published, id, instances, ms);
    }
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    case.report(&published, &ids, instances);
}

/// Reliability F13 (a): the same `initialize` action produced twice to `agency_action`, back
/// to back (a producer retrying, a client submitting twice). The second is attached to the run
/// the first started: the session runs once, one result is published, and a note in the store
/// says what became of the second action.
#[test]
fn an_action_produced_twice_runs_its_session_once() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};

    let published = Published::listen();
    let cluster = small_ranges_cluster("twice");
    let id = unique("twice");
    let (instances, ms) = (200, 50);
    let action =
        serde_json::json!({"key": id, "action": "initialize", "data": naps(&id, instances, ms)});
    let topic = format!("{}agency_action", cluster.namespace);
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .create()
        .unwrap();
    let case = Case::inject(
        "F13 an action produced twice",
        "the same initialize action produced twice to agency_action, back to back",
    );
    for _ in 0..2 {
        producer
            .send(BaseRecord::to(&topic).key(&id).payload(&action.to_string()))
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    check_one_right_result(&published, &id, instances, ms);
    let stored = stored_result(&published.redis, &id, Duration::ZERO);
    assert_eq!(
        stored["groups"]["g"]["tasks"]["naps"]["attempts"],
        serde_json::json!(instances),
        "each instance ran once"
    );
    // Nothing more comes of the second action.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(published.of(&id).len(), 1, "one result");
    let client = redis::Client::open(published.redis.as_str()).unwrap();
    let notes: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("agency:actions:{{{id}}}"))
        .query(&mut client.get_connection().unwrap())
        .unwrap();
    let run = stored["run"].as_str().unwrap();
    assert_eq!(
        notes.values().collect::<Vec<_>>(),
        [&format!("attached:{run}")],
        "{notes:?}"
    );
    case.report(&published, &[&id], instances);
}

/// One of two workers is stopped by `signal` mid-session; `resume` after 20 s, if given, wakes it
/// again. The other worker never exits (storing an offset for a partition a rebalance just took
/// away is normal), it takes the stopped one's ranges over, and the session completes with each
/// instance once and one result.
fn one_of_two_workers_stops(
    case: (&'static str, &'static str),
    signal_name: &str,
    resume: Option<&str>,
) {
    let name = if resume.is_some() {
        "worker-paused"
    } else {
        "worker-killed"
    };
    let published = Published::listen();
    let mut cluster = small_ranges_cluster(name);
    let id = unique(name);
    let (instances, ms) = (400, 100);
    cluster.submit(&naps(&id, instances, ms));
    wait_for_outcomes(&published.redis, &id, 40);
    let stopped = cluster.processes[1].id();
    let case = Case::inject(case.0, case.1);
    signal(stopped, signal_name);
    if let Some(resume) = resume {
        std::thread::sleep(Duration::from_secs(20));
        signal(stopped, resume);
    }
    check_one_right_result(&published, &id, instances, ms);
    let survivor = &mut cluster.processes[2];
    assert!(
        survivor.try_wait().unwrap().is_none(),
        "the other worker exited: {}",
        std::fs::read_to_string(cluster.dir.join("worker-2.log")).unwrap_or_default()
    );
    case.report(&published, &[&id], instances);
}

/// Issue #13, defect 2 (reliability F1): `kill -9` of one worker mid-session.
#[test]
fn a_worker_killed_mid_session_leaves_the_other_running_and_the_session_completes() {
    one_of_two_workers_stops(
        (
            "F1 worker killed",
            "kill -9 of one of two workers mid-session",
        ),
        "KILL",
        None,
    );
}

/// Issue #13, defect 2 (reliability F3): one worker paused for 20 s, past its group session.
#[test]
fn a_worker_paused_past_its_session_leaves_the_other_running_and_the_session_completes() {
    one_of_two_workers_stops(
        (
            "F3 worker paused past its session",
            "kill -STOP of one of two workers mid-session for 20 s, then kill -CONT",
        ),
        "STOP",
        Some("CONT"),
    );
}

/// Reliability F2: one of two workers gets SIGTERM mid-session. It starts nothing new, lets the
/// ranges it runs finish within its grace period (10 s) and stores their offsets, says so, and
/// exits 0; the other worker does the rest.
#[test]
fn a_worker_stopped_with_sigterm_finishes_its_ranges_and_hands_back_the_rest() {
    let published = Published::listen();
    let mut cluster = small_ranges_cluster("worker-term");
    let id = unique("worker-term");
    let (instances, ms) = (400, 100);
    cluster.submit(&naps(&id, instances, ms));
    wait_for_outcomes(&published.redis, &id, 40);
    let case = Case::inject(
        "F2 worker stopped with SIGTERM",
        "kill -TERM of one of two workers mid-session",
    );
    signal(cluster.processes[1].id(), "TERM");
    let status = wait_for_exit(
        &mut cluster.processes[1],
        Duration::from_secs(30),
        "the worker did not stop within its grace period",
    );
    assert!(status.success(), "{status}");
    let log = std::fs::read_to_string(cluster.dir.join("worker-1.log")).unwrap();
    assert!(log.contains("worker stopping"), "{log}");
    check_one_right_result(&published, &id, instances, ms);
    case.report(&published, &[&id], instances);
}

/// Reliability F13 (b), issue #13 defect 5: every dispatch message of a finished session is
/// delivered again (produced anew) to the workers that ran it, which still hold its planned
/// task. Nothing runs into the store: no working key of the session comes back, and no second
/// result is published.
#[test]
fn dispatch_messages_delivered_again_after_a_session_ended_leave_nothing_behind() {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
    use rdkafka::Message as _;

    let published = Published::listen();
    let cluster = small_ranges_cluster("replayed");
    let id = unique("replayed");
    let (instances, ms) = (200, 10);
    cluster.submit(&naps(&id, instances, ms));
    check_one_right_result(&published, &id, instances, ms);

    // Read every dispatch message of the namespace, and produce each again.
    let topic = format!("{}agency_dispatch", cluster.namespace);
    let reader: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", unique("replay-reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    reader.subscribe(&[&topic]).unwrap();
    let mut messages = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while messages.len() < instances / 20 && Instant::now() < deadline {
        if let Some(Ok(message)) = reader.poll(Duration::from_millis(200)) {
            messages.push((
                message.key().unwrap_or_default().to_vec(),
                message.payload().unwrap_or_default().to_vec(),
            ));
        }
    }
    assert_eq!(
        messages.len(),
        instances / 20,
        "every range was dispatched once"
    );
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .create()
        .unwrap();
    for (key, payload) in &messages {
        producer
            .send(BaseRecord::to(&topic).key(key).payload(payload))
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let case = Case::inject(
        "F13 dispatch delivered again after the session ended",
        "every dispatch message of a finished session produced again to its workers",
    );

    // The workers take them (their log says so) and nothing comes back.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        session_keys(&published.redis, &id),
        [
            format!("agency:{{{id}}}:fence"),
            format!("agency:{{{id}}}:origin")
        ],
        "no working key came back"
    );
    check_one_right_result(&published, &id, instances, ms);
    case.report(&published, &[&id], instances);
}

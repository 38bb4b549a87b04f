//! Fault cases of the worker fleet under load: a rebalance while ranges run (a worker added,
//! then killed: F12), and a worker killed in a 100,000-instance group (F17).

use super::checker::*;
use integration_tests::*;
use serde_json::json;
use std::time::Duration;

/// Reliability F12: a third worker joins while the other two run the session's ranges (the
/// group takes partitions from them to give it some), and is killed with `kill -9` 5 s later,
/// with the session still running (the group gives them back). Every range is run to a recorded end once, and the session
/// completes with each instance once and one result.
#[test]
fn a_worker_added_and_killed_mid_session_rebalances_without_loss() {
    let published = Published::listen();
    let mut cluster = small_ranges_cluster("rebalance");
    let id = unique("rebalance");
    // 400 x 250 ms at 4 at a time per worker: 12.5 s of sleeping on two workers.
    let (instances, ms) = (400, 250);
    cluster.submit(&naps(&id, instances, ms));
    wait_for_outcomes(&published.redis, &id, 40);
    let case = Case::inject(
        "F12 rebalance while ranges run",
        "a third worker started mid-session, kill -9 of it 5 s later",
    );
    let added = cluster.spawn("worker");
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        published.of(&id).is_empty(),
        "the session ended before the added worker was killed"
    );
    signal(cluster.processes[added].id(), "KILL");
    check_one_right_result(&published, &id, instances, ms);
    case.report(&published, &[&id], instances);
    for n in [1, 2] {
        assert!(
            cluster.processes[n].try_wait().unwrap().is_none(),
            "worker {n} exited"
        );
    }
}

/// Reliability F17: one group of 100,000 instances (sleeping 0 ms, 64 at a time per worker) on
/// two workers, one of them killed with `kill -9` once a fifth is recorded. The other takes its
/// ranges over; the result holds all 100,000 results, each counted once.
#[test]
fn a_worker_killed_in_a_hundred_thousand_instance_group_loses_nothing() {
    let published = Published::listen();
    let cluster = Cluster::start_with("hundred-thousand", &["coordinator", "worker", "worker"]);
    let id = unique("hundred-thousand");
    let (instances, ms) = (100_000, 0);
    let mut doc = naps(&id, instances, ms);
    doc["groups"][0]["tasks"][0]["concurrency"] = json!(64);
    cluster.submit(&doc);
    wait_for_outcomes(&published.redis, &id, 20_000);
    let case = Case::inject(
        "F17 worker killed in a 100k-instance group",
        "kill -9 of one of two workers once 20,000 of 100,000 instances are recorded",
    );
    signal(cluster.processes[1].id(), "KILL");
    assert!(
        published.of(&id).is_empty(),
        "the session ended before the worker was killed"
    );
    check_one_right_result(&published, &id, instances, ms);
    case.report(&published, &[&id], instances);
}

/// Reliability F14: a task that kills the worker running it (`kill -9 $PPID` from its child).
/// Each start of its range ends a worker; after three, the fourth worker fails the range
/// instead of running it, and the session ends with one result that says why, instead of the
/// task taking the whole fleet down one worker at a time.
#[test]
fn a_task_that_kills_its_worker_is_failed_after_three_starts() {
    let published = Published::listen();
    let mut cluster = Cluster::start_with(
        "worker-killer",
        &["coordinator", "worker", "worker", "worker", "worker"],
    );
    let id = unique("worker-killer");
    let (instances, ms) = (20, 10);
    // The naps first, so no other range is running when the workers die.
    let mut doc = naps(&id, instances, ms);
    doc["groups"].as_array_mut().unwrap().push(json!({"id": "deadly", "depends_on": ["g"],
        "tasks": [{"id": "killer", "executor": "command", "input": {"argv": ["sh", "-c", "kill -9 $PPID"]}}]}));
    let case = Case::inject(
        "F14 a task that kills its worker",
        "a command whose child runs kill -9 $PPID, on four workers",
    );
    cluster.submit(&doc);
    let stored = stored_result(&published.redis, &id, Duration::from_secs(180));
    assert_eq!(published.of(&id).len(), 1, "one result: {stored:#}");
    assert_eq!(stored["status"], "partial", "{stored:#}");
    assert_eq!(stored["groups"]["g"]["status"], "completed", "{stored:#}");
    let killer = &stored["groups"]["deadly"]["tasks"]["killer"];
    assert_eq!(killer["failed"], 1, "{stored:#}");
    assert!(
        killer
            .to_string()
            .contains("was started by 3 workers and none finished it"),
        "{killer:#}"
    );
    let dead = (1..=4)
        .filter(|&n| cluster.processes[n].try_wait().unwrap().is_some())
        .count();
    assert_eq!(dead, 3, "three workers died, the fourth failed the range");
    case.report(&published, &[&id], instances);
}

//! Reliability F4: the coordinator killed at each phase of a session, by a failpoint
//! (`AGENCY_FAILPOINT`, which exits the process on the spot, as `kill -9` would there). Another
//! coordinator started after it takes the session over; each case checks one right result,
//! each instance once, and no working state left.

use super::checker::*;
use integration_tests::*;
use serde_json::json;
use std::time::{Duration, Instant};

/// Runs a session on a coordinator armed with failpoint `point`; once it has exited there,
/// starts a second coordinator and checks what it makes of the session.
fn killed_at(point: &str, case: (&'static str, &'static str)) {
    let published = Published::listen();
    let mut cluster = Cluster::start_with("crashed", &["worker", "worker"]);
    let id = unique("crashed");
    let (instances, ms) = (100, 20);
    let mut doc = naps(&id, instances, ms);
    doc["groups"].as_array_mut().unwrap().push(json!({"id": "after", "depends_on": ["g"],
        "tasks": [{"id": "count", "executor": "echo", "input": {"n": "{{context.naps.0.slept_ms}}"}}]}));
    let doomed = cluster.spawn_env("coordinator", &[], &[("AGENCY_FAILPOINT", point)]);
    cluster.submit(&doc);
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = cluster.processes[doomed].try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the coordinator never reached {point}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(137), "it exited at the failpoint");
    let case = Case::inject(case.0, case.1);
    cluster.spawn("coordinator");
    check_one_right_result(&published, &id, instances, ms);
    let stored = stored_result(&published.redis, &id, Duration::ZERO);
    assert_eq!(stored["context"]["count"]["n"], json!(ms));
    // The working state goes with the session, whoever ended it.
    let left = [
        format!("agency:{{{id}}}:fence"),
        format!("agency:{{{id}}}:origin"),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    while session_keys(&published.redis, &id) != left {
        assert!(
            Instant::now() < deadline,
            "working state left: {:?}",
            session_keys(&published.redis, &id)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Nothing more is announced once the new coordinator has settled the session.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(published.of(&id).len(), 1);
    case.report(&published, &[&id], instances);
}

#[test]
fn a_coordinator_killed_after_its_first_dispatch_is_taken_over() {
    killed_at(
        "coordinator.dispatched",
        (
            "F4 coordinator killed after its first dispatch",
            "failpoint: exit once the first ranges are published; a second coordinator started",
        ),
    );
}

#[test]
fn a_coordinator_killed_after_writing_a_tasks_context_is_taken_over() {
    killed_at(
        "coordinator.context_written",
        (
            "F4 coordinator killed between groups",
            "failpoint: exit once the first group's results are in the context, before the next group starts; a second coordinator started",
        ),
    );
}

#[test]
fn a_coordinator_killed_after_storing_the_result_leaves_nothing_behind() {
    killed_at(
        "coordinator.result_stored",
        (
            "F4 coordinator killed between result and cleanup",
            "failpoint: exit once the result is stored and announced, before the working state is deleted; a second coordinator started",
        ),
    );
}

#[test]
fn a_coordinator_killed_before_committing_its_action_publishes_nothing_again() {
    killed_at(
        "coordinator.cleaned_up",
        (
            "F4 coordinator killed before committing its action",
            "failpoint: exit once the session is cleaned up, before the action's offset is committed; a second coordinator started",
        ),
    );
}

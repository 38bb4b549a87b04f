//! The session state machine, driven directly: which groups start or are skipped, deadlines,
//! cancel, and the final result, with no runtime, no IO and no clock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Map, Value};
use std::time::Duration;
use taskgroup::{
    Command, Deadline, Event, GroupOutcome, GroupSlot, GroupStatus, ResultStatus, SessionCommand,
    SessionEvent, SessionMachine, SessionResult, Skip, TaskStatus,
};

mod driver;

use driver::{array_task, session, succeed, Driver};

fn group_status(result: &SessionResult, group: &str) -> GroupOutcome {
    result.groups[group].status
}

#[test]
fn dependents_start_after_their_dependencies_complete_and_the_result_is_completed() {
    let mut driver = Driver::new(json!({"groups": [
        {"id": "a", "tasks": [array_task("ta", 3)]},
        {"id": "b", "depends_on": ["a"], "tasks": [array_task("tb", 2)]},
        {"id": "c", "depends_on": ["a", "b"], "tasks": [{"id": "tc", "executor": "x"}]}
    ]}));
    driver.feed(SessionEvent::Start, &succeed);
    assert_eq!(driver.finished, 1);
    assert!(driver.machine.finished());
    let result = driver.result();
    assert_eq!(result.status, ResultStatus::Completed);
    assert!(result.errors.is_empty(), "{:?}", result.errors);
    assert_eq!(result.groups["c"].tasks["tc"].status, TaskStatus::Completed);
    assert_eq!(result.groups["a"].tasks["ta"].attempts, 3);
    assert_eq!(driver.machine.counts().settled, 6);
    let json = result.to_json();
    assert_eq!(
        json["groups"]["b"]["tasks"]["tb"],
        json!({"status": "completed", "instances": 2, "succeeded": 2, "failed": 0, "attempts": 2})
    );
}

#[test]
fn a_failed_group_skips_its_dependents_and_says_why() {
    let mut driver = Driver::new(json!({"groups": [
        {"id": "a", "tasks": [array_task("ta", 4)]},
        {"id": "ok", "tasks": [array_task("tok", 1)]},
        {"id": "b", "depends_on": ["a", "ok"], "tasks": [{"id": "tb", "executor": "x"}]},
        {"id": "c", "depends_on": ["b"], "tasks": [{"id": "tc", "executor": "x"}]}
    ]}));
    driver.feed(SessionEvent::Start, &|task, instance, _| {
        Some(if task == "ta" && instance == 2 {
            Err("boom".into())
        } else {
            Ok(())
        })
    });
    let result = driver.result();
    assert_eq!(result.status, ResultStatus::Partial);
    assert_eq!(group_status(&result, "a"), GroupOutcome::Failed);
    assert_eq!(group_status(&result, "ok"), GroupOutcome::Completed);
    assert_eq!(group_status(&result, "b"), GroupOutcome::Skipped);
    assert_eq!(group_status(&result, "c"), GroupOutcome::Skipped);
    assert!(matches!(
        driver.machine.slots()[3],
        GroupSlot::Skipped(Skip::Blocked)
    ));
    assert_eq!(
        result.errors,
        vec![
            "group `a` task `ta`: 1 instance failed; first, instance 2 after 1 attempt: boom",
            "group `b` skipped: a did not complete",
            "group `c` skipped: b did not complete",
        ]
    );
    // Under fail_fast the task that failed its group says `failed`, and keeps what succeeded.
    let ta = &result.groups["a"].tasks["ta"];
    assert_eq!(ta.status, TaskStatus::Failed);
    assert_eq!(ta.failures[0].instance, 2);
    assert_eq!(driver.machine.cut_short(), vec![(0, 0)]);
}

#[test]
fn an_instance_that_used_up_its_attempts_under_fail_fast_fails_its_task() {
    let mut driver = Driver::new(json!({"groups": [{"id": "g", "tasks": [
        {"id": "t", "executor": "x", "retry": {"max_retries": 2, "retry_delays": [0]}}
    ]}]}));
    driver.feed(SessionEvent::Start, &|_, _, _| {
        Some(Err("timed out after 10 ms".into()))
    });
    let result = driver.result();
    let t = &result.groups["g"].tasks["t"];
    assert_eq!(
        (t.status, t.attempts, t.failures[0].attempts),
        (TaskStatus::Failed, 3, 3)
    );
    assert_eq!(result.status, ResultStatus::Failed);
    assert_eq!(
        result.to_json()["groups"]["g"]["tasks"]["t"]["status"],
        "failed"
    );
}

#[test]
fn a_group_deadline_stops_only_that_group_and_its_dependents_are_skipped() {
    let mut driver = Driver::new(json!({"groups": [
        {"id": "slow", "timeout_ms": 500, "tasks": [array_task("naps", 3)]},
        {"id": "later", "depends_on": ["slow"], "tasks": [{"id": "never", "executor": "x"}]},
        {"id": "other", "tasks": [array_task("quick", 2)]}
    ]}));
    // Instance 1 never answers.
    let outcome =
        |task: &str, instance: u64, _| (task != "naps" || instance != 1).then_some(Ok(()));
    driver.feed(SessionEvent::Start, &outcome);
    assert_eq!(
        driver.armed,
        vec![(Deadline::Group(0), Duration::from_millis(500))]
    );
    assert!(!driver.machine.finished(), "naps instance 1 still runs");
    assert_eq!(driver.machine.unsettled(), vec![(0, 0, 3)]);
    driver.feed(SessionEvent::Deadline(Deadline::Group(0)), &outcome);
    assert_eq!(driver.finished, 1);
    let result = driver.result();
    assert_eq!(group_status(&result, "slow"), GroupOutcome::TimedOut);
    assert_eq!(group_status(&result, "other"), GroupOutcome::Completed);
    assert_eq!(
        result.groups["slow"].tasks["naps"].status,
        TaskStatus::Incomplete
    );
    assert_eq!(driver.machine.cut_short(), vec![(0, 0)]);
    assert_eq!(result.status, ResultStatus::Partial);
    assert_eq!(
        result.errors,
        vec![
            "group `slow` timed out after 500 ms",
            "group `later` skipped: slow did not complete"
        ]
    );
    // A deadline of a group that already ended changes nothing.
    driver.feed(SessionEvent::Deadline(Deadline::Group(2)), &outcome);
    assert_eq!(driver.finished, 1);
}

#[test]
fn the_session_deadline_stops_every_group_and_explains_no_skip() {
    let mut driver = Driver::new(json!({"timeout_ms": 1000, "groups": [
        {"id": "a", "tasks": [array_task("ta", 2)]},
        {"id": "b", "depends_on": ["a"], "tasks": [{"id": "tb", "executor": "x"}]}
    ]}));
    let outcome = |_: &str, instance: u64, _| (instance == 0).then_some(Ok(()));
    driver.feed(SessionEvent::Start, &outcome);
    assert_eq!(
        driver.armed,
        vec![(Deadline::Session, Duration::from_millis(1000))]
    );
    driver.feed(SessionEvent::Deadline(Deadline::Session), &outcome);
    let result = driver.result();
    assert_eq!(group_status(&result, "a"), GroupOutcome::TimedOut);
    assert_eq!(group_status(&result, "b"), GroupOutcome::Skipped);
    assert!(matches!(
        driver.machine.slots()[1],
        GroupSlot::Skipped(Skip::Stopped)
    ));
    assert_eq!(result.errors, vec!["session timed out after 1000 ms"]);
    assert_eq!(result.status, ResultStatus::Partial);
    // A second stop is ignored: one error, one finish.
    driver.feed(SessionEvent::Cancel, &outcome);
    assert_eq!((driver.finished, driver.result().errors.len()), (1, 1));
}

#[test]
fn cancel_stops_running_groups_and_cancels_their_work() {
    let session = session(json!({"groups": [
        {"id": "a", "tasks": [array_task("ta", 2)]},
        {"id": "b", "tasks": [array_task("tb", 2)]}
    ]}));
    let mut machine = SessionMachine::new(&session, 10);
    machine.handle(SessionEvent::Start);
    for group in 0..2 {
        machine.handle(SessionEvent::Group {
            group,
            event: Event::Planned {
                task: 0,
                instances: 2,
                format: None,
                now: Duration::ZERO,
            },
        });
    }
    let commands = machine.handle(SessionEvent::Cancel);
    assert_eq!(
        commands,
        vec![
            SessionCommand::Group {
                group: 0,
                command: Command::Cancel
            },
            SessionCommand::Ended {
                group: 0,
                status: GroupStatus::Cancelled
            },
            SessionCommand::Group {
                group: 1,
                command: Command::Cancel
            },
            SessionCommand::Ended {
                group: 1,
                status: GroupStatus::Cancelled
            },
            SessionCommand::Finish,
        ]
    );
    let result = machine.result("s", Map::new());
    assert_eq!(group_status(&result, "a"), GroupOutcome::Cancelled);
    assert_eq!(result.status, ResultStatus::Cancelled);
    assert_eq!(result.errors, vec!["cancelled before the session finished"]);
    assert!(
        machine.handle(SessionEvent::Cancel).is_empty(),
        "a finished session ignores events"
    );
}

#[test]
fn a_threshold_tolerates_failures_and_the_task_completes_with_failures() {
    let mut driver = Driver::new(json!({"groups": [
        {"id": "g", "failure_policy": {"threshold": 1}, "tasks": [array_task("t", 4)]},
        {"id": "after", "depends_on": ["g"], "tasks": [{"id": "u", "executor": "x"}]}
    ]}));
    driver.feed(SessionEvent::Start, &|task, instance, _| {
        Some(if task == "t" && instance == 3 {
            Err("no".into())
        } else {
            Ok(())
        })
    });
    let result = driver.result();
    assert_eq!(group_status(&result, "g"), GroupOutcome::Completed);
    assert_eq!(
        result.groups["g"].tasks["t"].status,
        TaskStatus::CompletedWithFailures
    );
    assert_eq!(
        result.groups["after"].tasks["u"].status,
        TaskStatus::Completed
    );
    assert_eq!(result.status, ResultStatus::Completed);
    assert_eq!(
        result.errors.len(),
        1,
        "the failure is still reported: {:?}",
        result.errors
    );
}

#[test]
fn a_task_whose_failures_fail_its_group_is_failed() {
    // Under all_settled every instance runs, and any failure fails the group: the task says
    // so too, not `completed_with_failures` (issue 30, finding 7).
    let mut driver = Driver::new(json!({"groups": [
        {"id": "g", "failure_policy": "all_settled", "tasks": [array_task("t", 2)]},
    ]}));
    driver.feed(SessionEvent::Start, &|_, _, _| Some(Err("no".into())));
    let result = driver.result();
    let task = &result.groups["g"].tasks["t"];
    assert_eq!((task.succeeded, task.failed), (0, 2));
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(group_status(&result, "g"), GroupOutcome::Failed);
    assert_eq!(result.status, ResultStatus::Failed);
    // A threshold the failures pass fails the task too.
    let mut driver = Driver::new(json!({"groups": [
        {"id": "g", "failure_policy": {"threshold": 1}, "tasks": [
            {"id": "t", "executor": "x", "concurrency": 1, "input": {"xs": [1, 2, 3],
                "expansion_config": {"type": "array", "array_mapping": {"x": "xs"}}}},
        ]},
    ]}));
    driver.feed(SessionEvent::Start, &|_, _, _| Some(Err("no".into())));
    let result = driver.result();
    assert_eq!(group_status(&result, "g"), GroupOutcome::Failed);
    assert_ne!(
        result.groups["g"].tasks["t"].status,
        TaskStatus::CompletedWithFailures
    );
}

#[test]
fn the_counts_say_how_many_tasks_are_still_to_be_planned() {
    // The total grows as tasks are planned: the counts say how many may still be, so progress
    // can say its ETA leaves them out (issue 30, finding 9).
    let doc = json!({"groups": [
        {"id": "a", "tasks": [array_task("t1", 3), {"id": "t2", "executor": "x", "depends_on": ["t1"]}]},
        {"id": "b", "depends_on": ["a"], "tasks": [{"id": "u", "executor": "x"}]}
    ]});
    let mut driver = Driver::new(doc.clone());
    driver.feed(SessionEvent::Start, &|_, _, _| None);
    let counts = driver.machine.counts();
    assert_eq!((counts.planned, counts.settled, counts.to_plan), (3, 0, 2));
    let mut driver = Driver::new(doc);
    driver.feed(SessionEvent::Start, &succeed);
    let counts = driver.machine.counts();
    assert_eq!((counts.planned, counts.settled, counts.to_plan), (5, 5, 0));
}

#[test]
fn continue_on_error_lets_dependents_run() {
    let mut driver = Driver::new(json!({"groups": [{"id": "g", "tasks": [
        {"id": "flaky", "executor": "x", "continue_on_error": true},
        {"id": "next", "executor": "x", "depends_on": ["flaky"]}
    ]}]}));
    driver.feed(SessionEvent::Start, &|task, _, _| {
        Some(if task == "flaky" {
            Err("e".into())
        } else {
            Ok(())
        })
    });
    let result = driver.result();
    assert_eq!(group_status(&result, "g"), GroupOutcome::Completed);
    assert_eq!(
        result.groups["g"].tasks["next"].status,
        TaskStatus::Completed
    );
    assert_eq!(
        result.groups["g"].tasks["flaky"].status,
        TaskStatus::CompletedWithFailures
    );
}

#[test]
fn the_result_round_trips_through_json_with_the_same_keys() {
    let mut driver = Driver::new(json!({"groups": [
        {"id": "a", "failure_policy": "all_settled", "tasks": [array_task("ta", 2)]},
        {"id": "b", "depends_on": ["a"], "tasks": [{"id": "tb", "executor": "x"}]}
    ]}));
    driver.feed(SessionEvent::Start, &|_, instance, _| {
        Some(if instance == 0 {
            Err("e".into())
        } else {
            Ok(())
        })
    });
    let json = driver.result().to_json();
    assert_eq!(
        json,
        json!({"session_id": "s", "status": "partial", "context": {}, "groups": {
            "a": {"status": "failed", "tasks": {"ta": {"status": "failed", "instances": 2,
                "succeeded": 1, "failed": 1, "attempts": 2, "failures": [{"instance": 0, "attempts": 1, "error": "e", "kind": "error"}]}}},
            "b": {"status": "skipped", "tasks": {"tb": {"status": "skipped", "instances": 0, "succeeded": 0, "failed": 0, "attempts": 0}}}
        }, "errors": [
            "group `a` task `ta`: 1 instance failed; first, instance 0 after 1 attempt: e",
            "group `b` skipped: a did not complete"
        ]})
    );
    let back: SessionResult = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back.to_json(), json);
}

#[test]
fn a_permanent_failure_is_not_retried_and_says_so() {
    let mut driver = Driver::new(json!({"groups": [{"id": "g", "tasks": [
        {"id": "t", "executor": "x", "retry": {"max_retries": 5, "retry_delays": [0]}}
    ]}]}));
    driver.feed(SessionEvent::Start, &|_, _, _| {
        Some(Err("permanent: bad input".into()))
    });
    let result = driver.result();
    let t = &result.groups["g"].tasks["t"];
    assert_eq!((t.status, t.attempts), (TaskStatus::Failed, 1), "no retry");
    assert!(t.failures[0].permanent);
    assert_eq!(
        result.to_json()["groups"]["g"]["tasks"]["t"]["failures"][0],
        json!({"instance": 0, "attempts": 1, "error": "permanent: bad input", "permanent": true, "kind": "permanent"})
    );
}

#[test]
fn descriptions_names_and_metadata_are_carried_into_live_state_and_the_result() {
    let mut driver = Driver::new(json!({
        "description": "nightly report",
        "metadata": {"owner": "ops", "ticket": 42},
        "groups": [
            {"id": "a", "name": "Fetch", "description": "pull the data", "tasks": [
                {"id": "t", "executor": "x", "name": "Fetch users", "description": "GET /users"}
            ]},
            {"id": "b", "depends_on": ["a"], "tasks": [{"id": "u", "executor": "x"}]}
        ]
    }));
    let live = driver.machine.live("s");
    assert_eq!(live.description.as_deref(), Some("nightly report"));
    assert_eq!(
        serde_json::to_value(&live).unwrap()["groups"]["a"]["name"],
        "Fetch"
    );
    driver.feed(SessionEvent::Start, &succeed);
    let json = driver.result().to_json();
    assert_eq!(json["description"], "nightly report");
    assert_eq!(json["metadata"], json!({"owner": "ops", "ticket": 42}));
    assert_eq!(json["groups"]["a"]["name"], "Fetch");
    assert_eq!(json["groups"]["a"]["description"], "pull the data");
    assert_eq!(json["groups"]["a"]["tasks"]["t"]["name"], "Fetch users");
    assert_eq!(
        json["groups"]["a"]["tasks"]["t"]["description"],
        "GET /users"
    );
    let unlabelled = json["groups"]["b"].as_object().unwrap();
    assert!(
        !unlabelled.contains_key("name") && !unlabelled.contains_key("description"),
        "absent labels stay absent: {unlabelled:?}"
    );
}

fn exit_session(extra: Value) -> Value {
    let mut doc = json!({"groups": [
        {"id": "work", "tasks": [array_task("items", 3)]},
        {"id": "after", "depends_on": ["work"], "tasks": [{"id": "next", "executor": "x"}]},
        {"id": "cleanup", "on_exit": true, "tasks": [{"id": "tidy", "executor": "x",
            "input": {"status": "{{context._session.status}}"}}]}
    ]});
    doc.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    doc
}

#[test]
fn an_exit_handler_runs_last_after_success_and_sees_the_status() {
    let mut driver = Driver::new(exit_session(json!({})));
    driver.feed(SessionEvent::Start, &succeed);
    assert_eq!(driver.started, [0, 1, 2], "the exit handler starts last");
    assert_eq!(driver.written.len(), 1);
    assert_eq!(driver.written[0].0, "_session");
    assert_eq!(
        driver.written[0].1,
        json!({"status": "completed", "errors": [], "groups": {"work": "completed", "after": "completed"}})
    );
    let result = driver.result();
    assert_eq!(result.status, ResultStatus::Completed);
    assert_eq!(group_status(&result, "cleanup"), GroupOutcome::Completed);
}

#[test]
fn an_exit_handler_runs_after_a_failure_and_its_own_failure_never_improves_the_status() {
    let mut driver = Driver::new(exit_session(json!({})));
    driver.feed(SessionEvent::Start, &|task, instance, _| {
        Some(match (task, instance) {
            ("items", 1) => Err("boom".into()),
            ("tidy", _) => Err("cleanup broke".into()),
            _ => Ok(()),
        })
    });
    assert_eq!(
        driver.started,
        [0, 2],
        "`after` is skipped, the exit handler runs"
    );
    let seen = &driver.written[0].1;
    assert_eq!(seen["status"], "partial");
    assert_eq!(
        seen["groups"],
        json!({"work": "failed", "after": "skipped"})
    );
    assert!(
        seen["errors"][0].as_str().unwrap().contains("boom"),
        "{seen}"
    );
    let result = driver.result();
    assert_eq!(
        result.status,
        ResultStatus::Partial,
        "not better, not worse"
    );
    assert_eq!(group_status(&result, "cleanup"), GroupOutcome::Failed);
    assert!(
        result.errors.iter().any(|e| e.contains("cleanup broke")),
        "{:?}",
        result.errors
    );
}

#[test]
fn a_failing_exit_handler_turns_a_completed_session_partial() {
    let mut driver = Driver::new(exit_session(json!({})));
    driver.feed(SessionEvent::Start, &|task, _, _| {
        Some(if task == "tidy" {
            Err("no".into())
        } else {
            Ok(())
        })
    });
    assert_eq!(driver.written[0].1["status"], "completed");
    assert_eq!(driver.result().status, ResultStatus::Partial);
}

#[test]
fn an_exit_handler_runs_after_a_cancel_and_after_the_session_deadline() {
    for stop in [
        SessionEvent::Cancel,
        SessionEvent::Deadline(Deadline::Session),
    ] {
        let mut driver = Driver::new(exit_session(json!({"timeout_ms": 1000})));
        // `items` never answers: the session is stopped while it runs.
        driver.feed(SessionEvent::Start, &|task, _, _| {
            (task != "items").then_some(Ok(()))
        });
        assert_eq!(driver.started, [0]);
        assert_eq!(driver.finished, 0);
        // The exit handler answers as soon as it is dispatched.
        driver.feed(stop.clone(), &succeed);
        assert_eq!(driver.started, [0, 2], "{stop:?}");
        let expected = if stop == SessionEvent::Cancel {
            "cancelled"
        } else {
            "failed"
        };
        assert_eq!(driver.written[0].1["status"], expected, "{stop:?}");
        assert_eq!(driver.finished, 1);
        let result = driver.result();
        assert_eq!(result.status.as_str(), expected);
        assert_eq!(group_status(&result, "cleanup"), GroupOutcome::Completed);
        assert_eq!(group_status(&result, "after"), GroupOutcome::Skipped);
    }
}

#[test]
fn a_cancel_or_the_session_deadline_during_the_exit_handler_does_not_stop_it() {
    let mut driver = Driver::new(exit_session(json!({"timeout_ms": 1000})));
    // Everything but the exit handler answers.
    driver.feed(SessionEvent::Start, &|task, _, _| {
        (task != "tidy").then_some(Ok(()))
    });
    assert_eq!(driver.started, [0, 1, 2]);
    driver.feed(SessionEvent::Cancel, &succeed);
    driver.feed(SessionEvent::Deadline(Deadline::Session), &succeed);
    assert_eq!(driver.finished, 0, "the exit handler still runs");
    assert!(driver.machine.is_running(2));
    assert!(driver.result().errors.is_empty());
}

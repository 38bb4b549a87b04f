//! What the session machine decides for its runtime besides starting and ending groups: pausing
//! and resuming, dispatching again what a broker lost, checking a resumed run's ranges against
//! the store and cutting them around what is recorded, reading back missed notices, the live
//! state, and finishing the result. No runtime, no IO, no clock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod driver;

use driver::{array_task, succeed, Driver};
use serde_json::{json, Map};
use std::time::Duration;
use taskgroup::{
    Event, FinishRead, Finished, InstanceResult, LiveStatus, Range, ResultStatus, RunFacts,
    SessionEvent, SessionMachine, Stored,
};

/// Leaves every dispatched instance running.
fn running(_: &str, _: u64, _: u32) -> Option<Result<(), String>> {
    None
}

fn spans(ranges: &[Range]) -> Vec<(u64, u64, u32)> {
    ranges.iter().map(|r| (r.start, r.end, r.attempt)).collect()
}

const SUCCESS: Stored = Stored {
    attempt: 1,
    succeeded: true,
};

fn one_task(n: u64) -> Driver {
    Driver::new(json!({"groups": [{"id": "g", "tasks": [array_task("t", n)]}]}))
}

/// `n` instances of one task, retried once without delay.
fn retried(n: u64) -> Driver {
    let mut task = array_task("t", n);
    task["retry"] = json!({"max_retries": 1, "retry_delays": [0]});
    let mut driver = Driver::new(json!({"groups": [{"id": "g", "tasks": [task]}]}));
    driver.hold_retries = true;
    driver
}

#[test]
fn nothing_is_dispatched_while_paused_and_resuming_dispatches_the_unsettled_less_the_recorded() {
    let mut driver = one_task(6);
    driver.feed(SessionEvent::Pause, &running);
    driver.feed(SessionEvent::Start, &running);
    assert_eq!(driver.pauses, vec![true]);
    assert!(driver.dispatched.is_empty(), "paused: nothing goes out");
    assert!(driver.machine.paused());
    assert_eq!(driver.machine.live("s").status, LiveStatus::Paused);
    // A second pause changes nothing.
    driver.feed(SessionEvent::Pause, &running);
    assert_eq!(driver.pauses, vec![true]);
    // Instance 2 was recorded by a worker before the pause reached it.
    driver.stored.insert((0, 2), SUCCESS);
    driver.feed(SessionEvent::Resume, &running);
    assert_eq!(driver.pauses, vec![true, false]);
    assert_eq!(spans(&driver.checked), vec![(0, 6, 1)]);
    assert_eq!(spans(&driver.dispatched), vec![(0, 2, 1), (3, 6, 1)]);
    assert_eq!(driver.machine.live("s").status, LiveStatus::Running);
    driver.feed(SessionEvent::Resume, &running);
    assert_eq!(
        driver.pauses,
        vec![true, false],
        "not paused: nothing to resume"
    );
}

#[test]
fn lost_work_is_dispatched_again_except_retries_waiting_for_their_delay() {
    let mut driver = retried(6);
    driver.feed(SessionEvent::Start, &|_, instance, attempt| {
        (instance == 1 && attempt == 1).then(|| Err("flaky".to_string()))
    });
    assert_eq!(driver.retries, vec![(0, 0, 1, 2)]);
    driver.dispatched.clear();
    driver.feed(SessionEvent::WorkLost, &running);
    assert_eq!(spans(&driver.checked), vec![(0, 1, 1), (2, 6, 1)]);
    assert_eq!(spans(&driver.dispatched), vec![(0, 1, 1), (2, 6, 1)]);
    // Once due, the retry goes out on its own, and lost work includes it again.
    driver.dispatched.clear();
    driver.checked.clear();
    let retry = SessionEvent::Group {
        group: 0,
        event: Event::RetryDue {
            task: 0,
            instance: 1,
            attempt: 2,
        },
    };
    driver.feed(retry, &running);
    assert_eq!(spans(&driver.dispatched), vec![(1, 2, 2)]);
    driver.feed(SessionEvent::WorkLost, &running);
    assert_eq!(
        spans(&driver.checked),
        vec![(0, 1, 1), (2, 6, 1), (1, 2, 2)]
    );
}

#[test]
fn lost_work_is_not_dispatched_again_while_paused_or_after_a_cancel() {
    let mut driver = one_task(4);
    driver.feed(SessionEvent::Start, &running);
    driver.feed(SessionEvent::Pause, &running);
    driver.feed(SessionEvent::WorkLost, &running);
    assert!(driver.checked.is_empty());
    driver.feed(SessionEvent::Cancel, &running);
    assert!(driver.machine.finished());
    driver.feed(SessionEvent::WorkLost, &running);
    assert!(driver.checked.is_empty());
}

#[test]
fn a_recorded_outcome_of_an_earlier_attempt_does_not_cover_a_retry() {
    let mut driver = retried(3);
    driver.feed(SessionEvent::Start, &|_, instance, attempt| {
        (instance == 0 && attempt == 1).then(|| Err("flaky".to_string()))
    });
    driver.feed(
        SessionEvent::Group {
            group: 0,
            event: Event::RetryDue {
                task: 0,
                instance: 0,
                attempt: 2,
            },
        },
        &running,
    );
    let failed_once = Stored {
        attempt: 1,
        succeeded: false,
    };
    driver.stored.insert((0, 0), failed_once);
    driver.dispatched.clear();
    driver.feed(SessionEvent::WorkLost, &running);
    assert_eq!(spans(&driver.dispatched), vec![(1, 3, 1), (0, 1, 2)]);
}

#[test]
fn a_resumed_run_checks_every_range_and_reads_back_each_task_it_plans() {
    let doc = json!({"groups": [{"id": "g", "tasks": [array_task("t", 5)]}]});
    let mut driver = Driver::new(doc);
    let facts = RunFacts {
        resuming: true,
        ..RunFacts::default()
    };
    driver.machine = SessionMachine::new(&driver.session, 2).with_facts(facts);
    driver.stored.insert((0, 1), SUCCESS);
    driver.stored.insert((0, 2), SUCCESS);
    driver.feed(SessionEvent::Start, &running);
    assert_eq!(
        spans(&driver.checked),
        vec![(0, 2, 1), (2, 4, 1), (4, 5, 1)]
    );
    assert_eq!(
        spans(&driver.dispatched),
        vec![(0, 1, 1), (3, 4, 1), (4, 5, 1)]
    );
    assert_eq!(driver.read, vec![(0, 0)]);
}

#[test]
fn the_store_is_read_back_for_every_running_task_when_notices_may_be_lost() {
    let mut driver = Driver::new(json!({"groups": [
        {"id": "a", "tasks": [array_task("ta", 2), array_task("done", 1)]},
        {"id": "b", "tasks": [array_task("tb", 2)]}
    ]}));
    driver.feed(SessionEvent::Start, &|task, _, _| {
        (task == "done").then_some(Ok(()))
    });
    driver.feed(SessionEvent::Quiet, &running);
    assert_eq!(driver.read, vec![(0, 0), (1, 0)]);
}

#[test]
fn finishing_lists_or_keeps_the_results_of_tasks_cut_short_and_counts_memoized_ones() {
    let mut listed = array_task("listed", 3);
    listed["memoize"] = json!({"key": "k-{{x}}"});
    let mut kept = array_task("kept", 3);
    kept["inline_results"] = json!({"count": 2});
    let mut driver = Driver::new(json!({"groups": [{"id": "g", "tasks": [listed, kept]}]}));
    let facts = RunFacts {
        started_ms: 1_000,
        reused: Some(4),
        ..RunFacts::default()
    };
    driver.machine = SessionMachine::new(&driver.session, 2).with_facts(facts);
    driver.feed(SessionEvent::Start, &running);
    driver.machine.advance(Duration::from_millis(250));
    driver.feed(SessionEvent::Cancel, &running);
    let reads = driver.machine.finishing();
    assert_eq!(
        reads,
        vec![
            FinishRead::List {
                group: 0,
                task: 0,
                instances: 3
            },
            FinishRead::Keep {
                group: 0,
                task: 1,
                instances: 3
            },
            FinishRead::CountCached {
                group: 0,
                task: 0,
                instances: 3
            },
        ]
    );
    let results = vec![InstanceResult {
        instance: 1,
        result: json!("one"),
    }];
    let answers = vec![
        Finished::Listed {
            group: 0,
            task: 0,
            results: results.clone(),
        },
        Finished::Kept {
            group: 0,
            task: 1,
            reference: json!({"$results": "kept"}),
            count: 2,
        },
        Finished::Cached {
            group: 0,
            task: 0,
            cached: 1,
        },
    ];
    let result = driver.machine.finish("s", Map::new(), answers);
    assert_eq!(result.status, ResultStatus::Cancelled);
    let tasks = &result.groups["g"].tasks;
    assert_eq!(tasks["listed"].results, Some(results));
    assert_eq!((tasks["listed"].succeeded, tasks["listed"].cached), (1, 1));
    assert_eq!(
        tasks["kept"].results_kept,
        Some(json!({"$results": "kept"}))
    );
    assert_eq!(tasks["kept"].succeeded, 2);
    assert_eq!(result.reused, Some(4));
    assert_eq!(
        result.started_at.as_deref(),
        Some("1970-01-01T00:00:01.000Z")
    );
    assert_eq!(
        result.finished_at.as_deref(),
        Some("1970-01-01T00:00:01.250Z")
    );
    assert_eq!(result.duration_ms, Some(250));
    assert_eq!(
        tasks["kept"].duration_ms,
        Some(250),
        "cut short: ran to the end"
    );
}

#[test]
fn the_live_state_has_the_runs_times_rate_timeline_and_latest_failures() {
    let mut driver = Driver::new(json!({"groups": [
        {"id": "g", "failure_policy": {"threshold": 1}, "tasks": [array_task("t", 4)]}
    ]}));
    let facts = RunFacts {
        run: Some("r1".into()),
        submitted_at: Some("then".into()),
        started_ms: 10_000,
        ..RunFacts::default()
    };
    driver.machine = SessionMachine::new(&driver.session, 2).with_facts(facts);
    driver.machine.advance(Duration::from_secs(1));
    driver.feed(SessionEvent::Start, &|_, instance, _| match instance {
        0 => Some(Ok(())),
        1 => Some(Err("no".into())),
        _ => None,
    });
    driver.machine.advance(Duration::from_secs(2));
    let live = driver.machine.live("s");
    assert_eq!(live.run.as_deref(), Some("r1"));
    assert_eq!(live.submitted_at.as_deref(), Some("then"));
    assert_eq!(live.started_at.as_deref(), Some("1970-01-01T00:00:10.000Z"));
    assert_eq!(live.updated_at.as_deref(), Some("1970-01-01T00:00:12.000Z"));
    assert_eq!(live.rate_per_s, Some(1.0), "2 settled in 2 s");
    assert_eq!(live.eta_s, Some(2.0));
    assert_eq!(live.timeline.len(), 1);
    assert_eq!(
        (live.timeline[0].started_ms, live.timeline[0].finished_ms),
        (0, None)
    );
    assert_eq!(live.failures.len(), 1);
    assert_eq!(
        (live.failures[0].instance, live.failures[0].error.as_str()),
        (1, "no")
    );
    // Settled by the runtime's clock: the task's span ends when its last instance did.
    driver.feed(
        SessionEvent::Group {
            group: 0,
            event: Event::Succeeded {
                task: 0,
                instance: 2,
                attempt: 1,
            },
        },
        &succeed,
    );
    driver.machine.advance(Duration::from_secs(3));
    driver.feed(
        SessionEvent::Group {
            group: 0,
            event: Event::Succeeded {
                task: 0,
                instance: 3,
                attempt: 1,
            },
        },
        &succeed,
    );
    let live = driver.machine.live("s");
    assert_eq!(live.timeline[0].finished_ms, Some(3_000));
}

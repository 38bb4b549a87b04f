//! The group state machine, driven directly: events in, commands out.

use std::time::Duration;
use taskgroup::{
    Command, Event, Failure, FailurePolicy, GroupMachine, GroupStatus, RetryPolicy, TaskSetup,
    TaskState, Threshold,
};

fn task(id: &str, deps: &[usize]) -> TaskSetup {
    TaskSetup {
        id: id.into(),
        depends_on: deps.to_vec(),
        each: Vec::new(),
        retry: RetryPolicy::none(),
        continue_on_error: false,
    }
}

/// A task depending instance by instance on `upstream`.
fn each(id: &str, upstream: &[usize]) -> TaskSetup {
    TaskSetup {
        each: upstream.to_vec(),
        ..task(id, &[])
    }
}

fn dispatch(task: usize, start: u64, end: u64) -> Command {
    Command::Dispatch {
        task,
        start,
        end,
        attempt: 1,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn planned(task: usize, instances: u64) -> Event {
    Event::Planned {
        task,
        instances,
        format: None,
        now: Duration::ZERO,
    }
}

fn ok(task: usize, instance: u64) -> Event {
    Event::Succeeded {
        task,
        instance,
        attempt: 1,
    }
}

fn fail(task: usize, instance: u64, attempt: u32) -> Event {
    Event::Failed {
        task,
        instance,
        attempt,
        failure: Failure::error(format!("boom {attempt}")),
        now: Duration::ZERO,
    }
}

#[test]
fn tasks_start_in_dependency_order_and_context_follows_all_instances() {
    let mut machine = GroupMachine::new(
        vec![task("a", &[]), task("b", &[0]), task("c", &[])],
        FailurePolicy::FailFast,
    )
    .with_chunk(2);
    assert_eq!(
        machine.handle(Event::Start),
        vec![Command::Plan { task: 0 }, Command::Plan { task: 2 }]
    );
    assert_eq!(
        machine.handle(planned(0, 3)),
        vec![
            Command::Dispatch {
                task: 0,
                start: 0,
                end: 2,
                attempt: 1
            },
            Command::Dispatch {
                task: 0,
                start: 2,
                end: 3,
                attempt: 1
            },
        ]
    );
    assert_eq!(machine.handle(ok(0, 0)), vec![]);
    assert_eq!(machine.handle(ok(0, 2)), vec![]);
    // A duplicate outcome is ignored: the context is not updated while instance 1 is pending.
    assert_eq!(machine.handle(ok(0, 0)), vec![]);
    assert_eq!(machine.tasks()[0].succeeded, 2);
    assert_eq!(
        machine.handle(ok(0, 1)),
        vec![Command::UpdateContext { task: 0 }]
    );
    // b waits for a's context, not for a's last instance.
    assert_eq!(
        machine.handle(Event::ContextUpdated { task: 0 }),
        vec![Command::Plan { task: 1 }]
    );
    assert_eq!(
        machine.handle(planned(1, 0)),
        vec![Command::UpdateContext { task: 1 }]
    );
    assert_eq!(machine.handle(Event::ContextUpdated { task: 1 }), vec![]);
    assert_eq!(
        machine.handle(planned(2, 1)),
        vec![Command::Dispatch {
            task: 2,
            start: 0,
            end: 1,
            attempt: 1
        }]
    );
    assert_eq!(
        machine.handle(ok(2, 0)),
        vec![Command::UpdateContext { task: 2 }]
    );
    assert_eq!(
        machine.handle(Event::ContextUpdated { task: 2 }),
        vec![Command::Finish {
            status: GroupStatus::Completed
        }]
    );
    assert_eq!(machine.status(), Some(GroupStatus::Completed));
    assert_eq!(
        machine.handle(ok(2, 0)),
        vec![],
        "a finished group ignores events"
    );
}

#[test]
fn outcomes_of_attempts_newer_than_dispatched_count_with_the_attempts_before_them() {
    // A resuming coordinator's machine dispatched attempt 1; its predecessor had retried.
    let mut setup = task("a", &[]);
    setup.retry = RetryPolicy::with_delays(3, vec![ms(100), ms(100), ms(100)]);
    let mut machine = GroupMachine::new(vec![setup], FailurePolicy::FailFast);
    machine.handle(Event::Start);
    machine.handle(planned(0, 2));
    assert_eq!(
        machine.handle(Event::Succeeded {
            task: 0,
            instance: 0,
            attempt: 3
        }),
        vec![]
    );
    // A failure of attempt 2 is retried as attempt 3, not 2 again.
    assert_eq!(
        machine.handle(fail(0, 1, 2)),
        vec![Command::ScheduleRetry {
            task: 0,
            instance: 1,
            attempt: 3,
            delay: ms(100)
        }]
    );
    let run = &machine.tasks()[0];
    assert_eq!((run.succeeded, run.failed, run.attempts), (1, 0, 5));
}

#[test]
fn failures_are_retried_with_the_policy_delays_and_stale_attempts_are_ignored() {
    let mut setup = task("a", &[]);
    setup.retry = RetryPolicy::with_delays(2, vec![ms(100), ms(400)]);
    let mut machine = GroupMachine::new(vec![setup], FailurePolicy::FailFast);
    machine.handle(Event::Start);
    machine.handle(planned(0, 2));
    assert_eq!(
        machine.handle(fail(0, 1, 1)),
        vec![Command::ScheduleRetry {
            task: 0,
            instance: 1,
            attempt: 2,
            delay: ms(100)
        }]
    );
    // A late outcome of attempt 1 (a stale worker) does not count.
    assert_eq!(machine.handle(ok(0, 1)), vec![]);
    assert_eq!(
        machine.handle(Event::RetryDue {
            task: 0,
            instance: 1,
            attempt: 2
        }),
        vec![Command::Dispatch {
            task: 0,
            start: 1,
            end: 2,
            attempt: 2
        }]
    );
    assert_eq!(
        machine.handle(fail(0, 1, 2)),
        vec![Command::ScheduleRetry {
            task: 0,
            instance: 1,
            attempt: 3,
            delay: ms(400)
        }]
    );
    assert_eq!(
        machine.handle(Event::Succeeded {
            task: 0,
            instance: 1,
            attempt: 3
        }),
        vec![]
    );
    assert_eq!(
        machine.handle(ok(0, 0)),
        vec![Command::UpdateContext { task: 0 }]
    );
    let run = &machine.tasks()[0];
    assert_eq!((run.succeeded, run.failed, run.attempts), (2, 0, 4));
}

#[test]
fn fail_fast_cancels_on_the_first_exhausted_instance() {
    let mut machine = GroupMachine::new(
        vec![task("a", &[]), task("b", &[0])],
        FailurePolicy::FailFast,
    );
    machine.handle(Event::Start);
    machine.handle(planned(0, 5));
    assert_eq!(
        machine.handle(fail(0, 3, 1)),
        vec![
            Command::Cancel,
            Command::Finish {
                status: GroupStatus::Failed
            }
        ]
    );
    let run = &machine.tasks()[0];
    assert_eq!(
        run.failures
            .get(&3)
            .map(|f| (f.attempts, f.failure.message.as_str())),
        Some((1, "boom 1"))
    );
    assert_eq!(machine.tasks()[1].state, TaskState::Skipped);
}

#[test]
fn all_settled_runs_everything_and_fails_at_the_end() {
    let mut machine = GroupMachine::new(
        vec![task("a", &[]), task("b", &[0])],
        FailurePolicy::AllSettled,
    );
    machine.handle(Event::Start);
    machine.handle(planned(0, 3));
    assert_eq!(machine.handle(fail(0, 0, 1)), vec![]);
    machine.handle(ok(0, 1));
    assert_eq!(
        machine.handle(ok(0, 2)),
        vec![Command::UpdateContext { task: 0 }]
    );
    // Dependents still run under all_settled.
    assert_eq!(
        machine.handle(Event::ContextUpdated { task: 0 }),
        vec![Command::Plan { task: 1 }]
    );
    machine.handle(planned(1, 1));
    machine.handle(ok(1, 0));
    assert_eq!(
        machine.handle(Event::ContextUpdated { task: 1 }),
        vec![Command::Finish {
            status: GroupStatus::Failed
        }]
    );
}

#[test]
fn threshold_tolerates_failures_up_to_the_limit() {
    let run = |failures: u64| {
        let mut machine = GroupMachine::new(
            vec![task("a", &[])],
            FailurePolicy::Threshold(Threshold::Count(2)),
        );
        machine.handle(Event::Start);
        machine.handle(planned(0, 4));
        let mut last = Vec::new();
        for i in 0..4 {
            last = if i < failures {
                machine.handle(fail(0, i, 1))
            } else {
                machine.handle(ok(0, i))
            };
            if machine.status().is_some() {
                return machine.status();
            }
        }
        assert_eq!(last, vec![Command::UpdateContext { task: 0 }]);
        machine.handle(Event::ContextUpdated { task: 0 });
        machine.status()
    };
    assert_eq!(run(2), Some(GroupStatus::Completed));
    assert_eq!(run(3), Some(GroupStatus::Failed));

    let mut machine = GroupMachine::new(
        vec![task("a", &[])],
        FailurePolicy::Threshold(Threshold::Fraction(0.5)),
    );
    machine.handle(Event::Start);
    machine.handle(planned(0, 4));
    machine.handle(fail(0, 0, 1));
    machine.handle(fail(0, 1, 1));
    assert_eq!(machine.status(), None, "2 of 4 is within half");
    assert_eq!(
        machine.handle(fail(0, 2, 1)),
        vec![
            Command::Cancel,
            Command::Finish {
                status: GroupStatus::Failed
            }
        ]
    );
}

#[test]
fn continue_on_error_failures_do_not_fail_the_group() {
    let mut tolerant = task("a", &[]);
    tolerant.continue_on_error = true;
    let mut machine = GroupMachine::new(vec![tolerant, task("b", &[0])], FailurePolicy::FailFast);
    machine.handle(Event::Start);
    machine.handle(planned(0, 2));
    assert_eq!(machine.handle(fail(0, 0, 1)), vec![]);
    assert_eq!(
        machine.handle(ok(0, 1)),
        vec![Command::UpdateContext { task: 0 }]
    );
    machine.handle(Event::ContextUpdated { task: 0 });
    machine.handle(planned(1, 1));
    machine.handle(ok(1, 0));
    assert_eq!(
        machine.handle(Event::ContextUpdated { task: 1 }),
        vec![Command::Finish {
            status: GroupStatus::Completed
        }]
    );
}

#[test]
fn retry_budget_stops_retries() {
    let mut setup = task("a", &[]);
    setup.retry = RetryPolicy::with_delays(5, vec![ms(1000)]);
    setup.retry.budget = Some(ms(1500));
    let mut machine = GroupMachine::new(vec![setup], FailurePolicy::AllSettled);
    machine.handle(Event::Start);
    machine.handle(planned(0, 1));
    let first = machine.handle(Event::Failed {
        task: 0,
        instance: 0,
        attempt: 1,
        failure: Failure::error("x"),
        now: ms(100),
    });
    assert!(matches!(
        first[..],
        [Command::ScheduleRetry { attempt: 2, .. }]
    ));
    // At 1.2 s another 1 s delay would pass the 1.5 s budget: the instance fails for good.
    let second = machine.handle(Event::Failed {
        task: 0,
        instance: 0,
        attempt: 2,
        failure: Failure::error("x"),
        now: ms(1200),
    });
    assert_eq!(second, vec![Command::UpdateContext { task: 0 }]);
    assert_eq!(machine.tasks()[0].failed, 1);
}

#[test]
fn plan_and_combine_failures_fail_the_task() {
    let mut machine = GroupMachine::new(
        vec![task("a", &[]), task("b", &[0]), task("c", &[])],
        FailurePolicy::AllSettled,
    );
    machine.handle(Event::Start);
    assert_eq!(
        machine.handle(Event::PlanFailed {
            task: 0,
            error: "not a list".into()
        }),
        vec![]
    );
    assert_eq!(machine.tasks()[0].state, TaskState::Failed);
    machine.handle(planned(2, 1));
    machine.handle(ok(2, 0));
    assert_eq!(
        machine.handle(Event::CombineFailed {
            task: 2,
            error: "cannot merge".into()
        }),
        vec![Command::Finish {
            status: GroupStatus::Failed
        }]
    );
    assert_eq!(machine.tasks()[1].state, TaskState::Skipped);
    assert_eq!(machine.tasks()[2].error.as_deref(), Some("cannot merge"));
}

#[test]
fn timeouts_and_cancellation_stop_the_group_once() {
    let mut machine = GroupMachine::new(vec![task("a", &[])], FailurePolicy::FailFast);
    machine.handle(Event::Start);
    machine.handle(planned(0, 10));
    assert_eq!(
        machine.handle(Event::TimedOut),
        vec![
            Command::Cancel,
            Command::Finish {
                status: GroupStatus::TimedOut
            }
        ]
    );
    assert_eq!(machine.handle(Event::Cancelled), vec![]);
    assert_eq!(machine.status(), Some(GroupStatus::TimedOut));
}

/// A three-step pipeline over four items: each step's instance starts when the previous step's
/// same instance succeeded, without waiting for the rest; a failed item stops only its chain.
#[test]
fn a_pipeline_runs_item_by_item_and_a_failure_stops_only_its_chain() {
    let mut machine = GroupMachine::new(
        vec![task("fetch", &[]), each("delay", &[0]), each("emit", &[1])],
        FailurePolicy::AllSettled,
    );
    // Only the first step is planned at the start; the next is planned once it is.
    assert_eq!(
        machine.handle(Event::Start),
        vec![Command::Plan { task: 0 }]
    );
    assert_eq!(
        machine.handle(planned(0, 4)),
        vec![dispatch(0, 0, 4), Command::Plan { task: 1 }]
    );
    // Item 2 of fetch succeeds before delay is planned: planning dispatches it at once.
    assert_eq!(machine.handle(ok(0, 2)), vec![]);
    assert_eq!(
        machine.handle(planned(1, 4)),
        vec![dispatch(1, 2, 3), Command::Plan { task: 2 }]
    );
    assert_eq!(machine.handle(planned(2, 4)), vec![]);
    // Item 0 moves on by itself, while items 1 and 3 of fetch still run.
    assert_eq!(machine.handle(ok(0, 0)), vec![dispatch(1, 0, 1)]);
    assert_eq!(machine.handle(ok(1, 0)), vec![dispatch(2, 0, 1)]);
    // Item 1 fails in fetch: its delay and emit fail without running, the others go on.
    assert_eq!(
        machine.handle(Event::Failed {
            task: 0,
            instance: 1,
            attempt: 1,
            failure: Failure::permanent("HTTP 500"),
            now: Duration::ZERO,
        }),
        vec![]
    );
    let delay = &machine.tasks()[1];
    assert_eq!(
        delay.failures[&1].failure.message,
        "not run: instance 1 of task `fetch` failed"
    );
    assert_eq!(delay.failures[&1].attempts, 0);
    assert_eq!(
        machine.tasks()[2].failures[&1].failure.message,
        "not run: instance 1 of task `delay` failed"
    );
    // What may run again is only what its upstream let through: item 2 of delay, not item 3
    // (item 0 is done, item 1 failed).
    assert_eq!(machine.undone(1), vec![(2, 3, 1)]);
    // The last fetch outcome settles it: its context follows all its instances.
    assert_eq!(
        machine.handle(ok(0, 3)),
        vec![Command::UpdateContext { task: 0 }, dispatch(1, 3, 4)]
    );
    assert_eq!(machine.handle(ok(2, 0)), vec![]);
    assert_eq!(machine.handle(ok(1, 2)), vec![dispatch(2, 2, 3)]);
    for event in [ok(1, 3), ok(2, 2)] {
        machine.handle(event);
    }
    assert_eq!(
        machine.handle(ok(2, 3)),
        vec![Command::UpdateContext { task: 2 }]
    );
    let (fetch, delay, emit) = (
        &machine.tasks()[0],
        &machine.tasks()[1],
        &machine.tasks()[2],
    );
    assert_eq!((fetch.succeeded, fetch.failed), (3, 1));
    assert_eq!((delay.succeeded, delay.failed), (3, 1));
    assert_eq!((emit.succeeded, emit.failed), (3, 1));
}

/// Instance by instance needs the same instance count; a task planned with another fails.
#[test]
fn a_pipeline_step_with_another_instance_count_fails() {
    let mut machine = GroupMachine::new(
        vec![task("fetch", &[]), each("delay", &[0])],
        FailurePolicy::AllSettled,
    );
    machine.handle(Event::Start);
    machine.handle(planned(0, 3));
    machine.handle(planned(1, 2));
    let delay = &machine.tasks()[1];
    assert_eq!(delay.state, TaskState::Failed);
    assert_eq!(
        delay.error.as_deref(),
        Some("task `delay` has 2 instances and task `fetch` 3: depending instance by instance needs the same count")
    );
}

/// Under fail-fast, the first failed item stops the whole group as before: nothing of its chain
/// is dispatched after it.
#[test]
fn a_pipeline_under_fail_fast_stops_at_the_first_failed_item() {
    let mut machine = GroupMachine::new(
        vec![task("fetch", &[]), each("delay", &[0])],
        FailurePolicy::FailFast,
    );
    machine.handle(Event::Start);
    machine.handle(planned(0, 2));
    machine.handle(planned(1, 2));
    let out = machine.handle(Event::Failed {
        task: 0,
        instance: 0,
        attempt: 1,
        failure: Failure::permanent("boom"),
        now: Duration::ZERO,
    });
    assert_eq!(
        out,
        vec![
            Command::Cancel,
            Command::Finish {
                status: GroupStatus::Failed
            }
        ]
    );
    assert_eq!(machine.handle(ok(0, 1)), vec![]);
}

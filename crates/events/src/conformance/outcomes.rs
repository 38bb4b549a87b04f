//! [`Outcomes`](crate::Outcomes): task records, the recording rule, notices sent only for a batch
//! accepted whole, long batches, range counts and another run's work refused.

use super::{outcome, received, started, EARLIER, RUN, TASK};
use crate::messages::{Outcome, TaskRecord, TaskRef};
use crate::store::{notices_channel, Fence, RangeStep, Store};
use serde_json::json;

/// Every check of the capability, each under a session of its own named after `session`.
pub async fn outcomes_suite(store: &dyn Store, session: &str) {
    task_records_are_read_back_whole(store, &format!("{session}-record")).await;
    ranges_count_the_workers_that_started_them(store, &format!("{session}-ranges")).await;
    another_runs_outcomes_are_refused_whole(store, &format!("{session}-earlier")).await;
    the_recording_rule_holds(store, &format!("{session}-rule")).await;
    a_long_batch_is_recorded_as_if_one_by_one(store, &format!("{session}-long")).await;
}

/// A task record with every field a worker reads set.
pub(super) fn full_record() -> TaskRecord {
    TaskRecord {
        run: RUN.into(),
        task_id: "t".into(),
        group_id: "g".into(),
        executor: "echo".into(),
        input: json!({"x": 1}),
        expansion_config: None,
        context: json!({}),
        timeout_ms: Some(5),
        concurrency: None,
        instances: 3,
        memo_key: None,
        memo_ttl_s: None,
        // Read back whole, with what a task depending instance by instance carries.
        upstream: vec![crate::Upstream {
            task: 0,
            id: "fetch".into(),
        }],
        agent: Some(crate::AgentTask {
            kind: "analyze".into(),
            claim_timeout_ms: 5_000,
        }),
        maps_results_of: Some(TaskRef { group: 0, task: 0 }),
    }
}

async fn task_records_are_read_back_whole(store: &dyn Store, session: &str) {
    let record = full_record();
    store
        .save_task(session, TASK, &record, Fence::Open)
        .await
        .expect("save task");
    assert_eq!(
        store.load_task(session, TASK).await.expect("load task"),
        Some(record)
    );
    let missing = TaskRef { group: 9, task: 9 };
    assert_eq!(
        store
            .load_task(session, missing)
            .await
            .expect("load missing"),
        None
    );
}

/// The workers that started a range and did not finish it are counted, each once, and cleared
/// when it finishes; another run's range is late and writes nothing.
async fn ranges_count_the_workers_that_started_them(store: &dyn Store, session: &str) {
    started(store, session).await;
    let range = "0:1:0:3:1";
    let track = |run: &'static str, step| store.track_range(session, run, range, step);
    let worker = RangeStep::Started;
    assert_eq!(track(RUN, worker("w1")).await.expect("start"), Some(1));
    assert_eq!(track(RUN, worker("w1")).await.expect("again"), Some(1));
    assert_eq!(track(RUN, worker("w2")).await.expect("start"), Some(2));
    assert_eq!(
        track(RUN, RangeStep::Finished).await.expect("finish"),
        Some(0)
    );
    assert_eq!(track(RUN, worker("w3")).await.expect("start"), Some(1));
    assert_eq!(
        track(EARLIER, worker("w4")).await.expect("another run's"),
        None
    );
}

/// Outcomes of another run of the session id are refused whole, and nothing is written.
async fn another_runs_outcomes_are_refused_whole(store: &dyn Store, session: &str) {
    started(store, session).await;
    let other = store
        .record_outcomes(session, TASK, EARLIER, &[outcome(0, 1, true)], None)
        .await
        .expect("record another run's outcome");
    assert_eq!(other, [false]);
    assert_eq!(
        store.outcomes(session, TASK, 0..1).await.expect("outcomes"),
        [None]
    );
}

/// First outcome accepted, duplicates refused, failures replaced by newer attempts only,
/// successes final. A batch's notice goes out only when all of it was accepted.
async fn the_recording_rule_holds(store: &dyn Store, session: &str) {
    started(store, session).await;
    let mut notices = store
        .subscribe(&notices_channel(session))
        .await
        .expect("subscribe to notices");
    let record = |outcomes: Vec<Outcome>, notice: Option<&'static [u8]>| async move {
        store
            .record_outcomes(session, TASK, RUN, &outcomes, notice)
            .await
            .expect("record")
    };
    let first = vec![
        outcome(0, 1, true),
        outcome(1, 1, false),
        outcome(0, 1, true),
    ];
    assert_eq!(
        record(first, Some(b"partly refused")).await,
        [true, true, false]
    );
    let retries = vec![
        outcome(1, 1, true),
        outcome(1, 2, false),
        outcome(0, 2, true),
    ];
    assert_eq!(record(retries, None).await, [false, true, false]);
    let last = vec![outcome(1, 3, true), outcome(1, 4, false)];
    assert_eq!(record(last, Some(b"partly refused")).await, [true, false]);
    assert_eq!(
        record(vec![outcome(2, 1, false)], Some(b"all in")).await,
        [true]
    );
    let got = received(notices.as_mut()).await;
    assert_eq!(got, b"all in", "only the batch accepted whole is announced");
    assert_eq!(
        store.outcomes(session, TASK, 0..4).await.expect("outcomes"),
        [
            Some(outcome(0, 1, true)),
            Some(outcome(1, 3, true)),
            Some(outcome(2, 1, false)),
            None
        ]
    );
    assert_eq!(
        store.outcome_count(session, TASK).await.expect("count"),
        3,
        "instances with an outcome, each once however often recorded"
    );
    let none = TaskRef { group: 9, task: 9 };
    assert_eq!(
        store
            .outcome_count(session, none)
            .await
            .expect("count of a task with none"),
        0
    );
}

/// A batch longer than a store may split it into (Redis judges 512 at a time): each instance
/// once, except 7, which comes again later in the batch and is refused; the retry of 1,100
/// after its failure in the same batch is accepted, as if they came one after the other.
async fn a_long_batch_is_recorded_as_if_one_by_one(store: &dyn Store, session: &str) {
    started(store, session).await;
    let long = TaskRef { group: 0, task: 2 };
    let mut batch: Vec<Outcome> = (0..1_200).map(|i| outcome(i, 1, i != 1_100)).collect();
    batch.push(outcome(7, 2, true));
    batch.push(outcome(1_100, 2, true));
    let accepted = store
        .record_outcomes(session, long, RUN, &batch, None)
        .await
        .expect("record a long batch");
    let refused: Vec<usize> = (0..accepted.len()).filter(|&i| !accepted[i]).collect();
    assert_eq!(
        refused,
        vec![1_200],
        "only the repeated success of 7 is refused"
    );
    let stored = store
        .outcomes(session, long, 0..1_201)
        .await
        .expect("outcomes");
    assert_eq!(stored[7], Some(outcome(7, 1, true)));
    assert_eq!(stored[1_100], Some(outcome(1_100, 2, true)));
    assert_eq!(stored[1_199], Some(outcome(1_199, 1, true)));
    assert_eq!(stored[1_200], None);
    let accepted = store
        .record_outcomes(session, long, RUN, &batch[..1_200], None)
        .await
        .expect("record the long batch again");
    assert!(
        accepted.iter().all(|a| !a),
        "a batch recorded again is refused whole"
    );
}

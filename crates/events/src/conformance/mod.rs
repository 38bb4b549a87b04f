//! The shared backend test suite: every `Broker` and `Store` implementation, in memory or real,
//! must pass the same checks. Backends call these from their own tests with a fresh namespace.
//! Test code: a failed check panics, which is how it reports.
#![allow(clippy::expect_used)]

mod claims;
mod kept;

pub use claims::claim_suite;
pub use kept::kept_results_suite;

use crate::agents::{AgentReport, NewTask, TaskState};
use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::messages::{Outcome, Status, TaskRecord, TaskRef};
use crate::store::{notices_channel, Fence, RangeStep, Store, Subscription, RESULTS_CHANNEL};
use crate::watermarks::Position;
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::time::Duration;

/// A bound, not an expectation: a consumer-group rebalance on a real broker can take several seconds.
const WAIT: Duration = Duration::from_secs(60);

fn outcome(instance: u64, attempt: u32, ok: bool) -> Outcome {
    let status = if ok {
        Status::Succeeded(json!(instance))
    } else {
        Status::Failed(format!("attempt {attempt}"))
    };
    Outcome {
        instance,
        attempt,
        status,
    }
}

/// The subscription's next message, within [`WAIT`].
/// Stores `result` of `session` and announces it as `announced`.
async fn publish(store: &dyn Store, session: &str, result: &Value, announced: &Value) {
    store
        .publish_result(
            session,
            result.to_string().as_bytes(),
            announced.to_string().as_bytes(),
            Fence::Open,
        )
        .await
        .expect("publish result");
}

/// The next result announced for `session` (other sessions may announce theirs meanwhile).
async fn next_result(results: &mut dyn Subscription, session: &str) -> Value {
    loop {
        let got = received(results).await;
        let got: Value = serde_json::from_slice(&got).expect("a JSON result");
        if got["session_id"] == session {
            return got;
        }
    }
}

async fn received(subscription: &mut dyn Subscription) -> Vec<u8> {
    tokio::time::timeout(WAIT, subscription.next())
        .await
        .expect("message within the bound")
        .expect("message")
}

/// A one-instance `echo` task's record of run `run`, for tests that need one stored.
pub fn one_task_record(run: &str) -> TaskRecord {
    TaskRecord {
        run: run.into(),
        task_id: "t".into(),
        group_id: "g".into(),
        executor: "echo".into(),
        input: json!(1),
        expansion_config: None,
        context: json!({}),
        timeout_ms: None,
        concurrency: None,
        instances: 1,
        memo_key: None,
        memo_ttl_s: None,
        upstream: Vec::new(),
        agent: None,
        maps_results_of: None,
    }
}

/// The run the store suite records outcomes for.
const RUN: &str = "agency_action/3/14";

/// Exactly-once recording, state round trips, cleanup and pub/sub, under session `session`.
pub async fn store_suite(store: &dyn Store, session: &str) {
    let task = TaskRef { group: 0, task: 1 };
    let record = TaskRecord {
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
    };
    store
        .save_task(session, task, &record, Fence::Open)
        .await
        .expect("save task");
    // No run yet: nothing to cancel, and nothing is written.
    assert_eq!(store.current_run(session).await.expect("run"), None);
    assert_eq!(store.request_cancel(session).await.expect("cancel"), None);
    store
        .start_run(session, RUN, Fence::Open)
        .await
        .expect("start the run");
    assert_eq!(
        store.current_run(session).await.expect("run"),
        Some(RUN.to_string())
    );
    assert!(!store
        .cancel_requested(session, RUN)
        .await
        .expect("cancelled?"));
    // The workers that started a range and did not finish it are counted, each once, and
    // cleared when it finishes; another run's range is late and writes nothing.
    let range = "0:1:0:3:1";
    let track = |run: &'static str, step| store.track_range(session, run, range, step);
    let started = RangeStep::Started;
    assert_eq!(track(RUN, started("w1")).await.expect("start"), Some(1));
    assert_eq!(
        track(RUN, started("w1")).await.expect("start again"),
        Some(1)
    );
    assert_eq!(track(RUN, started("w2")).await.expect("start"), Some(2));
    assert_eq!(
        track(RUN, RangeStep::Finished).await.expect("finish"),
        Some(0)
    );
    assert_eq!(track(RUN, started("w3")).await.expect("start"), Some(1));
    assert_eq!(
        track("agency_action/3/13", started("w4"))
            .await
            .expect("another run's start"),
        None
    );
    // Outcomes of another run of the session id are refused whole, and nothing is written.
    let other = store
        .record_outcomes(
            session,
            task,
            "agency_action/3/13",
            &[outcome(0, 1, true)],
            None,
        )
        .await
        .expect("record another run's outcome");
    assert_eq!(other, [false]);
    assert_eq!(
        store.outcomes(session, task, 0..1).await.expect("outcomes"),
        [None]
    );
    assert_eq!(
        store.load_task(session, task).await.expect("load task"),
        Some(record.clone())
    );
    assert_eq!(
        store
            .load_task(session, TaskRef { group: 9, task: 9 })
            .await
            .expect("load missing"),
        None
    );

    // Recording rule: first outcome accepted, duplicates refused, failures replaced by newer
    // attempts only, successes final. A batch's notice goes out only when all of it was
    // accepted.
    let mut notices = store
        .subscribe(&notices_channel(session))
        .await
        .expect("subscribe to notices");
    let accepted = store
        .record_outcomes(
            session,
            task,
            RUN,
            &[
                outcome(0, 1, true),
                outcome(1, 1, false),
                outcome(0, 1, true),
            ],
            Some(b"partly refused"),
        )
        .await
        .expect("record");
    assert_eq!(accepted, vec![true, true, false]);
    let accepted = store
        .record_outcomes(
            session,
            task,
            RUN,
            &[
                outcome(1, 1, true),
                outcome(1, 2, false),
                outcome(0, 2, true),
            ],
            None,
        )
        .await
        .expect("record retries");
    assert_eq!(accepted, vec![false, true, false]);
    let accepted = store
        .record_outcomes(
            session,
            task,
            RUN,
            &[outcome(1, 3, true), outcome(1, 4, false)],
            Some(b"partly refused"),
        )
        .await
        .expect("record final");
    assert_eq!(accepted, vec![true, false]);
    let accepted = store
        .record_outcomes(session, task, RUN, &[outcome(2, 1, false)], Some(b"all in"))
        .await
        .expect("record a batch accepted whole");
    assert_eq!(accepted, vec![true]);
    let got = received(notices.as_mut()).await;
    assert_eq!(got, b"all in", "only the batch accepted whole is announced");
    let stored = store.outcomes(session, task, 0..4).await.expect("outcomes");
    assert_eq!(
        stored,
        vec![
            Some(outcome(0, 1, true)),
            Some(outcome(1, 3, true)),
            Some(outcome(2, 1, false)),
            None
        ]
    );
    assert_eq!(
        store.outcome_count(session, task).await.expect("count"),
        3,
        "instances with an outcome, each once however often recorded"
    );
    assert_eq!(
        store
            .outcome_count(session, TaskRef { group: 9, task: 9 })
            .await
            .expect("count of a task with none"),
        0
    );

    // A batch longer than a store may split it into (Redis judges 512 at a time): each instance
    // once, except 7, which comes again later in the batch and is refused; the retry of 1,100
    // after its failure in the same batch is accepted, as if they came one after the other.
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

    let mut context = Map::new();
    context.insert("users".into(), json!(["a", "b"]));
    store
        .save_context(session, &context, Fence::Open)
        .await
        .expect("save context");
    assert_eq!(
        store.load_context(session).await.expect("load context"),
        Some(context.clone())
    );
    store
        .set_context(session, "fetch", &json!({"n": 2}), Fence::Open)
        .await
        .expect("set context key");
    let mut expected = context.clone();
    expected.insert("fetch".into(), json!({"n": 2}));
    assert_eq!(
        store.load_context(session).await.expect("load context"),
        Some(expected)
    );
    store
        .save_mappings(session, &context, Fence::Open)
        .await
        .expect("save mappings");
    assert_eq!(
        store.load_mappings(session).await.expect("load mappings"),
        Some(context)
    );
    // A result is stored, then announced (other sessions may announce theirs meanwhile): the
    // announcement, not the result, goes on pub/sub.
    let result = json!({"session_id": session, "status": "completed", "context": {"big": [1, 2]}});
    let announced = json!({"session_id": session, "status": "completed"});
    let failed = json!({"session_id": session, "status": "failed"});
    let mut results = store
        .subscribe(RESULTS_CHANNEL)
        .await
        .expect("subscribe to results");
    publish(store, session, &result, &announced).await;
    assert_eq!(next_result(results.as_mut(), session).await, announced);
    // Stored again (a retry whose answer was lost), it is not announced again: the next
    // announcement of the session is the next different result's.
    publish(store, session, &result, &announced).await;
    publish(store, session, &failed, &failed).await;
    assert_eq!(
        next_result(results.as_mut(), session).await["status"],
        "failed",
        "the same result is announced once"
    );
    publish(store, session, &result, &announced).await;
    assert_eq!(
        store.load_result(session).await.expect("load result"),
        Some(result.clone())
    );

    store
        .save_blob(session, "0:1:7:1", b"large".to_vec())
        .await
        .expect("save blob");
    assert_eq!(
        store
            .load_blob(session, "0:1:7:1")
            .await
            .expect("load blob"),
        Some(b"large".to_vec())
    );
    // The run's document is kept with the working state; a note on an action outlives it.
    store
        .save_document(session, RUN, br#"{"groups": []}"#, Fence::Open)
        .await
        .expect("save the document");
    assert_eq!(
        store
            .load_document(session)
            .await
            .expect("load the document"),
        Some((RUN.to_string(), br#"{"groups": []}"#.to_vec()))
    );
    store
        .note_action(session, "agency_action/3/14", &format!("attached:{RUN}"))
        .await
        .expect("note an action");
    assert_eq!(
        store
            .action_note(session, "agency_action/3/14")
            .await
            .expect("read a note"),
        Some(format!("attached:{RUN}"))
    );
    assert_eq!(
        store
            .action_note(session, "agency_action/3/15")
            .await
            .expect("read no note"),
        None
    );
    // The live state: a submission's `pending` does not overwrite a run's state; the session is
    // listed among the recent ones, with the store's time.
    let before = store.now_ms().await.expect("the store's clock");
    store
        .save_state(session, br#"{"status": "pending"}"#, false, Fence::Open)
        .await
        .expect("save the pending state");
    store
        .save_state(session, br#"{"status": "running"}"#, true, Fence::Open)
        .await
        .expect("save the running state");
    store
        .save_state(session, br#"{"status": "pending"}"#, false, Fence::Open)
        .await
        .expect("keep the running state");
    assert_eq!(
        store.load_state(session).await.expect("load the state"),
        Some(br#"{"status": "running"}"#.to_vec())
    );
    // A run's state is also announced on the session's progress channel.
    let mut progress = store
        .subscribe(&crate::store::progress_channel(session))
        .await
        .expect("subscribe to progress");
    store
        .save_state(
            session,
            br#"{"status": "running", "n": 2}"#,
            true,
            Fence::Open,
        )
        .await
        .expect("save the running state again");
    assert_eq!(
        received(progress.as_mut()).await,
        br#"{"status": "running", "n": 2}"#.to_vec()
    );
    let listed = store.sessions(10_000).await.expect("list sessions");
    let at = listed
        .iter()
        .find(|(id, _)| id == session)
        .map(|(_, at)| *at)
        .expect("the session is listed");
    assert!(at >= before, "listed at {at}, before {before}");
    assert!(
        listed.windows(2).all(|pair| pair[0].1 >= pair[1].1),
        "newest first"
    );
    // Heartbeats: the member is listed with what it said last, stamped by the store's clock,
    // until it is forgotten.
    let member = format!("{session}-member");
    store
        .heartbeat(&member, br#"{"role": "worker"}"#)
        .await
        .expect("heartbeat");
    store
        .heartbeat(&member, br#"{"role": "worker", "running": 3}"#)
        .await
        .expect("heartbeat again");
    let members = store.members().await.expect("members");
    let (_, info, seen) = members
        .iter()
        .find(|(id, _, _)| *id == member)
        .expect("the member is listed");
    assert_eq!(info.as_slice(), br#"{"role": "worker", "running": 3}"#);
    assert!(*seen >= before, "seen at {seen}, before {before}");
    store.forget_member(&member).await.expect("forget");
    assert!(!store
        .members()
        .await
        .expect("members")
        .iter()
        .any(|(id, _, _)| *id == member));
    // A cancel marks the current run only, and goes with the working state.
    assert_eq!(
        store.request_cancel(session).await.expect("cancel"),
        Some(RUN.to_string())
    );
    assert!(store
        .cancel_requested(session, RUN)
        .await
        .expect("cancelled?"));
    assert!(!store
        .cancel_requested(session, "agency_action/3/13")
        .await
        .expect("another run cancelled?"));
    // Cleaning up another run's state leaves this run's; cleaning up this run's deletes it.
    store
        .cleanup_run(session, "agency_action/3/13")
        .await
        .expect("clean up another run");
    assert!(
        store
            .load_task(session, task)
            .await
            .expect("load")
            .is_some(),
        "the state of the current run stays"
    );
    store
        .cleanup_run(session, RUN)
        .await
        .expect("clean up the current run");
    assert_eq!(store.load_task(session, task).await.expect("load"), None);
    assert_eq!(store.current_run(session).await.expect("run"), None);
    assert_eq!(store.load_document(session).await.expect("document"), None);
    assert_eq!(store.load_state(session).await.expect("state"), None);
    assert!(store
        .action_note(session, "agency_action/3/14")
        .await
        .expect("a note after cleanup")
        .is_some());
    assert!(!store
        .cancel_requested(session, RUN)
        .await
        .expect("cancelled after cleanup?"));
    store
        .save_task(session, task, &record, Fence::Open)
        .await
        .expect("save task again");
    store.cleanup(session, Fence::Open).await.expect("cleanup");
    // A range of the run delivered after cleanup cannot bring its state back.
    let late = store
        .record_outcomes(session, task, RUN, &[outcome(2, 9, true)], None)
        .await
        .expect("record after cleanup");
    assert_eq!(late, [false]);
    assert_eq!(
        store
            .track_range(session, RUN, "0:1:0:3:1", RangeStep::Started("w5"))
            .await
            .expect("track after cleanup"),
        None,
        "a range delivered after cleanup counts nothing"
    );
    assert_eq!(
        store
            .load_blob(session, "0:1:7:1")
            .await
            .expect("blob after cleanup"),
        None
    );
    assert_eq!(
        store
            .load_task(session, task)
            .await
            .expect("load after cleanup"),
        None
    );
    assert_eq!(
        store
            .outcomes(session, task, 0..1)
            .await
            .expect("outcomes after cleanup"),
        vec![None]
    );
    assert_eq!(
        store
            .load_context(session)
            .await
            .expect("context after cleanup"),
        None
    );
    assert_eq!(
        store
            .load_result(session)
            .await
            .expect("result survives cleanup"),
        Some(result)
    );

    store
        .delete_result(session, Fence::Open)
        .await
        .expect("delete result");
    assert_eq!(
        store
            .load_result(session)
            .await
            .expect("result after delete"),
        None
    );

    let channel = format!("agency:test:{session}");
    let mut subscription = store.subscribe(&channel).await.expect("subscribe");
    store
        .publish(&channel, b"one".to_vec())
        .await
        .expect("publish");
    store
        .publish(&channel, b"two".to_vec())
        .await
        .expect("publish");
    for expected in [&b"one"[..], b"two"] {
        assert_eq!(received(subscription.as_mut()).await, expected);
    }

    // A pattern subscription sees every matching channel and nothing else.
    let prefix = format!("agency:test:{session}:");
    let mut matching = store
        .subscribe_pattern(&format!("{prefix}*"))
        .await
        .expect("subscribe to a pattern");
    for (channel, payload) in [
        (format!("{prefix}{{a}}"), &b"a"[..]),
        (format!("agency:other:{session}"), b"other"),
        (format!("{prefix}b"), b"b"),
    ] {
        store
            .publish(&channel, payload.to_vec())
            .await
            .expect("publish");
    }
    for expected in [&b"a"[..], b"b"] {
        assert_eq!(received(matching.as_mut()).await, expected);
    }
}

/// What a rerun keeps ([`Outcomes::keep_successes`]): the successes, and nothing else of the
/// outcomes, so a new run's first attempts are taken for the rest and a success stays final.
pub async fn rerun_suite(store: &dyn Store, session: &str) {
    let task = TaskRef { group: 0, task: 0 };
    store
        .start_run(session, "first", Fence::Open)
        .await
        .expect("start the run");
    let mut permanent = outcome(2, 1, false);
    permanent.status = Status::FailedPermanently("no".into());
    let outcomes = [
        outcome(0, 1, true),
        outcome(1, 2, false),
        permanent,
        outcome(3, 1, true),
    ];
    store
        .record_outcomes(session, task, "first", &outcomes, None)
        .await
        .expect("record");
    store.request_cancel(session).await.expect("cancel");
    // Pausing marks the current run; resuming takes the mark away.
    let nobody = format!("{session}-nobody");
    assert_eq!(
        store.request_pause(&nobody, true).await.expect("pause"),
        None
    );
    assert!(!store
        .pause_requested(&nobody, "first")
        .await
        .expect("paused"));
    assert_eq!(
        store.request_pause(session, true).await.expect("pause"),
        Some("first".to_string())
    );
    assert!(store
        .pause_requested(session, "first")
        .await
        .expect("paused"));
    assert!(!store
        .pause_requested(session, "other")
        .await
        .expect("paused"));
    store.request_pause(session, false).await.expect("resume");
    assert!(!store
        .pause_requested(session, "first")
        .await
        .expect("paused"));
    store.request_pause(session, true).await.expect("pause");
    // A second task (an exit handler, say) is forgotten whole, successes included.
    let handler = TaskRef { group: 1, task: 0 };
    store
        .record_outcomes(session, handler, "first", &[outcome(0, 1, true)], None)
        .await
        .expect("record the handler's");
    assert_eq!(
        store
            .keep_successes(session, &[handler], Fence::Open)
            .await
            .expect("keep successes"),
        2
    );
    assert_eq!(
        store
            .outcomes(session, handler, 0..1)
            .await
            .expect("outcomes"),
        [None]
    );
    let kept = store.outcomes(session, task, 0..4).await.expect("outcomes");
    assert_eq!(
        store.outcome_count(session, task).await.expect("count"),
        2,
        "the successes kept"
    );
    assert_eq!(
        kept,
        [
            Some(outcomes[0].clone()),
            None,
            None,
            Some(outcomes[3].clone())
        ]
    );
    store
        .start_run(session, "second", Fence::Open)
        .await
        .expect("start the rerun");
    assert!(!store
        .cancel_requested(session, "first")
        .await
        .expect("cancel mark"));
    assert!(!store
        .pause_requested(session, "first")
        .await
        .expect("pause mark"));
    let again = [
        outcome(1, 1, true),
        outcome(2, 1, true),
        outcome(0, 1, false),
    ];
    assert_eq!(
        store
            .record_outcomes(session, task, "second", &again, None)
            .await
            .expect("record again"),
        [true, true, false],
        "the failed instances start over at attempt 1; a kept success stays final"
    );
    // Ended while its state is kept: late work of it is refused, and what is kept stays.
    store
        .end_run(session, "other", Fence::Open)
        .await
        .expect("end another run");
    assert_eq!(
        store.current_run(session).await.expect("run"),
        Some("second".to_string()),
        "ending a run that is not current changes nothing"
    );
    store.request_pause(session, true).await.expect("pause");
    store
        .end_run(session, "second", Fence::Open)
        .await
        .expect("end the run");
    assert_eq!(store.current_run(session).await.expect("run"), None);
    assert!(!store
        .pause_requested(session, "second")
        .await
        .expect("paused"));
    let late = [outcome(3, 2, false)];
    assert_eq!(
        store
            .record_outcomes(session, task, "second", &late, None)
            .await
            .expect("record late"),
        [false]
    );
    assert_eq!(
        store.outcomes(session, task, 0..4).await.expect("outcomes")[1],
        Some(again[0].clone()),
        "the kept outcomes stay"
    );
    store.cleanup(session, Fence::Open).await.expect("cleanup");
}

/// Memoized results: stored apart from sessions, read back, replaced, expired after their TTL,
/// and cleared by a literal prefix. `prefix` keeps this run's keys apart from others'.
pub async fn memo_suite(store: &dyn Store, prefix: &str) {
    let key = |name: &str| format!("{prefix}{name}");
    let keys = [key("a"), key("b"), key("missing")];
    assert_eq!(
        store.memo_get(&keys).await.expect("memo get"),
        [None, None, None]
    );
    store
        .memo_put(&[(key("a"), json!({"n": 1})), (key("b"), json!([2]))], None)
        .await
        .expect("memo put");
    assert_eq!(
        store.memo_get(&keys).await.expect("memo get"),
        [Some(json!({"n": 1})), Some(json!([2])), None]
    );
    store
        .memo_put(&[(key("a"), json!("newer"))], None)
        .await
        .expect("memo put again");
    assert_eq!(
        store.memo_get(&keys[..1]).await.expect("memo get"),
        [Some(json!("newer"))]
    );
    // A short TTL: gone after it, while the others stay.
    store
        .memo_put(
            &[(key("brief"), json!(true))],
            Some(Duration::from_millis(100)),
        )
        .await
        .expect("memo put with a ttl");
    assert_eq!(
        store.memo_get(&[key("brief")]).await.expect("memo get"),
        [Some(json!(true))]
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        store
            .memo_get(&[key("brief"), key("a")])
            .await
            .expect("memo get"),
        [None, Some(json!("newer"))]
    );
    // A prefix is literal: `*` in it matches only `*`.
    store
        .memo_put(
            &[
                (key("x*1"), json!(1)),
                (key("xy1"), json!(2)),
                (key("x*2"), json!(3)),
            ],
            None,
        )
        .await
        .expect("memo put");
    assert_eq!(store.memo_clear(&key("x*")).await.expect("memo clear"), 2);
    assert_eq!(
        store
            .memo_get(&[key("x*1"), key("xy1"), key("x*2")])
            .await
            .expect("memo get"),
        [None, Some(json!(2)), None]
    );
    assert_eq!(store.memo_clear(prefix).await.expect("memo clear"), 3);
    assert_eq!(
        store.memo_get(&keys).await.expect("memo get"),
        [None, None, None]
    );
    assert_eq!(store.memo_get(&[]).await.expect("memo get of nothing"), []);
}

/// Consumer groups share messages, every group sees every message (earliest offsets), messages
/// of one key arrive in order, payloads arrive intact, under topic `topic`.
pub async fn broker_suite(broker: &dyn Broker, topic: &str) {
    // A payload over the limit is refused before anything is sent, and retrying cannot help;
    // one at the limit goes through.
    let refused = broker
        .publish(topic, "big", vec![b'x'; crate::MAX_MESSAGE_BYTES + 1])
        .await
        .expect_err("a payload over the limit");
    assert!(!refused.is_retryable(), "{refused}");
    assert!(
        refused
            .to_string()
            .contains("over the limit of 1000000 bytes"),
        "{refused}"
    );
    // Where each message landed, as its publisher is told: the position a consumer reads it at.
    let mut landed = Vec::new();
    for i in 0..6u32 {
        let position = broker
            .publish(topic, &format!("k{i}"), i.to_be_bytes().to_vec())
            .await
            .expect("publish");
        landed.push(position);
    }
    // The topic ends past every message published to it: the sum of its partitions' ends is
    // six, and each message lies below its partition's end. A topic never published to has
    // no partitions to speak of, or only empty ones.
    let ends = broker.ends(topic).await.expect("where the topic ends");
    assert_eq!(ends.iter().map(|(_, end)| end).sum::<u64>(), 6, "{ends:?}");
    for position in &landed {
        let (partition, offset) = position.partition_offset();
        assert!(
            ends.iter().any(|&(p, end)| p == partition && offset < end),
            "{position:?} lies below its partition's end: {ends:?}"
        );
    }
    let unknown = broker
        .ends(&format!("{topic}-never-published"))
        .await
        .expect("where a topic never published to ends");
    assert!(unknown.iter().all(|(_, end)| *end == 0), "{unknown:?}");
    // Two members of one group share the six messages; a second group sees all six. Group ids
    // are fresh per topic: joining a group a departed process still holds waits for it.
    let group_a = format!("{topic}-group-a");
    let group_b = format!("{topic}-group-b");
    let mut first = broker
        .subscribe(topic, &group_a)
        .await
        .expect("subscribe a1");
    let mut second = broker
        .subscribe(topic, &group_a)
        .await
        .expect("subscribe a2");
    let mut other = broker
        .subscribe(topic, &group_b)
        .await
        .expect("subscribe b");
    let mut seen = HashSet::new();
    while seen.len() < 6 {
        let next = tokio::select! {
            m = first.next() => m,
            m = second.next() => m,
            () = tokio::time::sleep(WAIT) => panic!("group-a got {} of 6 messages", seen.len()),
        };
        let message = next.expect("message");
        let value = u32::from_be_bytes(
            message
                .payload
                .as_slice()
                .try_into()
                .expect("4-byte payload"),
        );
        assert_eq!(message.key, format!("k{value}"));
        assert_eq!(
            Position::of(&message),
            landed[value as usize],
            "message k{value} is read where its publisher was told it landed"
        );
        assert!(
            seen.insert(value),
            "message {value} delivered twice within one group"
        );
    }
    let mut others = Vec::new();
    for _ in 0..6 {
        let message = tokio::time::timeout(WAIT, other.next())
            .await
            .expect("group-b message within the bound")
            .expect("message");
        other.commit(&message).await.expect("commit");
        others.push(message.payload);
    }
    // Order is promised per key (Kafka: per partition), not across the topic.
    others.sort();
    let expected: Vec<Vec<u8>> = (0..6u32).map(|i| i.to_be_bytes().to_vec()).collect();
    assert_eq!(others, expected, "a second group sees every message once");
    for i in 10..13u32 {
        broker
            .publish(topic, "same-key", i.to_be_bytes().to_vec())
            .await
            .expect("publish");
    }
    let mut same_key = Vec::new();
    for _ in 0..3 {
        let message = tokio::time::timeout(WAIT, other.next())
            .await
            .expect("same-key message within the bound")
            .expect("message");
        same_key.push(message.payload);
    }
    let expected: Vec<Vec<u8>> = (10..13u32).map(|i| i.to_be_bytes().to_vec()).collect();
    assert_eq!(
        same_key, expected,
        "messages with one key arrive in the order published"
    );

    // A paused member yields nothing, and gets what it missed once resumed.
    other.pause().expect("pause");
    broker
        .publish(topic, "k-paused", b"while paused".to_vec())
        .await
        .expect("publish");
    let early = tokio::time::timeout(Duration::from_secs(1), other.next()).await;
    assert!(early.is_err(), "a paused member got {early:?}");
    other.resume().expect("resume");
    let message = tokio::time::timeout(WAIT, other.next())
        .await
        .expect("the message held back by the pause, once resumed")
        .expect("message");
    assert_eq!(message.payload, b"while paused");
}

/// An item for agents of type `kind`, from instance `instance` of a task of `session`.
fn agent_item(session: &str, kind: &str, instance: u64, timeout_ms: u64) -> crate::AgentItem {
    crate::AgentItem {
        id: format!("{session}|run|0|0|{instance}|1"),
        kind: kind.to_string(),
        input: json!({"n": instance}),
        claim_timeout_ms: timeout_ms,
        origin: crate::AgentOrigin::Instance {
            session: session.to_string(),
            run: "run".into(),
            group: 0,
            task: 0,
            task_id: "t".into(),
            instance,
            attempt: 1,
        },
    }
}

/// The queue for agents, with types and items named after `prefix`: oldest first per type,
/// types in the order asked, one claim per item, a token settles or releases only while its
/// claim holds, an instance's report waits under a lease until recorded, and claims past their
/// timeout end as timed-out reports.
pub async fn agent_suite(store: &dyn Store, prefix: &str) {
    let (a, b, c) = (
        format!("{prefix}-a"),
        format!("{prefix}-b"),
        format!("{prefix}-c"),
    );
    let items = [
        agent_item(prefix, &a, 0, 60_000),
        agent_item(prefix, &a, 1, 60_000),
        agent_item(prefix, &b, 2, 60_000),
    ];
    store.agent_offer(&items).await.expect("offer");
    // Offered again: nothing doubles.
    store.agent_offer(&items[..1]).await.expect("offer again");
    let claim = |types: Vec<String>, token: &'static str| async move {
        store
            .agent_claim("agent-1", &types, &format!("{prefix}-{token}"))
            .await
            .expect("claim")
    };
    let settle = |token: String, report: AgentReport| async move {
        store.agent_settle(&token, &report).await.expect("settle")
    };
    let done = AgentReport::Completed(json!({"answer": 42}));
    let first = claim(vec![b.clone(), a.clone()], "t1")
        .await
        .expect("an item of b");
    assert_eq!(first.item, items[2], "the first type asked that has one");
    assert_eq!((first.claims, first.agent.as_str()), (1, "agent-1"));
    let oldest = claim(vec![a.clone()], "t2").await.expect("an item of a");
    assert_eq!(oldest.item, items[0], "oldest first");
    let next = claim(vec![a.clone()], "t3")
        .await
        .expect("the other item of a");
    assert_eq!(next.item, items[1]);
    assert!(
        claim(vec![a.clone(), b.clone()], "t4").await.is_none(),
        "each item claimed once"
    );
    // Settling takes the item off; its token then holds nothing.
    let settled = settle(oldest.token.clone(), done.clone())
        .await
        .expect("held");
    assert_eq!(settled.item, items[0]);
    assert!(settle(oldest.token.clone(), done.clone()).await.is_none());
    // Released, the item is claimed again first, under a new token; the old one holds nothing.
    let released = store
        .agent_release(&next.token)
        .await
        .expect("release")
        .expect("held");
    assert_eq!(released, items[1]);
    assert!(store
        .agent_release(&next.token)
        .await
        .expect("release")
        .is_none());
    let again = claim(vec![a.clone()], "t5").await.expect("released item");
    assert_eq!(
        (again.item.id.as_str(), again.claims),
        (items[1].id.as_str(), 2)
    );
    assert!(settle(next.token.clone(), done.clone()).await.is_none());
    let failed = AgentReport::Failed("no answer".into());
    assert!(settle(again.token.clone(), failed.clone()).await.is_some());
    assert!(settle(first.token.clone(), done.clone()).await.is_some());
    // A claim past its timeout ends, and its token holds nothing.
    store
        .agent_offer(&[agent_item(prefix, &c, 3, 1)])
        .await
        .expect("offer");
    let short = claim(vec![c.clone()], "t6").await.expect("an item of c");
    tokio::time::sleep(Duration::from_millis(30)).await;
    store.agent_expire(1_000).await.expect("expire");
    assert!(settle(short.token.clone(), done.clone()).await.is_none());
    assert!(
        claim(vec![c], "t7").await.is_none(),
        "an expired claim is not offered again"
    );
    // Offered again (a range delivered twice), settled items are not offered anew.
    store.agent_offer(&items).await.expect("offer again");
    assert!(
        claim(vec![a.clone(), b.clone()], "t8").await.is_none(),
        "settled items are not offered anew"
    );
    // The four reports wait for a worker; on a shared server other processes' reports may be
    // there too: only ours are compared.
    let ours = |reported: &[crate::Reported]| -> Vec<(String, AgentReport, u32)> {
        let mut ours: Vec<_> = reported
            .iter()
            .filter(|r| r.item.kind.starts_with(prefix))
            .map(|r| (r.item.id.clone(), r.outcome.clone(), r.claims))
            .collect();
        ours.sort_by(|x, y| x.0.cmp(&y.0));
        ours
    };
    let lease = Duration::from_millis(300);
    let taken = store.agent_reports(10_000, lease).await.expect("reports");
    let mut expected = vec![
        (items[0].id.clone(), done.clone(), 1),
        (items[1].id.clone(), failed, 2),
        (items[2].id.clone(), done.clone(), 1),
        (format!("{prefix}|run|0|0|3|1"), AgentReport::TimedOut, 1),
    ];
    expected.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(ours(&taken), expected, "every report, once");
    let leased = store.agent_reports(10_000, lease).await.expect("reports");
    assert!(
        ours(&leased).is_empty(),
        "leased reports are not taken again"
    );
    tokio::time::sleep(lease + Duration::from_millis(50)).await;
    let retaken = store.agent_reports(10_000, lease).await.expect("reports");
    assert_eq!(
        ours(&retaken),
        expected,
        "a lease that ran out gives them again"
    );
    let ids: Vec<String> = expected.iter().map(|(id, _, _)| id.clone()).collect();
    store.agent_reported(&ids).await.expect("reported");
    tokio::time::sleep(lease + Duration::from_millis(50)).await;
    let after = store.agent_reports(10_000, lease).await.expect("reports");
    assert!(ours(&after).is_empty(), "recorded reports are gone");
}

/// The task manager, with workflows and types named after `prefix`: creation, parents of the
/// same workflow, claims that set the status, completion and failure with their answers, a
/// release and a timed-out claim back to pending, cancel, counts by status and type, metadata.
pub async fn task_suite(store: &dyn Store, prefix: &str) {
    let (workflow, other) = (format!("{prefix}-wf"), format!("{prefix}-other"));
    let (analyze, validate) = (format!("{prefix}-analyze"), format!("{prefix}-validate"));
    let new = |id: &str, kind: &str, parent: Option<&str>, timeout_ms: u64| NewTask {
        id: format!("{prefix}-{id}"),
        workflow: workflow.clone(),
        kind: kind.to_string(),
        data: json!({"file": id, "big": 12345678901234567_u64}),
        parent: parent.map(|p| format!("{prefix}-{p}")),
        claim_timeout_ms: timeout_ms,
    };
    let root = new("root", &analyze, None, 60_000);
    store.task_create(&root).await.expect("create root");
    let refused = |result: Result<()>, says: &str| match result {
        Err(Error::Refused { message, .. }) => {
            assert!(message.contains(says), "`{message}` says `{says}`")
        }
        other => panic!("refused ({says}), not {other:?}"),
    };
    refused(store.task_create(&root).await, "exists already");
    refused(
        store
            .task_create(&new("orphan", &analyze, Some("nobody"), 60_000))
            .await,
        "does not exist",
    );
    let mut stranger = new("stranger", &analyze, Some("root"), 60_000);
    stranger.workflow = other.clone();
    refused(store.task_create(&stranger).await, "of workflow");
    for (id, timeout) in [("child-1", 60_000), ("child-2", 1), ("child-3", 60_000)] {
        store
            .task_create(&new(id, &validate, Some("root"), timeout))
            .await
            .expect("create child");
    }
    let got = store
        .task_get(&root.id)
        .await
        .expect("get")
        .expect("the root");
    assert_eq!(
        (got.status, &got.data, &got.parent_id, got.claims),
        (TaskState::Pending, &root.data, &None, 0),
        "created pending, its data exactly"
    );
    assert!(store
        .task_get(&format!("{prefix}-none"))
        .await
        .expect("get")
        .is_none());
    let children = store.task_children(&root.id).await.expect("children");
    let ids: Vec<&str> = children.iter().map(|c| c.id.as_str()).collect();
    let expected: Vec<String> = ["child-1", "child-2", "child-3"]
        .iter()
        .map(|c| format!("{prefix}-{c}"))
        .collect();
    assert_eq!(ids, expected, "children in creation order");
    assert!(children
        .iter()
        .all(|c| c.parent_id.as_deref() == Some(root.id.as_str())));

    // Claimed: in progress, by its agent; the claim says where it comes from.
    let claim = |types: Vec<String>, token: &str| {
        let token = format!("{prefix}-{token}");
        async move {
            store
                .agent_claim("agent-7", &types, &token)
                .await
                .expect("claim")
        }
    };
    let taken = claim(vec![analyze.clone()], "r1").await.expect("the root");
    assert_eq!(taken.item.id, root.id);
    assert_eq!(
        taken.item.origin,
        crate::AgentOrigin::Task {
            workflow: workflow.clone(),
            parent: None
        }
    );
    let status =
        |id: String| async move { store.task_get(&id).await.expect("get").expect("a task") };
    let held = status(root.id.clone()).await;
    assert_eq!(
        (held.status, held.locked_by.as_deref(), held.claims),
        (TaskState::InProgress, Some("agent-7"), 1)
    );
    let result = json!({"output": "results.json", "n": 0.1});
    store
        .agent_settle(&taken.token, &AgentReport::Completed(result.clone()))
        .await
        .expect("settle")
        .expect("held");
    let done = status(root.id.clone()).await;
    assert_eq!(
        (done.status, done.result.as_ref()),
        (TaskState::Completed, Some(&result))
    );
    assert!(done.completed_at_ms.is_some());

    let one = claim(vec![validate.clone()], "c1").await.expect("child 1");
    store
        .agent_settle(&one.token, &AgentReport::Failed("schema mismatch".into()))
        .await
        .expect("settle")
        .expect("held");
    let failed = status(expected[0].clone()).await;
    assert_eq!(
        (failed.status, failed.error.as_deref()),
        (TaskState::Failed, Some("schema mismatch"))
    );
    // Child 2's claim times out: pending again, claimed again first.
    let two = claim(vec![validate.clone()], "c2").await.expect("child 2");
    assert_eq!(two.item.id, expected[1]);
    tokio::time::sleep(Duration::from_millis(30)).await;
    store.agent_expire(1_000).await.expect("expire");
    let back = status(expected[1].clone()).await;
    assert_eq!(
        (back.status, back.locked_by.as_deref(), back.claims),
        (TaskState::Pending, None, 1)
    );
    assert!(store
        .agent_settle(&two.token, &AgentReport::Completed(json!(1)))
        .await
        .expect("settle")
        .is_none());
    let retaken = claim(vec![validate.clone()], "c2b").await.expect("child 2");
    assert_eq!(
        (retaken.item.id.as_str(), retaken.claims),
        (expected[1].as_str(), 2)
    );
    // Released: pending again.
    store
        .agent_release(&retaken.token)
        .await
        .expect("release")
        .expect("held");
    assert_eq!(status(expected[1].clone()).await.status, TaskState::Pending);
    // Cancelled: child 2 pending, child 3 claimed; neither is offered any more.
    let three = claim(vec![validate.clone()], "c3").await.expect("a child");
    assert_eq!(three.item.id, expected[1], "the released one first");
    store
        .task_cancel(&expected[1])
        .await
        .expect("cancel claimed");
    store
        .task_cancel(&expected[2])
        .await
        .expect("cancel pending");
    refused(store.task_cancel(&expected[2]).await, "cancelled already");
    refused(store.task_cancel(&root.id).await, "completed already");
    refused(
        store.task_cancel(&format!("{prefix}-none")).await,
        "does not exist",
    );
    assert!(store
        .agent_settle(&three.token, &AgentReport::Completed(json!(1)))
        .await
        .expect("settle")
        .is_none());
    assert!(claim(vec![validate.clone()], "c4").await.is_none());
    assert_eq!(
        status(expected[2].clone()).await.status,
        TaskState::Cancelled
    );

    let summary = store.task_summary(&workflow).await.expect("summary");
    let counts = |pairs: &[(&str, u64)]| -> std::collections::BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    };
    assert_eq!(summary.total_tasks, 4);
    assert_eq!(
        summary.status_counts,
        counts(&[
            ("pending", 0),
            ("in_progress", 0),
            ("completed", 1),
            ("failed", 1),
            ("cancelled", 2)
        ])
    );
    assert_eq!(
        summary.type_counts,
        counts(&[(analyze.as_str(), 1), (validate.as_str(), 3)])
    );
    assert_eq!(
        summary.by_type[&validate],
        counts(&[("failed", 1), ("cancelled", 2)])
    );
    assert_eq!(
        store
            .task_summary(&other)
            .await
            .expect("summary")
            .total_tasks,
        0
    );

    let set: Map<String, Value> =
        serde_json::from_value(json!({"version": "2.0", "n": 3})).expect("an object");
    assert_eq!(
        store.workflow_metadata(&workflow, &set).await.expect("set"),
        set
    );
    let more: Map<String, Value> =
        serde_json::from_value(json!({"version": "2.1", "env": "prod"})).expect("an object");
    let merged = store
        .workflow_metadata(&workflow, &more)
        .await
        .expect("set");
    assert_eq!(
        Value::Object(merged),
        json!({"version": "2.1", "n": 3, "env": "prod"}),
        "keys set are replaced, others kept"
    );
    assert!(store
        .workflow_metadata(&other, &Map::new())
        .await
        .expect("read")
        .is_empty());
}

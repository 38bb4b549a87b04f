//! The shared backend test suite: every `Broker` and `Store` implementation, in memory or real,
//! must pass the same checks. Backends call these from their own tests with a fresh namespace.
//! Test code: a failed check panics, which is how it reports.
//!
//! # Layout
//! One file per capability of the store (see [`crate::store`]), each with one suite a backend
//! can run alone on a store with just that capability:
//!
//! | File | Suites |
//! |------|--------|
//! | `runs.rs`, `claims.rs` | [`runs_suite`], [`claim_suite`] |
//! | `outcomes.rs`, `rerun.rs`, `kept.rs` | [`outcomes_suite`], [`rerun_suite`], [`kept_results_suite`] |
//! | `state.rs` | [`contexts_suite`], [`results_suite`], [`documents_suite`] |
//! | `shared.rs` | [`membership_suite`], [`notices_suite`], [`memo_suite`] |
//! | `agent_queue.rs` | [`agent_suite`] |
//! | `tasks.rs` | [`task_suite`] |
//! | `wanted.rs` | [`workflow_claim_suite`], [`any_claim_suite`], [`listing_suite`] |
//! | `broker.rs` | [`broker_suite`] |
//!
//! [`store_suite`] runs the suites every session store passes.
#![allow(clippy::expect_used)]

mod agent_queue;
mod broker;
mod claims;
mod kept;
mod outcomes;
mod rerun;
mod runs;
mod shared;
mod state;
mod tasks;
mod wanted;

pub use agent_queue::agent_suite;
pub use broker::broker_suite;
pub use claims::claim_suite;
pub use kept::kept_results_suite;
pub use outcomes::outcomes_suite;
pub use rerun::rerun_suite;
pub use runs::runs_suite;
pub use shared::{membership_suite, memo_suite, notices_suite};
pub use state::{contexts_suite, documents_suite, results_suite};
pub use tasks::task_suite;
pub use wanted::{any_claim_suite, listing_suite, workflow_claim_suite};

use crate::messages::{Outcome, Status, TaskRecord, TaskRef};
use crate::store::{Fence, Store, Subscription};
use serde_json::{json, Value};
use std::time::Duration;

/// A bound, not an expectation: a consumer-group rebalance on a real broker can take several seconds.
const WAIT: Duration = Duration::from_secs(60);

/// The run the store suites record outcomes for.
const RUN: &str = "agency_action/3/14";

/// The run of the session id before [`RUN`]: its work is late.
const EARLIER: &str = "agency_action/3/13";

/// The task the store suites record outcomes of.
const TASK: TaskRef = TaskRef { group: 0, task: 1 };

/// The runs, outcomes, context, results, documents, membership and notices of a session store,
/// each under sessions (members, channels) named after `session`.
pub async fn store_suite(store: &dyn Store, session: &str) {
    runs_suite(store, session).await;
    outcomes_suite(store, session).await;
    contexts_suite(store, &format!("{session}-context")).await;
    results_suite(store, session).await;
    documents_suite(store, session).await;
    membership_suite(store, &format!("{session}-member")).await;
    notices_suite(store, session).await;
}

/// Instance `instance`'s attempt `attempt`: a success holding the instance, or a failure.
fn outcome(instance: u64, attempt: u32, ok: bool) -> Outcome {
    let status = if ok {
        Status::Succeeded(json!(instance))
    } else {
        Status::Failed(taskgroup::Failure::error(format!("attempt {attempt}")))
    };
    Outcome {
        instance,
        attempt,
        status,
    }
}

/// Starts [`RUN`] of `session`.
async fn started(store: &dyn Store, session: &str) {
    store
        .start_run(session, RUN, Fence::Open)
        .await
        .expect("start the run");
}

/// Starts [`RUN`] of `session` with [`TASK`]'s full record saved.
async fn started_with_task(store: &dyn Store, session: &str) {
    started(store, session).await;
    store
        .save_task(session, TASK, &outcomes::full_record(), Fence::Open)
        .await
        .expect("save task");
}

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

/// The subscription's next message, within [`WAIT`].
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

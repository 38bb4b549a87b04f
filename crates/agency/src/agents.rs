//! Work that external agents claim (seed 003): a task with `"executor": "agent"` has its
//! instances offered, rendered, on the store's queue instead of run by a worker; an agent claims
//! one, and completes, fails or releases it by its token. What an agent reports is recorded as
//! a worker's outcome would be (the recording rule, then a notice), so retries, failure policies
//! and results work as for any task. A claim that times out is recorded as a failed attempt.

use crate::error::{Error, Result};
use crate::outage::retrying;
use events::{AgentClaim, AgentItem, AgentOrigin, Notice, Outcome, Status, Store, TaskRef};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// How often a waiting claim asks again.
const POLL: Duration = Duration::from_millis(100);

/// Claims the next item of `types` for `agent`, asking again until one comes or `wait` passed.
pub async fn claim(
    store: &dyn Store,
    agent: &str,
    types: &[String],
    wait: Duration,
) -> Result<Option<AgentClaim>> {
    let until = Instant::now() + wait;
    loop {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let claimed = retrying("claiming work", || store.agent_claim(agent, types, &token)).await?;
        if claimed.is_some() || Instant::now() >= until {
            return Ok(claimed);
        }
        tokio::time::sleep(POLL.min(until.saturating_duration_since(Instant::now()))).await;
    }
}

/// What `agency agent claim --json` prints of a claim.
pub fn describe(claim: &AgentClaim) -> Value {
    let AgentOrigin::Instance {
        session,
        task_id,
        instance,
        attempt,
        ..
    } = &claim.item.origin;
    json!({
        "token": claim.token,
        "session_id": session,
        "task": task_id,
        "instance": instance,
        "type": claim.item.kind,
        "input": claim.item.input,
        "attempt": attempt,
        "agent": claim.agent,
    })
}

/// Completes the item `token` holds with `result`; refused, changing nothing, when the token
/// holds none.
pub async fn complete(store: &dyn Store, token: &str, result: Value) -> Result<AgentClaim> {
    settle(store, token, Status::Succeeded(result)).await
}

/// Fails the attempt of the item `token` holds with `error` (the task's retry policy decides
/// what follows); refused, changing nothing, when the token holds none.
pub async fn fail(store: &dyn Store, token: &str, error: &str) -> Result<AgentClaim> {
    settle(store, token, Status::Failed(error.to_string())).await
}

/// Puts the item `token` holds back for another agent, as if never claimed; refused when the
/// token holds none.
pub async fn release(store: &dyn Store, token: &str) -> Result<AgentItem> {
    retrying("releasing a claim", || store.agent_release(token))
        .await?
        .ok_or_else(|| Error::StaleClaim {
            token: token.to_string(),
        })
}

async fn settle(store: &dyn Store, token: &str, status: Status) -> Result<AgentClaim> {
    let claim = retrying("settling a claim", || store.agent_settle(token))
        .await?
        .ok_or_else(|| Error::StaleClaim {
            token: token.to_string(),
        })?;
    record(store, &claim.item, status).await?;
    Ok(claim)
}

/// Records claims past their timeout as failed attempts; returns how many.
pub async fn reap(store: &dyn Store) -> Result<usize> {
    let expired = retrying("reading expired claims", || store.agent_expired(256)).await?;
    for claim in &expired {
        let error = format!(
            "the claim by agent `{}` was not completed within {} ms",
            claim.agent, claim.item.claim_timeout_ms
        );
        record(store, &claim.item, Status::TimedOut(error)).await?;
    }
    Ok(expired.len())
}

/// Records `status` as the outcome of the item's instance attempt, then announces it.
async fn record(store: &dyn Store, item: &AgentItem, status: Status) -> Result<()> {
    let AgentOrigin::Instance {
        session,
        run,
        group,
        task,
        instance,
        attempt,
        ..
    } = &item.origin;
    let task = TaskRef {
        group: *group,
        task: *task,
    };
    let mut notice = Notice::new(session, task);
    match status.failure() {
        None => notice.add_success(*instance, *attempt),
        Some((error, permanent)) => notice.add_failure(*instance, *attempt, &error, permanent),
    }
    let notice = events::encode("a notice", &notice)?;
    let mut outcome = Outcome {
        instance: *instance,
        attempt: *attempt,
        status,
    };
    // A large result goes to a blob, as a worker stores it, so recording calls stay small.
    crate::worker::blob_if_large(store, session, task, &mut outcome).await?;
    let outcome = [outcome];
    // Refused when recorded before or when the run ended: then there is nothing to announce.
    let accepted = retrying("recording an agent's outcome", || {
        store.record_outcomes(session, task, run, &outcome, Some(&notice))
    })
    .await?;
    if !accepted.first().copied().unwrap_or(false) {
        tracing::info!(%session, %run, instance, "an agent's outcome was not recorded: the instance was recorded before, or its run ended");
    }
    Ok(())
}

/// The id of an instance attempt's item: one per attempt, so a retry is offered anew.
pub(crate) fn item_id(
    session: &str,
    run: &str,
    task: TaskRef,
    instance: u64,
    attempt: u32,
) -> String {
    format!(
        "{session}|{run}|{}|{}|{instance}|{attempt}",
        task.group, task.task
    )
}

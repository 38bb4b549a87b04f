//! Work that external agents claim (seed 003): a task with `"executor": "agent"` has its
//! instances offered, rendered, on the store's queue instead of run by a worker; an agent claims
//! one, and completes, fails or releases it by its token. What an agent reports is kept in the
//! store as a report, and a worker records it as a worker's outcome would be (the recording
//! rule, then a notice), so retries, failure policies and results work as for any task. A claim
//! that times out is recorded as a failed attempt. Tasks of the task manager (`crate::task_manager`)
//! are claimed the same way; settling one sets its status in the same store call.

use crate::error::{Error, Result};
use crate::outage::retrying;
use events::{
    AgentClaim, AgentItem, AgentOrigin, AgentQueue, AgentReport, Notice, Outcome, Outcomes,
    Reported, Status, TaskRef, Wanted,
};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use taskgroup::{Failure, FailureKind};

/// How often a waiting claim asks again.
const POLL: Duration = Duration::from_millis(100);

/// Claims the next item `wanted` says for `agent` (of its types, or any; of a workflow, or
/// any), asking again until one comes or `wait` passed.
pub async fn claim(
    store: &dyn AgentQueue,
    agent: &str,
    wanted: Wanted<'_>,
    wait: Duration,
) -> Result<Option<AgentClaim>> {
    let until = Instant::now() + wait;
    loop {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let claimed =
            retrying("claiming work", || store.agent_claim(agent, wanted, &token)).await?;
        if claimed.is_some() || Instant::now() >= until {
            return Ok(claimed);
        }
        tokio::time::sleep(POLL.min(until.saturating_duration_since(Instant::now()))).await;
    }
}

/// What `agency agent claim --json` prints of a claim: `token`, `session_id`, `task`,
/// `instance`, `type`, `input`, `attempt` and `agent`; a task of the task manager has no session
/// and no instance (`null`), its id as `task`, its `workflow` and `parent_id`.
pub fn describe(claim: &AgentClaim) -> Value {
    let mut described = json!({
        "token": claim.token,
        "type": claim.item.kind,
        "input": claim.item.input,
        "agent": claim.agent,
    });
    let fields = match &claim.item.origin {
        AgentOrigin::Instance {
            session,
            task_id,
            instance,
            attempt,
            ..
        } => json!({
            "session_id": session,
            "task": task_id,
            "instance": instance,
            "attempt": attempt,
        }),
        AgentOrigin::Task { workflow, parent } => json!({
            "session_id": null,
            "task": claim.item.id,
            "instance": null,
            "attempt": claim.claims,
            "workflow": workflow,
            "parent_id": parent,
        }),
    };
    if let (Some(described), Value::Object(fields)) = (described.as_object_mut(), fields) {
        described.extend(fields);
    }
    described
}

/// Completes the item `token` holds with `result`; refused, changing nothing, when the token
/// holds none.
pub async fn complete(store: &dyn AgentQueue, token: &str, result: Value) -> Result<AgentClaim> {
    settle(store, token, AgentReport::Completed(result)).await
}

/// Fails the attempt of the item `token` holds with `error` (a session task's retry policy
/// decides what follows; a task of the task manager is `failed`); refused, changing nothing,
/// when the token holds none.
pub async fn fail(store: &dyn AgentQueue, token: &str, error: &str) -> Result<AgentClaim> {
    settle(store, token, AgentReport::Failed(error.to_string())).await
}

/// Puts the item `token` holds back for another agent, as if never claimed; refused when the
/// token holds none.
pub async fn release(store: &dyn AgentQueue, token: &str) -> Result<AgentItem> {
    retrying("releasing a claim", || store.agent_release(token))
        .await?
        .ok_or_else(|| Error::StaleClaim {
            token: token.to_string(),
        })
}

async fn settle(store: &dyn AgentQueue, token: &str, report: AgentReport) -> Result<AgentClaim> {
    retrying("settling a claim", || store.agent_settle(token, &report))
        .await?
        .ok_or_else(|| Error::StaleClaim {
            token: token.to_string(),
        })
}

/// How many reports a worker takes at a time, and how long it holds them.
const REPORTS_PAGE: usize = 256;
const REPORTS_LEASE: Duration = Duration::from_secs(30);

/// Ends claims past their timeout (an instance's attempt is reported timed out, a task is
/// pending again), then records every instance's report as that attempt's outcome; returns
/// how many claims ended and how many reports were recorded.
pub async fn reap(
    store: &(impl AgentQueue + Outcomes + events::Results + ?Sized),
) -> Result<(usize, usize)> {
    let expired = retrying("ending claims that timed out", || store.agent_expire(256)).await?;
    let mut recorded = 0;
    loop {
        let reports = retrying("reading agents' reports", || {
            store.agent_reports(REPORTS_PAGE, REPORTS_LEASE)
        })
        .await?;
        let mut done = Vec::with_capacity(reports.len());
        let mut trouble = None;
        for reported in &reports {
            match record(store, reported).await {
                Ok(()) => done.push(reported.item.id.clone()),
                // The store is away: what is not recorded stays leased, for later.
                Err(error) if error.is_retryable() => {
                    trouble = Some(error);
                    break;
                }
                // One that can never be recorded must not hold back the others.
                Err(error) => {
                    tracing::warn!(item = %reported.item.id, %error, "an agent's report cannot be recorded; dropped");
                    done.push(reported.item.id.clone());
                }
            }
        }
        retrying("deleting recorded reports", || store.agent_reported(&done)).await?;
        if let Some(error) = trouble {
            return Err(error);
        }
        recorded += reports.len();
        if reports.len() < REPORTS_PAGE {
            return Ok((expired, recorded));
        }
    }
}

/// Records what an agent reported as the outcome of the item's instance attempt, then
/// announces it. Recording again what was recorded is refused by the recording rule, so a
/// report recorded twice (its lease ran out first) counts once.
async fn record(
    store: &(impl Outcomes + events::Results + ?Sized),
    reported: &Reported,
) -> Result<()> {
    let AgentOrigin::Instance {
        session,
        run,
        group,
        task,
        instance,
        attempt,
        ..
    } = &reported.item.origin
    else {
        return Ok(());
    };
    let status = match &reported.outcome {
        AgentReport::Completed(result) => Status::Succeeded(result.clone()),
        AgentReport::Failed(error) => Status::Failed(Failure::error(error.clone())),
        AgentReport::TimedOut => Status::Failed(Failure::new(
            FailureKind::Timeout,
            format!(
                "the claim by agent `{}` was not completed within {} ms",
                reported.agent, reported.item.claim_timeout_ms
            ),
        )),
    };
    let task = TaskRef {
        group: *group,
        task: *task,
    };
    let mut notice = Notice::new(session, task);
    match status.failure() {
        None => notice.add_success(*instance, *attempt),
        Some(failure) => notice.add_failure(*instance, *attempt, failure),
    }
    let notice = events::encode("a notice", &notice)?;
    let mut outcome = Outcome {
        instance: *instance,
        attempt: *attempt,
        status,
    };
    // A large result goes to a blob, as a worker stores it, so recording calls stay small.
    crate::results::blob_if_large(store, session, task, &mut outcome).await?;
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

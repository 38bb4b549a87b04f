//! The lease protocol: one coordinator runs a session at a time. Taking the lease decides
//! whether the session starts fresh, resumes from what a stopped coordinator stored, or was done
//! already; renewing it in a task of its own tells the run when the lease went to another.

use super::{Coordinator, Lease, LEASE};
use crate::error::{Error, HandedOver, Result};
use events::{Claim, Fence, Origin, Renewal, TaskRef};
use serde_json::Value;
use taskgroup::{ResultStatus, Session};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// The tasks of the session's exit handlers: a rerun runs them again, whatever they did.
pub(crate) fn exit_handlers(session: &Session) -> Vec<TaskRef> {
    session
        .spec
        .groups
        .iter()
        .enumerate()
        .filter(|(_, group)| group.on_exit)
        .flat_map(|(g, group)| (0..group.tasks.len()).map(move |t| TaskRef { group: g, task: t }))
        .collect()
}

/// How a session starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Start {
    /// From nothing.
    Fresh,
    /// From what an earlier coordinator stored (under a lease, or an embedded run resumed from
    /// its state file).
    Resume,
    /// A rerun of what failed: from the successes an earlier run recorded, `kept` of them (the
    /// rest of its outcomes are gone, see `Outcomes::keep_successes`).
    Rerun {
        /// How many successes are reused.
        kept: u64,
    },
}

/// What taking a session's lease found.
pub(super) enum Taken {
    Run(Start),
    /// The action was delivered again and its session is done: its result, if still stored.
    Done(Option<Value>),
}

pub(super) fn handed_over(session: &str, why: &'static str) -> Error {
    HandedOver {
        session: session.to_string(),
        why,
    }
    .into()
}

/// Who holds a session's lease: a coordinator, for one action. Naming the action too makes an
/// older action delivered again to the same coordinator wait instead of taking over a newer run
/// of the id. Written `owner@origin`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Holder<'a> {
    /// The coordinator's name.
    pub(super) owner: &'a str,
    /// The action's origin.
    pub(super) origin: &'a Origin,
}

impl std::fmt::Display for Holder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.owner, self.origin)
    }
}

/// Why a coordinator is stopping, as a hand-over.
pub(super) const STOPPING: &str = "this coordinator is stopping";

impl Coordinator {
    /// Takes the session's lease: waits while another coordinator holds it, and while the store
    /// cannot be reached (the action is not lost to an outage).
    /// A `rerun` (of this session) keeps the successes an earlier run of the id left instead of
    /// deleting its working state, except its exit handlers', which run again.
    pub(super) async fn take(
        &self,
        lease: Lease<'_>,
        id: &str,
        origin: &Origin,
        rerun: Option<&Session>,
        stop: &CancellationToken,
    ) -> Result<Taken> {
        let mut unreachable = events::Backoff::new();
        loop {
            let claimed = self
                .store
                .claim(id, lease.holder, origin, lease.token, LEASE)
                .await;
            let wait = match claimed {
                Ok(Claim::Fresh) => return Ok(Taken::Run(Start::Fresh)),
                Ok(Claim::Stale) => {
                    if let Some(session) = rerun {
                        let forget = exit_handlers(session);
                        let kept = self
                            .store
                            .keep_successes(id, &forget, Fence::Token(lease.token))
                            .await?;
                        tracing::info!(
                            session = id,
                            kept,
                            "rerunning what failed: the earlier run's successes are reused"
                        );
                        return Ok(Taken::Run(Start::Rerun { kept }));
                    }
                    // An earlier run under this id may have left working state behind.
                    self.store.cleanup(id, Fence::Token(lease.token)).await?;
                    return Ok(Taken::Run(Start::Fresh));
                }
                Ok(Claim::Resume) => {
                    tracing::info!(session = id, "resuming a session from what the store holds (another coordinator left it, or this one was interrupted)");
                    return Ok(Taken::Run(Start::Resume));
                }
                Ok(Claim::Finished) => {
                    // Another submission under this id may have deleted the result since.
                    let result = self.store.load_result(id).await?;
                    // Its coordinator may have stopped between storing the result and cleaning
                    // up: the working state of this run goes now (a later run's stays), unless
                    // it is kept for a rerun (the session did not complete).
                    let completed = result.as_ref().is_some_and(|result| {
                        ResultStatus::of(result) == Some(ResultStatus::Completed)
                    });
                    if completed {
                        let run = origin.to_string();
                        if let Err(error) = self.store.cleanup_run(id, &run).await {
                            tracing::warn!(session = id, %error, "cannot delete a finished session's working state; it expires by itself");
                        }
                    }
                    return Ok(Taken::Done(result));
                }
                Ok(Claim::Superseded) => {
                    tracing::info!(
                        session = id,
                        %origin,
                        "an older action for this session id, delivered again: skipped"
                    );
                    return Ok(Taken::Done(None));
                }
                Ok(Claim::Held) => LEASE / 3,
                Err(error) if error.is_retryable() => {
                    tracing::warn!(session = id, %error, "cannot take the session's lease yet");
                    unreachable.next_delay()
                }
                Err(error) => return Err(error.into()),
            };
            if !events::retry::sleep_or_stop(wait, stop).await {
                return Err(handed_over(id, STOPPING));
            }
        }
    }

    /// Renews the session's lease every third of it, in a task of its own so that no long step of
    /// the session delays it. The returned receiver gets why the lease ended: another
    /// coordinator holds it ([`Renewal::Taken`]) or the store lost the session
    /// ([`Renewal::StateLost`]). Dropping it stops the renewing.
    pub(super) fn keep_lease(&self, id: &str, lease: Lease<'_>) -> oneshot::Receiver<Renewal> {
        let (mut ended, receiver) = oneshot::channel();
        let (store, id) = (self.store.clone(), id.to_string());
        let (holder, token) = (lease.holder.to_string(), lease.token.to_string());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = ended.closed() => return,
                    () = tokio::time::sleep(LEASE / 3) => {}
                }
                match store.renew(&id, &holder, &token, LEASE).await {
                    Ok(Renewal::Held) => {}
                    Ok(end) => {
                        // The session may have ended meanwhile; then nobody listens.
                        let _ = ended.send(end);
                        return;
                    }
                    // Nobody can take the lease while the store is unreachable; try again.
                    Err(error) => {
                        tracing::warn!(session = %id, %error, "cannot renew the session's lease")
                    }
                }
            }
        });
        receiver
    }
}

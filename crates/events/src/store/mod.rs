//! The `Store` seam: durable session state and pub/sub wake-ups (Redis in production; the
//! in-memory twin is `memory_store`), split by capability. Each capability is a trait of its
//! own and a consumer asks only for those it uses; [`Store`] is every capability at once, what a
//! full backend (memory, state file, Redis, chaos) is.
//!
//! | capability | what it keeps | file |
//! | --- | --- | --- |
//! | [`Runs`] | leases and fencing, the current run, cancel and pause marks, cleanup | `session.rs` |
//! | [`Outcomes`] | task records, instances' outcomes, range counts, outcomes kept | `session.rs` |
//! | [`Contexts`] | the shared context and the result key mappings | `session.rs` |
//! | [`Results`] | final and partial results, blobs | `session.rs` |
//! | [`Documents`] | run documents, intake notes, the live state, recent sessions | `session.rs` |
//! | [`Membership`] | the store's clock, processes' heartbeats | `shared.rs` |
//! | [`Memo`] | memoized results, apart from sessions | `shared.rs` |
//! | [`Notices`] | pub/sub wake-ups | `shared.rs` |
//! | [`AgentQueue`] | items claimed by external agents | `for_agents.rs` |
//! | [`TaskManager`] | the task manager's tasks and workflows | `for_agents.rs` |
//!
//! Recording rule, the same for every implementation (exactly-once recording under
//! at-least-once execution): per (session, task, instance), a success is final; a failure may be
//! replaced by a newer attempt; an outcome whose attempt is not newer than the stored one is
//! refused. Outcomes are written before they are announced, so a lost announcement loses nothing.

mod for_agents;
mod session;
mod shared;

pub use for_agents::{AgentQueue, TaskManager};
pub use session::{Contexts, Documents, Outcomes, Results, Runs};
pub use shared::{Membership, Memo, Notices};

use crate::error::Result;
use crate::messages::Outcome;
use async_trait::async_trait;

/// Where final and partial results are announced.
pub const RESULTS_CHANNEL: &str = "agency:results";
/// Coordinator-to-worker control messages.
pub const CONTROL_CHANNEL: &str = "agency:control";

/// The channel that announces a session's outcomes to its coordinator.
pub fn notices_channel(session: &str) -> String {
    format!("agency:notices:{{{session}}}")
}

/// The channel a session's live state is announced on each time a run writes it
/// ([`Documents::save_state`] with `replace`): a follower subscribes, then reads the stored state to
/// catch up.
pub fn progress_channel(session: &str) -> String {
    format!("agency:progress:{{{session}}}")
}

/// Matches every session's notices channel: a coordinator reads all its sessions' notices over
/// one subscription.
pub const NOTICES_PATTERN: &str = "agency:notices:*";

/// Who may write a session's state. A coordinator running a session under a lease writes with
/// the token its [`Runs::claim`] stored; once another claim replaces the token, every write
/// with the old one is refused ([`crate::Error::Fenced`]) in the same atomic step that checks it,
/// so a coordinator that was paused past its lease cannot overwrite what its successor wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence<'a> {
    /// No lease is involved: an embedded run, or a write outside any run (a client, a rejected
    /// session).
    Open,
    /// The token of the claim the writer holds.
    Token(&'a str),
}

impl Fence<'_> {
    /// The token, or `""` for [`Fence::Open`] (how the Lua scripts take it).
    pub fn token(&self) -> &str {
        match self {
            Self::Open => "",
            Self::Token(token) => token,
        }
    }
}

/// What [`Runs::claim`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// First run of this session id: the caller holds the lease.
    Fresh,
    /// The id ran before from another action; that run's result is deleted and its working
    /// state, if any is left, must be cleaned up. The caller holds the lease.
    Stale,
    /// This very action started the session before and it has no result: a coordinator stopped
    /// running it. The caller holds the lease and resumes from the stored state.
    Resume,
    /// This action's session has its result: nothing to do.
    Finished,
    /// Another coordinator holds the lease.
    Held,
    /// A later action of the same topic partition started this session id: this one is old
    /// (delivered again) and must not run.
    Superseded,
}

/// What [`Runs::renew`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// The caller holds the lease (again, if it had lapsed and nobody took it).
    Held,
    /// Another coordinator holds the lease.
    Taken,
    /// The session's origin is gone from the store, so its state is too: the store lost its data
    /// (a Redis restarted without persistence, a flush). Nothing can resume the session.
    StateLost,
}

/// Every capability at once: what a full backend is, and what a component that uses most of
/// them (the coordinator, a worker) takes. Implemented for every type that has them all.
pub trait Store:
    Runs
    + Outcomes
    + Contexts
    + Results
    + Documents
    + Membership
    + Memo
    + Notices
    + AgentQueue
    + TaskManager
{
}

impl<T> Store for T where
    T: Runs
        + Outcomes
        + Contexts
        + Results
        + Documents
        + Membership
        + Memo
        + Notices
        + AgentQueue
        + TaskManager
{
}

/// What a worker tells [`Outcomes::track_range`] of a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeStep<'a> {
    /// The worker of this name (unique to its process) is about to execute the range.
    Started(&'a str),
    /// The range's outcomes are recorded.
    Finished,
}

/// A pub/sub subscription: messages in the order published.
#[async_trait]
pub trait Subscription: Send {
    /// The next message on the channel; waits until there is one.
    async fn next(&mut self) -> Result<Vec<u8>>;
}

/// Applies the recording rule to one slot; true when `outcome` is accepted.
pub fn accept(slot: &mut Option<Outcome>, outcome: Outcome) -> bool {
    let accepted = match slot {
        None => true,
        Some(stored) => !stored.succeeded() && outcome.attempt > stored.attempt,
    };
    if accepted {
        *slot = Some(outcome);
    }
    accepted
}

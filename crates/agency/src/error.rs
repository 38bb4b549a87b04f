//! The agency library's error: what went wrong running, submitting or waiting for a session,
//! and whether trying again can help ([`Error::is_retryable`]: a server that could not be
//! reached). Bad input never is.

/// The library's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A session this coordinator stopped running without a result, for another coordinator to
/// resume: its lease went to another, or this coordinator is shutting down.
#[derive(Debug, thiserror::Error)]
#[error("session {session} is left to another coordinator: {why}")]
pub struct HandedOver {
    /// The session's id.
    pub session: String,
    /// Why it was left.
    pub why: &'static str,
}

/// What is wrong with an action that should carry a session (`initialize`, `rerun`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadAction {
    /// Another kind of action.
    #[error("only an `initialize` or `rerun` action carries a session")]
    NoSession,
    /// `data` is not an object.
    #[error("`data` must be a session object")]
    DataNotObject,
    /// The session id is not one.
    #[error("{0}")]
    SessionId(String),
    /// `data.context` is not an object.
    #[error("`data.context` must be an object")]
    ContextNotObject,
}

/// Why a session cannot be rerun.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CannotRerun {
    /// It has no result.
    #[error("has no result to rerun (it never ran, is still queued, or its result expired)")]
    NoResult,
    /// It completed.
    #[error("completed: nothing failed, nothing to rerun")]
    Completed,
    /// Its recorded outcomes expired.
    #[error("({0}) kept no recorded outcomes to reuse (they expire a week after its last run); submit it again to run it whole")]
    NothingKept(taskgroup::ResultStatus),
}

/// Why a task's kept results cannot be read as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeptResults {
    /// Positions outside the task's results.
    #[error("results {start}..{end} are outside task `{task}`'s {count} results")]
    OutOfRange {
        /// The task's id.
        task: String,
        /// The first position asked.
        start: u64,
        /// The end asked.
        end: u64,
        /// How many it has.
        count: u64,
    },
    /// The task keeps no results by reference.
    #[error("session {session} keeps no results of {named} in the store ({state} holds none by reference): a task's results are kept there only when they exceed its `inline_results`; the others are in the context (`agency status {session} --json`)")]
    NoneKept {
        /// The session's id.
        session: String,
        /// The task as named.
        named: String,
        /// What was read: its result, or its context so far.
        state: &'static str,
    },
    /// Several groups have a task of that id.
    #[error(
        "{named} is in several groups of session {session} ({groups}): name one as GROUP.TASK"
    )]
    Ambiguous {
        /// The session's id.
        session: String,
        /// The task as named.
        named: String,
        /// The groups, comma-separated.
        groups: String,
    },
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A store or broker call failed; retryable when the server could not be reached.
    #[error(transparent)]
    Backend(#[from] events::Error),
    /// The session document is not valid.
    #[error(transparent)]
    Invalid(#[from] taskgroup::Error),
    /// An `agency_action` message that carries no session that can be run.
    #[error(transparent)]
    BadAction(#[from] BadAction),
    /// A session too large for one `agency_action` message.
    #[error("session {session} is {bytes} bytes as an agency_action message, over the limit of {limit} bytes; pass large inputs by reference (a URL, a file, a store key) instead")]
    TooLarge {
        /// The session's id.
        session: String,
        /// Its size as a message.
        bytes: usize,
        /// The most a message may be.
        limit: usize,
    },
    /// A session that cannot be rerun, and why.
    #[error("session {session} {why}")]
    CannotRerun {
        /// The session's id.
        session: String,
        /// Why.
        why: CannotRerun,
    },
    /// Results asked of a task that keeps none by reference, or of a name several tasks have.
    #[error(transparent)]
    KeptResults(#[from] KeptResults),
    /// A workflow task that is not an object (its place, from 1).
    #[error("workflow task {place}: must be an object, found {found}")]
    WorkflowTask {
        /// Its place in the list, from 1.
        place: usize,
        /// What was there.
        found: String,
    },
    /// No session of this id is pending, running or has a result.
    #[error("no session {session} is pending, running or has a result")]
    UnknownSession {
        /// The session's id.
        session: String,
    },
    /// This coordinator stopped running the session without a result, for another to resume.
    #[error(transparent)]
    HandedOver(#[from] HandedOver),
    /// A claim token that holds no item (settled or released already, or timed out): nothing
    /// changed.
    #[error("{}", events::agent_queue::stale_token(token))]
    StaleClaim {
        /// The token given.
        token: String,
    },
    /// A task of the task manager that cannot be made or found, with why.
    #[error("{0}")]
    InvalidTask(String),
    /// The store lost a running session's state (a Redis restarted without persistence, or was
    /// flushed): the session cannot be finished.
    #[error("the store lost the session's state (a Redis restarted without persistence, or flushed): it cannot be finished")]
    StateLost {
        /// The session's id.
        session: String,
    },
    /// The store holds fewer outcomes of a task than the coordinator counted from its notices:
    /// it failed over to a replica that missed the last writes (Redis replicates
    /// asynchronously). Retryable: the run is taken again from what the store holds, and the
    /// instances whose outcomes were lost run again.
    #[error("the store holds {stored} outcomes of task `{task}` of session {session}, where {counted} were recorded (a failover to a replica that missed them?): resuming from what it holds")]
    OutcomesLost {
        /// The session's id.
        session: String,
        /// The task's id.
        task: String,
        /// How many the coordinator counted.
        counted: u64,
        /// How many the store holds.
        stored: u64,
    },
    /// Stored data that should be there is not, or is not what it should be.
    #[error("{what}: {message}")]
    Corrupt {
        /// What was read.
        what: String,
        /// What is wrong with it.
        message: String,
    },
    /// A session's notices stopped arriving.
    #[error("notices of session {session}: {message}")]
    Notices {
        /// The session's id.
        session: String,
        /// What happened.
        message: String,
    },
    /// No result arrived within the time given.
    #[error("no result for session {session} within {seconds} s")]
    NoResult {
        /// The session's id.
        session: String,
        /// How long was waited.
        seconds: u64,
    },
    /// The session id was submitted again, and the later run replaced the one waited for: its
    /// result will never come.
    #[error("session {session} was submitted again (run {by}) before run {run} finished; that run's result will not come")]
    Superseded {
        /// The session's id.
        session: String,
        /// The run waited for.
        run: String,
        /// The later run.
        by: String,
    },
    /// The session id has a run under way with another document (one run per session id at a
    /// time).
    #[error("session {session} is running (run {run}) with another document; cancel it first (`agency cancel {session}`), or submit with --replace to cancel it and run this one")]
    Running {
        /// The session's id.
        session: String,
        /// The run under way.
        run: String,
    },
    /// A coordinator refused the submission, which started no run; why.
    #[error("{reason}")]
    Refused {
        /// The session's id.
        session: String,
        /// Why.
        reason: String,
    },
    /// A server did not answer within the time given for connecting.
    #[error("cannot reach {server} at {address} (tried for {} s)", .waited.as_secs())]
    Unreachable {
        /// `redis` or `kafka`.
        server: &'static str,
        /// Where it was looked for.
        address: String,
        /// How long it was tried.
        waited: std::time::Duration,
        /// The last error.
        source: events::Error,
    },
    /// A server answered and refused this client (its credentials, its certificate, a setting
    /// of its own): waiting could not help, so connecting stopped at once.
    #[error("{server} at {address} refused this client")]
    Rejected {
        /// `redis` or `kafka`.
        server: &'static str,
        /// Where it was.
        address: String,
        /// The server's or the client library's reason.
        source: events::Error,
    },
    /// A state file holds an unfinished run of the session from another document: resuming it
    /// with this one would mix two sessions.
    #[error("the state file holds an unfinished run of session {session} from another document; give this one another --state file, or delete the file to start over")]
    OtherDocument {
        /// The session's id.
        session: String,
    },
    /// The result could not be written out (to stdout, a file).
    #[error("cannot write the result: {0}")]
    Output(#[source] std::io::Error),
    /// A task of the engine (a worker loop) panicked or was aborted.
    #[error("{0}")]
    Task(String),
}

impl Error {
    /// Whether the same call may succeed later: a server that could not be reached, or a store
    /// that lost outcomes in a failover (a run resumed from it executes them again).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Backend(error) => error.is_retryable(),
            Self::OutcomesLost { .. } => true,
            _ => false,
        }
    }

    /// Whether the session was left to another coordinator rather than failed: it handed the
    /// session over, or the store refused a write because another coordinator claimed it since.
    pub fn is_handed_over(&self) -> bool {
        matches!(
            self,
            Self::HandedOver(_) | Self::Backend(events::Error::Fenced { .. })
        )
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(error: tokio::task::JoinError) -> Self {
        Self::Task(error.to_string())
    }
}

impl events::Retryable for Error {
    fn is_retryable(&self) -> bool {
        Error::is_retryable(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unreachable_server_is_retryable() {
        let unreachable = Error::from(events::Error::Unavailable {
            backend: "redis",
            message: "connection refused".into(),
        });
        assert!(unreachable.is_retryable());
        let refused = Error::from(events::Error::Corrupt {
            what: "x".into(),
            message: "y".into(),
        });
        assert!(!refused.is_retryable());
        assert!(!Error::from(BadAction::NoSession).is_retryable());
        let left = Error::from(HandedOver {
            session: "s".into(),
            why: "stopping",
        });
        assert!(left.is_handed_over() && !left.is_retryable());
    }
}

//! The sessions listed most recently, each with its status.

use super::Status;
use crate::error::{Error, Result};
use crate::outage::retrying;
use events::Store;
use serde::{Deserialize, Serialize};
use std::fmt;
use taskgroup::{LiveStatus, ResultStatus};

/// Where a listed session is: its live state's status, its result's, or why neither is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// Submitted; no coordinator runs it yet.
    Pending,
    /// A coordinator runs it.
    Running,
    /// Paused.
    Paused,
    /// Ended: every instance succeeded.
    Completed,
    /// Ended with some failures.
    Partial,
    /// Ended failed.
    Failed,
    /// Ended cancelled.
    Cancelled,
    /// Neither its result nor its live state is there any more.
    Unknown,
    /// What the store holds for it is not readable (another program's keys).
    Unreadable,
}

impl SessionStatus {
    /// Every status, in order.
    pub const ALL: [Self; 9] = [
        Self::Pending,
        Self::Running,
        Self::Paused,
        Self::Completed,
        Self::Partial,
        Self::Failed,
        Self::Cancelled,
        Self::Unknown,
        Self::Unreadable,
    ];

    /// The status as JSON and the command line spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Completed => "completed",
            Self::Partial => "partial",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Unknown => "unknown",
            Self::Unreadable => "unreadable",
        }
    }

    /// Whether a session can have it (it is not one of the reasons its status is not known).
    pub fn is_known(self) -> bool {
        !matches!(self, Self::Unknown | Self::Unreadable)
    }
}

impl fmt::Display for SessionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A status name that is none of [`SessionStatus::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?}: expected one of {}", SessionStatus::ALL.map(SessionStatus::as_str).join(", "))]
pub struct UnknownStatus {
    /// What was given.
    pub text: String,
}

impl std::str::FromStr for SessionStatus {
    type Err = UnknownStatus;

    fn from_str(text: &str) -> std::result::Result<Self, UnknownStatus> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
            .ok_or_else(|| UnknownStatus {
                text: text.to_string(),
            })
    }
}

impl From<LiveStatus> for SessionStatus {
    fn from(status: LiveStatus) -> Self {
        match status {
            LiveStatus::Pending => Self::Pending,
            LiveStatus::Running => Self::Running,
            LiveStatus::Paused => Self::Paused,
        }
    }
}

impl From<ResultStatus> for SessionStatus {
    fn from(status: ResultStatus) -> Self {
        match status {
            ResultStatus::Completed => Self::Completed,
            ResultStatus::Partial => Self::Partial,
            ResultStatus::Failed => Self::Failed,
            ResultStatus::Cancelled => Self::Cancelled,
        }
    }
}

/// A session listed by [`Client::sessions`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listed {
    /// Its id.
    pub session_id: String,
    /// Its result's status, else its live state's, `unknown` once both are gone, `unreadable`
    /// for another program's keys.
    pub status: SessionStatus,
    /// The run the status is of, when known.
    pub run: Option<String>,
    /// When it was listed (ISO 8601, UTC).
    pub listed_at: String,
}

/// The sessions listed most recently, newest first, at most `limit`, with `status` only when
/// given; each with its result's status, else its live state's (`unknown` once both are gone,
/// `unreadable` for another program's keys).
pub async fn sessions(
    store: &dyn Store,
    status: Option<SessionStatus>,
    limit: usize,
) -> Result<Vec<Listed>> {
    let read = sessions_read(store, status, limit).await?;
    Ok(read.into_iter().map(|(listed, _)| listed).collect())
}

/// [`sessions`], each with the result or live state its status was read from (`None` where
/// neither could be).
pub async fn sessions_read(
    store: &dyn Store,
    status: Option<SessionStatus>,
    limit: usize,
) -> Result<Vec<(Listed, Option<Status>)>> {
    let mut listed = Vec::new();
    for (session, at) in retrying("listing sessions", || store.sessions(limit)).await? {
        let (found, run, read) = match super::status(store, &session).await {
            Ok(Status::Finished(result)) => {
                let (status, run) = (result.status.into(), result.run.clone());
                (status, run, Some(Status::Finished(result)))
            }
            Ok(Status::Live(state)) => {
                let (status, run) = (state.status.into(), state.run.clone());
                (status, run, Some(Status::Live(state)))
            }
            Err(Error::Corrupt { .. }) => (SessionStatus::Unreadable, None, None),
            Err(Error::UnknownSession { .. }) => (SessionStatus::Unknown, None, None),
            Err(error) => return Err(error),
        };
        if status.is_some_and(|wanted| wanted != found) {
            continue;
        }
        let entry = Listed {
            session_id: session,
            status: found,
            run,
            listed_at: taskgroup::iso8601(at),
        };
        listed.push((entry, read));
    }
    Ok(listed)
}

//! The events crate's error: which backend operation failed, and whether retrying can help.

/// The events crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failed store or broker operation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The server could not be reached or dropped the connection; retrying may help.
    #[error("{backend} unavailable: {message}")]
    Unavailable {
        /// Which backend: `redis`, `kafka`, `memory`, ...
        backend: &'static str,
        /// The client's message.
        message: String,
    },
    /// The server answered with an error for this operation; retrying the same call will not help.
    #[error("{backend} refused {operation}: {message}")]
    Refused {
        /// Which backend: `redis`, `kafka`, `memory`, ...
        backend: &'static str,
        /// What was asked, e.g. `creating topic agency_dispatch`.
        operation: String,
        /// The server's answer.
        message: String,
    },
    /// Stored data could not be decoded.
    #[error("corrupt {what}: {message}")]
    Corrupt {
        /// What was being read, e.g. `outcome of instance 3`.
        what: String,
        /// The decoder's message.
        message: String,
    },
    /// A value could not be encoded (JSON that cannot be written); nothing was sent or stored.
    #[error("cannot encode {what}: {message}")]
    Encoding {
        /// What was being written.
        what: String,
        /// The encoder's message.
        message: String,
    },
    /// A write for a session by a coordinator whose lease another claim has replaced: the store
    /// refused it, atomically with checking. Retrying cannot help; the session belongs to the
    /// coordinator that claimed it since.
    #[error("session {session}: the write was refused, another coordinator holds the session's lease now")]
    Fenced {
        /// The session written to.
        session: String,
    },
    /// The broker lost messages this consumer had read: a partition of `topic` ends before
    /// where the consumer saw it end, on two readings (the broker came back without its log, or
    /// a replica missing the tail was made leader). The consumer is no use any more: its member
    /// subscribes again and reads the topic as it is now; positions of what the old one handed
    /// out must not be committed through the new one.
    #[error("the broker lost messages of {topic}: {detail}")]
    LogLost {
        /// The topic read.
        topic: String,
        /// Which partition ends where, against where it ended before.
        detail: String,
    },
    /// A subscription ended (the backend is shutting down).
    #[error("{0} closed")]
    Closed(String),
}

impl Error {
    /// An encoding failure of `what`.
    pub fn encoding(what: impl Into<String>, error: impl std::fmt::Display) -> Self {
        Self::Encoding {
            what: what.into(),
            message: error.to_string(),
        }
    }

    pub(crate) fn poisoned(what: &str) -> Self {
        Self::Unavailable {
            backend: "memory",
            message: format!("{what} lock poisoned by a panic"),
        }
    }

    /// Whether the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// `value` as JSON, for a message or a stored value; a failure is [`Error::Encoding`] of
/// `what`, never an empty message.
pub fn encode(what: &str, value: &impl serde::Serialize) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::encoding(what, e))
}

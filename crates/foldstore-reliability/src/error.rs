//! What can stop a scenario before it can judge the server.

/// A scenario could not run (as opposed to: it ran and a check failed).
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// `foldstore serve` could not be started or did not become healthy.
    #[error(
        "could not start `foldstore serve`: {0}; check the --foldstore path and the server's stderr above"
    )]
    Start(String),
    /// A request the scenario cannot do without failed (a seed write, a final read).
    #[error("{what}: {detail}")]
    Request {
        /// The request.
        what: String,
        /// The status and body, or the transport error.
        detail: String,
    },
    /// Local I/O (a file, a socket, a child process).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The scenario needs something this machine lacks (a PostgreSQL URL, root).
    #[error("{0}")]
    Unavailable(String),
}

impl HarnessError {
    /// An I/O error while doing `what`.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }

    /// A failed request.
    pub fn request(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Request {
            what: what.into(),
            detail: detail.into(),
        }
    }
}

//! Errors that reach a client. Each transport maps [`ErrorKind`] once to its own status code; the
//! message is safe to show (it names the field or line that was wrong, never internals).

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Malformed input, naming the field or line (HTTP 400).
    BadInput,
    /// No or wrong credentials (HTTP 401).
    Unauthenticated,
    /// Credentials fine, action not allowed (HTTP 403).
    Forbidden,
    NotFound,
    Conflict,
    /// Body or message over a configured limit (HTTP 413).
    TooLarge,
    /// The server is alive but cannot take this now: disk full, write buffer at its ceiling,
    /// not ready yet (HTTP 503 with Retry-After).
    Unavailable,
    /// A bug or an unexpected I/O failure; details are in the log, not in the message.
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct WireError {
    pub kind: ErrorKind,
    pub message: String,
}

impl WireError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        WireError { kind, message: message.into() }
    }
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadInput, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

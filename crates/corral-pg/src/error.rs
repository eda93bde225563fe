//! Errors as PostgreSQL reports them: a severity, a SQLSTATE code that drivers and tools branch
//! on, and a message that says what to do. Mapped here once for the door.

use corral_model::{ErrorKind, WireError};
use datafusion::error::DataFusionError;
use pgwire::api::ClientInfo;
use pgwire::api::ErrorHandler;
use pgwire::error::{ErrorInfo, PgWireError};

pub(crate) fn error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), code.into(), message.into())))
}

pub(crate) fn fatal(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("FATAL".into(), code.into(), message.into())))
}

/// The same answer for an unknown token, a device's token and a user name that does not fit, so
/// a failed login tells nothing about which tokens exist.
pub(crate) fn invalid_password(user: &str) -> PgWireError {
    fatal("28P01", format!("password authentication failed for user \"{user}\" (the password is an API token)"))
}

/// A statement the planner refused or that failed while running.
pub(crate) fn from_datafusion(e: DataFusionError) -> PgWireError {
    let e = e.find_root();
    let code = match e {
        DataFusionError::SQL(..) => "42601",
        DataFusionError::Plan(message) if message.contains("not found") => "42P01",
        DataFusionError::Plan(message) if message.contains("not supported") || message.contains("Unsupported") => "0A000",
        DataFusionError::Plan(_) | DataFusionError::SchemaError(..) => "42000",
        DataFusionError::NotImplemented(_) => "0A000",
        DataFusionError::ResourcesExhausted(_) => "53200",
        DataFusionError::ArrowError(..) | DataFusionError::Execution(_) => "22000",
        _ => "XX000",
    };
    let message = match e {
        DataFusionError::ResourcesExhausted(m) => format!("the query needs more memory than limits.query_memory_mb allows: {m}"),
        // DataFusion prefixes each kind ("Error during planning: "): PostgreSQL does not.
        DataFusionError::Plan(m) | DataFusionError::Execution(m) | DataFusionError::NotImplemented(m) => m.clone(),
        other => other.to_string(),
    };
    error(code, message)
}

/// An error from a platform service (the session could not be built).
pub(crate) fn from_wire(e: WireError) -> PgWireError {
    let code = match e.kind {
        ErrorKind::BadInput => "22000",
        ErrorKind::Unauthenticated => "28000",
        ErrorKind::Forbidden => "42501",
        ErrorKind::NotFound => "42P01",
        ErrorKind::Unavailable => "57P03",
        _ => "XX000",
    };
    error(code, e.message)
}

/// Statements that would write are refused with the code PostgreSQL uses on a read-only replica,
/// which tools recognise.
pub(crate) fn read_only(what: &str) -> PgWireError {
    error("25006", format!("{what} is not allowed: Corral's SQL is read-only (ingest goes through its doors)"))
}

/// Logs what the door sends back, so an operator can see why a tool fails without a capture.
pub(crate) struct LogErrors;

impl ErrorHandler for LogErrors {
    fn on_error<C: ClientInfo>(&self, client: &C, error: &mut PgWireError) {
        let info = match error {
            PgWireError::UserError(info) => format!("{} {}", info.code, info.message),
            other => other.to_string(),
        };
        tracing::debug!(proto = %"pg", peer = %client.socket_addr(), error = %info, "statement failed");
    }
}

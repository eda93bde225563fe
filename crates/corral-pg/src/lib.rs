//! The PostgreSQL wire door: psql, Grafana, Metabase, DBeaver, pandas and every PostgreSQL driver
//! query the platform's SQL over the PostgreSQL v3 protocol.
//!
//! Place on the data path: at the read end. It is a door like MQTT or HTTP, but for SQL: it
//! authenticates through [`Identity`] (user = the API token's name or `token`, password = the
//! token), asks [`SqlService::session`] for a session scoped exactly as `/api/v1/query` scopes a
//! token (a tenant-scoped token sees only its tenant's rows), and plans each statement there,
//! read-only, under the same memory pool, timeout and row limit. It never sees the store.
//!
//! What makes BI tools work is not the protocol but the catalog they read first: `pg_catalog`
//! (from `datafusion-pg-catalog`, over the session's own tables), `information_schema` (from
//! DataFusion), `version()`, `current_schema()`, `SHOW`, and `SET`/`BEGIN` accepted where harmless.
//! Their queries are rewritten into what DataFusion plans (`::regclass` casts, `= ANY(array)`,
//! ...) before planning.
//!
//! | module | its job |
//! |---|---|
//! | `login` | the startup: TLS policy, token as password, the caller kept for the connection |
//! | `catalog` | a statement's session: the scoped tables plus `pg_catalog` and PostgreSQL's functions |
//! | `information_schema` | PostgreSQL's `information_schema`, with its type names, over the session's tables |
//! | `functions` | the PostgreSQL functions tools call that no library provides (`version()`, `current_setting`) |
//! | `statement` | what a statement is (a query, `SET`, `SHOW`, a transaction verb, refused) |
//! | `handler` | simple and extended query: parse, describe, bind, execute, stream rows |
//! | `error` | errors as PostgreSQL reports them (SQLSTATE codes) |
//!
//! ```no_run
//! # async fn run(sql: std::sync::Arc<dyn corral_services::SqlService>, identity: std::sync::Arc<dyn corral_services::Identity>) -> std::io::Result<()> {
//! let door = corral_pg::PgDoor::new(sql, identity, corral_pg::PgLimits::default(), None, corral_pg::Cleartext::Loopback)
//!     .expect("pg_catalog builds");
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:5433").await?;
//! let (_stop, stopped) = tokio::sync::watch::channel(false);
//! door.serve(listener, stopped).await;
//! # Ok(()) }
//! ```

mod catalog;
mod error;
mod functions;
mod handler;
mod information_schema;
mod login;
mod statement;

use corral_services::{Identity, SqlService};
use pgwire::api::PgWireServerHandlers;
use pgwire::api::auth::StartupHandler;
use pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::{ConnectionManager, ErrorHandler};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

pub use catalog::SERVER_VERSION;

/// `[pg]`: the PostgreSQL wire listener.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PgSettings {
    /// PostgreSQL wire protocol listener (`off` disables it) for psql, BI tools and drivers: user =
    /// an API token's name or `token`, password = the token. Offers TLS (`sslmode=require`) when
    /// `mqtt.tls_cert` and `mqtt.tls_key` are set. Port 0 picks a free port.
    pub listen: String,
    /// Where a token may be sent without TLS: `loopback` (from this machine only) or `never`.
    pub cleartext: Cleartext,
}

impl Default for PgSettings {
    fn default() -> Self {
        PgSettings { listen: "0.0.0.0:5433".into(), cleartext: Cleartext::Loopback }
    }
}

/// Where a token may be sent as a cleartext password on a connection without TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Cleartext {
    /// Never: every client must negotiate TLS first.
    Never,
    /// From loopback addresses only (the token never crosses a network), as `psql -h localhost`
    /// on the server's own machine. Others must use TLS.
    Loopback,
}

/// The bounds a statement runs under, the same as `/api/v1/query`'s.
#[derive(Debug, Clone, Copy)]
pub struct PgLimits {
    /// A statement that runs longer is cancelled (`57014`); a client's `statement_timeout` can
    /// only shorten it.
    pub statement_timeout: Duration,
    /// A result with more rows fails with `54000` after sending that many.
    pub max_rows: usize,
}

impl Default for PgLimits {
    fn default() -> Self {
        PgLimits { statement_timeout: Duration::from_secs(30), max_rows: 1_000_000 }
    }
}

/// The door: one per server, shared by every connection.
pub struct PgDoor {
    handlers: Arc<handler::Handlers>,
    tls: Option<TlsAcceptor>,
}

impl PgDoor {
    /// `tls` offers TLS to clients that ask (`sslmode=require`); without it, only `Cleartext`
    /// decides who may log in.
    pub fn new(
        sql: Arc<dyn SqlService>,
        identity: Arc<dyn Identity>,
        limits: PgLimits,
        tls: Option<TlsAcceptor>,
        cleartext: Cleartext,
    ) -> Result<PgDoor, datafusion::error::DataFusionError> {
        let connections = Arc::new(ConnectionManager::new());
        let login = Arc::new(login::TokenLogin::new(identity, cleartext, connections.clone()));
        let catalog = Arc::new(catalog::PgCatalog::new(sql)?);
        let handlers = Arc::new(handler::Handlers {
            queries: Arc::new(handler::Queries::new(catalog, limits)),
            login,
            cancel: Arc::new(DefaultCancelHandler::new(connections)),
        });
        Ok(PgDoor { handlers, tls })
    }

    /// Accepts connections until `stopped` turns true; each is served on its own task.
    pub async fn serve(self, listener: TcpListener, mut stopped: watch::Receiver<bool>) {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stopped.wait_for(|s| *s) => return,
            };
            match accepted {
                Ok((socket, peer)) => {
                    let _ = socket.set_nodelay(true);
                    let (handlers, tls) = (self.handlers.clone(), self.tls.clone());
                    tokio::spawn(async move {
                        if let Err(e) = pgwire::tokio::process_socket(socket, tls, handlers).await {
                            tracing::debug!(proto = %"pg", %peer, error = %e, "connection ended");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors, say: back off instead of spinning.
                    tracing::warn!(proto = %"pg", error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

impl PgWireServerHandlers for handler::Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.queries.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.queries.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.login.clone()
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(error::LogErrors)
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        self.cancel.clone()
    }
}

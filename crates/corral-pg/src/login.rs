//! The startup of a connection: who may send a token, whose token it is, and what the connection
//! remembers of its caller.
//!
//! PostgreSQL clients send the password in the clear when the server asks for it
//! (`AuthenticationCleartextPassword`), so the token travels only inside TLS, or over loopback
//! when the door allows it ([`Cleartext::Loopback`]). The user name must be the token's name or
//! `token`: a token copied into the wrong tool's settings with another user name is refused as a
//! wrong password would be, and the log says which.

use crate::Cleartext;
use crate::catalog::SERVER_VERSION;
use crate::error::{fatal, invalid_password};
use async_trait::async_trait;
use corral_services::{Application, Caller, Credential, Identity};
use futures::Sink;
use pgwire::api::auth::{
    LoginInfo, ServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::{
    ClientInfo, ConnectionGuard, ConnectionHandle, ConnectionManager, PgWireConnectionState, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator,
};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

/// The user name that fits every token.
const ANY_TOKEN: &str = "token";

/// The caller of a logged-in connection, kept in its session extensions until it closes.
#[derive(Debug)]
pub(crate) struct Session {
    pub application: Application,
    /// The connection's `pg_catalog`, built by its first statement and kept: it numbers tables
    /// (their OIDs) as it meets them, and tools look a table up by name in one statement and by
    /// OID in the next (psql's `\d`), so the numbering must outlive a statement.
    pub pg_catalog: std::sync::OnceLock<Arc<dyn datafusion::catalog::SchemaProvider>>,
}

impl Session {
    /// The connection's caller; `None` before login (pgwire routes no query there).
    pub fn of<C: ClientInfo + ?Sized>(client: &C) -> Option<Arc<Session>> {
        client.session_extensions().get::<Session>()
    }

    /// The tenant every table is scoped to, or `None` for a token that sees every tenant.
    pub fn tenant(&self) -> Option<&str> {
        self.application.tenant.as_ref().map(|t| t.as_str())
    }
}

pub(crate) struct TokenLogin {
    identity: Arc<dyn Identity>,
    cleartext: Cleartext,
    connections: Arc<ConnectionManager>,
    keys: RandomPidSecretKeyGenerator,
}

impl TokenLogin {
    pub fn new(identity: Arc<dyn Identity>, cleartext: Cleartext, connections: Arc<ConnectionManager>) -> TokenLogin {
        TokenLogin { identity, cleartext, connections, keys: RandomPidSecretKeyGenerator::default() }
    }

    fn may_send_password<C: ClientInfo>(&self, client: &C) -> bool {
        client.is_secure() || (self.cleartext == Cleartext::Loopback && client.socket_addr().ip().is_loopback())
    }

    /// The application the token names, if the user name fits it.
    async fn application(&self, user: &str, token: &str) -> Option<Application> {
        match self.identity.authenticate(Credential::Token(token)).await {
            Ok(Caller::Application(app)) if user == app.name || user == ANY_TOKEN => Some(app),
            Ok(Caller::Application(app)) => {
                tracing::info!(proto = %"pg", user, token = %app.name, "login refused: the user name is neither the token's name nor `token`");
                None
            }
            Ok(Caller::Device(device)) => {
                tracing::info!(proto = %"pg", user, device = %device.id, "login refused: a device token cannot query");
                None
            }
            Err(e) => {
                tracing::info!(proto = %"pg", user, reason = %e.message, "login refused");
                None
            }
        }
    }
}

#[async_trait]
impl StartupHandler for TokenLogin {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                if !self.may_send_password(client) {
                    tracing::info!(proto = %"pg", peer = %client.socket_addr(), "login refused: no TLS");
                    return Err(fatal(
                        "28000",
                        "this server takes tokens only over TLS: connect with sslmode=require (the server needs --tls-cert and --tls-key)",
                    ));
                }
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                futures::SinkExt::send(client, PgWireBackendMessage::Authentication(Authentication::CleartextPassword)).await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(password) => {
                let password = password.into_password()?;
                let user = LoginInfo::from_client_info(client).user().unwrap_or_default().to_string();
                let Some(application) = self.application(&user, &password.password).await else {
                    return Err(invalid_password(&user));
                };
                let (pid, secret_key) = self.keys.generate(client);
                client.set_pid_and_secret_key(pid, secret_key.clone());
                // A cancel request names the connection by (pid, key); the guard unregisters it
                // when the connection's extensions are dropped with it.
                let (handle, guard) = self.connections.register(pid, secret_key);
                client.session_extensions().insert::<Arc<ConnectionHandle>>(handle);
                client.session_extensions().insert::<ConnectionGuard>(guard);
                tracing::debug!(proto = %"pg", peer = %client.socket_addr(), token = %application.name, "logged in");
                client.session_extensions().insert(Session { application, pg_catalog: Default::default() });
                finish_authentication(client, &Parameters).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// The `ParameterStatus` values a client reads at login. Drivers parse `server_version` to pick
/// their catalog queries; `integer_datetimes` and `standard_conforming_strings` change how they
/// encode values, so they must say what the encoder does.
struct Parameters;

impl ServerParameterProvider for Parameters {
    fn server_parameters<C: ClientInfo>(&self, client: &C) -> Option<HashMap<String, String>> {
        let user = client.metadata().get("user").cloned().unwrap_or_default();
        let application = client.metadata().get("application_name").cloned().unwrap_or_default();
        let parameters = [
            ("server_version", SERVER_VERSION.to_string()),
            ("server_encoding", "UTF8".into()),
            ("client_encoding", "UTF8".into()),
            ("DateStyle", "ISO, YMD".into()),
            ("IntervalStyle", "postgres".into()),
            ("TimeZone", "UTC".into()),
            ("integer_datetimes", "on".into()),
            ("standard_conforming_strings", "on".into()),
            ("is_superuser", "off".into()),
            ("default_transaction_read_only", "on".into()),
            ("in_hot_standby", "off".into()),
            ("search_path", "public".into()),
            ("application_name", application),
            ("session_authorization", user),
        ];
        Some(parameters.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }
}

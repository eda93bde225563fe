//! Who a CONNECT is. The [`Identity`] service decides what a credential is; MQTT adds its own
//! rules: a device's client id (and user name, when sent) is its device id, so a device holds one
//! session and the ACL can name its topics; an application may not take a client id that names a
//! registered device, so it can never hold (or take over) a device's session.
//!
//! A user name that names a broker user ([`BrokerUsers`], which tells a token from a broker
//! password) with that user's password is that user: its topic rules get `%u` and `%c` replaced
//! here, once per connection.

use crate::hooks::{ConnectRefusal, ConnectRequest, Identity as Client};
use corral_model::{ErrorKind, WireError};
use corral_services::{Application, BrokerLogin, BrokerUsers, Caller, Credential, DeviceCaller, Identity};
use std::sync::Arc;

pub(super) async fn authenticate(
    identity: &dyn Identity,
    users: Option<&dyn BrokerUsers>,
    req: &ConnectRequest,
) -> Result<Client, ConnectRefusal> {
    let refuse = |refusal: ConnectRefusal, why: &str| {
        tracing::info!(client_id = %req.client_id, peer = %req.peer_addr, transport = req.transport, why, "mqtt connect refused");
        Err(refusal)
    };
    if let Some(certificate) = &req.certificate {
        // mTLS: the certificate chained to a registered CA; it names the device, no password.
        let device = match identity.authenticate(Credential::Certificate(certificate)).await {
            Ok(Caller::Device(d)) => d,
            Ok(Caller::Application(_)) => return refuse(ConnectRefusal::NotAuthorized, "a certificate names devices only"),
            Err(e) => return refuse(ConnectRefusal::NotAuthorized, &e.message),
        };
        if req.client_id != device.id.as_str() {
            return refuse(ConnectRefusal::ClientIdNotValid, "client id must be the device id the certificate names");
        }
        return device_client(identity, device).await.or_else(|e| refuse(ConnectRefusal::ServerUnavailable, &e.message));
    }
    let Some(password) = req.password.as_deref() else {
        return refuse(ConnectRefusal::NotAuthorized, "no credentials (password = device or API token)");
    };
    let Ok(secret) = std::str::from_utf8(password) else {
        return refuse(ConnectRefusal::BadCredentials, "password is not a token");
    };
    if let (Some(users), Some(name)) = (users, req.username.as_deref()) {
        match users.log_in(name, secret).await {
            Ok(Some(login)) => return Ok(broker_user(login, &req.client_id)),
            // Not a broker user's credentials: a device's or an application's token.
            Ok(None) => {}
            Err(e) if e.kind == ErrorKind::Unauthenticated => return refuse(ConnectRefusal::WrongPassword, &e.message),
            Err(e) => return refuse(ConnectRefusal::ServerUnavailable, &e.message),
        }
    }
    match identity.authenticate(Credential::Token(secret)).await {
        Err(e) => refuse(refusal_for(&e), &e.message),
        Ok(Caller::Device(device)) => {
            if req.client_id != device.id.as_str() || req.username.as_deref().is_some_and(|u| u != device.id.as_str()) {
                return refuse(ConnectRefusal::ClientIdNotValid, "client id and user name must be the device id");
            }
            device_client(identity, device).await.or_else(|e| refuse(ConnectRefusal::ServerUnavailable, &e.message))
        }
        Ok(Caller::Application(app)) => {
            if req.username.as_deref().is_some_and(|u| u != "token" && u != app.name) {
                return refuse(ConnectRefusal::BadCredentials, "user name must be the API token's name or `token`");
            }
            // A device's id is its client id: only its own credential may hold that session.
            match identity.tenant_of(&req.client_id).await {
                Ok(None) => Ok(application(app)),
                Ok(Some(_)) => refuse(ConnectRefusal::ClientIdNotValid, "client id names a registered device; choose another"),
                Err(e) => refuse(ConnectRefusal::ServerUnavailable, &e.message),
            }
        }
    }
}

/// A device's MQTT identity: its topics and those of the children it speaks for.
async fn device_client(identity: &dyn Identity, device: DeviceCaller) -> Result<Client, WireError> {
    let children = identity.children_of(&device.id).await?;
    Ok(Client::Device {
        id: device.id.as_str().to_string(),
        tenant: device.tenant.as_str().to_string(),
        children: children.into_iter().map(|c| c.as_str().to_string()).collect(),
    })
}

fn application(app: Application) -> Client {
    Client::Application {
        name: app.name,
        principal: format!("token:{}", app.token_id),
        role: app.role,
        tenant: app.tenant.map(|t| t.as_str().to_string()),
    }
}

/// A broker user's identity on this connection: its rules with `%u` and `%c` replaced.
fn broker_user(login: BrokerLogin, client_id: &str) -> Client {
    let filters = |wanted: fn(&corral_services::TopicRule) -> bool| -> Arc<[String]> {
        login.rules.iter().filter(|r| wanted(r)).map(|r| r.filter_for(&login.name, client_id)).collect()
    };
    Client::User {
        read: filters(|r| r.access.reads()),
        write: filters(|r| r.access.writes()),
        tenant: login.tenant.as_ref().map(|t| t.as_str().to_string()),
        name: login.name,
    }
}

fn refusal_for(e: &WireError) -> ConnectRefusal {
    match e.kind {
        ErrorKind::Unauthenticated => ConnectRefusal::BadCredentials,
        ErrorKind::Forbidden => ConnectRefusal::NotAuthorized,
        _ => ConnectRefusal::ServerUnavailable,
    }
}

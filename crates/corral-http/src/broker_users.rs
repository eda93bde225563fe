//! Broker users (MQTT clients that are neither devices nor API tokens):
//! `POST/GET /api/v1/broker-users`, `GET/PATCH/DELETE /api/v1/broker-users/{name}`. Admins manage
//! them (a tenant-scoped admin, its tenant's). A password left out at creation is generated and
//! shown once; a change of password or rules ends the user's MQTT connections.

use crate::AppState;
use crate::auth::Caller;
use crate::body::parse_json;
use crate::error::ApiResult;
use crate::extract::Path;
use crate::openapi::{Api, Operation};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use corral_model::TenantId;
use corral_registry::{BrokerUser, generate_password};
use corral_services::TopicRule;
use serde::{Deserialize, Serialize};

const TAG: &str = "broker-users";

pub(crate) fn routes(api: Api) -> Api {
    api.post(
        "/api/v1/broker-users",
        create,
        Operation::new(TAG, "Creates a broker user (an MQTT client that is neither a device nor an API token)")
            .describe(
                "Admins only; a tenant-scoped admin creates users of its own tenant. Without `password` one \
                 is generated and shown in the answer this once only. The name may not be `token` (the user \
                 name API tokens log in with), and the password may not look like a token.",
            )
            .body::<NewBrokerUser>()
            .returns::<BrokerUserCreated>(201, "Created")
            .errors(&[409]),
    )
    .get(
        "/api/v1/broker-users",
        list,
        Operation::new(TAG, "Lists broker users")
            .describe("Admins only: all of them (a tenant-scoped admin: its tenant's), by name; never their passwords.")
            .returns::<BrokerUserList>(200, "The broker users"),
    )
    .get(
        "/api/v1/broker-users/{name}",
        show,
        Operation::new(TAG, "One broker user")
            .describe("Admins only.")
            .path::<String>("name", "The broker user's name")
            .returns::<BrokerUser>(200, "The broker user"),
    )
    .patch(
        "/api/v1/broker-users/{name}",
        update,
        Operation::new(TAG, "Sets a broker user's password, topic rules, or both")
            .describe("Admins only. Fields left out stay as they are. The user's MQTT connections end.")
            .path::<String>("name", "The broker user's name")
            .body::<BrokerUserPatch>()
            .returns::<BrokerUser>(200, "The broker user as changed"),
    )
    .delete(
        "/api/v1/broker-users/{name}",
        remove,
        Operation::new(TAG, "Removes a broker user")
            .describe("Admins only. Its MQTT connections end.")
            .path::<String>("name", "The broker user's name")
            .returns_nothing(204, "Removed"),
    )
}

/// A broker user just created, with its password when it was generated.
#[derive(Serialize, schemars::JsonSchema)]
pub struct BrokerUserCreated {
    user: BrokerUser,
    /// The generated password, shown only this once; null when the request gave one.
    password: Option<String>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct BrokerUserList {
    users: Vec<BrokerUser>,
}

/// Body of `POST /api/v1/broker-users`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBrokerUser {
    /// The user name it connects with.
    name: String,
    /// Left out, one is generated and shown once.
    #[serde(default)]
    password: Option<String>,
    /// The tenant it is confined to; left out, unscoped (a tenant-scoped admin's users: its
    /// tenant). A tenant that does not exist yet is created.
    #[serde(default)]
    tenant: Option<TenantId>,
    /// The topics it may use (at most 100 rules); none: it may use no topic.
    #[serde(default)]
    rules: Vec<TopicRule>,
}

/// Body of `PATCH /api/v1/broker-users/{name}`: what is given changes, the rest stays.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BrokerUserPatch {
    /// A new password.
    #[serde(default)]
    password: Option<String>,
    /// New topic rules, replacing all the old ones (at most 100).
    #[serde(default)]
    rules: Option<Vec<TopicRule>>,
}

pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<BrokerUserCreated>)> {
    let new: NewBrokerUser = parse_json(body)?;
    let generated = new.password.is_none().then(generate_password);
    let password = new.password.as_deref().or(generated.as_deref()).unwrap_or_default();
    let user = state.registry.create_broker_user(&caller, &new.name, password, new.tenant, new.rules).await?;
    Ok((StatusCode::CREATED, Json(BrokerUserCreated { user, password: generated })))
}

pub async fn list(State(state): State<AppState>, Caller(caller): Caller) -> ApiResult<Json<BrokerUserList>> {
    Ok(Json(BrokerUserList { users: state.registry.list_broker_users(&caller).await? }))
}

pub async fn show(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<BrokerUser>> {
    Ok(Json(state.registry.broker_user(&caller, &name).await?))
}

pub async fn update(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<BrokerUser>> {
    let patch: BrokerUserPatch = parse_json(body)?;
    Ok(Json(state.registry.update_broker_user(&caller, &name, patch.password.as_deref(), patch.rules).await?))
}

pub async fn remove(State(state): State<AppState>, Caller(caller): Caller, Path(name): Path<String>) -> ApiResult<StatusCode> {
    state.registry.remove_broker_user(&caller, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

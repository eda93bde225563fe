//! Broker users (MQTT clients that are neither devices nor API tokens):
//! `POST/GET /api/v1/broker-users`, `GET/PATCH/DELETE /api/v1/broker-users/{name}`. Admins manage
//! them (a tenant-scoped admin, its tenant's). A password left out at creation is generated and
//! shown once; a change of password or rules ends the user's MQTT connections.

use crate::AppState;
use crate::auth::Caller;
use crate::body::parse_json;
use crate::error::ApiResult;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use crate::extract::Path;
use axum::http::StatusCode;
use corral_model::TenantId;
use corral_registry::{BrokerUser, generate_password};
use corral_services::TopicRule;
use serde::Deserialize;
use serde_json::{Value, json};
use crate::openapi::{Api, Operation};

const TAG: &str = "broker-users";

pub(crate) fn routes(api: Api) -> Api {
    api
        .post("/api/v1/broker-users", create, Operation::new(TAG, "TODO"))
        .get("/api/v1/broker-users", list, Operation::new(TAG, "TODO"))
        .get("/api/v1/broker-users/{name}", show, Operation::new(TAG, "TODO"))
        .patch("/api/v1/broker-users/{name}", update, Operation::new(TAG, "TODO"))
        .delete("/api/v1/broker-users/{name}", remove, Operation::new(TAG, "TODO"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewBrokerUser {
    name: String,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    tenant: Option<TenantId>,
    #[serde(default)]
    rules: Vec<TopicRule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerUserPatch {
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    rules: Option<Vec<TopicRule>>,
}

pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let new: NewBrokerUser = parse_json(body)?;
    let generated = new.password.is_none().then(generate_password);
    let password = new.password.as_deref().or(generated.as_deref()).unwrap_or_default();
    let user = state.registry.create_broker_user(&caller, &new.name, password, new.tenant, new.rules).await?;
    Ok((StatusCode::CREATED, Json(json!({ "user": user, "password": generated }))))
}

pub async fn list(State(state): State<AppState>, Caller(caller): Caller) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "users": state.registry.list_broker_users(&caller).await? })))
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

//! Console users: `POST/GET /api/v1/users`, `PUT /api/v1/users/{name}/password`,
//! `DELETE /api/v1/users/{name}`. Admins manage users; anyone signed in may change their own
//! password, giving the current one (`current_password`). A password left out is generated and
//! shown once.

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
use corral_registry::{Role, generate_password};
use serde::Deserialize;
use serde_json::{Value, json};
use crate::openapi::{Api, Operation};

const TAG: &str = "users";

pub(crate) fn routes(api: Api) -> Api {
    api
        .post("/api/v1/users", create, Operation::new(TAG, "TODO"))
        .get("/api/v1/users", list, Operation::new(TAG, "TODO"))
        .delete("/api/v1/users/{name}", remove, Operation::new(TAG, "TODO"))
        .put("/api/v1/users/{name}/password", set_password, Operation::new(TAG, "TODO"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    name: String,
    #[serde(default)]
    password: Option<String>,
    role: Role,
    #[serde(default)]
    tenant: Option<TenantId>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPassword {
    #[serde(default)]
    password: Option<String>,
    /// Needed when signed-in users change their own password.
    #[serde(default)]
    current_password: Option<String>,
}

pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let new: NewUser = parse_json(body)?;
    let generated = new.password.is_none().then(generate_password);
    let password = new.password.as_deref().or(generated.as_deref()).unwrap_or_default();
    let user = state.registry.create_user(&caller, &new.name, password, new.role, new.tenant).await?;
    Ok((StatusCode::CREATED, Json(json!({ "user": user, "password": generated }))))
}

pub async fn list(State(state): State<AppState>, Caller(caller): Caller) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "users": state.registry.list_users(&caller).await? })))
}

pub async fn set_password(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let asked: NewPassword = crate::body::parse_json_or_default(body)?;
    let generated = asked.password.is_none().then(generate_password);
    let password = asked.password.as_deref().or(generated.as_deref()).unwrap_or_default();
    state.registry.set_user_password(&caller, &name, password, asked.current_password.as_deref()).await?;
    Ok(Json(json!({ "user": name, "password": generated })))
}

pub async fn remove(State(state): State<AppState>, Caller(caller): Caller, Path(name): Path<String>) -> ApiResult<StatusCode> {
    state.registry.remove_user(&caller, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

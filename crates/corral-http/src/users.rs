//! Console users: `POST/GET /api/v1/users`, `PUT /api/v1/users/{name}/password`,
//! `DELETE /api/v1/users/{name}`. Admins manage users; anyone signed in may change their own
//! password, giving the current one (`current_password`). A password left out is generated and
//! shown once.

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
use corral_registry::{Role, User, generate_password};
use serde::{Deserialize, Serialize};

const TAG: &str = "users";

pub(crate) fn routes(api: Api) -> Api {
    api.post(
        "/api/v1/users",
        create,
        Operation::new(TAG, "Creates a console user")
            .describe(
                "Admins only; a tenant-scoped admin creates users of its own tenant. Without `password` one \
                 is generated and shown in the answer this once only. Passwords have at least 12 characters.",
            )
            .body::<NewUser>()
            .returns::<UserCreated>(201, "Created")
            .errors(&[409]),
    )
    .get(
        "/api/v1/users",
        list,
        Operation::new(TAG, "Lists console users")
            .describe("Admins only: all users (a tenant-scoped admin: its tenant's), by name; never their passwords.")
            .returns::<UserList>(200, "The users"),
    )
    .delete(
        "/api/v1/users/{name}",
        remove,
        Operation::new(TAG, "Removes a console user")
            .describe("Admins only. Its sessions end at once. An admin cannot remove itself (409).")
            .path::<String>("name", "The user's name")
            .returns_nothing(204, "Removed")
            .errors(&[409]),
    )
    .put(
        "/api/v1/users/{name}/password",
        set_password,
        Operation::new(TAG, "Sets a console user's password")
            .describe(
                "An admin sets anyone's it may see; a signed-in user sets its own, giving `current_password` \
                 (a wrong one is a 403). Without `password` (or with an empty body) one is generated and shown \
                 in the answer this once only. The user's sessions end.",
            )
            .path::<String>("name", "The user's name")
            .body::<NewUserPassword>()
            .body_optional()
            .returns::<UserPasswordSet>(200, "Set"),
    )
}

/// A console user just created, with its password when it was generated.
#[derive(Serialize, schemars::JsonSchema)]
pub struct UserCreated {
    user: User,
    /// The generated password, shown only this once; null when the request gave one.
    password: Option<String>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct UserList {
    users: Vec<User>,
}

/// A password just set.
#[derive(Serialize, schemars::JsonSchema)]
pub struct UserPasswordSet {
    /// The user's name.
    user: String,
    /// The generated password, shown only this once; null when the request gave one.
    password: Option<String>,
}

/// Body of `POST /api/v1/users`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// The name to sign in with.
    name: String,
    /// At least 12 characters; left out, one is generated and shown once.
    #[serde(default)]
    password: Option<String>,
    role: Role,
    /// The tenant the user is confined to; left out, unscoped (a tenant-scoped admin's users: its
    /// tenant). A tenant that does not exist yet is created.
    #[serde(default)]
    tenant: Option<TenantId>,
}

/// Body of `PUT /api/v1/users/{name}/password`; may be empty.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUserPassword {
    /// At least 12 characters; left out, one is generated and shown once.
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
) -> ApiResult<(StatusCode, Json<UserCreated>)> {
    let new: NewUser = parse_json(body)?;
    let generated = new.password.is_none().then(generate_password);
    let password = new.password.as_deref().or(generated.as_deref()).unwrap_or_default();
    let user = state.registry.create_user(&caller, &new.name, password, new.role, new.tenant).await?;
    Ok((StatusCode::CREATED, Json(UserCreated { user, password: generated })))
}

pub async fn list(State(state): State<AppState>, Caller(caller): Caller) -> ApiResult<Json<UserList>> {
    Ok(Json(UserList { users: state.registry.list_users(&caller).await? }))
}

pub async fn set_password(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<UserPasswordSet>> {
    let asked: NewUserPassword = crate::body::parse_json_or_default(body)?;
    let generated = asked.password.is_none().then(generate_password);
    let password = asked.password.as_deref().or(generated.as_deref()).unwrap_or_default();
    state.registry.set_user_password(&caller, &name, password, asked.current_password.as_deref()).await?;
    Ok(Json(UserPasswordSet { user: name, password: generated }))
}

pub async fn remove(State(state): State<AppState>, Caller(caller): Caller, Path(name): Path<String>) -> ApiResult<StatusCode> {
    state.registry.remove_user(&caller, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

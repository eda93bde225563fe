//! `/api/v1/profiles/{name}/twin/desired`: a profile's desired defaults, which every device of
//! the profile inherits key by key unless its own desired document overrides the key.
//!
//! - `GET`: the defaults with their version. Any application may read them, as it may read the
//!   profile itself: profiles describe kinds of device, not anyone's devices.
//! - `PATCH`: an RFC 7386 merge patch, by the callers who may change a profile (operator or
//!   admin, without a tenant scope: a profile's devices may belong to every tenant). The store
//!   gives each of the profile's twins whose effective desired document changed a new version in
//!   the same transaction; the change is audited as `profile.desired`.
//!
//! The profile must exist in the registry (404 otherwise), so a typo does not leave defaults
//! waiting for a profile nobody declared. `If-Match` is refused rather than ignored: the store
//! has no compare-and-set for defaults yet, and a client must not believe it was protected.

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::Path;
use crate::openapi::{Api, Operation};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, header};
use corral_registry::Principal;
use corral_twin::{Document, ProfileDesired, TwinDocument, TwinError};
use serde::Serialize;
use serde_json::json;

const TAG: &str = "twins";

pub(crate) fn routes(api: Api) -> Api {
    api.get(
        "/api/v1/profiles/{name}/twin/desired",
        show,
        Operation::new(TAG, "A profile's desired defaults")
            .describe(
                "Every device of the profile inherits them key by key unless its own desired document overrides \
                 the key. A profile without defaults has an empty document at version 0.",
            )
            .path::<String>("name", "The profile")
            .returns::<ProfileDefaults>(200, "The defaults and their version"),
    )
    .patch(
        "/api/v1/profiles/{name}/twin/desired",
        patch,
        Operation::new(TAG, "Changes a profile's desired defaults (a merge patch)")
            .describe(
                "Operators and admins without a tenant scope only: a profile's devices may belong to every \
                 tenant. An RFC 7386 merge patch (`null` deletes a key). Each of the profile's twins whose \
                 effective desired document changes gets a new version in the same transaction. `If-Match` is \
                 refused (400) rather than ignored: there is no compare-and-set for defaults.",
            )
            .path::<String>("name", "The profile")
            .header("If-Match", "Not supported here: any value is refused with 400.")
            .body::<Document>()
            .returns::<ProfileDefaults>(200, "The defaults as changed and their version"),
    )
}

/// A profile's desired defaults: `{"profile", "version", "desired"}`, the shape of the device
/// route's answer.
#[derive(Serialize, schemars::JsonSchema)]
pub struct ProfileDefaults {
    profile: String,
    /// The defaults' version, also `desired.version`.
    version: u64,
    desired: TwinDocument,
}

pub async fn show(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<ProfileDefaults>> {
    state.registry.get_profile(&caller, &name).await?;
    let defaults = state.twins.profile_defaults(&name).await.map_err(twin_error)?;
    Ok(Json(answer(defaults)))
}

pub async fn patch(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<ProfileDefaults>> {
    may_change_profiles(&caller)?;
    if headers.contains_key(header::IF_MATCH) {
        return Err(ApiError::bad_input(
            "If-Match is not supported on profile defaults; send the patch without it (null deletes a key)",
        ));
    }
    let patch = crate::twin::parse_patch(body)?;
    state.registry.get_profile(&caller, &name).await?;
    let before = state.twins.profile_defaults(&name).await.map_err(twin_error)?.desired.version;
    let defaults = state.twins.patch_profile_defaults(&name, &patch).await.map_err(twin_error)?;
    // A patch that changed nothing made no new version: nothing to audit.
    if defaults.desired.version != before {
        let detail = json!({ "version": defaults.desired.version, "keys": patch.keys().collect::<Vec<_>>() });
        if let Err(e) = state.registry.record_audit(&caller, "profile.desired", &name, None, detail).await {
            tracing::error!(profile = %name, error = %e, "audit entry not written");
        }
    }
    Ok(Json(answer(defaults)))
}

/// The registry's rule for changing a profile (`put_profile`), checked here because the change
/// is made in the twin store, which knows no principals.
fn may_change_profiles(caller: &Principal) -> ApiResult<()> {
    if !caller.can_write() {
        return Err(ApiError::forbidden(format!("role {} may not change a profile's desired defaults", caller.role)));
    }
    if let Some(tenant) = &caller.tenant {
        return Err(ApiError::forbidden(format!(
            "profiles are shared by all tenants; a principal scoped to tenant {tenant} may not change their desired defaults"
        )));
    }
    Ok(())
}

fn answer(defaults: ProfileDesired) -> ProfileDefaults {
    ProfileDefaults { profile: defaults.profile, version: defaults.desired.version, desired: defaults.desired }
}

/// The store's 400 and 413 keep their status; storage details stay in the log.
fn twin_error(e: TwinError) -> ApiError {
    ApiError(e.to_wire())
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_registry::Role;

    #[test]
    fn only_unscoped_operators_and_admins_change_profile_defaults() {
        let principal = |role, tenant: Option<&str>| Principal {
            token_id: 1,
            name: "t".into(),
            role,
            tenant: tenant.map(|t| corral_model::TenantId::new(t).unwrap()),
        };
        assert!(may_change_profiles(&principal(Role::Admin, None)).is_ok());
        assert!(may_change_profiles(&principal(Role::Operator, None)).is_ok());
        assert!(may_change_profiles(&principal(Role::Viewer, None)).is_err());
        assert!(may_change_profiles(&principal(Role::Admin, Some("alpha"))).is_err());
    }
}

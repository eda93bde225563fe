//! Roles and tenant scope.

use crate::common::*;
use corral_registry::prelude::*;
use corral_registry::{DeviceFilter, DevicePatch, NewApiToken, Profile, RegistryError, Role};

#[tokio::test]
async fn viewers_read_but_never_write() {
    let f = fixture().await;
    f.device("v1", "default").await;
    let viewer = f.principal(Role::Viewer, None).await;
    assert!(!viewer.can_write() && !viewer.is_admin());

    assert_eq!(f.reg.get_device(&viewer, "v1").await.unwrap().id.as_str(), "v1");
    assert_eq!(f.reg.list_devices(&viewer, &DeviceFilter::default()).await.unwrap().total, 1);
    assert_forbidden(f.reg.create_device(&viewer, nd("v2")).await);
    assert_forbidden(f.reg.update_device(&viewer, "v1", DevicePatch::default()).await);
    assert_forbidden(f.reg.decommission_device(&viewer, "v1").await);
    assert_forbidden(f.reg.rotate_device_token(&viewer, "v1").await);
    let profile = Profile { name: "p".into(), description: None, attributes: vec![], telemetry: vec![] };
    assert_forbidden(f.reg.put_profile(&viewer, profile).await);
    assert_forbidden(f.reg.create_tenant(&viewer, tenant_id("t"), None).await);
    assert_forbidden(f.reg.list_api_tokens(&viewer).await);
    assert_forbidden(f.reg.audit_log(&viewer, 10).await);
    let new = NewApiToken { name: "x".into(), role: Role::Viewer, tenant: None };
    assert_forbidden(f.reg.create_api_token(&viewer, new).await);
}

#[tokio::test]
async fn operators_manage_devices_and_profiles_but_not_tokens_or_tenants() {
    let f = fixture().await;
    let op = f.principal(Role::Operator, None).await;
    f.reg.create_device(&op, nd("o1")).await.unwrap();
    f.reg.rotate_device_token(&op, "o1").await.unwrap();
    let profile = Profile { name: "hvac".into(), description: None, attributes: vec![], telemetry: vec![] };
    f.reg.put_profile(&op, profile).await.unwrap();
    assert_forbidden(f.reg.create_tenant(&op, tenant_id("t"), None).await);
    assert_forbidden(f.reg.list_api_tokens(&op).await);
    assert_forbidden(f.reg.revoke_api_token(&op, f.admin.token_id).await);
}

#[tokio::test]
async fn a_scoped_principal_sees_only_its_tenant() {
    let f = fixture().await;
    f.device("acme-1", "acme").await;
    f.device("beta-1", "beta").await;
    let beta_op = f.principal(Role::Operator, Some("beta")).await;

    // Another tenant's device does not exist for it, whatever it tries.
    assert_not_found(f.reg.get_device(&beta_op, "acme-1").await);
    assert_not_found(f.reg.update_device(&beta_op, "acme-1", DevicePatch::default()).await);
    assert_not_found(f.reg.decommission_device(&beta_op, "acme-1").await);
    assert_not_found(f.reg.rotate_device_token(&beta_op, "acme-1").await);
    let missing = f.reg.get_device(&beta_op, "no-such-device").await.unwrap_err().to_wire().message;
    let hidden = f.reg.get_device(&beta_op, "acme-1").await.unwrap_err().to_wire().message;
    assert_eq!(missing.replace("no-such-device", "X"), hidden.replace("acme-1", "X"), "same shape of answer");

    let all = f.reg.list_devices(&beta_op, &DeviceFilter::default()).await.unwrap();
    assert_eq!(all.devices.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["beta-1"]);
    assert_eq!(all.total, 1);
    let asked = DeviceFilter { tenant: Some(tenant_id("acme")), ..Default::default() };
    assert_eq!(f.reg.list_devices(&beta_op, &asked).await.unwrap().total, 0);
    assert!(f.reg.devices_for_sql(beta_op.tenant.as_ref()).await.unwrap().iter().all(|d| d.tenant.as_str() == "beta"));

    // Creating: forced into its tenant, refused for another.
    let (d, _) = f.reg.create_device(&beta_op, nd("beta-2")).await.unwrap();
    assert_eq!(d.tenant.as_str(), "beta");
    let mut elsewhere = nd("beta-3");
    elsewhere.tenant = Some(tenant_id("acme"));
    assert_forbidden(f.reg.create_device(&beta_op, elsewhere).await);
    // Nor may it hang its device under another tenant's gateway.
    let mut child = nd("beta-4");
    child.gateway = Some(did("acme-1"));
    assert_bad_input(f.reg.create_device(&beta_op, child).await);

    // Shared things are out of reach.
    let profile = Profile { name: "hvac".into(), description: None, attributes: vec![], telemetry: vec![] };
    assert_forbidden(f.reg.put_profile(&beta_op, profile).await);
    let tenants = f.reg.list_tenants(&beta_op).await.unwrap();
    assert_eq!(tenants.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), ["beta"]);
}

#[tokio::test]
async fn a_scoped_admin_manages_tokens_of_its_tenant_only() {
    let f = fixture().await;
    let acme_admin = f.principal(Role::Admin, Some("acme")).await;
    let global_viewer = f.principal(Role::Viewer, None).await;

    let new = NewApiToken { name: "acme-ops".into(), role: Role::Operator, tenant: None };
    let (t, secret) = f.reg.create_api_token(&acme_admin, new).await.unwrap();
    assert_eq!(t.tenant, Some(tenant_id("acme")), "defaults to the creator's scope");
    assert!(secret.starts_with("cat_"));
    let new = NewApiToken { name: "sneaky".into(), role: Role::Admin, tenant: Some(tenant_id("beta")) };
    assert_forbidden(f.reg.create_api_token(&acme_admin, new).await);

    let listed = f.reg.list_api_tokens(&acme_admin).await.unwrap();
    assert!(listed.iter().all(|t| t.tenant == Some(tenant_id("acme"))));
    assert_eq!(listed.len(), 2, "itself and the one it created");
    assert_not_found(f.reg.revoke_api_token(&acme_admin, global_viewer.token_id).await);
    assert_forbidden(f.reg.create_tenant(&acme_admin, tenant_id("new"), None).await);

    // Its audit view holds its tenant's entries only.
    let log = f.reg.audit_log(&acme_admin, 100).await.unwrap();
    assert!(!log.is_empty());
    assert!(log.iter().all(|e| e.tenant == Some(tenant_id("acme"))));
}

#[tokio::test]
async fn tenants_are_created_once() {
    let f = fixture().await;
    let t = f.reg.create_tenant(&f.admin, tenant_id("acme"), Some("ACME Corp".into())).await.unwrap();
    assert_eq!(t.name.as_deref(), Some("ACME Corp"));
    let again = f.reg.create_tenant(&f.admin, tenant_id("acme"), None).await;
    assert!(matches!(again, Err(RegistryError::Conflict(_))), "{again:?}");
    let default = f.reg.create_tenant(&f.admin, tenant_id("default"), None).await;
    assert!(matches!(default, Err(RegistryError::Conflict(_))), "default exists from the first migration");
}

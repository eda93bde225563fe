//! Device and API tokens: shown once, hashed at rest, invalidated at once.

use crate::common::*;
use corral_registry::prelude::*;
use corral_registry::{DevicePatch, DeviceStatus, NewApiToken, RegistryError, Role, SqliteRegistry};
use sha2::{Digest, Sha256};
use sqlx::{Column, Row};

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Every text cell of `table`, read raw.
async fn text_cells(pool: &sqlx::SqlitePool, table: &str) -> Vec<String> {
    let rows = sqlx::query(&format!("SELECT * FROM {table}")).fetch_all(pool).await.unwrap();
    let mut cells = Vec::new();
    for row in &rows {
        for (i, col) in row.columns().iter().enumerate() {
            // Integer columns refuse to decode as text; those cannot hold a secret anyway.
            if let Ok(Some(text)) = row.try_get::<Option<String>, _>(i) {
                cells.push(format!("{}={text}", col.name()));
            }
        }
    }
    cells
}

#[tokio::test]
async fn secrets_are_stored_only_as_hashes() {
    let f = fixture().await;
    let device_token = f.device("t1", "default").await;
    let rotated = f.reg.rotate_device_token(&f.admin, "t1").await.unwrap();
    let (_, api_secret) =
        f.reg.create_api_token(&f.admin, NewApiToken { name: "ci".into(), role: Role::Operator, tenant: None }).await.unwrap();

    let raw = f.raw().await;
    for table in ["device_tokens", "api_tokens", "audit", "devices"] {
        for cell in text_cells(&raw, table).await {
            for secret in [&device_token, &rotated, &api_secret] {
                assert!(!cell.contains(secret.as_str()), "{table} holds a secret: {cell}");
                assert!(!cell.contains(&secret[4..]), "{table} holds a secret's body: {cell}");
            }
        }
    }
    let hashes: Vec<String> = sqlx::query("SELECT hash FROM device_tokens ORDER BY created_at, rowid")
        .fetch_all(&raw)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get("hash"))
        .collect();
    assert_eq!(hashes, [sha256_hex(&device_token), sha256_hex(&rotated)]);
    let api_hash: String = sqlx::query("SELECT hash FROM api_tokens WHERE name = 'ci'").fetch_one(&raw).await.unwrap().get(0);
    assert_eq!(api_hash, sha256_hex(&api_secret));
}

#[tokio::test]
async fn rotation_invalidates_the_old_token_at_once() {
    let f = fixture().await;
    let old = f.device("r1", "acme").await;
    // Authenticate twice so the second answer comes from the cache.
    for _ in 0..2 {
        let who = f.reg.authenticate_device(&old).await.unwrap();
        assert_eq!((who.id.as_str(), who.tenant.as_str(), who.status), ("r1", "acme", DeviceStatus::Active));
    }
    let new = f.reg.rotate_device_token(&f.admin, "r1").await.unwrap();
    assert_ne!(new, old);
    assert_unauthenticated(f.reg.authenticate_device(&old).await);
    assert_eq!(f.reg.authenticate_device(&new).await.unwrap().id.as_str(), "r1");
    assert_unauthenticated(f.reg.authenticate_device(&old).await);
}

#[tokio::test]
async fn quarantined_and_decommissioned_devices_are_refused() {
    let f = fixture().await;
    let token = f.device("q1", "default").await;
    f.reg.authenticate_device(&token).await.unwrap(); // cached as active

    let quarantine = DevicePatch { status: Some(DeviceStatus::Quarantined), ..Default::default() };
    f.reg.update_device(&f.admin, "q1", quarantine).await.unwrap();
    match f.reg.authenticate_device(&token).await {
        Err(RegistryError::Forbidden(m)) => assert!(m.contains("quarantined"), "{m}"),
        other => panic!("expected Forbidden, got {other:?}"),
    }
    // Rotating a quarantined device's token is allowed; the new token is refused just the same.
    let token = f.reg.rotate_device_token(&f.admin, "q1").await.unwrap();
    assert_forbidden(f.reg.authenticate_device(&token).await);

    let release = DevicePatch { status: Some(DeviceStatus::Active), ..Default::default() };
    f.reg.update_device(&f.admin, "q1", release).await.unwrap();
    f.reg.authenticate_device(&token).await.unwrap();

    f.reg.decommission_device(&f.admin, "q1").await.unwrap();
    match f.reg.authenticate_device(&token).await {
        Err(RegistryError::Forbidden(m)) => assert!(m.contains("decommissioned"), "{m}"),
        other => panic!("expected Forbidden, got {other:?}"),
    }
}

#[tokio::test]
async fn gateway_changes_reach_the_cached_identity() {
    let f = fixture().await;
    f.device("gw", "default").await;
    let token = f.device("leaf", "default").await;
    assert_eq!(f.reg.authenticate_device(&token).await.unwrap().gateway, None);
    let patch = DevicePatch { gateway: Some(Some(did("gw"))), ..Default::default() };
    f.reg.update_device(&f.admin, "leaf", patch).await.unwrap();
    assert_eq!(f.reg.authenticate_device(&token).await.unwrap().gateway, Some(did("gw")));
}

#[tokio::test]
async fn garbage_tokens_are_unauthenticated() {
    let f = fixture().await;
    f.device("g1", "default").await;
    for t in ["", "nonsense", "cdt_", "cdt_00", &format!("cdt_{}", "0".repeat(64))] {
        assert_unauthenticated(f.reg.authenticate_device(t).await);
        assert_unauthenticated(f.reg.authenticate_api(t).await);
    }
    let e = f.reg.authenticate_device("nonsense").await.unwrap_err().to_wire();
    assert_eq!(e.kind, corral_model::ErrorKind::Unauthenticated);
}

#[tokio::test]
async fn revoked_api_tokens_stop_at_once() {
    let f = fixture().await;
    let (t, secret) =
        f.reg.create_api_token(&f.admin, NewApiToken { name: "script".into(), role: Role::Viewer, tenant: None }).await.unwrap();
    let p = f.reg.authenticate_api(&secret).await.unwrap(); // now cached
    assert_eq!((p.token_id, p.role, p.name.as_str()), (t.id, Role::Viewer, "script"));
    f.reg.revoke_api_token(&f.admin, t.id).await.unwrap();
    assert_unauthenticated(f.reg.authenticate_api(&secret).await);
    f.reg.revoke_api_token(&f.admin, t.id).await.unwrap(); // idempotent
    let listed = f.reg.list_api_tokens(&f.admin).await.unwrap();
    assert!(listed.iter().find(|x| x.id == t.id).unwrap().revoked);
    assert_not_found(f.reg.revoke_api_token(&f.admin, 9999).await);
}

#[tokio::test]
async fn the_last_admin_cannot_lock_everyone_out() {
    let f = fixture().await;
    let last = f.reg.revoke_api_token(&f.admin, f.admin.token_id).await;
    assert!(matches!(last, Err(RegistryError::Conflict(_))), "{last:?}");
    let second = f.principal(Role::Admin, None).await;
    f.reg.revoke_api_token(&second, f.admin.token_id).await.unwrap();
    let again = f.reg.revoke_api_token(&second, second.token_id).await;
    assert!(matches!(again, Err(RegistryError::Conflict(_))), "{again:?}");
}

#[tokio::test]
async fn bootstrap_happens_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    let reg = SqliteRegistry::open(&path).await.unwrap();
    assert_bad_input(reg.bootstrap_admin(Some("short")).await);
    assert_bad_input(reg.bootstrap_admin(Some("has a space in it ok")).await);
    let preset = "corral-preset-admin-token";
    assert_eq!(reg.bootstrap_admin(Some(preset)).await.unwrap().as_deref(), Some(preset));
    let admin = reg.authenticate_api(preset).await.unwrap();
    assert_eq!((admin.name.as_str(), admin.role, admin.tenant.clone()), ("admin", Role::Admin, None));
    assert_eq!(reg.bootstrap_admin(None).await.unwrap(), None);
    assert_eq!(reg.bootstrap_admin(Some(preset)).await.unwrap(), None);
    drop(reg);
    let reg = SqliteRegistry::open(&path).await.unwrap();
    assert_eq!(reg.bootstrap_admin(None).await.unwrap(), None, "still once after a restart");
    assert_eq!(reg.list_api_tokens(&admin).await.unwrap().len(), 1);

    let fresh = SqliteRegistry::open_in_memory().await.unwrap();
    let generated = fresh.bootstrap_admin(None).await.unwrap().unwrap();
    assert!(generated.starts_with("cat_") && generated.len() == 68);
}

#[tokio::test]
async fn api_token_use_is_recorded() {
    let f = fixture().await;
    let before = f.reg.list_api_tokens(&f.admin).await.unwrap();
    assert!(before[0].last_used_at.is_some(), "the fixture authenticated with it");
    f.reg.flush_last_seen().await.unwrap();
    let raw = f.raw().await;
    let stored: Option<i64> = sqlx::query("SELECT last_used_at FROM api_tokens WHERE id = ?")
        .bind(f.admin.token_id)
        .fetch_one(&raw)
        .await
        .unwrap()
        .get(0);
    assert!(stored.is_some());
}

#[tokio::test]
async fn pre_shared_keys_authenticate_active_devices_and_every_change_is_audited() {
    let f = fixture().await;
    f.device("p1", "default").await;
    f.device("p2", "acme").await;
    let mut changes = f.reg.credential_changes();

    let generated = f.reg.set_device_psk(&f.admin, "p1", None).await.unwrap();
    assert_eq!(generated.len(), 32, "128 random bits as hex text");
    assert!(generated.iter().all(u8::is_ascii_hexdigit));
    assert_ne!(generated, f.reg.set_device_psk(&f.admin, "p2", None).await.unwrap());
    assert_eq!(changes.recv().await.unwrap(), did("p1"), "open sessions learn of the new key");
    let (device, key) = f.reg.authenticate_psk("p1").await.unwrap();
    assert_eq!((device.id, key), (did("p1"), generated));

    // A factory key replaces it; sizes outside 16..=64 bytes are refused.
    f.reg.set_device_psk(&f.admin, "p1", Some(b"factory-key-0001".to_vec())).await.unwrap();
    assert_eq!(f.reg.authenticate_psk("p1").await.unwrap().1, b"factory-key-0001");
    assert_bad_input(f.reg.set_device_psk(&f.admin, "p1", Some(vec![7; 15])).await);
    assert_bad_input(f.reg.set_device_psk(&f.admin, "p1", Some(vec![7; 65])).await);

    // Tenant scope and roles as for every other change; a viewer may not set keys.
    let acme_operator = f.principal(Role::Operator, Some("acme")).await;
    assert_not_found(f.reg.set_device_psk(&acme_operator, "p1", None).await);
    let viewer = f.principal(Role::Viewer, None).await;
    assert_forbidden(f.reg.set_device_psk(&viewer, "p1", None).await);
    assert!(f.reg.has_device_psk(&viewer, "p1").await.unwrap());

    // Unknown identity, no key, or a device that is not active: no session.
    assert_unauthenticated(f.reg.authenticate_psk("nobody").await);
    // (Each lookup is cached; every change below must reach the cache at once.)
    assert_eq!(f.reg.authenticate_psk("p2").await.unwrap().0.id, did("p2"));
    f.reg
        .update_device(&f.admin, "p2", DevicePatch { status: Some(DeviceStatus::Quarantined), ..Default::default() })
        .await
        .unwrap();
    assert_forbidden(f.reg.authenticate_psk("p2").await);
    f.reg.remove_device_psk(&f.admin, "p1").await.unwrap();
    assert_unauthenticated(f.reg.authenticate_psk("p1").await);
    assert_not_found(f.reg.remove_device_psk(&f.admin, "p1").await);

    let log = f.reg.audit_log(&f.admin, 100).await.unwrap();
    let psk_actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).filter(|a| a.contains("psk")).collect();
    assert_eq!(psk_actions, ["device.remove_psk", "device.set_psk", "device.set_psk", "device.set_psk"]);
}

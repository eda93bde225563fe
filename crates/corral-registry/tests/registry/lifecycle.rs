//! Persistence across restarts, presence, profiles, audit, concurrency.

use crate::common::*;
use chrono::{Duration, TimeZone, Utc};
use corral_registry::prelude::*;
use corral_registry::{AttributeDecl, DevicePatch, FieldDecl, Profile, RegistryError, Role, SqliteRegistry, ValueType};
use sqlx::Row;

#[tokio::test]
async fn migrations_are_idempotent_across_reopen() {
    let f = fixture().await;
    let token = f.device("keep-1", "acme").await;
    f.reg.close().await.unwrap();
    for _ in 0..2 {
        let reg = SqliteRegistry::open(&f.path).await.unwrap();
        assert_eq!(reg.device_count().await.unwrap(), 1);
        assert_eq!(reg.authenticate_device(&token).await.unwrap().id.as_str(), "keep-1");
        reg.close().await.unwrap();
    }
    let raw = f.raw().await;
    let versions: Vec<i64> = sqlx::query("SELECT version FROM _migrations ORDER BY version")
        .fetch_all(&raw)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6]);
    let mode: String = sqlx::query("PRAGMA journal_mode").fetch_one(&raw).await.unwrap().get(0);
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let f = fixture().await;
    f.reg.close().await.unwrap();
    let raw = f.raw().await;
    sqlx::query("INSERT INTO _migrations (version, applied_at) VALUES (999, 0)").execute(&raw).await.unwrap();
    raw.close().await;
    let err = SqliteRegistry::open(&f.path).await.unwrap_err();
    assert!(matches!(err, RegistryError::Storage(_)), "{err:?}");
    assert_eq!(err.to_wire().kind, corral_model::ErrorKind::Internal);
}

#[tokio::test]
async fn touch_is_visible_at_once_and_durable_after_flush() {
    let f = fixture().await;
    f.device("seen-1", "default").await;
    f.device("quiet-1", "default").await;
    let t1 = Utc.with_ymd_and_hms(2026, 11, 21, 10, 0, 0).unwrap();
    f.reg.touch(&did("seen-1"), t1);
    f.reg.touch(&did("seen-1"), t1 - Duration::minutes(5)); // late arrival: never moves backwards
    f.reg.touch(&did("ghost"), t1); // unknown devices are harmless
    assert_eq!(f.reg.get_device(&f.admin, "seen-1").await.unwrap().last_seen, Some(t1));
    assert_eq!(f.reg.get_device(&f.admin, "quiet-1").await.unwrap().last_seen, None);

    assert_eq!(f.reg.flush_last_seen().await.unwrap(), 1);
    assert_eq!(f.reg.flush_last_seen().await.unwrap(), 0, "nothing new to write");
    let t0 = t1 - Duration::hours(1);
    f.reg.touch(&did("seen-1"), t0);
    assert_eq!(f.reg.flush_last_seen().await.unwrap(), 0, "an older value does not overwrite");

    let page = f.reg.list_devices(&f.admin, &Default::default()).await.unwrap();
    let ids: Vec<&str> = page.devices.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["quiet-1", "seen-1"]);
    assert_eq!(page.devices[1].last_seen, Some(t1));
    let json = serde_json::to_value(&page.devices[1]).unwrap();
    assert_eq!(json["last_seen"], "2026-11-21T10:00:00.000Z");

    f.reg.close().await.unwrap();
    let reg = SqliteRegistry::open(&f.path).await.unwrap();
    let devices = reg.devices_for_sql(None).await.unwrap();
    assert_eq!(devices.iter().map(|d| d.last_seen).collect::<Vec<_>>(), [None, Some(t1)]);
}

#[tokio::test]
async fn profiles_are_declared_and_merged_for_sql() {
    let f = fixture().await;
    let attr = |n: &str, t| AttributeDecl { name: n.into(), r#type: t, description: None };
    let hvac = Profile {
        name: "hvac".into(),
        description: Some("Rooftop units".into()),
        attributes: vec![attr("floor", ValueType::Number), attr("model", ValueType::String)],
        telemetry: vec![FieldDecl { name: "temperature".into(), r#type: ValueType::Number, unit: Some("°C".into()) }],
    };
    assert_eq!(f.reg.put_profile(&f.admin, hvac.clone()).await.unwrap(), hvac);
    let truck = Profile {
        name: "truck".into(),
        description: None,
        attributes: vec![attr("floor", ValueType::Boolean), attr("axles", ValueType::Number)],
        telemetry: vec![],
    };
    f.reg.put_profile(&f.admin, truck).await.unwrap();
    assert_eq!(f.reg.get_profile(&f.admin, "hvac").await.unwrap(), hvac);
    assert_not_found(f.reg.get_profile(&f.admin, "none").await);

    // Replace keeps one row.
    let mut hvac2 = hvac.clone();
    hvac2.description = None;
    f.reg.put_profile(&f.admin, hvac2.clone()).await.unwrap();
    let names: Vec<String> = f.reg.list_profiles(&f.admin).await.unwrap().into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["hvac", "truck"]);

    let declared = f.reg.declared_attributes().await.unwrap();
    let shape: Vec<(&str, ValueType)> = declared.iter().map(|a| (a.name.as_str(), a.r#type)).collect();
    assert_eq!(shape, [("axles", ValueType::Number), ("floor", ValueType::String), ("model", ValueType::String)]);

    let mut bad = hvac2;
    bad.attributes.push(attr("tenant", ValueType::String));
    assert_bad_input(f.reg.put_profile(&f.admin, bad).await);
}

#[tokio::test]
async fn every_mutation_is_audited() {
    let f = fixture().await;
    f.device("a1", "acme").await;
    f.reg.update_device(&f.admin, "a1", DevicePatch { site: Some(Some("roof".into())), ..Default::default() }).await.unwrap();
    f.reg.rotate_device_token(&f.admin, "a1").await.unwrap();
    f.reg.decommission_device(&f.admin, "a1").await.unwrap();
    let op = f.principal(Role::Operator, None).await;
    f.reg.revoke_api_token(&f.admin, op.token_id).await.unwrap();
    let p = Profile { name: "hvac".into(), description: None, attributes: vec![], telemetry: vec![] };
    f.reg.put_profile(&f.admin, p).await.unwrap();
    f.reg.create_tenant(&f.admin, tenant_id("zeta"), None).await.unwrap();
    // Failed mutations leave no trace.
    let _ = f.reg.create_device(&f.admin, nd("a1")).await.unwrap_err();

    let log = f.reg.audit_log(&f.admin, 0).await.unwrap();
    let mut actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
    actions.reverse();
    assert_eq!(
        actions,
        [
            "token.create",  // bootstrap
            "tenant.create", // implicit, for a1
            "device.create",
            "device.update",
            "device.rotate_token",
            "device.decommission",
            "token.create",
            "token.revoke",
            "profile.put",
            "tenant.create",
        ]
    );
    assert_eq!(log.last().unwrap().actor, "system");
    let update = log.iter().find(|e| e.action == "device.update").unwrap();
    assert_eq!((update.target.as_str(), update.actor.as_str()), ("a1", "admin"));
    assert_eq!(update.actor_token, Some(f.admin.token_id));
    assert_eq!(update.tenant, Some(tenant_id("acme")));
    assert_eq!(update.detail["changed"], serde_json::json!(["site"]));
    assert_eq!(f.reg.audit_log(&f.admin, 3).await.unwrap().len(), 3);
    assert!(log.windows(2).all(|w| w[0].id > w[1].id), "newest first");
}

#[tokio::test]
async fn concurrent_writers_all_succeed() {
    let f = fixture().await;
    let mut tasks = Vec::new();
    for i in 0..24 {
        let reg = f.reg.clone();
        let admin = f.admin.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("c-{i:02}");
            let mut new = nd(&id);
            new.tenant = Some(tenant_id(&format!("t{}", i % 3)));
            reg.create_device(&admin, new).await.map(|_| ())?;
            reg.rotate_device_token(&admin, &id).await.map(|_| ())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(f.reg.device_count().await.unwrap(), 24);
    assert_eq!(f.reg.list_tenants(&f.admin).await.unwrap().len(), 4);
}

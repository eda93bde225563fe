//! Device CRUD, validation, listing and pagination.

use crate::common::*;
use corral_registry::prelude::*;
use corral_registry::{DeviceFilter, DevicePatch, DeviceStatus, RegistryError};
use serde_json::json;
use std::collections::HashSet;

#[tokio::test]
async fn create_then_get_round_trips() {
    let f = fixture().await;
    let mut new = nd("truck-1");
    new.profile = Some("truck".into());
    new.site = Some("Depot North".into());
    new.attributes = Some(json!({"vin": "W0L000051T2123456", "axles": 3}).as_object().unwrap().clone());
    new.tags = Some(vec!["fleet-a".into(), "cold".into(), "fleet-a".into()]);
    let (created, token) = f.reg.create_device(&f.admin, new).await.unwrap();
    assert!(token.starts_with("cdt_") && token.len() == 68);
    assert_eq!(created.tenant.as_str(), "default");
    assert_eq!(created.tags, vec!["fleet-a", "cold"], "duplicate tags dropped, order kept");
    assert_eq!(created.status, DeviceStatus::Active);

    let got = f.reg.get_device(&f.admin, "truck-1").await.unwrap();
    assert_eq!(got, created);
    let v = serde_json::to_value(&got).unwrap();
    assert_eq!(v["status"], "active");
    let created_at = v["created_at"].as_str().unwrap();
    assert!(created_at.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(created_at).is_ok());
    assert_eq!(v["last_seen"], serde_json::Value::Null);

    // The profile named by the device exists now, empty, to be declared later.
    let p = f.reg.get_profile(&f.admin, "truck").await.unwrap();
    assert!(p.attributes.is_empty() && p.description.is_none());
    assert_not_found(f.reg.get_device(&f.admin, "nope").await);
    assert_eq!(f.reg.device_count().await.unwrap(), 1);
}

#[tokio::test]
async fn duplicate_ids_conflict_and_unknown_tenants_appear() {
    let f = fixture().await;
    f.device("d1", "acme").await;
    let again = f.reg.create_device(&f.admin, nd("d1")).await;
    assert!(matches!(again, Err(RegistryError::Conflict(_))), "{again:?}");
    let tenants: Vec<String> = f.reg.list_tenants(&f.admin).await.unwrap().into_iter().map(|t| t.id.to_string()).collect();
    assert_eq!(tenants, vec!["acme", "default"]);
}

#[tokio::test]
async fn input_is_validated() {
    let f = fixture().await;
    let mut bad = nd("x1");
    bad.profile = Some("no spaces".into());
    assert_bad_input(f.reg.create_device(&f.admin, bad).await);
    let mut bad = nd("x2");
    bad.site = Some("".into());
    assert_bad_input(f.reg.create_device(&f.admin, bad).await);
    let mut bad = nd("x3");
    bad.tags = Some(vec!["ok".into(), "line\nbreak".into()]);
    assert_bad_input(f.reg.create_device(&f.admin, bad).await);
    let mut bad = nd("x4");
    bad.attributes = Some(json!({"blob": "x".repeat(20_000)}).as_object().unwrap().clone());
    assert_bad_input(f.reg.create_device(&f.admin, bad).await);
    assert_eq!(f.reg.device_count().await.unwrap(), 0, "nothing of a rejected request is stored");
}

#[tokio::test]
async fn gateways_must_be_live_same_tenant_and_loop_free() {
    let f = fixture().await;
    f.device("gw-1", "acme").await;
    f.device("gw-other", "beta").await;
    let mut child = nd("child-1");
    child.tenant = Some(tenant_id("acme"));
    child.gateway = Some(did("missing"));
    assert_bad_input(f.reg.create_device(&f.admin, child.clone()).await);
    child.gateway = Some(did("gw-other"));
    assert_bad_input(f.reg.create_device(&f.admin, child.clone()).await);
    child.gateway = Some(did("gw-1"));
    let (c, _) = f.reg.create_device(&f.admin, child).await.unwrap();
    assert_eq!(c.gateway, Some(did("gw-1")));

    // gw-1 behind child-1 would be a loop.
    let patch = DevicePatch { gateway: Some(Some(did("child-1"))), ..Default::default() };
    assert_bad_input(f.reg.update_device(&f.admin, "gw-1", patch).await);
    let patch = DevicePatch { gateway: Some(Some(did("gw-1"))), ..Default::default() };
    assert_bad_input(f.reg.update_device(&f.admin, "gw-1", patch).await);
    // Clearing it works.
    let patch: DevicePatch = serde_json::from_str(r#"{"gateway": null}"#).unwrap();
    assert_eq!(f.reg.update_device(&f.admin, "child-1", patch).await.unwrap().gateway, None);
}

#[tokio::test]
async fn patch_sets_clears_and_replaces() {
    let f = fixture().await;
    let mut new = nd("p1");
    new.site = Some("s1".into());
    new.tags = Some(vec!["a".into(), "b".into()]);
    new.attributes = Some(json!({"k": 1, "j": 2}).as_object().unwrap().clone());
    let (before, _) = f.reg.create_device(&f.admin, new).await.unwrap();

    let patch: DevicePatch =
        serde_json::from_str(r#"{"site": null, "tags": ["c"], "attributes": {"k": 5}, "profile": "hvac"}"#).unwrap();
    let after = f.reg.update_device(&f.admin, "p1", patch).await.unwrap();
    assert_eq!(after.site, None);
    assert_eq!(after.tags, vec!["c"]);
    assert_eq!(after.attributes, *json!({"k": 5}).as_object().unwrap());
    assert_eq!(after.profile.as_deref(), Some("hvac"));
    assert!(after.updated_at >= before.updated_at);
    assert_eq!(f.reg.get_device(&f.admin, "p1").await.unwrap(), after);

    // An empty patch changes nothing and is not an error.
    let same = f.reg.update_device(&f.admin, "p1", DevicePatch::default()).await.unwrap();
    assert_eq!(same, after);
    assert_not_found(f.reg.update_device(&f.admin, "ghost", DevicePatch::default()).await);
}

#[tokio::test]
async fn decommission_keeps_the_row_and_freezes_it() {
    let f = fixture().await;
    f.device("old-1", "default").await;
    let d = f.reg.decommission_device(&f.admin, "old-1").await.unwrap();
    assert_eq!(d.status, DeviceStatus::Decommissioned);
    assert_eq!(f.reg.get_device(&f.admin, "old-1").await.unwrap().status, DeviceStatus::Decommissioned);
    // Twice is fine; changes and rotation are not.
    assert_eq!(f.reg.decommission_device(&f.admin, "old-1").await.unwrap().status, DeviceStatus::Decommissioned);
    let patch = DevicePatch { status: Some(DeviceStatus::Active), ..Default::default() };
    assert!(matches!(f.reg.update_device(&f.admin, "old-1", patch).await, Err(RegistryError::Conflict(_))));
    assert!(matches!(f.reg.rotate_device_token(&f.admin, "old-1").await, Err(RegistryError::Conflict(_))));
    // The id stays taken: history must not be confused with a new device.
    assert!(matches!(f.reg.create_device(&f.admin, nd("old-1")).await, Err(RegistryError::Conflict(_))));
    assert_eq!(f.reg.device_count().await.unwrap(), 1);
}

/// Walks every page of `filter` and returns the ids in order, checking `total` on each page.
async fn walk(f: &Fixture, filter: DeviceFilter) -> Vec<String> {
    let mut filter = filter;
    let mut ids = Vec::new();
    let mut pages = 0;
    loop {
        let page = f.reg.list_devices(&f.admin, &filter).await.unwrap();
        pages += 1;
        assert!(pages < 100, "pagination does not terminate");
        assert!(page.devices.len() <= filter.limit.unwrap_or(100) as usize);
        ids.extend(page.devices.iter().map(|d| d.id.to_string()));
        assert!(page.total as usize >= ids.len());
        match page.next {
            Some(next) => filter.after = Some(next),
            None => {
                assert_eq!(page.total as usize, ids.len(), "total matches what the walk found");
                return ids;
            }
        }
    }
}

#[tokio::test]
async fn pagination_visits_every_device_once() {
    let f = fixture().await;
    let mut expected = Vec::new();
    for i in 0..23 {
        let id = format!("dev-{i:02}");
        f.device(&id, if i % 2 == 0 { "acme" } else { "beta" }).await;
        expected.push(id);
    }
    let ids = walk(&f, DeviceFilter { limit: Some(5), ..Default::default() }).await;
    assert_eq!(ids, expected, "sorted by id, each exactly once");
    let unique: HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), 23);

    // A page size dividing the count exactly still ends with next = None, not an empty page.
    let acme = walk(&f, DeviceFilter { tenant: Some(tenant_id("acme")), limit: Some(4), ..Default::default() }).await;
    assert_eq!(acme.len(), 12);
    let one = f.reg.list_devices(&f.admin, &DeviceFilter { limit: Some(23), ..Default::default() }).await.unwrap();
    assert_eq!((one.devices.len(), one.total, one.next), (23, 23, None));
    let capped = f.reg.list_devices(&f.admin, &DeviceFilter { limit: Some(0), ..Default::default() }).await.unwrap();
    assert_eq!(capped.devices.len(), 1, "limit is clamped to at least 1");
}

#[tokio::test]
async fn filters_narrow_the_listing() {
    let f = fixture().await;
    let specs = [
        ("hvac-1", "acme", "roof", "hvac", &["critical"][..], json!({"model": "Carrier-X"})),
        ("hvac-2", "acme", "basement", "hvac", &[][..], json!({"model": "Daikin"})),
        ("truck-1", "acme", "roof", "truck", &["cold"][..], json!({})),
        ("truck-2", "beta", "depot", "truck", &[][..], json!({"note": "spare"})),
    ];
    for (id, tenant, site, profile, tags, attrs) in specs {
        let mut new = nd(id);
        new.tenant = Some(tenant_id(tenant));
        new.site = Some(site.into());
        new.profile = Some(profile.into());
        new.tags = Some(tags.iter().map(|t| t.to_string()).collect());
        new.attributes = Some(attrs.as_object().unwrap().clone());
        f.reg.create_device(&f.admin, new).await.unwrap();
    }
    let patch = DevicePatch { status: Some(DeviceStatus::Quarantined), ..Default::default() };
    f.reg.update_device(&f.admin, "hvac-2", patch).await.unwrap();

    let ids = |filter: DeviceFilter| {
        let reg = f.reg.clone();
        let admin = f.admin.clone();
        async move {
            let page = reg.list_devices(&admin, &filter).await.unwrap();
            assert_eq!(page.total as usize, page.devices.len());
            page.devices.into_iter().map(|d| d.id.to_string()).collect::<Vec<_>>()
        }
    };
    assert_eq!(ids(DeviceFilter { tenant: Some(tenant_id("beta")), ..Default::default() }).await, ["truck-2"]);
    assert_eq!(ids(DeviceFilter { site: Some("roof".into()), ..Default::default() }).await, ["hvac-1", "truck-1"]);
    assert_eq!(ids(DeviceFilter { profile: Some("truck".into()), ..Default::default() }).await, ["truck-1", "truck-2"]);
    assert_eq!(ids(DeviceFilter { status: Some(DeviceStatus::Quarantined), ..Default::default() }).await, ["hvac-2"]);
    let q = |s: &str| DeviceFilter { q: Some(s.into()), ..Default::default() };
    assert_eq!(ids(q("carrier")).await, ["hvac-1"], "attribute values, case-insensitive");
    assert_eq!(ids(q("COLD")).await, ["truck-1"], "tags");
    assert_eq!(ids(q("depot")).await, ["truck-2"], "site");
    assert_eq!(ids(q("hvac")).await, ["hvac-1", "hvac-2"], "id and profile");
    assert_eq!(ids(q("50%_")).await, Vec::<String>::new(), "no wildcard semantics");
    let combined = DeviceFilter { site: Some("roof".into()), profile: Some("hvac".into()), ..Default::default() };
    assert_eq!(ids(combined).await, ["hvac-1"]);
    // An empty query parameter is no filter.
    assert_eq!(ids(DeviceFilter { site: Some(String::new()), ..Default::default() }).await.len(), 4);

    let from_query: DeviceFilter = serde_json::from_value(json!({"status": "active", "limit": 2})).unwrap();
    let page = f.reg.list_devices(&f.admin, &from_query).await.unwrap();
    assert_eq!((page.devices.len(), page.total, page.next.as_deref()), (2, 3, Some("truck-1")));

    // Tags, and sorted pages by offset (id breaks ties, so pages never overlap).
    assert_eq!(ids(DeviceFilter { tag: Some("cold".into()), ..Default::default() }).await, ["truck-1"]);
    let sorted = |offset: u32| DeviceFilter {
        sort: Some("site".into()),
        desc: Some(true),
        limit: Some(2),
        offset: Some(offset),
        ..Default::default()
    };
    let first = f.reg.list_devices(&f.admin, &sorted(0)).await.unwrap();
    let second = f.reg.list_devices(&f.admin, &sorted(2)).await.unwrap();
    let names = |p: &corral_registry::DevicePage| p.devices.iter().map(|d| d.id.to_string()).collect::<Vec<_>>();
    assert_eq!((names(&first), first.next.as_deref()), (vec!["truck-1".to_string(), "hvac-1".to_string()], Some("2")));
    assert_eq!(
        (names(&second), second.next.as_deref(), second.total),
        (vec!["truck-2".to_string(), "hvac-2".to_string()], None, 4)
    );
    let bad = DeviceFilter { sort: Some("password".into()), ..Default::default() };
    assert_bad_input(f.reg.list_devices(&f.admin, &bad).await);
}

#[tokio::test]
async fn concurrent_attribute_merges_of_one_device_all_land() {
    // A device's own attribute report and a campaign's firmware_version arrive at the same time:
    // each merge must keep the other's keys.
    let f = fixture().await;
    f.reg.create_device(&f.admin, nd("meter-1")).await.unwrap();
    let merges = (0..16).map(|i| {
        let (reg, admin) = (f.reg.clone(), f.admin.clone());
        tokio::spawn(async move {
            let reported = json!({ format!("k{i}"): i }).as_object().unwrap().clone();
            reg.merge_attributes(&admin, "meter-1", reported).await.unwrap();
        })
    });
    for merge in merges.collect::<Vec<_>>() {
        merge.await.unwrap();
    }
    let attributes = f.reg.get_device(&f.admin, "meter-1").await.unwrap().attributes;
    let mut keys: Vec<&String> = attributes.keys().collect();
    keys.sort();
    assert_eq!(keys.len(), 16, "every merge kept: {keys:?}");
}

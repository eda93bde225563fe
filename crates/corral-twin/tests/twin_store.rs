//! The twin store through its traits, on a real SQLite file: versions and per-key times on a
//! manual clock, delta, profile defaults, optimistic concurrency, changes since a version,
//! durability across a reopen, tenant scoping and refused input.

use corral_model::{DeviceId, TenantId};
use corral_services::{Clock, ManualClock};
use corral_twin::{
    DesiredChanges, DesiredTwin, Document, FullReason, ProfileDefaults, ReportedTwin, SqliteTwins, TwinError, TwinLifecycle,
    TwinReader, TwinSettings, TwinStore, merge_patch, parse_patch,
};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const T0_NS: i64 = 1_700_000_000_000_000_000;
const T0_MS: i64 = T0_NS / 1_000_000;

fn doc(value: Value) -> Document {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn device(id: &str) -> DeviceId {
    DeviceId::new(id).unwrap()
}

fn tenant(id: &str) -> TenantId {
    TenantId::new(id).unwrap()
}

async fn open(path: &Path, clock: &ManualClock, settings: TwinSettings) -> SqliteTwins {
    SqliteTwins::open(path, Arc::new(clock.clone()), settings).await.unwrap()
}

#[tokio::test]
async fn versions_grow_per_change_and_key_times_show_a_partial_update() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0_NS);
    let twins = open(&dir.path().join("twins.db"), &clock, TwinSettings::default()).await;
    let truck = device("truck-7");
    twins.ensure_twin(&truck, &tenant("acme"), None).await.unwrap();

    let r = twins.patch_reported(&truck, &doc(json!({"fw": "2.0", "battery": 90, "gps": {"fix": true}}))).await.unwrap();
    assert_eq!(r.version, 1);
    clock.advance(Duration::from_secs(10));
    let r = twins.patch_reported(&truck, &doc(json!({"battery": 85, "gps": {"sats": 7}}))).await.unwrap();
    assert_eq!(r.version, 2);
    assert_eq!(Value::Object(r.document.clone()), json!({"fw": "2.0", "battery": 85, "gps": {"fix": true, "sats": 7}}));
    assert_eq!(r.updated_at_ms["fw"], T0_MS, "untouched by the partial update");
    assert_eq!((r.updated_at_ms["battery"], r.updated_at_ms["gps"]), (T0_MS + 10_000, T0_MS + 10_000));

    // The same values again are no change: same version, same times.
    clock.advance(Duration::from_secs(10));
    let same = twins.patch_reported(&truck, &doc(json!({"battery": 85}))).await.unwrap();
    assert_eq!(same, r);

    // null deletes a key and its time.
    let r = twins.patch_reported(&truck, &doc(json!({"gps": null}))).await.unwrap();
    assert_eq!((r.version, r.document.contains_key("gps"), r.updated_at_ms.contains_key("gps")), (3, false, false));
    assert_eq!(twins.twin(&truck, None).await.unwrap().reported, r, "what was returned is what is stored");
}

#[tokio::test]
async fn delta_follows_desired_and_reported() {
    let clock = ManualClock::at(T0_NS);
    let twins = SqliteTwins::open_in_memory(Arc::new(clock), TwinSettings::default()).await.unwrap();
    let pump = device("pump-1");
    twins.ensure_twin(&pump, &tenant("acme"), None).await.unwrap();
    twins.patch_desired(&pump, None, None, &doc(json!({"fw": "2.1", "rate": 5, "mode": {"eco": true}}))).await.unwrap();
    twins.patch_reported(&pump, &doc(json!({"fw": "2.0", "rate": 5.0, "mode": {"eco": false}, "temp": 40}))).await.unwrap();
    let twin = twins.twin(&pump, None).await.unwrap();
    assert_eq!(Value::Object(twin.delta), json!({"fw": "2.1", "mode": {"eco": true}}));

    twins.patch_reported(&pump, &doc(json!({"fw": "2.1", "mode": {"eco": true}}))).await.unwrap();
    assert!(twins.twin(&pump, None).await.unwrap().delta.is_empty(), "everything desired is reported");
}

#[tokio::test]
async fn a_stale_expected_version_is_a_conflict_and_changes_nothing() {
    let clock = ManualClock::at(T0_NS);
    let twins = SqliteTwins::open_in_memory(Arc::new(clock), TwinSettings::default()).await.unwrap();
    let d = device("d1");
    twins.ensure_twin(&d, &tenant("acme"), None).await.unwrap();
    let v1 = twins.patch_desired(&d, None, Some(0), &doc(json!({"a": 1}))).await.unwrap();
    assert_eq!(v1.version, 1);
    let v2 = twins.patch_desired(&d, None, Some(1), &doc(json!({"a": 2}))).await.unwrap();
    assert_eq!(v2.version, 2);

    let stale = twins.patch_desired(&d, None, Some(1), &doc(json!({"a": 3}))).await;
    assert!(matches!(stale, Err(TwinError::Conflict { expected: 1, current: 2 })), "{stale:?}");
    assert_eq!(twins.twin(&d, None).await.unwrap().desired, v2);
}

#[tokio::test]
async fn devices_inherit_profile_defaults_unless_they_override_a_key() {
    let clock = ManualClock::at(T0_NS);
    let twins = SqliteTwins::open_in_memory(Arc::new(clock.clone()), TwinSettings::default()).await.unwrap();
    let mut changes = twins.subscribe();
    twins
        .patch_profile_defaults("trucks", &doc(json!({"interval_s": 60, "net": {"apn": "fleet", "roam": false}})))
        .await
        .unwrap();
    let (a, b) = (device("truck-a"), device("truck-b"));
    twins.ensure_twin(&a, &tenant("acme"), Some("trucks")).await.unwrap();
    let twin_b = twins.ensure_twin(&b, &tenant("acme"), Some("trucks")).await.unwrap();
    assert_eq!(Value::Object(twin_b.desired.document), json!({"interval_s": 60, "net": {"apn": "fleet", "roam": false}}));
    assert_eq!(twin_b.desired.version, 1);

    let own = twins.patch_desired(&a, None, None, &doc(json!({"net": {"roam": true}}))).await.unwrap();
    assert_eq!(Value::Object(own.document), json!({"interval_s": 60, "net": {"apn": "fleet", "roam": true}}));

    // A profile change reaches every device of the profile as a new desired version, except
    // where a device's override hides it.
    clock.advance(Duration::from_secs(5));
    twins.patch_profile_defaults("trucks", &doc(json!({"interval_s": 30, "net": {"roam": null}}))).await.unwrap();
    let a_twin = twins.twin(&a, None).await.unwrap();
    let b_twin = twins.twin(&b, None).await.unwrap();
    assert_eq!(Value::Object(a_twin.desired.document), json!({"interval_s": 30, "net": {"apn": "fleet", "roam": true}}));
    assert_eq!(Value::Object(b_twin.desired.document), json!({"interval_s": 30, "net": {"apn": "fleet"}}));
    assert_eq!((a_twin.desired.version, b_twin.desired.version), (3, 2));
    assert_eq!(Value::Object(a_twin.desired_overrides.clone()), json!({"net": {"roam": true}}));

    // Dropping the override lets the default show through again.
    let back = twins.patch_desired(&a, None, None, &doc(json!({"net": null}))).await.unwrap();
    assert_eq!(Value::Object(back.document), json!({"interval_s": 30, "net": {"apn": "fleet"}}));

    let mut seen = Vec::new();
    while let Ok(change) = changes.try_recv() {
        seen.push((change.device.as_str().to_string(), change.version));
    }
    let expected = [("truck-a", 1), ("truck-b", 1), ("truck-a", 2), ("truck-a", 3), ("truck-b", 2), ("truck-a", 4)];
    assert_eq!(seen, expected.map(|(d, v)| (d.to_string(), v)));
    assert_eq!(twins.profile_defaults("trucks").await.unwrap().desired.version, 2);
    assert_eq!(twins.profile_defaults("none").await.unwrap().desired.version, 0);
}

#[tokio::test]
async fn changes_since_replays_to_the_current_document_or_answers_it_whole() {
    let clock = ManualClock::at(T0_NS);
    let settings = TwinSettings { history_per_device: 3, ..TwinSettings::default() };
    let twins = SqliteTwins::open_in_memory(Arc::new(clock.clone()), settings).await.unwrap();
    let d = device("d1");
    twins.ensure_twin(&d, &tenant("acme"), None).await.unwrap();
    let patches = [json!({"a": 1}), json!({"b": {"x": 1}}), json!({"a": null}), json!({"b": {"y": 2}}), json!({"c": [1]})];
    let mut documents = vec![Value::Object(Document::new())];
    for patch in &patches {
        clock.advance(Duration::from_secs(1));
        let now = twins.patch_desired(&d, None, None, &doc(patch.clone())).await.unwrap();
        documents.push(Value::Object(now.document));
    }
    let current = twins.twin(&d, None).await.unwrap().desired;
    assert_eq!(current.version, 5);

    // Within the history (versions 3, 4, 5 kept): replaying gives the current document.
    for since in 2..=5u64 {
        let DesiredChanges::Patches { version, patches } = twins.changes_since(&d, since).await.unwrap() else {
            panic!("since {since}: patches expected");
        };
        assert_eq!((version, patches.len()), (5, usize::try_from(5 - since).unwrap()));
        let mut replayed = documents[usize::try_from(since).unwrap()].clone();
        for p in &patches {
            merge_patch(&mut replayed, &Value::Object(p.patch.clone()));
        }
        assert_eq!(replayed, Value::Object(current.document.clone()), "since {since}");
    }
    let last = twins.changes_since(&d, 4).await.unwrap();
    let DesiredChanges::Patches { patches, .. } = last else { unreachable!() };
    assert_eq!((patches[0].version, patches[0].at_ms), (5, clock.now_ms()));

    // Beyond it, or ahead of the server: the whole document, and why.
    for (since, why) in [(0, FullReason::BeyondHistory), (1, FullReason::BeyondHistory), (9, FullReason::AheadOfServer)] {
        match twins.changes_since(&d, since).await.unwrap() {
            DesiredChanges::Full { desired, reason } => assert_eq!((desired, reason), (current.clone(), why)),
            other => panic!("since {since}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn acknowledged_updates_are_there_after_the_file_is_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data").join("twins.db");
    let clock = ManualClock::at(T0_NS);
    let d = device("d1");
    {
        let twins = open(&path, &clock, TwinSettings::default()).await;
        twins.patch_profile_defaults("p", &doc(json!({"led": "on"}))).await.unwrap();
        twins.ensure_twin(&d, &tenant("acme"), Some("p")).await.unwrap();
        twins.patch_desired(&d, None, None, &doc(json!({"rate": 5}))).await.unwrap();
        twins.patch_reported(&d, &doc(json!({"rate": 4, "fw": "1.0"}))).await.unwrap();
        // Dropped without close(): what was acknowledged must already be in the file.
    }
    let twins = open(&path, &clock, TwinSettings::default()).await;
    let twin = twins.twin(&d, Some("acme")).await.unwrap();
    assert_eq!(Value::Object(twin.desired.document), json!({"led": "on", "rate": 5}));
    assert_eq!((twin.desired.version, twin.reported.version), (2, 1));
    assert_eq!(Value::Object(twin.reported.document), json!({"rate": 4, "fw": "1.0"}));
    assert_eq!(Value::Object(twin.delta), json!({"led": "on", "rate": 5}));
    assert!(matches!(twins.changes_since(&d, 0).await.unwrap(), DesiredChanges::Patches { version: 2, .. }));
    assert!(twins.remove_twin(&d).await.unwrap());
    assert!(matches!(twins.twin(&d, None).await, Err(TwinError::NotFound(_))));
    twins.close().await;
}

#[tokio::test]
async fn a_scoped_caller_never_sees_another_tenants_twin() {
    let clock = ManualClock::at(T0_NS);
    let twins = SqliteTwins::open_in_memory(Arc::new(clock), TwinSettings::default()).await.unwrap();
    let d = device("meter-1");
    twins.ensure_twin(&d, &tenant("acme"), None).await.unwrap();
    assert!(twins.twin(&d, Some("acme")).await.is_ok());
    assert!(twins.twin(&d, None).await.is_ok(), "unscoped callers see every tenant");

    let other = twins.twin(&d, Some("globex")).await;
    let missing = twins.twin(&device("nope"), Some("globex")).await;
    let (Err(TwinError::NotFound(a)), Err(TwinError::NotFound(b))) = (other, missing) else { panic!("not found expected") };
    assert_eq!(a.replace("meter-1", "X"), b.replace("nope", "X"), "indistinguishable from a missing device");

    let write = twins.patch_desired(&d, Some("globex"), None, &doc(json!({"a": 1}))).await;
    assert!(matches!(write, Err(TwinError::NotFound(_))));
    assert_eq!(twins.twin(&d, None).await.unwrap().desired.version, 0, "nothing stored");
}

#[tokio::test]
async fn oversized_too_deep_and_malformed_input_is_refused_and_nothing_stored() {
    let clock = ManualClock::at(T0_NS);
    let settings = TwinSettings { max_document_bytes: 100, max_depth: 3, ..TwinSettings::default() };
    let twins = SqliteTwins::open_in_memory(Arc::new(clock), settings.clone()).await.unwrap();
    let d = device("d1");
    twins.ensure_twin(&d, &tenant("acme"), None).await.unwrap();

    assert!(matches!(parse_patch(b"{not json", &settings), Err(TwinError::BadInput(_))));
    assert!(matches!(parse_patch(b"\"a string\"", &settings), Err(TwinError::BadInput(_))));

    let big = doc(json!({"blob": "x".repeat(200)}));
    assert!(matches!(twins.patch_reported(&d, &big).await, Err(TwinError::TooLarge(_))));
    assert!(matches!(twins.patch_desired(&d, None, None, &big).await, Err(TwinError::TooLarge(_))));
    // Small patches that would grow the document past the limit are refused too.
    twins.patch_reported(&d, &doc(json!({"a": "y".repeat(60)}))).await.unwrap();
    let grown = twins.patch_reported(&d, &doc(json!({"b": "z".repeat(60)}))).await;
    assert!(matches!(grown, Err(TwinError::TooLarge(m)) if m.contains("reported")));

    let deep = doc(json!({"a": {"b": {"c": {"d": 1}}}}));
    assert!(matches!(twins.patch_desired(&d, None, None, &deep).await, Err(TwinError::BadInput(_))));
    assert!(matches!(twins.patch_profile_defaults("p", &deep).await, Err(TwinError::BadInput(_))));

    let twin = twins.twin(&d, None).await.unwrap();
    assert_eq!((twin.desired.version, twin.reported.version), (0, 1));
    assert!(matches!(twins.patch_reported(&device("ghost"), &doc(json!({"a": 1}))).await, Err(TwinError::NotFound(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_with_the_same_expected_version_yield_exactly_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0_NS);
    let twins = open(&dir.path().join("twins.db"), &clock, TwinSettings::default()).await;
    let d = device("d1");
    twins.ensure_twin(&d, &tenant("acme"), None).await.unwrap();
    let writers: Vec<_> = (0..8)
        .map(|i| {
            let (twins, d) = (twins.clone(), d.clone());
            tokio::spawn(async move { twins.patch_desired(&d, None, Some(0), &doc(json!({"writer": i}))).await })
        })
        .collect();
    let mut won = 0;
    for writer in writers {
        match writer.await.unwrap() {
            Ok(desired) => {
                assert_eq!(desired.version, 1);
                won += 1;
            }
            Err(TwinError::Conflict { expected: 0, current: 1 }) => {}
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(twins.twin(&d, None).await.unwrap().desired.version, 1);
}

#[tokio::test]
async fn twins_are_listed_in_pages_by_device_and_within_a_scope() {
    let clock = ManualClock::at(T0_NS);
    let twins = SqliteTwins::open_in_memory(Arc::new(clock), TwinSettings::default()).await.unwrap();
    for (id, t) in [("c", "acme"), ("a", "acme"), ("b", "globex"), ("d", "acme")] {
        twins.ensure_twin(&device(id), &tenant(t), None).await.unwrap();
    }
    let ids = |page: Vec<corral_twin::Twin>| page.into_iter().map(|t| t.device.to_string()).collect::<Vec<_>>();
    assert_eq!(ids(twins.list_twins(None, None, 2).await.unwrap()), ["a", "b"]);
    assert_eq!(ids(twins.list_twins(None, Some(&device("b")), 10).await.unwrap()), ["c", "d"]);
    assert_eq!(ids(twins.list_twins(Some("acme"), None, 10).await.unwrap()), ["a", "c", "d"]);
    assert_eq!(ids(twins.list_twins(Some("acme"), Some(&device("d")), 10).await.unwrap()), Vec::<String>::new());
}

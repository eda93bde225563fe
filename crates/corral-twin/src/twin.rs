//! The twin model: what a twin is, how one side of it moves to a new document, how the delta and
//! the effective desired document are computed. No I/O here; the store calls these inside its
//! transactions so every backend applies the same rules.

use crate::merge::{Document, diff, json_equal, merge_document};
use corral_model::{DeviceId, TenantId};
use serde::Serialize;
use std::collections::BTreeMap;

/// One side of a twin (desired or reported): the document, its version and when each top-level
/// key last changed.
///
/// The version counts changes: it grows by one each time the document's content changes and
/// only then, so a patch that changes nothing (a device reporting the same values again, a retried
/// request) is accepted without a new version, a history entry or a notification. A twin starts
/// at version 0 with an empty document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, schemars::JsonSchema)]
pub struct TwinDocument {
    /// The document: a JSON object.
    pub document: Document,
    /// Grows by one with each change of the document; 0 for a document never changed.
    pub version: u64,
    /// Top-level key → Unix milliseconds of the change that last gave it a new value (a change
    /// anywhere inside the key counts). A deleted key loses its entry with the key. After a
    /// partial update only the keys it changed have the new time, which is how a reader tells a
    /// partial update from a whole one.
    pub updated_at_ms: BTreeMap<String, i64>,
}

impl TwinDocument {
    /// Moves to `next` at `now_ms`. Returns the merge patch that did it (what a device that held
    /// the previous version needs), or `None`, leaving everything as it was, when nothing changed.
    pub fn advance(&mut self, next: Document, now_ms: i64) -> Option<Document> {
        let patch = diff(&self.document, &next);
        if patch.is_empty() {
            return None;
        }
        self.version += 1;
        for (key, value) in &patch {
            if value.is_null() {
                self.updated_at_ms.remove(key);
            } else {
                self.updated_at_ms.insert(key.clone(), now_ms);
            }
        }
        self.document = next;
        Some(patch)
    }
}

/// A device's twin as an application or the device reads it.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Twin {
    pub device: DeviceId,
    pub tenant: TenantId,
    /// The profile whose defaults the desired document inherits, if any.
    pub profile: Option<String>,
    /// The effective desired document: the profile's defaults with the device's own overrides
    /// merged over them. This is what the device is asked to apply and what is versioned.
    pub desired: TwinDocument,
    /// The device's own desired keys (what `patch_desired` wrote), without the profile's.
    pub desired_overrides: Document,
    /// What the device last said it is.
    pub reported: TwinDocument,
    /// What the device still has to do: every top-level desired key whose value is absent from
    /// reported or differs from it, with the desired value.
    pub delta: Document,
}

/// The effective desired document: `defaults` with `overrides` merged over them as a merge patch,
/// so an override of one key inside a nested object keeps the profile's other keys there.
/// Overrides never hold `null` (merge patch removes those), so a device cannot hide a profile
/// key, only give it another value; deleting its override lets the default show through again.
pub fn effective_desired(defaults: &Document, overrides: &Document) -> Document {
    let mut effective = defaults.clone();
    merge_document(&mut effective, overrides);
    effective
}

/// What the device still has to do: every top-level key of `desired` whose value is absent from
/// `reported` or differs from it, with the desired value. Values compare deeply and numbers by
/// value ([`json_equal`]), per top-level key: if one member of a nested object differs, the
/// whole desired object for that key is in the delta (the device applies it as one setting).
/// Keys only in `reported` (facts the device states, like its battery level) are never in it.
pub fn delta(desired: &Document, reported: &Document) -> Document {
    desired
        .iter()
        .filter(|(key, want)| !reported.get(*key).is_some_and(|have| json_equal(want, have)))
        .map(|(key, want)| (key.clone(), want.clone()))
        .collect()
}

/// What a device that last applied desired version `since` must do to catch up.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DesiredChanges {
    /// Apply `patches` in order, as merge patches, to the document of version `since`: the
    /// result is the document of `version`. Empty when the device is up to date.
    Patches {
        /// The desired version now.
        version: u64,
        /// Oldest first.
        patches: Vec<DesiredPatch>,
    },
    /// The patches since then are no longer kept (or the device's version is not one this
    /// server ever had): replace the whole document with this one.
    Full {
        /// The whole effective desired document and its version.
        desired: TwinDocument,
        reason: FullReason,
    },
}

/// Why [`DesiredChanges::Full`] was answered instead of patches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FullReason {
    /// The device's version is older than the oldest patch kept (the history is bounded).
    BeyondHistory,
    /// The device claims a version newer than the server's (a restored backup, a reset twin).
    AheadOfServer,
}

/// One change of a desired document, as kept in the bounded history.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct DesiredPatch {
    /// The version this patch produced.
    pub version: u64,
    /// An RFC 7386 merge patch (`null` deletes a key).
    pub patch: Document,
    /// When it was made, Unix milliseconds.
    pub at_ms: i64,
}

/// A profile's desired defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProfileDesired {
    pub profile: String,
    pub desired: TwinDocument,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn doc(value: Value) -> Document {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn a_version_grows_per_change_and_only_changed_keys_get_the_new_time() {
        let mut side = TwinDocument::default();
        assert!(side.advance(doc(json!({"a": 1, "b": {"x": 1}})), 1_000).is_some());
        assert_eq!(side.version, 1);
        let patch = side.advance(doc(json!({"a": 1, "b": {"x": 2}})), 2_000).unwrap();
        assert_eq!(Value::Object(patch), json!({"b": {"x": 2}}));
        assert_eq!((side.version, side.updated_at_ms["a"], side.updated_at_ms["b"]), (2, 1_000, 2_000));
        assert_eq!(side.advance(doc(json!({"a": 1.0, "b": {"x": 2}})), 3_000), None, "nothing changed");
        assert_eq!(side.version, 2);
        side.advance(doc(json!({"b": {"x": 2}})), 4_000).unwrap();
        assert_eq!((side.version, side.updated_at_ms.contains_key("a")), (3, false));
    }

    #[test]
    fn delta_holds_desired_keys_the_device_has_not_reported_equal() {
        let desired = doc(json!({"fw": "2.1", "interval_s": 30, "net": {"apn": "x", "roam": false}, "led": true}));
        let reported = doc(json!({"fw": "2.0", "interval_s": 30.0, "net": {"apn": "x", "roam": true}, "battery": 80}));
        let d = delta(&desired, &reported);
        assert_eq!(Value::Object(d), json!({"fw": "2.1", "net": {"apn": "x", "roam": false}, "led": true}));
        assert!(delta(&reported, &reported).is_empty());
    }

    #[test]
    fn overrides_merge_over_profile_defaults_key_by_key() {
        let defaults = doc(json!({"interval_s": 60, "net": {"apn": "fleet", "roam": false}, "led": true}));
        let overrides = doc(json!({"interval_s": 10, "net": {"roam": true}}));
        let effective = effective_desired(&defaults, &overrides);
        assert_eq!(Value::Object(effective), json!({"interval_s": 10, "net": {"apn": "fleet", "roam": true}, "led": true}));
    }
}

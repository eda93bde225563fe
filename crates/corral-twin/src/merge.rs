//! JSON merge patch (RFC 7386), the one way a twin document changes, and the limits every
//! document and patch is held to.
//!
//! A patch is applied with [`merge_patch`]: an object merges key by key, `null` deletes a key,
//! anything else (numbers, strings, arrays) replaces the target whole. [`diff`] goes the other way:
//! the smallest patch that turns one document into another, which is what the desired history
//! keeps, so a device can replay the patches since its version and arrive at the same document.

use crate::{TwinError, TwinSettings};
use serde_json::{Map, Value};

/// A twin document: always a JSON object at the top, never `null` as a member value (merge patch
/// removes those), so "the key is absent" and "the key is null" cannot both exist.
pub type Document = Map<String, Value>;

/// Applies `patch` to `target` as RFC 7386 section 2 says.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        // A non-object target is replaced by an empty object before merging, so a member
        // `null` inside a new object is dropped rather than stored.
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target) = target {
        merge_members(target, patch);
    }
}

/// [`merge_patch`] on a document whose top level is already known to be an object.
pub fn merge_document(target: &mut Document, patch: &Document) {
    merge_members(target, patch);
}

fn merge_members(target: &mut Document, patch: &Document) {
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// The merge patch that turns `from` into `to` (`merge_document(from, diff(from, to)) == to`).
/// Empty when they are equal. Nested objects give nested patches, so a change deep in a
/// configuration block sends only that change; anything else is sent whole.
pub fn diff(from: &Document, to: &Document) -> Document {
    let mut patch = Map::new();
    for key in from.keys().filter(|key| !to.contains_key(*key)) {
        patch.insert(key.clone(), Value::Null);
    }
    for (key, new) in to {
        match (from.get(key), new) {
            (Some(old), new) if json_equal(old, new) => {}
            (Some(Value::Object(old)), Value::Object(new)) => {
                patch.insert(key.clone(), Value::Object(diff(old, new)));
            }
            _ => {
                patch.insert(key.clone(), new.clone());
            }
        }
    }
    patch
}

/// Deep JSON equality, where numbers compare by value: `1`, `1.0` and `1e0` are the same number
/// (a device that prints `21.0` for a desired `21` has applied it), while `"1"` and `1` differ.
pub fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
            (Some(x), Some(y), _, _) => x == y,
            (_, _, Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_equal(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

/// Parses a patch for a twin document: JSON text of at most `max_document_bytes` whose top level
/// is an object and whose nesting is at most `max_depth`. A patch that is a whole new document
/// (not an object) would make the twin something other than an object, so it is refused.
pub fn parse_patch(body: &[u8], settings: &TwinSettings) -> Result<Document, TwinError> {
    if body.len() > settings.max_document_bytes {
        return Err(TwinError::TooLarge(format!(
            "the patch is {} bytes, over the limit of {} bytes",
            body.len(),
            settings.max_document_bytes
        )));
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| TwinError::BadInput(format!("the patch is not valid JSON: {e}")))?;
    let Value::Object(patch) = value else {
        return Err(TwinError::BadInput("a twin patch must be a JSON object, like {\"interval_s\": 30}".into()));
    };
    check_depth(&patch, settings.max_depth)?;
    Ok(patch)
}

/// Refuses a document nested deeper than `max_depth` levels (the top-level object is level 1).
pub fn check_depth(document: &Document, max_depth: usize) -> Result<(), TwinError> {
    fn depth(value: &Value) -> usize {
        match value {
            Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
            Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }
    let found = 1 + document.values().map(depth).max().unwrap_or(0);
    if found > max_depth {
        return Err(TwinError::BadInput(format!(
            "the document is nested {found} levels deep, over the limit of {max_depth}; flatten it"
        )));
    }
    Ok(())
}

/// Refuses a document (after a patch was applied) whose JSON text is over `max_document_bytes`,
/// so many small patches cannot grow a twin without bound. `what` names it in the message.
pub fn check_size(what: &str, document: &Document, settings: &TwinSettings) -> Result<usize, TwinError> {
    let bytes = serde_json::to_vec(document).map_or(usize::MAX, |text| text.len());
    if bytes > settings.max_document_bytes {
        return Err(TwinError::TooLarge(format!(
            "the {what} document would be {bytes} bytes, over the limit of {} bytes; remove keys with null first",
            settings.max_document_bytes
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Every example of RFC 7386 appendix A: original, patch, result.
    #[test]
    fn rfc_7386_appendix_a_examples() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (json!({"a":"b","b":"c"}), json!({"a":null}), json!({"b":"c"})),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (json!({"a":{"b":"c"}}), json!({"a":{"b":"d","c":null}}), json!({"a":{"b":"d"}})),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (json!({}), json!({"a":{"bb":{"ccc":null}}}), json!({"a":{"bb":{}}})),
        ];
        for (original, patch, expected) in cases {
            let mut target = original.clone();
            merge_patch(&mut target, &patch);
            assert_eq!(target, expected, "{original} + {patch}");
        }
    }

    #[test]
    fn diff_is_the_patch_that_gets_there() {
        let from = json!({"a": 1, "b": {"x": 1, "y": [1, 2]}, "gone": true});
        let to = json!({"a": 1.0, "b": {"x": 2, "y": [1, 2]}, "new": "yes"});
        let (Value::Object(from), Value::Object(to)) = (from, to) else { unreachable!() };
        let patch = diff(&from, &to);
        assert_eq!(Value::Object(patch.clone()), json!({"b": {"x": 2}, "gone": null, "new": "yes"}));
        let mut applied = from.clone();
        merge_document(&mut applied, &patch);
        assert!(json_equal(&Value::Object(applied), &Value::Object(to.clone())));
        assert!(diff(&to, &to).is_empty());
    }

    #[test]
    fn numbers_compare_by_value_strings_do_not() {
        assert!(json_equal(&json!(21), &json!(21.0)));
        assert!(json_equal(&json!({"a": [1, {"b": 2}]}), &json!({"a": [1.0, {"b": 2}]})));
        assert!(!json_equal(&json!(1), &json!("1")));
        assert!(!json_equal(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(!json_equal(&json!(u64::MAX), &json!(-1)));
    }

    #[test]
    fn malformed_oversized_non_object_and_too_deep_patches_are_refused() {
        let settings = TwinSettings { max_document_bytes: 64, max_depth: 3, ..TwinSettings::default() };
        assert!(matches!(parse_patch(b"{\"a\": ", &settings), Err(TwinError::BadInput(m)) if m.contains("not valid JSON")));
        assert!(matches!(parse_patch(b"[1, 2]", &settings), Err(TwinError::BadInput(m)) if m.contains("JSON object")));
        let big = format!("{{\"a\": \"{}\"}}", "x".repeat(80));
        assert!(matches!(parse_patch(big.as_bytes(), &settings), Err(TwinError::TooLarge(m)) if m.contains("limit of 64")));
        assert!(parse_patch(br#"{"a": {"b": {"c": 1}}}"#, &settings).is_ok());
        let deep = parse_patch(br#"{"a": {"b": {"c": {"d": 1}}}}"#, &settings);
        assert!(matches!(deep, Err(TwinError::BadInput(m)) if m.contains("4 levels")));
    }
}

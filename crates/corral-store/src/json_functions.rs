//! JSON in SQL: the platform keeps free-form documents as JSON text columns (`devices.attributes`
//! and `tags`, `twins.desired`, `reported` and `delta`, `alarms.last_values`), and these functions
//! read a value out of any of them, so "which devices report a firmware other than the desired
//! one" is one query:
//!
//! ```sql
//! SELECT t.device FROM twins t JOIN devices d ON d.device = t.device
//! WHERE json_get_str(t.reported, 'fw') <> json_get_str(t.desired, 'fw');
//! ```
//!
//! They come from `datafusion-functions-json` (datafusion-contrib), a parser that walks to the
//! value without building the document. Each takes the JSON text, then the path, one key (text)
//! or array index (integer) per level, and is `NULL` when the text is not JSON, the path is not
//! there, or the value is not of the function's type:
//! - `json_get_str` → text (strings only), `json_get_int` → bigint, `json_get_float` → double,
//!   `json_get_bool` → boolean (the number and boolean getters also parse a string such as `"42"`);
//! - `json_as_text` (operator `->>`) → any value as text (`2.1`, `true`, `{"a":1}`);
//! - `json_get_json` → the value's own JSON text; `json_length` → elements of an array or keys of
//!   an object; `json_object_keys`; `json_contains` → whether the path exists (`false`, never
//!   `NULL`; PostgreSQL's `?` operator for it is not in the engine's SQL dialect);
//! - `json_get` (operator `->`) → a union of the JSON types, for chaining or casting
//!   (`(attributes->'floor')::int` becomes `json_get_int`).
//!
//! They run on rows the tenant scope already let through (the scope is applied at each scan), so
//! a function never sees another tenant's document.

use datafusion::common::Result as DfResult;
use datafusion::execution::SessionState;

/// Adds the JSON functions, and the rewrites behind the `->`, `->>` operators and casts, to
/// the engine's base session (every query's session is a copy of it).
pub(crate) fn register(state: &mut SessionState) -> DfResult<()> {
    datafusion_functions_json::register_all(state)
}

#[cfg(test)]
mod tests {
    use crate::{QueryEngine, Store, StoreConfig, SystemTables};
    use arrow::array::{RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::util::pretty::pretty_format_batches;
    use async_trait::async_trait;
    use corral_model::WireError;
    use corral_services::SystemTable;
    use std::sync::Arc;

    /// `devices` with a JSON text column, as the registry's has.
    struct Devices;

    #[async_trait]
    impl SystemTable for Devices {
        fn name(&self) -> &'static str {
            "devices"
        }

        async fn scan(&self, _tenant: Option<&str>) -> Result<RecordBatch, WireError> {
            let schema =
                Schema::new(vec![Field::new("device", DataType::Utf8, false), Field::new("attributes", DataType::Utf8, true)]);
            let devices = StringArray::from(vec!["d1", "d2", "d3", "d4"]);
            let attributes = StringArray::from(vec![
                Some(r#"{"fw": "2.1", "floor": 3, "ratio": 0.5, "indoor": true, "pos": {"lat": 52.5, "tags": ["a", "b"]}}"#),
                Some(r#"{"fw": 2, "floor": "4"}"#),
                Some("not json"),
                None,
            ]);
            RecordBatch::try_new(Arc::new(schema), vec![Arc::new(devices), Arc::new(attributes)])
                .map_err(|e| WireError::internal(e.to_string()))
        }
    }

    async fn sql(query: &str) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let engine = QueryEngine::new(store, SystemTables::new(vec![Arc::new(Devices)]).unwrap(), 64 << 20).unwrap();
        let out = engine.query(query, None, 100).await.unwrap_or_else(|e| panic!("{query}: {e}"));
        pretty_format_batches(&out.batches).unwrap().to_string().lines().skip(3).map(str::to_string).collect()
    }

    #[tokio::test]
    async fn typed_getters_read_a_path_and_are_null_when_it_is_missing_mistyped_or_not_json() {
        let rows = sql("SELECT device, json_get_str(attributes, 'fw') AS fw, json_get_int(attributes, 'floor') AS floor, \
                        json_get_float(attributes, 'ratio') AS ratio, json_get_bool(attributes, 'indoor') AS indoor, \
                        json_get_float(attributes, 'pos', 'lat') AS lat, json_get_str(attributes, 'pos', 'tags', 1) AS tag \
                        FROM devices ORDER BY device")
        .await;
        let expected = [
            "| d1     | 2.1 | 3     | 0.5   | true   | 52.5 | b   |",
            // A number is not a string; a numeric string is an integer.
            "| d2     |     | 4     |       |        |      |     |",
            "| d3     |     |       |       |        |      |     |",
            "| d4     |     |       |       |        |      |     |",
        ];
        assert_eq!(rows[..4], expected);
    }

    #[tokio::test]
    async fn any_value_as_text_raw_json_and_the_operators() {
        let rows = sql("SELECT device, json_as_text(attributes, 'fw') AS fw, json_get_json(attributes, 'pos') AS pos, \
                        attributes->>'floor' AS floor, json_contains(attributes, 'indoor') AS has_indoor \
                        FROM devices WHERE device IN ('d1', 'd2') ORDER BY device")
        .await;
        let expected = [
            r#"| d1     | 2.1 | {"lat": 52.5, "tags": ["a", "b"]} | 3     | true       |"#,
            r#"| d2     | 2   |                                   | 4     | false      |"#,
        ];
        assert_eq!(rows[..2], expected);
    }

    #[tokio::test]
    async fn a_cast_of_json_get_is_typed_and_lengths_count() {
        let rows = sql("SELECT device, (attributes->'floor')::int AS floor, json_contains(attributes, 'fw') AS has_fw, \
                        json_length(attributes) AS n, json_length(attributes, 'pos', 'tags') AS tags \
                        FROM devices ORDER BY device")
        .await;
        let expected = [
            "| d1     | 3     | true   | 5 | 2    |",
            "| d2     | 4     | true   | 2 |      |",
            "| d3     |       | false  |   |      |",
            // `json_contains` is never NULL.
            "| d4     |       | false  |   |      |",
        ];
        assert_eq!(rows[..4], expected);
    }

    #[tokio::test]
    async fn a_filter_compares_two_documents() {
        let rows = sql("SELECT device FROM devices \
                        WHERE json_as_text(attributes, 'fw') <> json_get_str('{\"fw\": \"2.1\"}', 'fw') ORDER BY device")
        .await;
        assert_eq!(rows[..1], ["| d2     |"]);
    }
}

//! The `twins` SQL table: one row per twin, its documents as JSON text, so a twin joins to
//! `devices` and a key is one `json_get_str(reported, 'fw')` away (the JSON functions are the
//! SQL engine's).

use crate::{Twin, TwinDocument, TwinError, TwinReader};
use arrow::array::{ArrayRef, Int64Builder, RecordBatch, StringBuilder, TimestampNanosecondBuilder};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use async_trait::async_trait;
use corral_model::{DeviceId, WireError};
use corral_services::SystemTable;
use std::sync::Arc;

/// SQL's `twins`, read from the twin store at query time. Holds only the reading half of the
/// store: SQL never writes a twin.
pub struct TwinsTable(pub Arc<dyn TwinReader>);

/// Twins read per store call: large enough that a fleet is a few calls, small enough that one
/// call never holds the database for long.
const PAGE: usize = 1000;

#[async_trait]
impl SystemTable for TwinsTable {
    fn name(&self) -> &'static str {
        "twins"
    }

    async fn scan(&self, tenant: Option<&str>) -> Result<RecordBatch, WireError> {
        let mut twins: Vec<Twin> = Vec::new();
        let mut after: Option<DeviceId> = None;
        loop {
            let page = self.0.list_twins(tenant, after.as_ref(), PAGE).await.map_err(|e| e.to_wire())?;
            let full = page.len() == PAGE;
            after = page.last().map(|t| t.device.clone());
            twins.extend(page);
            if !full {
                break;
            }
        }
        twins_batch(&twins).map_err(|e| e.to_wire())
    }
}

/// The table's rows. Versions are `Int64` like every integer of the platform's tables (a version
/// never comes near `i64::MAX`); a side's time is when its latest key changed, `NULL` for an empty
/// document.
fn twins_batch(twins: &[Twin]) -> Result<RecordBatch, TwinError> {
    let ts = || DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()));
    let schema = Schema::new(vec![
        Field::new("device", DataType::Utf8, false),
        Field::new("tenant", DataType::Utf8, false),
        Field::new("profile", DataType::Utf8, true),
        Field::new("desired", DataType::Utf8, false),
        Field::new("desired_version", DataType::Int64, false),
        Field::new("desired_updated_at", ts(), true),
        Field::new("reported", DataType::Utf8, false),
        Field::new("reported_version", DataType::Int64, false),
        Field::new("reported_updated_at", ts(), true),
        Field::new("delta", DataType::Utf8, false),
    ]);
    let text = |f: &dyn Fn(&Twin) -> Option<String>| -> ArrayRef {
        let mut b = StringBuilder::new();
        twins.iter().for_each(|t| b.append_option(f(t)));
        Arc::new(b.finish())
    };
    let json = |d: &crate::Document| Some(serde_json::Value::Object(d.clone()).to_string());
    let version = |side: &dyn Fn(&Twin) -> &TwinDocument| -> ArrayRef {
        let mut b = Int64Builder::with_capacity(twins.len());
        twins.iter().for_each(|t| b.append_value(i64::try_from(side(t).version).unwrap_or(i64::MAX)));
        Arc::new(b.finish())
    };
    let updated_at = |side: &dyn Fn(&Twin) -> &TwinDocument| -> ArrayRef {
        let mut b = TimestampNanosecondBuilder::with_capacity(twins.len()).with_timezone("UTC");
        let latest_ns = |d: &TwinDocument| d.updated_at_ms.values().max().map(|ms| ms.saturating_mul(1_000_000));
        twins.iter().for_each(|t| b.append_option(latest_ns(side(t))));
        Arc::new(b.finish())
    };
    let columns = vec![
        text(&|t| Some(t.device.as_str().to_string())),
        text(&|t| Some(t.tenant.as_str().to_string())),
        text(&|t| t.profile.clone()),
        text(&|t| json(&t.desired.document)),
        version(&|t| &t.desired),
        updated_at(&|t| &t.desired),
        text(&|t| json(&t.reported.document)),
        version(&|t| &t.reported),
        updated_at(&|t| &t.reported),
        text(&|t| json(&t.delta)),
    ];
    RecordBatch::try_new(Arc::new(schema), columns).map_err(|e| TwinError::storage(format!("twins table: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DesiredTwin, ReportedTwin, SqliteTwins, TwinLifecycle, TwinSettings};
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int64Type, TimestampNanosecondType};
    use corral_model::TenantId;
    use corral_services::ManualClock;
    use serde_json::json;

    fn doc(v: serde_json::Value) -> crate::Document {
        v.as_object().unwrap().clone()
    }

    #[tokio::test]
    async fn rows_are_the_scopes_twins_with_json_text_versions_and_latest_times() {
        let clock = Arc::new(ManualClock::at(1_000_000_000)); // 1 s after the epoch
        let store = Arc::new(SqliteTwins::open_in_memory(clock.clone(), TwinSettings::default()).await.unwrap());
        let (a, b) = (DeviceId::new("a-1").unwrap(), DeviceId::new("b-1").unwrap());
        store.ensure_twin(&a, &TenantId::new("alpha").unwrap(), Some("meter")).await.unwrap();
        store.ensure_twin(&b, &TenantId::new("beta").unwrap(), None).await.unwrap();
        store.patch_desired(&a, None, None, &doc(json!({"fw": "2.1"}))).await.unwrap();
        clock.advance(std::time::Duration::from_secs(4));
        store.patch_reported(&a, &doc(json!({"fw": "2.0"}))).await.unwrap();

        let table = TwinsTable(store);
        let all = table.scan(None).await.unwrap();
        assert_eq!(all.num_rows(), 2);
        let alpha = table.scan(Some("alpha")).await.unwrap();
        assert_eq!(alpha.num_rows(), 1);
        let text = |name: &str| alpha.column_by_name(name).unwrap().as_string::<i32>().value(0).to_string();
        assert_eq!((text("device"), text("tenant"), text("profile")), ("a-1".into(), "alpha".into(), "meter".into()));
        assert_eq!(text("desired"), r#"{"fw":"2.1"}"#);
        assert_eq!(text("reported"), r#"{"fw":"2.0"}"#);
        assert_eq!(text("delta"), r#"{"fw":"2.1"}"#);
        let int = |name: &str| alpha.column_by_name(name).unwrap().as_primitive::<Int64Type>().value(0);
        assert_eq!((int("desired_version"), int("reported_version")), (1, 1));
        let time = |name: &str| alpha.column_by_name(name).unwrap().as_primitive::<TimestampNanosecondType>().value(0);
        assert_eq!((time("desired_updated_at"), time("reported_updated_at")), (1_000_000_000, 5_000_000_000));
        // An empty side has no time.
        let beta = table.scan(Some("beta")).await.unwrap();
        assert!(beta.column_by_name("reported_updated_at").unwrap().is_null(0));
        assert!(beta.column_by_name("profile").unwrap().is_null(0));
    }

    #[tokio::test]
    async fn more_twins_than_a_page_are_all_read() {
        let store = Arc::new(SqliteTwins::open_in_memory(Arc::new(ManualClock::at(0)), TwinSettings::default()).await.unwrap());
        let tenant = TenantId::default_tenant();
        for i in 0..PAGE + 3 {
            store.ensure_twin(&DeviceId::new(format!("d-{i:05}")).unwrap(), &tenant, None).await.unwrap();
        }
        assert_eq!(TwinsTable(store).scan(None).await.unwrap().num_rows(), PAGE + 3);
    }
}

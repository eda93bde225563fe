//! The `alarms` SQL table: every alarm as a row, so alarms join to `devices` and telemetry.

use crate::Rules;
use crate::error::RulesError;
use arrow::array::{ArrayRef, Int64Builder, RecordBatch, StringBuilder, TimestampNanosecondBuilder};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use async_trait::async_trait;
use corral_model::WireError;
use corral_services::SystemTable;
use std::sync::Arc;

/// SQL's `alarms`, read from the rules database at query time.
pub struct AlarmsTable(pub Rules);

#[async_trait]
impl SystemTable for AlarmsTable {
    fn name(&self) -> &'static str {
        "alarms"
    }

    async fn scan(&self, tenant: Option<&str>) -> Result<RecordBatch, WireError> {
        self.0.alarms_table(tenant).await.map_err(|e| e.to_wire())
    }
}

/// At most this many alarms (the newest) are visible to one query.
const MAX_ROWS: i64 = 1_000_000;

impl Rules {
    /// The `alarms` table as `tenant` may see it (`None`: every tenant).
    pub async fn alarms_table(&self, tenant: Option<&str>) -> Result<RecordBatch, RulesError> {
        // Open alarms' counts change in memory between writes; write them so SQL sees them.
        {
            let state = self.inner.state.lock().await;
            self.inner.commit(&state.engine, Vec::new()).await;
        }
        let rows = sqlx::query("SELECT * FROM alarms WHERE ?1 IS NULL OR tenant = ?1 ORDER BY id DESC LIMIT ?2")
            .bind(tenant)
            .bind(MAX_ROWS)
            .fetch_all(&self.inner.pool)
            .await?;
        let alarms = rows.iter().map(crate::db::alarm_from_row).collect::<Result<Vec<_>, _>>()?;
        let ts = || DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()));
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("rule_id", DataType::Int64, false),
            Field::new("rule", DataType::Utf8, false),
            Field::new("tenant", DataType::Utf8, false),
            Field::new("device", DataType::Utf8, false),
            Field::new("severity", DataType::Utf8, false),
            Field::new("status", DataType::Utf8, false),
            Field::new("message", DataType::Utf8, false),
            Field::new("count", DataType::Int64, false),
            Field::new("first_at", ts(), false),
            Field::new("last_at", ts(), false),
            Field::new("last_values", DataType::Utf8, false),
            Field::new("acknowledged_by", DataType::Utf8, true),
            Field::new("acknowledged_at", ts(), true),
            Field::new("cleared_by", DataType::Utf8, true),
            Field::new("cleared_at", ts(), true),
        ]);
        let int = |f: &dyn Fn(&crate::Alarm) -> i64| -> ArrayRef {
            let mut b = Int64Builder::with_capacity(alarms.len());
            alarms.iter().for_each(|a| b.append_value(f(a)));
            Arc::new(b.finish())
        };
        let text = |f: &dyn Fn(&crate::Alarm) -> Option<String>| -> ArrayRef {
            let mut b = StringBuilder::new();
            alarms.iter().for_each(|a| b.append_option(f(a)));
            Arc::new(b.finish())
        };
        let time = |f: &dyn Fn(&crate::Alarm) -> Option<i64>| -> ArrayRef {
            let mut b = TimestampNanosecondBuilder::with_capacity(alarms.len()).with_timezone("UTC");
            alarms.iter().for_each(|a| b.append_option(f(a)));
            Arc::new(b.finish())
        };
        let columns = vec![
            int(&|a| a.id),
            int(&|a| a.rule_id),
            text(&|a| Some(a.rule.clone())),
            text(&|a| Some(a.tenant.clone())),
            text(&|a| Some(a.device.clone())),
            text(&|a| Some(a.severity.as_str().to_string())),
            text(&|a| Some(a.status.as_str().to_string())),
            text(&|a| Some(a.message.clone())),
            int(&|a| a.count),
            time(&|a| Some(a.first_at)),
            time(&|a| Some(a.last_at)),
            text(&|a| Some(a.last_values.to_string())),
            text(&|a| a.acknowledged_by.clone()),
            time(&|a| a.acknowledged_at),
            text(&|a| a.cleared_by.clone()),
            time(&|a| a.cleared_at),
        ];
        RecordBatch::try_new(Arc::new(schema), columns).map_err(|e| RulesError::invalid(format!("alarms table: {e}")))
    }
}

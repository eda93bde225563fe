//! The `commands` SQL table: one row per tracked command, joinable to `devices`, so "which
//! commands to the reefers of site X failed today" is one query.

use crate::ledger::{CommandFilter, CommandLedger};
use crate::model::TrackedCommand;
use crate::sqlite::MAX_PAGE;
use arrow::array::{ArrayRef, RecordBatch, StringBuilder, TimestampMillisecondBuilder};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use async_trait::async_trait;
use corral_model::WireError;
use corral_services::SystemTable;
use std::sync::Arc;

/// SQL's `commands`, read from the ledger at query time.
pub struct CommandsTable(pub Arc<dyn CommandLedger>);

#[async_trait]
impl SystemTable for CommandsTable {
    fn name(&self) -> &'static str {
        "commands"
    }

    async fn scan(&self, tenant: Option<&str>) -> Result<RecordBatch, WireError> {
        let mut commands: Vec<TrackedCommand> = Vec::new();
        let mut filter = CommandFilter { limit: MAX_PAGE, ..CommandFilter::default() };
        loop {
            let page = self.0.list(&filter, tenant).await?;
            let full = page.len() == MAX_PAGE;
            filter.after = page.last().map(|c| c.id.clone());
            commands.extend(page);
            if !full {
                break;
            }
        }
        commands_batch(&commands).map_err(|e| WireError::internal(format!("commands table: {e}")))
    }
}

fn commands_batch(commands: &[TrackedCommand]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let ts = || DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let schema = Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("device", DataType::Utf8, false),
        Field::new("tenant", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("payload", DataType::Utf8, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("created_at", ts(), false),
        Field::new("sent_at", ts(), true),
        Field::new("delivered_at", ts(), true),
        Field::new("finished_at", ts(), true),
        Field::new("expires_at", ts(), false),
        Field::new("door", DataType::Utf8, true),
        Field::new("response", DataType::Utf8, true),
        Field::new("reason", DataType::Utf8, true),
        Field::new("job", DataType::Utf8, true),
        Field::new("created_by", DataType::Utf8, false),
    ]);
    let text = |f: &dyn Fn(&TrackedCommand) -> Option<String>| -> ArrayRef {
        let mut b = StringBuilder::new();
        commands.iter().for_each(|c| b.append_option(f(c)));
        Arc::new(b.finish())
    };
    let time = |f: &dyn Fn(&TrackedCommand) -> Option<i64>| -> ArrayRef {
        let mut b = TimestampMillisecondBuilder::with_capacity(commands.len()).with_timezone("UTC");
        commands.iter().for_each(|c| b.append_option(f(c)));
        Arc::new(b.finish())
    };
    let columns = vec![
        text(&|c| Some(c.id.clone())),
        text(&|c| Some(c.device.to_string())),
        text(&|c| Some(c.tenant.to_string())),
        text(&|c| Some(c.name.clone())),
        text(&|c| Some(c.payload.to_string())),
        text(&|c| Some(c.state.as_str().to_string())),
        time(&|c| Some(c.created_at_ms)),
        time(&|c| c.sent_at_ms),
        time(&|c| c.delivered_at_ms),
        time(&|c| c.finished_at_ms),
        time(&|c| Some(c.expires_at_ms)),
        text(&|c| c.door.clone()),
        text(&|c| c.response.as_ref().map(|r| r.to_string())),
        text(&|c| c.reason.clone()),
        text(&|c| c.job.clone()),
        text(&|c| Some(c.created_by.clone())),
    ];
    RecordBatch::try_new(Arc::new(schema), columns)
}

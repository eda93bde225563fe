//! The SQL tables `campaigns` and `campaign_devices`, which join to `devices` and `twins`: "which
//! reefers of site X failed the last campaign, and what do they report now" is one query.

use crate::book::CampaignBook;
use crate::model::{Campaign, CampaignDevice, Rollout};
use arrow::array::{ArrayRef, BooleanBuilder, RecordBatch, StringBuilder, TimestampMillisecondBuilder, UInt32Builder};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use async_trait::async_trait;
use corral_model::WireError;
use corral_services::SystemTable;
use std::sync::Arc;

/// Rows read per page from the book.
const PAGE: usize = 5000;

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn text<T>(rows: &[T], f: impl Fn(&T) -> Option<String>) -> ArrayRef {
    let mut b = StringBuilder::new();
    rows.iter().for_each(|r| b.append_option(f(r)));
    Arc::new(b.finish())
}

fn time<T>(rows: &[T], f: impl Fn(&T) -> Option<i64>) -> ArrayRef {
    let mut b = TimestampMillisecondBuilder::with_capacity(rows.len()).with_timezone("UTC");
    rows.iter().for_each(|r| b.append_option(f(r)));
    Arc::new(b.finish())
}

fn failed(what: &str, e: impl std::fmt::Display) -> WireError {
    WireError::internal(format!("{what} table: {e}"))
}

/// SQL's `campaigns`, read from the book at query time.
pub struct CampaignsTable(pub Arc<dyn CampaignBook>);

#[async_trait]
impl SystemTable for CampaignsTable {
    fn name(&self) -> &'static str {
        "campaigns"
    }

    async fn scan(&self, tenant: Option<&str>) -> Result<RecordBatch, WireError> {
        let mut campaigns: Vec<Campaign> = Vec::new();
        loop {
            let page = self.0.campaigns(tenant, campaigns.last().map(|c| c.id.as_str()), PAGE).await?;
            let full = page.len() == PAGE;
            campaigns.extend(page);
            if !full {
                break;
            }
        }
        let schema = Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("tenant", DataType::Utf8, false),
            Field::new("name", DataType::Utf8, false),
            Field::new("kind", DataType::Utf8, false),
            Field::new("artifact", DataType::Utf8, true),
            Field::new("version", DataType::Utf8, true),
            Field::new("configuration", DataType::Utf8, true),
            Field::new("target", DataType::Utf8, false),
            Field::new("dynamic", DataType::Boolean, false),
            Field::new("plan", DataType::Utf8, false),
            Field::new("state", DataType::Utf8, false),
            Field::new("reason", DataType::Utf8, true),
            Field::new("created_by", DataType::Utf8, false),
            Field::new("created_at", ts(), false),
            Field::new("started_at", ts(), true),
            Field::new("finished_at", ts(), true),
        ]);
        let firmware = |c: &Campaign| match &c.rollout {
            Rollout::Firmware { artifact, version } => Some((artifact.clone(), version.clone())),
            Rollout::Configuration { .. } => None,
        };
        let mut dynamic = BooleanBuilder::new();
        campaigns.iter().for_each(|c| dynamic.append_value(c.dynamic));
        let columns: Vec<ArrayRef> = vec![
            text(&campaigns, |c| Some(c.id.clone())),
            text(&campaigns, |c| Some(c.tenant.to_string())),
            text(&campaigns, |c| Some(c.name.clone())),
            text(&campaigns, |c| Some(if firmware(c).is_some() { "firmware" } else { "configuration" }.to_string())),
            text(&campaigns, |c| firmware(c).map(|f| f.0)),
            text(&campaigns, |c| firmware(c).map(|f| f.1)),
            text(&campaigns, |c| match &c.rollout {
                Rollout::Configuration { desired } => Some(serde_json::Value::Object(desired.clone()).to_string()),
                Rollout::Firmware { .. } => None,
            }),
            text(&campaigns, |c| serde_json::to_string(&c.target).ok()),
            Arc::new(dynamic.finish()),
            text(&campaigns, |c| serde_json::to_string(&c.plan).ok()),
            text(&campaigns, |c| Some(c.state.as_str().to_string())),
            text(&campaigns, |c| c.reason.clone()),
            text(&campaigns, |c| Some(c.created_by.clone())),
            time(&campaigns, |c| Some(c.created_at_ms)),
            time(&campaigns, |c| c.started_at_ms),
            time(&campaigns, |c| c.finished_at_ms),
        ];
        RecordBatch::try_new(Arc::new(schema), columns).map_err(|e| failed("campaigns", e))
    }
}

/// SQL's `campaign_devices`, read from the book at query time.
pub struct CampaignDevicesTable(pub Arc<dyn CampaignBook>);

#[async_trait]
impl SystemTable for CampaignDevicesTable {
    fn name(&self) -> &'static str {
        "campaign_devices"
    }

    async fn scan(&self, tenant: Option<&str>) -> Result<RecordBatch, WireError> {
        let mut devices: Vec<CampaignDevice> = Vec::new();
        loop {
            let after = devices.last().map(|d| (d.campaign.clone(), d.device.clone()));
            let page = self.0.all_devices(tenant, after.as_ref().map(|(c, d)| (c.as_str(), d)), PAGE).await?;
            let full = page.len() == PAGE;
            devices.extend(page);
            if !full {
                break;
            }
        }
        let schema = Schema::new(vec![
            Field::new("campaign", DataType::Utf8, false),
            Field::new("device", DataType::Utf8, false),
            Field::new("tenant", DataType::Utf8, false),
            Field::new("wave", DataType::UInt32, false),
            Field::new("state", DataType::Utf8, false),
            Field::new("reason", DataType::Utf8, true),
            Field::new("command", DataType::Utf8, true),
            Field::new("notified_at", ts(), true),
            Field::new("updated_at", ts(), false),
        ]);
        let mut wave = UInt32Builder::with_capacity(devices.len());
        // Waves are shown from 1, as the console and the progress document count them.
        devices.iter().for_each(|d| wave.append_value(d.wave + 1));
        let columns: Vec<ArrayRef> = vec![
            text(&devices, |d| Some(d.campaign.clone())),
            text(&devices, |d| Some(d.device.to_string())),
            text(&devices, |d| Some(d.tenant.to_string())),
            Arc::new(wave.finish()),
            text(&devices, |d| Some(d.state.as_str().to_string())),
            text(&devices, |d| d.reason.clone()),
            text(&devices, |d| d.command.clone()),
            time(&devices, |d| d.notified_at_ms),
            time(&devices, |d| Some(d.updated_at_ms)),
        ];
        RecordBatch::try_new(Arc::new(schema), columns).map_err(|e| failed("campaign_devices", e))
    }
}

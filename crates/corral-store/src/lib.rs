//! The time-series store: where telemetry becomes durable and queryable.
//!
//! Place on the data path: `pipeline → **WAL (durable ack) → write buffer → Parquet**`, and
//! `SQL (DataFusion) ◄── write buffer + Parquet + registry`.
//!
//! - [`Store::write`] checks a request's batches against each table's schema (schema on write: new
//!   fields add nullable columns, a type conflict is a 400 naming the field and stores nothing),
//!   appends them as one WAL record, and returns after the group-commit fsync that holds it; then
//!   the rows join the table's Arrow write buffer.
//! - [`Store::persist`] (run by [`Store::run_persister`] when the buffer is big or old) writes
//!   Parquet files per table and UTC day, commits them in `manifest.json`, and drops the WAL
//!   segments they cover. Start-up replays whatever the manifest does not cover.
//! - [`Store::compact`] (every minute from the same task) rewrites a day partition that has
//!   collected many small files as one, and deletes the replaced files after a grace period.
//! - [`Store::purge`] deletes rows past their retention or of one device: whole files dropped,
//!   straddling files rewritten, one manifest commit (`store/purge.rs`). [`Lifecycle`] holds the
//!   retention policies and the rollups ([`Rollup`]: coarser tables recomputed from the minutes
//!   where rows landed, see [`Store::changes`]) and runs them on a schedule.
//! - [`QueryEngine`] runs read-only SQL over buffer and files together, plus the platform's own
//!   tables ([`SystemTables`]: `devices`, `certificates`, `alarms`, `twins`, each a
//!   `corral_services::SystemTable` implemented by the room that owns it). Their JSON text
//!   columns (`devices.attributes`, `twins.reported`) are read with `json_get_str(col, 'key')`
//!   and its siblings (`json_functions.rs`).
//!
//! Layout of the store's directory: `wal/` (segments), `tables/<table>/<YYYY-MM-DD>/<id>.parquet`,
//! `manifest.json`, `lifecycle.json` (policies and rollups).
//!
//! ```no_run
//! # async fn example() -> Result<(), corral_store::StoreError> {
//! use corral_model::{Batch, FieldValue, Row, TableName};
//! let store = corral_store::Store::open(corral_store::StoreConfig::new("/tmp/corral-store"))?;
//! let mut batch = Batch::new(TableName::telemetry());
//! batch.rows.push(Row::new(1_700_000_000_000_000_000, "truck-7").field("speed", FieldValue::Float(62.0)));
//! store.write(vec![batch]).await?; // durable when this returns
//! store.persist().await?;          // now also in Parquet
//! # Ok(()) }
//! ```

mod buffer;
mod error;
mod json_functions;
mod latest;
mod lifecycle;
mod manifest;
pub mod metrics;
mod persist;
mod points;
mod record;
mod rollup;
mod schema;
mod scope;
mod settings;
mod sql;
mod store;

pub use error::StoreError;
pub use lifecycle::{Lifecycle, LifecyclePlatform, LifecycleSettings};
pub use manifest::FileMeta;
pub use rollup::Rollup;
pub use schema::{Column, ColumnKind};
pub use settings::StorageSettings;
pub use sql::{QueryEngine, QueryOutput, SystemTables};
pub use store::{AgeRule, CHANGE_GRANULE_NS, RowRule, Store, StoreConfig, TableSnapshot, TenantCutoff};

/// The pipeline stores through the store: one WAL record per request, durable when it returns.
#[async_trait::async_trait]
impl corral_ingest::DurableStore for Store {
    async fn write(&self, batches: Vec<corral_model::Batch>) -> Result<Vec<corral_model::Batch>, corral_model::WireError> {
        Store::write(self, batches).await.map_err(|e| e.to_wire())
    }
}

/// `/metrics` lines for the store and its WAL.
impl corral_services::MetricsSource for Store {
    fn render(&self, out: &mut String) {
        self.metrics().render_prometheus(out);
    }
}

//! Exports: query results as Parquet or CSV files for the enterprise's own tools.
//!
//! Place on the data path: beside it, reading through `SqlService` like every other reader.
//! `SQL (DataFusion) ──► FileWriter ──► HTTP body | multipart upload (directory or S3 bucket)`.
//!
//! - [`FileWriter`] encodes a result a batch at a time; `GET /api/v1/export` streams it to the
//!   client, scheduled exports upload it in parts ([`run`]).
//! - [`Exports`] keeps the scheduled exports ([`ExportSpec`]): each run exports the rows that are
//!   new since the last one (by `time`), one file per UTC day, lists them in the export's
//!   `manifest.json`, retries a failed run with backoff and raises a platform alarm when runs
//!   keep failing. [`ExportBook`] is what the REST routes ask of it.
//!
//! Layout of an export named `nightly` at `s3://lake/corral`:
//! `s3://lake/corral/nightly/manifest.json` and
//! `s3://lake/corral/nightly/dt=2026-12-07/20261207T000000Z-20261208T000000Z.parquet`.
//!
//! ```
//! use corral_exports::{Export, ExportSpec, Format};
//! let spec: ExportSpec = serde_json::from_value(serde_json::json!({
//!     "name": "nightly", "table": "telemetry", "format": "parquet",
//!     "destination": "s3://lake/corral", "every": "1d"})).unwrap();
//! let export = Export::new(spec).unwrap();
//! assert!(export.window_sql(0, 10).starts_with("SELECT * FROM \"telemetry\" WHERE time >="));
//! ```

mod encode;
mod exports;
pub mod run;
mod settings;
mod spec;

pub use encode::{FileWriter, Format, Pending};
pub use exports::{ExportBook, ExportStatus, Exports, Run};
pub use settings::ExportSettings;
pub use spec::{Destination, Export, ExportSpec};

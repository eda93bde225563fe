//! SQL as doors use it ([`SqlService`]: the REST query endpoint runs one statement; the
//! PostgreSQL wire door plans its own in a [`SqlService::session`]), and the platform's own tables
//! in it ([`SystemTable`]), each built by the room that owns the data and registered with the SQL
//! engine in one place.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use corral_model::WireError;
use datafusion::prelude::{SQLOptions, SessionContext};

/// Result of one statement.
#[derive(Debug, Clone)]
pub struct SqlResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// More rows matched than were asked for; the rest were not computed.
    pub truncated: bool,
}

/// Read-only SQL, scoped to a tenant when the caller is.
#[async_trait]
pub trait SqlService: Send + Sync {
    async fn query(&self, sql: &str, tenant: Option<&str>, max_rows: usize) -> Result<SqlResult, WireError>;

    /// A DataFusion session over a fresh snapshot of every table, scoped to `tenant` exactly as
    /// `query` scopes it, sharing the engine's memory pool. For a door that plans statements
    /// itself (prepared statements, bound parameters, describing a result before running it,
    /// schemas of its own such as `pg_catalog`). One per statement: the snapshot does not move.
    /// Statements must be planned with [`read_only`].
    async fn session(&self, tenant: Option<&str>) -> Result<SessionContext, WireError>;
}

/// What every door lets SQL do: read. DDL, DML and statements (`COPY`, `CREATE`, `SET`...) are
/// refused by the planner.
pub fn read_only() -> SQLOptions {
    SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false)
}

/// A table of the platform in SQL (`devices`, `certificates`, `alarms`): read whole at query
/// time from its owner.
#[async_trait]
pub trait SystemTable: Send + Sync + 'static {
    /// The table's name in the `public` schema.
    fn name(&self) -> &'static str;

    /// Its rows as `tenant` may see them (`None`: every tenant). The scope is applied here, by
    /// the owner, before any row reaches the engine. For `devices`, each row's `device` column
    /// is also the scope of every telemetry table.
    async fn scan(&self, tenant: Option<&str>) -> Result<RecordBatch, WireError>;
}

//! SQL over the platform: DataFusion sees every telemetry table (write buffer and Parquet files
//! together) and the platform's own tables (`devices`, `certificates`, `alarms`: each a
//! [`SystemTable`] its owner implements), resolved lazily per query; the schema `latest` has the
//! same telemetry tables with only each device's newest row (`latest.readings`).
//!
//! A tenant-scoped query sees only its tenant's rows in every table, enforced at the scan (see
//! `scope.rs`): system tables come scoped from their owners, telemetry scans
//! are wrapped in a `TenantScopeExec`, and `latest.*` rows are filtered before they are offered.
//! A telemetry table none of the tenant's devices has written does not exist for it, and of a
//! table it shares it sees only the columns its devices wrote.

use crate::scope::{TenantScope, TenantScopeExec};
use crate::{Store, StoreError, TableSnapshot};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use corral_model::WireError;
use corral_services::{SqlResult, SqlService, SystemTable};
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList, SchemaProvider, Session,
    TableProvider,
};
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::datasource::MemTable;
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::union::UnionExec;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;
use std::sync::Arc;

/// The platform's own tables, registered once when the engine is built. `devices` is required:
/// its `device` column is the scope of every telemetry table for a tenant-scoped query.
#[derive(Clone)]
pub struct SystemTables {
    devices: Arc<dyn SystemTable>,
    /// Every table, `devices` first, in the order `SHOW TABLES` lists them.
    all: Vec<Arc<dyn SystemTable>>,
}

impl SystemTables {
    /// `tables` must hold one named `devices`; names must be unique.
    pub fn new(tables: Vec<Arc<dyn SystemTable>>) -> Result<Self, StoreError> {
        let mut names: Vec<&str> = tables.iter().map(|t| t.name()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(StoreError::Invalid(format!("system table {} registered twice", w[0])));
        }
        let devices = tables
            .iter()
            .find(|t| t.name() == "devices")
            .cloned()
            .ok_or_else(|| StoreError::Invalid("the SQL engine needs a `devices` system table".into()))?;
        Ok(SystemTables { devices, all: tables })
    }

    fn get(&self, name: &str) -> Option<&Arc<dyn SystemTable>> {
        self.all.iter().find(|t| t.name() == name)
    }

    async fn devices(&self, tenant: Option<&str>) -> DfResult<RecordBatch> {
        self.devices.scan(tenant).await.map_err(external)
    }
}

impl std::fmt::Debug for SystemTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.all.iter().map(|t| t.name())).finish()
    }
}

fn external(e: WireError) -> DataFusionError {
    DataFusionError::External(e.message.into())
}

pub struct QueryOutput {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub rows: usize,
    /// More rows matched than `max_rows`; the rest were not computed.
    pub truncated: bool,
}

/// Runs read-only SQL. One per server; each query gets its own DataFusion session over a
/// consistent snapshot of the store.
#[derive(Clone)]
pub struct QueryEngine {
    store: Store,
    tables: SystemTables,
    /// Built once (registering DataFusion's functions and rules costs milliseconds) and copied per
    /// query. Its runtime is shared by all queries: the memory pool bounds what they may hold at
    /// once (sorts and joins beyond it fail with a clear error instead of exhausting the machine),
    /// and the Parquet metadata cache spares re-reading footers of files, which never change.
    base: SessionState,
}

impl QueryEngine {
    pub fn new(store: Store, tables: SystemTables, memory_limit_bytes: usize) -> Result<Self, StoreError> {
        let runtime = RuntimeEnvBuilder::new().with_memory_limit(memory_limit_bytes, 1.0).build_arc()?;
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_create_default_catalog_and_schema(false)
            .with_default_catalog_and_schema("corral", "public");
        let mut base = SessionStateBuilder::new().with_config(config).with_runtime_env(runtime).with_default_features().build();
        crate::json_functions::register(&mut base)?;
        Ok(QueryEngine { store, tables, base })
    }

    /// A session over a fresh snapshot, every table scoped to `tenant` (see the module doc).
    pub async fn session(&self, tenant: Option<&str>) -> Result<SessionContext, StoreError> {
        let catalog = MemoryCatalogProvider::new();
        let scope = match tenant {
            Some(tenant) => Some(Arc::new(Scoped::resolve(&self.tables, tenant).await?)),
            None => None,
        };
        for (name, view) in [("public", View::History), ("latest", View::Latest)] {
            let schema = CorralSchema { store: self.store.clone(), tables: self.tables.clone(), scope: scope.clone(), view };
            catalog.register_schema(name, Arc::new(schema))?;
        }
        let catalogs = MemoryCatalogProviderList::new();
        catalogs.register_catalog("corral".to_string(), Arc::new(catalog));
        // The query's own catalog list: a clone of the base state would share (and let concurrent
        // queries of other tenants overwrite) the base's list.
        let state = SessionStateBuilder::new_from_existing(self.base.clone()).with_catalog_list(Arc::new(catalogs)).build();
        Ok(SessionContext::new_with_state(state))
    }

    /// Runs one statement. `tenant` scopes every table to that tenant's devices. DDL, DML and
    /// other statements (COPY, CREATE, SET...) are refused: this endpoint only reads.
    pub async fn query(&self, sql: &str, tenant: Option<&str>, max_rows: usize) -> Result<QueryOutput, StoreError> {
        let ctx = self.session(tenant).await?;
        let options = corral_services::read_only();
        let df = ctx.sql_with_options(sql, options).await?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let mut stream = df.execute_stream().await?;
        let (mut batches, mut rows, mut truncated) = (Vec::new(), 0usize, false);
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            if rows + batch.num_rows() > max_rows {
                batches.push(batch.slice(0, max_rows - rows));
                rows = max_rows;
                truncated = true;
                break;
            }
            rows += batch.num_rows();
            batches.push(batch);
        }
        Ok(QueryOutput { schema, batches, rows, truncated })
    }
}

#[async_trait]
impl SqlService for QueryEngine {
    async fn query(&self, sql: &str, tenant: Option<&str>, max_rows: usize) -> Result<SqlResult, WireError> {
        let out = QueryEngine::query(self, sql, tenant, max_rows).await.map_err(|e| e.to_wire())?;
        Ok(SqlResult { schema: out.schema, batches: out.batches, truncated: out.truncated })
    }

    async fn session(&self, tenant: Option<&str>) -> Result<SessionContext, WireError> {
        QueryEngine::session(self, tenant).await.map_err(|e| e.to_wire())
    }
}

/// What a schema's tables hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    /// `public`: every row of each telemetry table, and `devices`.
    History,
    /// `latest`: one row per device of each telemetry table, its newest (see `latest.rs`).
    Latest,
}

#[derive(Debug)]
struct CorralSchema {
    store: Store,
    tables: SystemTables,
    /// `Some` for a tenant-scoped query; shared by the query's schemas.
    scope: Option<Arc<Scoped>>,
    view: View,
}

/// A scoped query's tenant and its devices, read from the registry once per query: the rows of
/// its `devices` table, and the scope of every other table.
#[derive(Debug)]
struct Scoped {
    tenant: String,
    devices: RecordBatch,
    scope: Arc<TenantScope>,
}

impl Scoped {
    async fn resolve(tables: &SystemTables, tenant: &str) -> Result<Scoped, StoreError> {
        let devices = tables.devices(Some(tenant)).await?;
        let scope = Arc::new(TenantScope::from_devices(&devices)?);
        Ok(Scoped { tenant: tenant.to_string(), devices, scope })
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir()).finish()
    }
}

impl CorralSchema {
    fn tenant(&self) -> Option<&str> {
        self.scope.as_deref().map(|s| s.tenant.as_str())
    }

    fn scope(&self) -> Option<&Arc<TenantScope>> {
        self.scope.as_deref().map(|s| &s.scope)
    }

    /// A telemetry table exists for a scoped query once one of its tenant's devices wrote to it.
    fn visible(&self, table: &str) -> bool {
        match self.scope() {
            Some(scope) => self.store.table_has_any_device(table, scope.devices()),
            None => self.store.has_table(table),
        }
    }

    /// The columns of `table` (of the first `width`) the scoped devices have written, with
    /// `time` and `device`: the names other tenants gave their fields stay theirs.
    fn columns_seen(&self, table: &str, scope: &TenantScope, width: usize) -> Vec<usize> {
        let columns = self.store.columns_written_by(table, scope.devices()).unwrap_or_else(|| vec![0, 1]);
        columns.into_iter().filter(|&c| c < width).collect()
    }

    async fn devices_table(&self) -> DfResult<Arc<MemTable>> {
        let batch = match &self.scope {
            Some(scoped) => scoped.devices.clone(),
            None => self.tables.devices(None).await?,
        };
        Ok(Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch]])?))
    }
}

#[async_trait]
impl SchemaProvider for CorralSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.store.table_names().into_iter().filter(|t| self.visible(t)).collect();
        if self.view == View::History {
            names.extend(self.tables.all.iter().map(|t| t.name().to_string()));
        }
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let scope = self.scope().cloned();
        let system = if self.view == View::History { self.tables.get(name) } else { None };
        let telemetry = system.is_none();
        if telemetry && !self.visible(name) {
            return Ok(None);
        }
        let table: Arc<dyn TableProvider> = match self.view {
            View::History if name == "devices" => self.devices_table().await?,
            View::History if let Some(table) = system => {
                // Scoped to the tenant by its owner, which reads only its rows.
                let batch = table.scan(self.tenant()).await.map_err(external)?;
                Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch]])?)
            }
            View::History => {
                let Some(snapshot) = self.store.snapshot_table(name) else {
                    return Ok(None);
                };
                let scope = match scope {
                    Some(devices) => {
                        let columns = self.columns_seen(name, &devices, snapshot.schema.fields().len());
                        Some(ScopedTable { schema: Arc::new(snapshot.schema.project(&columns)?), columns, devices })
                    }
                    None => None,
                };
                Arc::new(TelemetryTable { snapshot, dir: self.store.dir().to_path_buf(), scope })
            }
            View::Latest => {
                let Some(mut batch) = self.store.latest_rows(name) else {
                    return Ok(None);
                };
                if let Some(scope) = &scope {
                    let columns = self.columns_seen(name, scope, batch.num_columns());
                    batch = scope.keep(&batch, DEVICE_COLUMN)?.project(&columns)?;
                }
                Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch]])?)
            }
        };
        Ok(Some(table))
    }

    fn table_exist(&self, name: &str) -> bool {
        (self.view == View::History && self.tables.get(name).is_some()) || self.visible(name)
    }
}

/// Every telemetry table's second column (after `time`).
const DEVICE_COLUMN: usize = 1;

/// A telemetry table as of one snapshot: buffered batches unioned with Parquet files.
#[derive(Debug)]
struct TelemetryTable {
    snapshot: TableSnapshot,
    dir: std::path::PathBuf,
    /// `Some` for a tenant-scoped query.
    scope: Option<ScopedTable>,
}

/// What a tenant-scoped query sees of a telemetry table: only its devices' rows, and only the
/// columns they wrote.
#[derive(Debug)]
struct ScopedTable {
    devices: Arc<TenantScope>,
    /// Positions in the table's schema of the columns seen, ascending (`time`, `device` first).
    columns: Vec<usize>,
    /// The table's schema narrowed to `columns`.
    schema: SchemaRef,
}

impl std::fmt::Debug for TableSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableSnapshot").field("name", &self.name).field("files", &self.files.len()).finish()
    }
}

#[async_trait]
impl TableProvider for TelemetryTable {
    fn schema(&self) -> SchemaRef {
        self.scope.as_ref().map_or_else(|| self.snapshot.schema.clone(), |s| s.schema.clone())
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let Some(scope) = &self.scope else {
            return self.scan_rows(state, projection, filters.iter().cloned().reduce(Expr::and), limit).await;
        };
        // Scoped: the raw scan gets only the platform's `device IN (...)`, never the user's
        // filters or limit (both would act on other tenants' rows); those run above the wall.
        // Positions in the narrowed schema map to the table's own.
        let wanted: Vec<usize> = match projection {
            Some(p) => p.iter().map(|&i| scope.columns[i]).collect(),
            None => scope.columns.clone(),
        };
        let mut read = wanted.clone();
        if !read.contains(&DEVICE_COLUMN) {
            read.push(DEVICE_COLUMN);
        }
        let device_col = read.iter().position(|&c| c == DEVICE_COLUMN).expect("added above");
        let rows = self.scan_rows(state, Some(&read), scope.devices.predicate(), None).await?;
        Ok(Arc::new(TenantScopeExec::try_new(rows, scope.devices.clone(), device_col, (0..wanted.len()).collect())?))
    }
}

impl TelemetryTable {
    /// Buffer and files, with `predicate` given to Parquet for pruning and row filtering. Days
    /// where a point may have two versions (see `points.rs`) are read whole and merged first,
    /// so no filter sees a version that a later write replaced.
    async fn scan_rows(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        predicate: Option<Expr>,
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let snapshot = &self.snapshot;
        if snapshot.dirty_days.is_empty() {
            return self.scan_sources(state, projection, predicate, limit, &snapshot.batches, &snapshot.files);
        }
        let day = |f: &&crate::FileMeta| f.min_time_ns.div_euclid(crate::persist::NANOS_PER_DAY);
        let (dirty, clean): (Vec<_>, Vec<_>) = snapshot.files.iter().partition(|f| snapshot.dirty_days.contains(&day(f)));
        let clean: Vec<crate::FileMeta> = clean.into_iter().cloned().collect();
        let mut dirty: Vec<crate::FileMeta> = dirty.into_iter().cloned().collect();
        // File names grow with each snapshot: path order is write order, and the buffer is newer.
        dirty.sort_by(|a, b| a.path.cmp(&b.path));
        // Only the columns the query reads, and those that identify a point.
        let wanted: Vec<usize> = projection.cloned().unwrap_or_else(|| (0..snapshot.schema.fields().len()).collect());
        let mut needed: Vec<usize> = wanted.iter().chain(&snapshot.keys).copied().collect();
        needed.sort_unstable();
        needed.dedup();
        let (dir, schema, columns) = (self.dir.clone(), snapshot.schema.clone(), needed.clone());
        let read = tokio::task::spawn_blocking(move || {
            let mut read = Vec::new();
            for file in &dirty {
                read.extend(crate::persist::read_columns(&dir.join(&file.path), &schema, &columns)?);
            }
            Ok::<_, std::io::Error>(read)
        });
        // In write order: the dirty days' files, then the buffer.
        let mut written: Vec<RecordBatch> = read.await.map_err(|e| DataFusionError::External(Box::new(e)))??;
        for batch in &snapshot.batches {
            written.push(batch.project(&needed)?);
        }
        let needed_schema = Arc::new(snapshot.schema.project(&needed)?);
        let all = arrow::compute::concat_batches(&needed_schema, &written)?;
        let position = |c: &usize| needed.iter().position(|n| n == c).expect("needed holds it");
        let keys: Vec<usize> = snapshot.keys.iter().map(position).collect();
        let merged = crate::points::last_write_wins(&all, &keys)?.project(&wanted.iter().map(position).collect::<Vec<_>>())?;
        let merged_exec = MemorySourceConfig::try_new_exec(&[vec![merged]], Arc::new(snapshot.schema.project(&wanted)?), None)?;
        let clean_exec = self.scan_sources(state, projection, predicate, limit, &[], &clean)?;
        UnionExec::try_new(vec![clean_exec, merged_exec])
    }

    /// The given buffered batches and files as they are.
    fn scan_sources(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        predicate: Option<Expr>,
        limit: Option<usize>,
        batches: &[RecordBatch],
        files: &[crate::FileMeta],
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let schema = self.snapshot.schema.clone();
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        let partitions = state.config().target_partitions().max(1);
        let mut memory: Vec<Vec<RecordBatch>> = vec![Vec::new(); partitions];
        for (i, batch) in batches.iter().enumerate() {
            memory[i % partitions].push(batch.clone());
        }
        inputs.push(MemorySourceConfig::try_new_exec(&memory, schema.clone(), projection.cloned())?);
        if !files.is_empty() {
            let runtime = state.runtime_env();
            let object_store = runtime.object_store(ObjectStoreUrl::local_filesystem())?;
            let metadata = runtime.cache_manager.get_file_metadata_cache();
            let mut source = ParquetSource::new(schema.clone())
                .with_parquet_file_reader_factory(Arc::new(CachedParquetFileReaderFactory::new(object_store, metadata)))
                // Filters are evaluated while decoding, so other columns are decoded only for rows
                // that pass (a tag filter like `fleet = 'South'` skips most of a float column).
                .with_pushdown_filters(true)
                .with_reorder_filters(true);
            if let Some(predicate) = predicate {
                let df_schema = datafusion::common::DFSchema::try_from(schema.as_ref().clone())?;
                source = source.with_predicate(state.create_physical_expr(predicate, &df_schema)?);
            }
            let files: Vec<PartitionedFile> = files
                .iter()
                .map(|f| PartitionedFile::new(self.dir.join(&f.path).to_string_lossy().into_owned(), f.size_bytes))
                .collect();
            let groups = FileGroup::new(files).split_files(partitions);
            let config = FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), Arc::new(source))
                .with_file_groups(groups)
                .with_projection_indices(projection.cloned())?
                .with_limit(limit)
                .build();
            inputs.push(DataSourceExec::from_data_source(config));
        }
        UnionExec::try_new(inputs)
    }
}

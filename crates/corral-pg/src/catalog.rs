//! A statement's session: the tables the caller may see, as the SQL service scopes them, plus
//! what PostgreSQL tools read before they read data: the `pg_catalog` schema, PostgreSQL's
//! catalog functions (`format_type`, `pg_get_userbyid`, `has_table_privilege`, ...), `version()`
//! in the form drivers parse, and the type names (`regclass`, `oid`) their queries cast to.
//!
//! The functions and `pg_catalog`'s fixed tables (`pg_type`, `pg_proc`, ...) are built once; the
//! tables that describe the platform's schemas (`pg_class`, `pg_attribute`, `pg_namespace`) are
//! computed from the connection's scoped catalog when a statement reads them, so a tenant-scoped
//! token's `\dt` lists only what it can query.

use crate::information_schema::InformationSchema;
use crate::login::Session;
use corral_services::SqlService;
use datafusion::catalog::{CatalogProviderList, TableFunctionImpl};
use datafusion::common::Result as DfResult;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::SessionContext;
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_pg_catalog::pg_catalog::oid_type_planner::PgOidTypePlanner;
use datafusion_pg_catalog::pg_catalog::{PgCatalogSchemaProvider, PgCatalogStaticTables, setup_pg_catalog};
use pgwire::error::PgWireResult;
use std::collections::HashMap;
use std::sync::Arc;

/// The PostgreSQL version the door reports (`server_version`, `SHOW server_version`,
/// `version()`). Drivers pick their catalog queries by it; `pg_catalog`'s fixed tables follow
/// this major version.
pub const SERVER_VERSION: &str = "16.6";

/// The catalog every scoped session is built in (the database name clients see).
const DATABASE: &str = "corral";

pub(crate) struct PgCatalog {
    sql: Arc<dyn SqlService>,
    fixed: Arc<PgCatalogStaticTables>,
    functions: Vec<ScalarUDF>,
    table_functions: Vec<(String, Arc<dyn TableFunctionImpl>)>,
}

impl PgCatalog {
    pub fn new(sql: Arc<dyn SqlService>) -> DfResult<PgCatalog> {
        let fixed = Arc::new(PgCatalogStaticTables::try_new()?);
        let (functions, table_functions) = postgres_functions()?;
        Ok(PgCatalog { sql, fixed, functions, table_functions })
    }

    /// A session over a fresh snapshot, scoped to the caller's tenant, with `pg_catalog` and
    /// PostgreSQL's functions beside the platform's tables.
    pub async fn session(&self, caller: &Session) -> PgWireResult<SessionContext> {
        let scoped = self.sql.session(caller.tenant()).await.map_err(crate::error::from_wire)?;
        let mut state =
            SessionStateBuilder::new_from_existing(scoped.state()).with_type_planner(Arc::new(PgOidTypePlanner)).build();
        // PostgreSQL's `information_schema` (below) stands in for DataFusion's.
        state.config_mut().options_mut().catalog.information_schema = false;
        let ctx = SessionContext::new_with_state(state);
        for function in &self.functions {
            ctx.register_udf(function.clone());
        }
        for (name, function) in &self.table_functions {
            ctx.register_udtf(name, function.clone());
        }
        let pg_catalog = match caller.pg_catalog.get() {
            Some(pg_catalog) => pg_catalog.clone(),
            None => {
                // Over this first statement's catalog list, whose schemas resolve tables anew at
                // every lookup, so later statements still see new tables and columns.
                let catalogs: Arc<dyn CatalogProviderList> = ctx.state().catalog_list().clone();
                let pg_catalog = PgCatalogSchemaProvider::try_new(catalogs, self.fixed.clone(), EmptyContextProvider)
                    .map_err(crate::error::from_datafusion)?;
                caller.pg_catalog.get_or_init(|| Arc::new(pg_catalog)).clone()
            }
        };
        let database =
            ctx.catalog(DATABASE).ok_or_else(|| crate::error::error("XX000", "the SQL service built no `corral` catalog"))?;
        database.register_schema("pg_catalog", pg_catalog).map_err(crate::error::from_datafusion)?;
        let information_schema = InformationSchema { database: database.clone(), database_name: DATABASE };
        database.register_schema("information_schema", Arc::new(information_schema)).map_err(crate::error::from_datafusion)?;
        Ok(ctx)
    }
}

/// The functions `setup_pg_catalog` adds to (or replaces in) a plain session, collected once so
/// each statement's session gets them without rebuilding `pg_catalog`'s fixed tables.
type Functions = (Vec<ScalarUDF>, Vec<(String, Arc<dyn TableFunctionImpl>)>);

fn postgres_functions() -> DfResult<Functions> {
    let plain = SessionContext::new();
    let with_pg = SessionContext::new();
    setup_pg_catalog(&with_pg, "datafusion", EmptyContextProvider).map_err(|e| *e)?;
    let (plain_state, pg_state) = (plain.state(), with_pg.state());
    let before: &HashMap<_, _> = plain_state.scalar_functions();
    let mut functions: Vec<ScalarUDF> = pg_state
        .scalar_functions()
        .iter()
        .filter(|(name, f)| before.get(*name).is_none_or(|old| !Arc::ptr_eq(old, f)))
        .map(|(_, f)| (**f).clone())
        .collect();
    // Ours replace theirs: `current_database()` there names the throwaway catalog above.
    let ours = crate::functions::all(DATABASE);
    functions.retain(|f| ours.iter().all(|o| o.name() != f.name()));
    functions.extend(ours);
    let before = plain_state.table_functions();
    let table_functions = pg_state
        .table_functions()
        .iter()
        .filter(|(name, f)| before.get(*name).is_none_or(|old| !Arc::ptr_eq(old, f)))
        .map(|(name, f)| (name.clone(), f.function().clone()))
        .collect();
    Ok((functions, table_functions))
}

//! `information_schema` as PostgreSQL has it, in place of DataFusion's: type names in PostgreSQL's
//! words (`double precision`, `timestamp with time zone`) and the `udt_name` beside them, because
//! Grafana picks time and value columns by `data_type` and Metabase maps fields by `udt_name`; and
//! the constraint tables Metabase joins (empty: telemetry tables have no keys).
//!
//! Computed from the statement's catalog when a table of it is read, so it lists exactly what the
//! caller can query.

use arrow_pg::datatypes::into_pg_type;
use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, Int32Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::common::Result as DfResult;
use datafusion::datasource::MemTable;
use std::sync::Arc;

const TABLES: [&str; 6] = ["tables", "columns", "schemata", "views", "table_constraints", "key_column_usage"];

/// `information_schema.columns`' columns that carry values, in PostgreSQL's order.
const COLUMNS: [(&str, DataType); 14] = [
    ("table_catalog", DataType::Utf8),
    ("table_schema", DataType::Utf8),
    ("table_name", DataType::Utf8),
    ("column_name", DataType::Utf8),
    ("ordinal_position", DataType::Int32),
    ("column_default", DataType::Utf8),
    ("is_nullable", DataType::Utf8),
    ("data_type", DataType::Utf8),
    ("udt_catalog", DataType::Utf8),
    ("udt_schema", DataType::Utf8),
    ("udt_name", DataType::Utf8),
    ("is_identity", DataType::Utf8),
    ("is_generated", DataType::Utf8),
    ("is_updatable", DataType::Utf8),
];

#[derive(Debug)]
pub(crate) struct InformationSchema {
    /// The session's database, whose other schemas this one describes.
    pub database: Arc<dyn CatalogProvider>,
    /// Its name, every row's `table_catalog`.
    pub database_name: &'static str,
}

impl InformationSchema {
    /// Every table of the platform's schemas (not `pg_catalog`, not this one), in order.
    async fn tables(&self) -> DfResult<Vec<(String, String, SchemaRef)>> {
        let mut out = Vec::new();
        let mut schemas = self.database.schema_names();
        schemas.sort();
        for schema_name in schemas.iter().filter(|s| *s != "pg_catalog" && *s != "information_schema") {
            let Some(schema) = self.database.schema(schema_name) else { continue };
            let mut names = schema.table_names();
            names.sort();
            for name in names {
                if let Some(table) = schema.table(&name).await? {
                    out.push((schema_name.clone(), name, table.schema()));
                }
            }
        }
        Ok(out)
    }

    async fn build(&self, table: &str) -> DfResult<RecordBatch> {
        let text = |values: Vec<Option<String>>| Arc::new(StringArray::from(values)) as ArrayRef;
        let same = |n: usize, v: &str| text(vec![Some(v.to_string()); n]);
        let none = |n: usize| text(vec![None; n]);
        let database = self.database_name.to_string();
        match table {
            "tables" => {
                let tables = self.tables().await?;
                let n = tables.len();
                let columns = vec![
                    same(n, &database),
                    text(tables.iter().map(|t| Some(t.0.clone())).collect()),
                    text(tables.iter().map(|t| Some(t.1.clone())).collect()),
                    same(n, "BASE TABLE"),
                    none(n),
                    same(n, "NO"),
                    same(n, "NO"),
                ];
                batch(
                    &[
                        "table_catalog",
                        "table_schema",
                        "table_name",
                        "table_type",
                        "self_referencing_column_name",
                        "is_insertable_into",
                        "is_typed",
                    ],
                    columns,
                )
            }
            "columns" => {
                let mut rows: Vec<[Option<String>; 7]> = Vec::new();
                let mut positions = Vec::new();
                for (schema, name, columns) in self.tables().await? {
                    for (i, field) in columns.fields().iter().enumerate() {
                        let (data_type, udt) = postgres_type(field.data_type());
                        let nullable = if field.is_nullable() { "YES" } else { "NO" };
                        rows.push([
                            Some(schema.clone()),
                            Some(name.clone()),
                            Some(field.name().clone()),
                            Some(nullable.into()),
                            Some(data_type),
                            Some(udt),
                            None,
                        ]);
                        positions.push(i as i32 + 1);
                    }
                }
                let n = rows.len();
                let column = |k: usize| text(rows.iter().map(|r| r[k].clone()).collect());
                let columns = vec![
                    same(n, &database),
                    column(0),
                    column(1),
                    column(2),
                    Arc::new(Int32Array::from(positions)) as ArrayRef,
                    column(6),
                    column(3),
                    column(4),
                    same(n, &database),
                    same(n, "pg_catalog"),
                    column(5),
                    same(n, "NO"),
                    same(n, "NEVER"),
                    same(n, "NO"),
                ];
                // The rest of PostgreSQL's columns, which Corral's types leave empty.
                let empty_ints = [
                    "character_maximum_length",
                    "character_octet_length",
                    "numeric_precision",
                    "numeric_precision_radix",
                    "numeric_scale",
                    "datetime_precision",
                ];
                let empty_texts =
                    ["interval_type", "collation_name", "domain_name", "identity_generation", "generation_expression"];
                let mut fields: Vec<(&str, DataType)> = COLUMNS.to_vec();
                let mut columns = columns;
                for name in empty_ints {
                    fields.push((name, DataType::Int32));
                    columns.push(Arc::new(Int32Array::from(vec![None; n])));
                }
                for name in empty_texts {
                    fields.push((name, DataType::Utf8));
                    columns.push(none(n));
                }
                batch_with(&fields, columns)
            }
            "schemata" => {
                let mut names = self.database.schema_names();
                names.push("information_schema".into());
                names.sort();
                names.dedup();
                let n = names.len();
                let columns = vec![same(n, &database), text(names.into_iter().map(Some).collect()), same(n, "corral")];
                batch(&["catalog_name", "schema_name", "schema_owner"], columns)
            }
            "views" => batch(&["table_catalog", "table_schema", "table_name", "view_definition"], vec![none(0); 4]),
            "table_constraints" => batch(
                &[
                    "constraint_catalog",
                    "constraint_schema",
                    "constraint_name",
                    "table_catalog",
                    "table_schema",
                    "table_name",
                    "constraint_type",
                ],
                vec![none(0); 7],
            ),
            "key_column_usage" => batch(
                &[
                    "constraint_catalog",
                    "constraint_schema",
                    "constraint_name",
                    "table_catalog",
                    "table_schema",
                    "table_name",
                    "column_name",
                ],
                vec![none(0); 7],
            ),
            other => Err(datafusion::error::DataFusionError::Plan(format!("information_schema.{other} does not exist"))),
        }
    }
}

/// A column's type as PostgreSQL's `information_schema.columns` names it: `data_type` and
/// `udt_name` (`double precision` and `float8`).
fn postgres_type(data_type: &DataType) -> (String, String) {
    let udt = into_pg_type(data_type).map(|t| t.name().to_string()).unwrap_or_else(|_| "text".into());
    let formal = match udt.as_str() {
        "bool" => "boolean",
        "int2" => "smallint",
        "int4" => "integer",
        "int8" => "bigint",
        "float4" => "real",
        "float8" => "double precision",
        "varchar" => "character varying",
        "bpchar" => "character",
        "timestamp" => "timestamp without time zone",
        "timestamptz" => "timestamp with time zone",
        "time" => "time without time zone",
        array if array.starts_with('_') => "ARRAY",
        other => other,
    };
    (formal.to_string(), udt)
}

fn batch(names: &[&str], columns: Vec<ArrayRef>) -> DfResult<RecordBatch> {
    let fields: Vec<(&str, DataType)> = names.iter().map(|n| (*n, DataType::Utf8)).collect();
    batch_with(&fields, columns)
}

fn batch_with(fields: &[(&str, DataType)], columns: Vec<ArrayRef>) -> DfResult<RecordBatch> {
    let schema = Schema::new(fields.iter().map(|(n, t)| Field::new(*n, t.clone(), true)).collect::<Vec<_>>());
    Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
}

#[async_trait]
impl SchemaProvider for InformationSchema {
    fn table_names(&self) -> Vec<String> {
        TABLES.iter().map(|t| t.to_string()).collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if !self.table_exist(name) {
            return Ok(None);
        }
        let batch = self.build(&name.to_ascii_lowercase()).await?;
        Ok(Some(Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch]])?)))
    }

    fn table_exist(&self, name: &str) -> bool {
        TABLES.contains(&name.to_ascii_lowercase().as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::TimeUnit;

    #[test]
    fn types_are_named_as_postgresql_names_them() {
        assert_eq!(postgres_type(&DataType::Float64), ("double precision".into(), "float8".into()));
        assert_eq!(
            postgres_type(&DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))),
            ("timestamp with time zone".into(), "timestamptz".into())
        );
        assert_eq!(postgres_type(&DataType::Utf8), ("text".into(), "text".into()));
    }
}

//! Tenant scope at the scan: a tenant-scoped query plans over tables that only ever produce its
//! own devices' rows, so no expression of the user's is ever evaluated on another tenant's data.
//!
//! Why at the scan and not as a join: a filter or semi-join placed *after* the user's predicates
//! lets those predicates run on every tenant's rows first, and a predicate that fails on some
//! value (`CAST(CASE WHEN <guess about another tenant> THEN 'x' ELSE '1' END AS INT)`) turns the
//! query's error into an oracle. DataFusion also pushes user filters down into Parquet decoding
//! and statistics pruning, where they would see other tenants' values again. [`TenantScopeExec`]
//! is the wall: it sits directly on the raw scan, keeps only the tenant's rows, and accepts no
//! filter from above (the default of `ExecutionPlan::gather_filters_for_pushdown`), so the
//! optimizer cannot move a user expression below it.

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, col, lit};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning, PlanProperties,
};
use futures::StreamExt;
use std::collections::HashSet;
use std::sync::Arc;

/// The devices one tenant may see, read from the registry once per query.
#[derive(Debug)]
pub(crate) struct TenantScope {
    devices: HashSet<String, foldhash::fast::RandomState>,
}

impl TenantScope {
    /// From the scoped `devices` table (its `device` column).
    pub fn from_devices(devices: &RecordBatch) -> DfResult<TenantScope> {
        let ids = devices
            .column_by_name("device")
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or_else(|| DataFusionError::Internal("the devices table has no text `device` column".into()))?;
        Ok(TenantScope { devices: ids.iter().flatten().map(str::to_string).collect() })
    }

    pub fn contains(&self, device: &str) -> bool {
        self.devices.contains(device)
    }

    pub fn devices(&self) -> impl Iterator<Item = &str> {
        self.devices.iter().map(String::as_str)
    }

    /// Only the rows of `batch` whose column `device_col` names one of the tenant's devices.
    pub fn keep(&self, batch: &RecordBatch, device_col: usize) -> DfResult<RecordBatch> {
        let devices = batch
            .column(device_col)
            .as_string_opt::<i32>()
            .ok_or_else(|| DataFusionError::Internal("the device column is not text".into()))?;
        let mask: BooleanArray =
            (0..devices.len()).map(|i| Some(devices.is_valid(i) && self.contains(devices.value(i)))).collect();
        Ok(filter_record_batch(batch, &mask)?)
    }

    /// `device IN (...)`: the platform's own predicate, safe to give Parquet for pruning and row
    /// filtering because it holds no user expression. `None` when the tenant has no devices, or
    /// so many that the list costs more than it saves ([`TenantScopeExec`] filters either way).
    pub fn predicate(&self) -> Option<Expr> {
        const MAX_LISTED: usize = 1000;
        if self.devices.is_empty() || self.devices.len() > MAX_LISTED {
            return None;
        }
        let mut ids: Vec<&String> = self.devices.iter().collect();
        ids.sort();
        Some(col("device").in_list(ids.into_iter().map(|d| lit(d.as_str())).collect(), false))
    }
}

/// Keeps only a tenant's rows of its input (a raw table scan), then projects. See the module doc
/// for why it must sit below every user expression.
#[derive(Debug)]
pub(crate) struct TenantScopeExec {
    input: Arc<dyn ExecutionPlan>,
    scope: Arc<TenantScope>,
    /// Where `device` is in the input's schema.
    device_col: usize,
    /// Input columns to output (the scan added `device` when the query did not ask for it).
    projection: Vec<usize>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl TenantScopeExec {
    pub fn try_new(
        input: Arc<dyn ExecutionPlan>,
        scope: Arc<TenantScope>,
        device_col: usize,
        projection: Vec<usize>,
    ) -> DfResult<Self> {
        let schema = Arc::new(input.schema().project(&projection)?);
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(input.output_partitioning().partition_count()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(TenantScopeExec { input, scope, device_col, projection, schema, properties })
    }
}

impl DisplayAs for TenantScopeExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "TenantScopeExec: devices={}", self.scope.devices.len())
    }
}

impl ExecutionPlan for TenantScopeExec {
    fn name(&self) -> &str {
        "TenantScopeExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    #[allow(deprecated)] // required by the trait in DataFusion 55; `replace_children` calls it
    fn with_new_children(self: Arc<Self>, mut children: Vec<Arc<dyn ExecutionPlan>>) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal("TenantScopeExec has one child".into()));
        }
        let exec = TenantScopeExec::try_new(children.remove(0), self.scope.clone(), self.device_col, self.projection.clone())?;
        Ok(Arc::new(exec))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        let (scope, device_col, projection) = (self.scope.clone(), self.device_col, self.projection.clone());
        let rows = self.input.execute(partition, context)?.map(move |batch| {
            let kept = scope.keep(&batch?, device_col)?;
            Ok(kept.project(&projection)?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), rows)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    fn batch(devices: &[&str]) -> RecordBatch {
        let schema = Schema::new(vec![Field::new("device", DataType::Utf8, false), Field::new("v", DataType::Int64, true)]);
        let values: Vec<i64> = (0..devices.len() as i64).collect();
        RecordBatch::try_new(
            Arc::new(schema),
            vec![Arc::new(StringArray::from(devices.to_vec())), Arc::new(Int64Array::from(values))],
        )
        .unwrap()
    }

    #[test]
    fn keeps_only_the_tenants_devices() {
        let scope = TenantScope::from_devices(&batch(&["a1", "a2"])).unwrap();
        let kept = scope.keep(&batch(&["a1", "b1", "a2", "b2"]), 0).unwrap();
        let devices: Vec<&str> = kept.column(0).as_string::<i32>().iter().flatten().collect();
        assert_eq!(devices, ["a1", "a2"]);
        assert!(scope.predicate().is_some());
        assert!(TenantScope::from_devices(&batch(&[])).unwrap().predicate().is_none());
    }
}

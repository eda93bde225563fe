//! A rule's condition: a SQL boolean expression in the query dialect, over the message's fields,
//! the device's attributes (`attributes.cargo`) and per-device windows
//! (`avg(temperature) over 10m`). Parsed once when the rule is saved; compiled to a DataFusion
//! physical expression per combination of input types and evaluated on whole Arrow batches.

use crate::window::{WindowFn, WindowSpec, parse_duration_ns};
use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::execution::SessionState;
use datafusion::execution::SessionStateBuilder;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, ExprWithAlias, Ident, visit_expressions_mut};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, LazyLock};

/// What the condition reads, in the order of the compiled batch's columns.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Input {
    /// A field (or tag, or `time`/`device`) of the message.
    Field(String),
    /// `attributes.<name>` of the sending device, from the registry.
    Attribute(String),
    /// The value of `windows[i]` for this device at this row.
    Window(usize),
}

impl Input {
    /// The column name the compiled expression refers to.
    fn column_name(&self) -> String {
        match self {
            Input::Field(name) => name.clone(),
            Input::Attribute(name) => format!("attributes.{name}"),
            Input::Window(i) => format!("__window_{i}"),
        }
    }
}

/// A parsed condition. Compiled forms are cached by the types of its inputs, which for a given
/// table and fleet rarely change.
pub struct Condition {
    pub text: String,
    ast: SqlExpr,
    pub inputs: Vec<Input>,
    pub windows: Vec<WindowSpec>,
    compiled: HashMap<Vec<DataType>, Compiled>,
}

/// A condition compiled for one combination of input types, with the schema of its batches.
#[derive(Clone)]
struct Compiled {
    expr: Arc<dyn PhysicalExpr>,
    schema: SchemaRef,
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Condition").field("text", &self.text).field("inputs", &self.inputs).finish()
    }
}

/// Aggregates make sense in a condition only over a window; alone they would need a GROUP BY.
const AGGREGATES: &[&str] =
    &["avg", "mean", "min", "max", "sum", "count", "rate", "median", "stddev", "first_value", "last_value"];

static WINDOW: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(
        r#"(?i)\b(avg|min|max|sum|count|rate)\s*\(\s*("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_.]*)\s*\)\s+over\s+(?:(tumbling|sliding)\s+)?([0-9]+[a-z]*)\b"#,
    )
    .expect("window pattern")
});
static OVER: LazyLock<regex::Regex> = LazyLock::new(|| regex::Regex::new(r"(?i)\bover\b").expect("over"));

/// One DataFusion session state for compiling expressions: building it registers every function,
/// which takes milliseconds, so it is built once per process.
static STATE: LazyLock<SessionState> = LazyLock::new(|| SessionStateBuilder::new().with_default_features().build());

impl Condition {
    /// Parses `text`. Errors name the problem and, where the parser knows it, the line and column.
    pub fn parse(text: &str) -> Result<Condition, String> {
        if text.trim().is_empty() {
            return Err("is empty; write a SQL boolean expression such as `temperature > 8`".into());
        }
        let (rewritten, windows) = extract_windows(text)?;
        let mut parser = Parser::new(&GenericDialect {}).try_with_sql(&rewritten).map_err(parse_error)?;
        let mut ast = parser.parse_expr().map_err(parse_error)?;
        let next = parser.peek_token();
        if next.token != Token::EOF {
            return Err(format!(
                "unexpected `{}` at line {}, column {}: a condition is one expression (combine parts with AND / OR)",
                next.token, next.span.start.line, next.span.start.column
            ));
        }
        let mut inputs = Vec::new();
        let flow = visit_expressions_mut(&mut ast, |e| rewrite(e, &mut inputs));
        if let ControlFlow::Break(message) = flow {
            return Err(message);
        }
        // Window columns are referenced by their placeholder identifiers; record them in order.
        let mut condition = Condition { text: text.to_string(), ast, inputs, windows, compiled: HashMap::new() };
        // Validate what can be validated without data: with every input typed NULL, DataFusion
        // still resolves functions and operators and checks the result can be a boolean.
        let types = vec![DataType::Null; condition.inputs.len()];
        let Compiled { expr, schema } = condition.compile(&types)?;
        let result = expr.data_type(&schema).map_err(|e| e.to_string())?;
        if !matches!(result, DataType::Boolean | DataType::Null) {
            return Err(format!("must be true or false, but `{text}` gives a {result} value"));
        }
        Ok(condition)
    }

    fn schema(&self, types: &[DataType]) -> Schema {
        Schema::new(
            self.inputs.iter().zip(types).map(|(input, t)| Field::new(input.column_name(), t.clone(), true)).collect::<Vec<_>>(),
        )
    }

    fn compile(&mut self, types: &[DataType]) -> Result<Compiled, String> {
        if let Some(compiled) = self.compiled.get(types) {
            return Ok(compiled.clone());
        }
        let arrow_schema = Arc::new(self.schema(types));
        let schema = DFSchema::try_from(arrow_schema.clone()).map_err(|e| e.to_string())?;
        let logical = STATE
            .create_logical_expr_from_sql_expr(ExprWithAlias { expr: self.ast.clone(), alias: None }, &schema)
            .map_err(|e| clean(e.to_string()))?;
        let expr = STATE.create_physical_expr(logical, &schema).map_err(|e| clean(e.to_string()))?;
        let compiled = Compiled { expr, schema: arrow_schema };
        self.compiled.insert(types.to_vec(), compiled.clone());
        Ok(compiled)
    }

    /// Evaluates over `columns` (one per input, in order). NULL counts as false.
    pub fn evaluate(&mut self, columns: Vec<ArrayRef>, rows: usize) -> Result<BooleanArray, String> {
        let types: Vec<DataType> = columns.iter().map(|c| c.data_type().clone()).collect();
        let Compiled { expr, schema } = self.compile(&types)?;
        let batch = RecordBatch::try_new_with_options(
            schema,
            columns,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(|e| e.to_string())?;
        let value = expr.evaluate(&batch).map_err(|e| clean(e.to_string()))?.into_array(rows).map_err(|e| e.to_string())?;
        match value.data_type() {
            DataType::Boolean => {
                let b = value.as_any().downcast_ref::<BooleanArray>().expect("boolean").clone();
                Ok(if b.null_count() > 0 { arrow::compute::prep_null_mask_filter(&b) } else { b })
            }
            DataType::Null => Ok(BooleanArray::from(vec![false; rows])),
            other => Err(format!("`{}` gave a {other} value, not true or false", self.text)),
        }
    }
}

fn parse_error(e: datafusion::sql::sqlparser::parser::ParserError) -> String {
    let message = e.to_string();
    let message = message.strip_prefix("sql parser error: ").unwrap_or(&message);
    message.replace("found: EOF", "found the end of the condition")
}

/// DataFusion prefixes errors with their category; users need only the sentence.
fn clean(message: String) -> String {
    message.strip_prefix("Error during planning: ").unwrap_or(&message).to_string()
}

/// Replaces each `f(field) over [tumbling|sliding] <duration>` with a placeholder column of the
/// same length (so parser positions still point into the text the user wrote).
fn extract_windows(text: &str) -> Result<(String, Vec<WindowSpec>), String> {
    let mut out = String::with_capacity(text.len());
    let mut windows = Vec::new();
    let mut last = 0;
    for caps in WINDOW.captures_iter(text) {
        let whole = caps.get(0).expect("match");
        let func = WindowFn::parse(&caps[1]).expect("pattern lists only known functions");
        let field = identifier(&caps[2]);
        let width_ns = parse_duration_ns(&caps[4]).map_err(|e| format!("window `{}`: {e}", whole.as_str()))?;
        let tumbling = caps.get(3).is_some_and(|m| m.as_str().eq_ignore_ascii_case("tumbling"));
        let placeholder = format!("\"__window_{}\"", windows.len());
        out.push_str(&text[last..whole.start()]);
        out.push_str(&format!("{placeholder:<width$}", width = whole.len().max(placeholder.len())));
        last = whole.end();
        windows.push(WindowSpec { func, field, width_ns, tumbling });
    }
    out.push_str(&text[last..]);
    if let Some(m) = OVER.find(&out) {
        return Err(format!(
            "`over` at column {}: a window is written `avg(temperature) over 10m` (functions avg, min, max, sum, \
             count, rate; add `tumbling` for fixed buckets; units ms, s, m, h, d)",
            m.start() + 1
        ));
    }
    Ok((out, windows))
}

/// An identifier as the query dialect reads it: unquoted ones fold to lower case.
fn identifier(raw: &str) -> String {
    match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => raw.to_lowercase(),
    }
}

fn ident_value(ident: &Ident) -> String {
    if ident.quote_style.is_some() { ident.value.clone() } else { ident.value.to_lowercase() }
}

/// Turns every column reference into one quoted identifier naming a batch column, and records it.
fn rewrite(e: &mut SqlExpr, inputs: &mut Vec<Input>) -> ControlFlow<String> {
    let input = match e {
        SqlExpr::Identifier(ident) => {
            let name = ident_value(ident);
            match name.strip_prefix("__window_").and_then(|i| i.parse::<usize>().ok()) {
                Some(i) if ident.quote_style.is_some() => Input::Window(i),
                _ => Input::Field(name),
            }
        }
        SqlExpr::CompoundIdentifier(parts) => {
            let names: Vec<String> = parts.iter().map(ident_value).collect();
            if names[0] == "attributes" && names.len() > 1 {
                Input::Attribute(names[1..].join("."))
            } else {
                // Nested JSON flattens to dotted field names: `gps.lat` is the field "gps.lat".
                Input::Field(names.join("."))
            }
        }
        SqlExpr::Subquery(_) | SqlExpr::Exists { .. } | SqlExpr::InSubquery { .. } => {
            return ControlFlow::Break("subqueries are not allowed in a rule condition".into());
        }
        SqlExpr::Function(f) => {
            let name = f.name.to_string().to_lowercase();
            if AGGREGATES.contains(&name.as_str()) || f.over.is_some() {
                return ControlFlow::Break(format!(
                    "`{name}` is an aggregate: give it a window, e.g. `{name}(temperature) over 10m`"
                ));
            }
            return ControlFlow::Continue(());
        }
        _ => return ControlFlow::Continue(()),
    };
    let column = input.column_name();
    if !inputs.contains(&input) {
        inputs.push(input);
    }
    *e = SqlExpr::Identifier(Ident::with_quote('"', column));
    ControlFlow::Continue(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, StringArray};

    #[test]
    fn fields_and_attributes_are_inputs() {
        let c = Condition::parse("temperature > 8 AND attributes.cargo = 'vaccines'").unwrap();
        assert_eq!(c.inputs, vec![Input::Field("temperature".into()), Input::Attribute("cargo".into())]);
        let c = Condition::parse(r#""Temp" > 1 or gps.lat < 2"#).unwrap();
        assert_eq!(c.inputs, vec![Input::Field("Temp".into()), Input::Field("gps.lat".into())]);
    }

    #[test]
    fn evaluates_vectorized_with_null_as_false() {
        let mut c = Condition::parse("temperature > 8 AND attributes.cargo = 'vaccines'").unwrap();
        let t: ArrayRef = Arc::new(Float64Array::from(vec![Some(9.0), Some(7.0), None, Some(10.0)]));
        let cargo: ArrayRef = Arc::new(StringArray::from(vec![Some("vaccines"), Some("vaccines"), Some("vaccines"), None]));
        let out = c.evaluate(vec![t, cargo], 4).unwrap();
        assert_eq!(out.iter().collect::<Vec<_>>(), vec![Some(true), Some(false), Some(false), Some(false)]);
    }

    #[test]
    fn windows_become_inputs() {
        let c = Condition::parse("avg(temperature) over 10m > 6 AND rate(\"Level\") over tumbling 1h < 0").unwrap();
        assert_eq!(c.inputs, vec![Input::Window(0), Input::Window(1)]);
        assert_eq!(c.windows[0].field, "temperature");
        assert_eq!(c.windows[0].width_ns, 600_000_000_000);
        assert!(!c.windows[0].tumbling);
        assert_eq!(c.windows[1].field, "Level");
        assert!(c.windows[1].tumbling);
    }

    #[test]
    fn bad_conditions_say_where_and_what() {
        let err = Condition::parse("temperature >").unwrap_err();
        assert!(err.contains("found the end of the condition"), "{err}");
        let err = Condition::parse("temperature > > 8").unwrap_err();
        assert!(err.contains("Column: 15"), "{err}");
        let err = Condition::parse("temperature > 8 8").unwrap_err();
        assert!(err.contains("column 17"), "{err}");
        let err = Condition::parse("avg(temperature) > 6").unwrap_err();
        assert!(err.contains("over 10m"), "{err}");
        let err = Condition::parse("avg(temperature) over ten minutes > 6").unwrap_err();
        assert!(err.contains("`over` at column 18"), "{err}");
        let err = Condition::parse("temperature + 1").unwrap_err();
        assert!(err.contains("true or false"), "{err}");
        let err = Condition::parse("temperature > (SELECT 1)").unwrap_err();
        assert!(err.contains("subqueries"), "{err}");
        let err = Condition::parse("nosuchfn(temperature) > 1").unwrap_err();
        assert!(err.to_lowercase().contains("nosuchfn"), "{err}");
        assert!(Condition::parse("avg(t) over 10 parsecs > 1").unwrap_err().contains("unit"));
    }

    #[test]
    fn types_recompile() {
        let mut c = Condition::parse("mode = 'eco'").unwrap();
        let s: ArrayRef = Arc::new(StringArray::from(vec!["eco", "boost"]));
        assert_eq!(c.evaluate(vec![s], 2).unwrap().true_count(), 1);
        let f: ArrayRef = Arc::new(Float64Array::from(vec![1.0]));
        // A number compared to text is an error the rule reports, not a panic.
        let _ = c.evaluate(vec![f], 1);
    }
}

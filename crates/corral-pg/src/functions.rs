//! PostgreSQL functions that tools call in their start-up and catalog queries and that neither
//! DataFusion nor `datafusion-pg-catalog` provides: `version()` in the form drivers parse,
//! `current_database()`, `current_setting(name)`, `to_regtype(name)` and `format(...)`. (The
//! comment lookups, `col_description` and kin, are answered in `statement`.)

use crate::catalog::SERVER_VERSION;
use crate::statement::default_setting;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use std::sync::Arc;

pub(crate) fn all(database: &str) -> Vec<ScalarUDF> {
    let version = format!(
        "PostgreSQL {SERVER_VERSION} (Corral {} on Apache DataFusion), compiled by rustc, 64-bit",
        env!("CARGO_PKG_VERSION")
    );
    vec![
        constant_text("current_database", database.to_string()),
        constant_text("version", version),
        text_to("current_setting", DataType::Utf8, |name| ScalarValue::Utf8(default_setting(name).map(str::to_string))),
        text_to("to_regtype", DataType::Int32, |name| ScalarValue::Int32(type_oid(name))),
        format_udf(),
    ]
}

/// `format(pattern, args...)`: `%s` a value as text, `%I` an identifier (quoted when it must
/// be), `%L` a literal, `%%` a percent sign. Metabase builds type and table names with it.
fn format_udf() -> ScalarUDF {
    let answer = |args: &[ColumnarValue]| -> datafusion::error::Result<ColumnarValue> {
        let rows = args
            .iter()
            .find_map(|a| match a {
                ColumnarValue::Array(a) => Some(a.len()),
                ColumnarValue::Scalar(_) => None,
            })
            .unwrap_or(1);
        let texts: Vec<ArrayRef> =
            args.iter().map(|a| Ok(cast(&a.to_array(rows)?, &DataType::Utf8)?)).collect::<datafusion::error::Result<_>>()?;
        let texts: Vec<&StringArray> = texts.iter().map(|a| a.as_string::<i32>()).collect();
        let formatted: StringArray = (0..rows)
            .map(|row| {
                let values: Vec<Option<&str>> = texts.iter().map(|a| a.is_valid(row).then(|| a.value(row))).collect();
                match values.split_first() {
                    Some((Some(pattern), args)) => format_one(pattern, args).map(Some),
                    _ => Ok(None),
                }
            })
            .collect::<Result<_, _>>()
            .map_err(DataFusionError::Execution)?;
        let array: ArrayRef = Arc::new(formatted);
        Ok(if rows == 1 && args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&array, 0)?)
        } else {
            ColumnarValue::Array(array)
        })
    };
    ScalarUDF::from(datafusion::logical_expr::SimpleScalarUDF::new_with_signature(
        "format",
        datafusion::logical_expr::Signature::variadic_any(Volatility::Immutable),
        DataType::Utf8,
        Arc::new(answer),
    ))
}

/// One row of `format`, as PostgreSQL formats it: a `NULL` argument is empty for `%s` and `NULL`
/// for `%L`; too few arguments, a `NULL` identifier or an unknown conversion is an error.
fn format_one(pattern: &str, args: &[Option<&str>]) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = pattern.chars();
    let mut next = args.iter();
    let mut arg = || next.next().copied().ok_or_else(|| "too few arguments for format()".to_string());
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('s') => out.push_str(arg()?.unwrap_or("")),
            Some('I') => out.push_str(&quote_ident(arg()?.ok_or("null values cannot be formatted as an SQL identifier")?)),
            Some('L') => out.push_str(&arg()?.map_or("NULL".to_string(), |v| format!("'{}'", v.replace('\'', "''")))),
            Some(other) => return Err(format!("unrecognized format() type specifier \"{other}\"")),
            None => return Err("unterminated format() type specifier".to_string()),
        }
    }
    Ok(out)
}

/// An identifier as PostgreSQL writes it: bare when it is lower-case letters, digits and `_`,
/// quoted otherwise.
fn quote_ident(name: &str) -> String {
    let bare = name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if bare { name.to_string() } else { format!("\"{}\"", name.replace('"', "\"\"")) }
}

/// The OIDs of the types Corral's tables and functions produce, by the names `to_regtype`
/// accepts. Any other name is not a type here (`NULL`), as an extension PostgreSQL lacks
/// (`hstore`) is not one there.
fn type_oid(name: &str) -> Option<i32> {
    let name = name.trim().trim_start_matches("pg_catalog.").to_ascii_lowercase();
    let oid = match name.as_str() {
        "bool" | "boolean" => 16,
        "bytea" => 17,
        "int8" | "bigint" => 20,
        "int2" | "smallint" => 21,
        "int4" | "integer" | "int" => 23,
        "text" => 25,
        "oid" => 26,
        "json" => 114,
        "float4" | "real" => 700,
        "float8" | "double precision" => 701,
        "varchar" | "character varying" => 1043,
        "date" => 1082,
        "timestamp" | "timestamp without time zone" => 1114,
        "timestamptz" | "timestamp with time zone" => 1184,
        "interval" => 1186,
        "numeric" | "decimal" => 1700,
        _ => return None,
    };
    Some(oid)
}

/// A function of no arguments that always answers `value`.
fn constant_text(name: &str, value: String) -> ScalarUDF {
    let answer = move |_: &[ColumnarValue]| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(value.clone()))));
    create_udf(name, vec![], DataType::Utf8, Volatility::Stable, Arc::new(answer))
}

/// A function of one text argument, row by row; `NULL` in, `NULL` out.
fn text_to(name: &str, returns: DataType, f: fn(&str) -> ScalarValue) -> ScalarUDF {
    let returned = returns.clone();
    let function = name.to_string();
    let answer = move |args: &[ColumnarValue]| -> datafusion::error::Result<ColumnarValue> {
        let one = |value: Option<&str>| value.map_or(ScalarValue::try_from(&returned), |v| Ok(f(v)));
        match &args[0] {
            ColumnarValue::Scalar(ScalarValue::Utf8(v) | ScalarValue::LargeUtf8(v) | ScalarValue::Utf8View(v)) => {
                Ok(ColumnarValue::Scalar(one(v.as_deref())?))
            }
            ColumnarValue::Array(array) => {
                let array = cast(array, &DataType::Utf8)?;
                let texts = array.as_string::<i32>();
                let values: Vec<ScalarValue> = (0..texts.len())
                    .map(|i| one(texts.is_valid(i).then(|| texts.value(i))))
                    .collect::<datafusion::error::Result<_>>()?;
                Ok(ColumnarValue::Array(ScalarValue::iter_to_array(values)?))
            }
            other => Err(DataFusionError::Plan(format!("{function}() takes text, not {}", other.data_type()))),
        }
    };
    create_udf(name, vec![DataType::Utf8], returns, Volatility::Stable, Arc::new(answer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::Field;

    #[test]
    fn format_writes_values_identifiers_and_literals() {
        let args = [Some("public"), Some("Readings"), Some("it's"), Some("100")];
        assert_eq!(format_one("%I.%I = %L (%s%%)", &args).unwrap(), "public.\"Readings\" = 'it''s' (100%)");
        assert_eq!(format_one("%L and %s", &[None, None]).unwrap(), "NULL and ");
        assert!(format_one("%s.%s", &[Some("a")]).unwrap_err().contains("too few arguments"));
    }

    #[test]
    fn to_regtype_knows_corrals_types_and_nothing_else() {
        assert_eq!(type_oid("float8"), Some(701));
        assert_eq!(type_oid("pg_catalog.timestamptz"), Some(1184));
        assert_eq!(type_oid("hstore"), None);
    }

    #[test]
    fn current_setting_answers_what_show_answers() {
        let udf = &all("corral")[2];
        assert_eq!(udf.name(), "current_setting");
        let out = udf
            .invoke_with_args(datafusion::logical_expr::ScalarFunctionArgs {
                args: vec![ColumnarValue::Array(Arc::new(StringArray::from(vec![Some("server_version_num"), None])))],
                arg_fields: vec![Arc::new(Field::new("n", DataType::Utf8, true))],
                number_rows: 2,
                return_field: Arc::new(Field::new("v", DataType::Utf8, true)),
                config_options: Arc::default(),
            })
            .unwrap();
        let ColumnarValue::Array(array) = out else { panic!("an array") };
        let array: &StringArray = array.as_string();
        assert_eq!(array.value(0), "160006");
        assert!(array.is_null(1));
    }
}

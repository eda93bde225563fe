//! What a statement asks for. Tools send more than queries: drivers open with `SET` and `SHOW`,
//! ORMs wrap reads in `BEGIN`/`COMMIT`, poolers send `DISCARD ALL`. Those are answered here the
//! way a read-only PostgreSQL would; queries go to DataFusion; anything that would write is
//! refused with `25006`.

use crate::catalog::SERVER_VERSION;
use datafusion::sql::sqlparser::ast::{self, Expr, Set, Value};
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use pgwire::api::ClientInfo;
use pgwire::error::PgWireResult;
use std::time::Duration;

#[derive(Debug, Clone)]
pub(crate) enum Statement {
    /// Planned and run by DataFusion (`SELECT`, `WITH`, `VALUES`, `EXPLAIN`, `SHOW TABLES`).
    Query(Box<ast::Statement>),
    /// `SET name = value`: remembered for `SHOW`, and `statement_timeout` shortens the limit.
    Set { name: String, value: String },
    /// `SHOW name`.
    Show(String),
    /// `BEGIN`, `COMMIT`, `ROLLBACK`: a read-only session has nothing to commit, but clients
    /// that wrap reads in a transaction must get the tag they wait for.
    Transaction(Transaction),
    /// Accepted and without effect here (`DISCARD ALL`, `DEALLOCATE`, `SET SESSION
    /// CHARACTERISTICS`), answered with this command tag.
    NoEffect(&'static str),
    /// Refused: it would write or change the server.
    Refused(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transaction {
    Begin,
    Commit,
    Rollback,
}

/// Parses `sql` into statements, rewritten so DataFusion can plan PostgreSQL's catalog idioms.
pub(crate) fn parse(parser: &PostgresCompatibilityParser, sql: &str) -> PgWireResult<Vec<Statement>> {
    // datafusion-pg-catalog swaps the subquery with which Grafana reads `search_path` for `''`
    // (it predates a `current_setting` function), which empties Grafana's column picker and makes
    // its table picker list every table schema-qualified. Corral answers `current_setting`, so
    // Grafana's pickers skip that swap and keep the other rewrites; `with_pg_idioms` then turns
    // the subquery into the list it evaluates to.
    let column_picker = sql.contains("current_setting('search_path')")
        && (sql.contains("information_schema.columns") || sql.contains("information_schema.tables"));
    let statements = if column_picker {
        let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
        datafusion::sql::sqlparser::parser::Parser::parse_sql(&dialect, sql)
            .map(|statements| statements.into_iter().map(|s| parser.rewrite(s)).collect::<Vec<_>>())
    } else {
        parser.parse(sql)
    };
    let statements = statements.map_err(|e| crate::error::error("42601", format!("syntax error: {e}")))?;
    Ok(statements.into_iter().map(without_comments).map(with_pg_idioms).map(classify).collect())
}

/// PostgreSQL idioms DataFusion plans differently, rewritten into what it plans the same way.
/// Grafana's table and column pickers use all three to read `search_path`:
/// - bare `user` (a keyword in PostgreSQL, a column name to DataFusion) becomes `session_user`;
/// - a function that returns one value, used as a table (`FROM string_to_array(...) s`), becomes
///   a one-row derived table whose column is named after the alias, as PostgreSQL names it;
/// - `generate_series(...) AS i` names its column `i` too (DataFusion calls it `value`).
fn with_pg_idioms(mut statement: ast::Statement) -> ast::Statement {
    struct Idioms;
    impl ast::VisitorMut for Idioms {
        type Break = ();

        fn post_visit_expr(&mut self, expr: &mut Expr) -> std::ops::ControlFlow<()> {
            // The parser reads `user` as a function called without parentheses.
            let bare_user = match &*expr {
                Expr::Identifier(ident) => ident.quote_style.is_none() && ident.value.eq_ignore_ascii_case("user"),
                Expr::Function(f) => {
                    matches!(f.args, ast::FunctionArguments::None)
                        && f.name.0.len() == 1
                        && f.name.0[0].as_ident().is_some_and(|i| i.quote_style.is_none() && i.value.eq_ignore_ascii_case("user"))
                }
                _ => false,
            };
            // `session_user`: what datafusion-pg-catalog turns `current_user` into.
            if bare_user && let Some(session_user) = parse_expr("session_user") {
                *expr = session_user;
            }
            if let Some(visible) = table_visibility(expr) {
                *expr = visible;
            }
            if let Some(on_path) = on_search_path(expr) {
                *expr = on_path;
            }
            std::ops::ControlFlow::Continue(())
        }

        fn post_visit_table_factor(&mut self, factor: &mut ast::TableFactor) -> std::ops::ControlFlow<()> {
            if let Some(derived) = as_derived_table(factor) {
                *factor = derived;
            }
            std::ops::ControlFlow::Continue(())
        }
    }
    let _ = ast::VisitMut::visit(&mut statement, &mut Idioms);
    statement
}

/// `pg_table_is_visible(oid)` as "its schema is on the search path": datafusion-pg-catalog
/// answers true for every table, so psql's `\d readings` described both `public.readings` and
/// `latest.readings`; PostgreSQL shows only the one a bare name finds.
fn table_visibility(expr: &Expr) -> Option<Expr> {
    let Expr::Function(function) = expr else { return None };
    let name = function.name.0.last()?.as_ident()?.value.to_lowercase();
    let ast::FunctionArguments::List(list) = &function.args else { return None };
    let [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(oid))] = list.args.as_slice() else { return None };
    if name != "pg_table_is_visible" {
        return None;
    }
    parse_expr(&format!(
        "({oid}) IN (SELECT visible_class.oid FROM pg_catalog.pg_class AS visible_class \
         JOIN pg_catalog.pg_namespace AS visible_schema ON visible_schema.oid = visible_class.relnamespace \
         WHERE visible_schema.nspname IN ('public', 'pg_catalog'))"
    ))
}

/// `x IN (SELECT ... current_setting('search_path') ...)`, Grafana's "is this schema on the search
/// path", as the list that subquery evaluates to: `x IN (session_user, 'public')`, since the
/// search path here is always `"$user", public`. DataFusion plans the list anywhere; the
/// subquery not in `ORDER BY`, where Grafana's table picker sorts by it (bare names first).
fn on_search_path(expr: &Expr) -> Option<Expr> {
    let Expr::InSubquery { expr: tested, subquery, negated } = expr else { return None };
    if !subquery.to_string().contains("current_setting('search_path')") {
        return None;
    }
    parse_expr(&format!("({tested}) {}IN (session_user, 'public')", if *negated { "NOT " } else { "" }))
}

/// Functions that return one value and that tools call in `FROM`.
const VALUE_FUNCTIONS: [&str; 3] = ["string_to_array", "current_schemas", "parse_ident"];

/// `f(args) AS a` as `(SELECT f(args) AS a) AS a`, or for a series `(SELECT value AS a FROM
/// generate_series(args)) AS a`, when the alias names no columns of its own.
fn as_derived_table(factor: &ast::TableFactor) -> Option<ast::TableFactor> {
    let ast::TableFactor::Table { name, alias: Some(alias), args: Some(args), .. } = factor else { return None };
    if !alias.columns.is_empty() {
        return None;
    }
    let function = name.0.last()?.as_ident()?.value.to_lowercase();
    let call = format!("{name}({})", args.args.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "));
    let alias = &alias.name;
    let derived = if VALUE_FUNCTIONS.contains(&function.as_str()) {
        format!("SELECT * FROM (SELECT {call} AS {alias}) AS {alias}")
    } else if function == "generate_series" || function == "range" {
        format!("SELECT * FROM (SELECT value AS {alias} FROM {call}) AS {alias}")
    } else {
        return None;
    };
    let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
    let parsed = datafusion::sql::sqlparser::parser::Parser::parse_sql(&dialect, &derived).ok()?;
    let ast::Statement::Query(query) = parsed.into_iter().next()? else { return None };
    let ast::SetExpr::Select(select) = *query.body else { return None };
    select.from.into_iter().next().map(|from| from.relation)
}

fn parse_expr(text: &str) -> Option<Expr> {
    let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
    datafusion::sql::sqlparser::parser::Parser::new(&dialect).try_with_sql(text).ok()?.parse_expr().ok()
}

/// `col_description(...)`, `obj_description(...)` and `shobj_description(...)` become `NULL`
/// before planning: nothing in Corral carries a comment, and their arguments are often casts
/// that only a real catalog can evaluate (Metabase's `CAST(format('%I.%I', ...) AS regclass)`).
fn without_comments(mut statement: ast::Statement) -> ast::Statement {
    let _ = ast::visit_expressions_mut(&mut statement, |expr| {
        if let Expr::Function(function) = expr
            && let Some(name) = function.name.0.last().and_then(|part| part.as_ident())
            && ["col_description", "obj_description", "shobj_description"].contains(&name.value.to_lowercase().as_str())
        {
            *expr = Expr::value(Value::Null);
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    statement
}

fn classify(statement: ast::Statement) -> Statement {
    use ast::Statement as S;
    match statement {
        S::Query(_) | S::Explain { .. } | S::ExplainTable { .. } | S::ShowTables { .. } | S::ShowColumns { .. } => {
            Statement::Query(Box::new(statement))
        }
        S::Set(set) => classify_set(set),
        S::ShowVariable { variable } => {
            Statement::Show(variable.iter().map(|i| i.value.to_lowercase()).collect::<Vec<_>>().join(" "))
        }
        S::StartTransaction { .. } => Statement::Transaction(Transaction::Begin),
        S::Commit { .. } => Statement::Transaction(Transaction::Commit),
        S::Rollback { .. } => Statement::Transaction(Transaction::Rollback),
        // Drivers wrap their own lookups in savepoints (psycopg's type lookups inside a
        // transaction): nothing to keep or undo in a read-only session.
        S::Savepoint { .. } => Statement::NoEffect("SAVEPOINT"),
        S::ReleaseSavepoint { .. } => Statement::NoEffect("RELEASE"),
        S::Discard { .. } => Statement::NoEffect("DISCARD ALL"),
        S::Deallocate { .. } => Statement::NoEffect("DEALLOCATE"),
        other => {
            let text = other.to_string();
            Statement::Refused(text.split_whitespace().take(2).collect::<Vec<_>>().join(" ").to_uppercase())
        }
    }
}

fn classify_set(set: Set) -> Statement {
    match set {
        Set::SingleAssignment { variable, values, .. } => {
            let value = values.iter().map(setting_text).collect::<Vec<_>>().join(", ");
            Statement::Set { name: variable.to_string().to_lowercase(), value }
        }
        Set::SetTimeZone { value, .. } => Statement::Set { name: "timezone".into(), value: setting_text(&value) },
        Set::SetNames { charset_name, .. } => Statement::Set { name: "client_encoding".into(), value: charset_name.value },
        Set::SetTransaction { .. } | Set::SetSessionParam(_) | Set::SetRole { .. } => Statement::NoEffect("SET"),
        Set::SetSessionAuthorization(_) => Statement::Refused("SET SESSION AUTHORIZATION".into()),
        other => Statement::Refused(other.to_string()),
    }
}

/// A setting's value as `SHOW` prints it: strings without their quotes.
fn setting_text(value: &Expr) -> String {
    match value {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        Expr::Identifier(ident) => ident.value.clone(),
        other => other.to_string(),
    }
}

/// Where a session's `SET` values live: the connection's metadata, under this prefix, so they
/// go when the connection goes.
const SETTING: &str = "corral.set.";

pub(crate) fn remember<C: ClientInfo + ?Sized>(client: &mut C, name: &str, value: &str) {
    client.metadata_mut().insert(format!("{SETTING}{name}"), value.to_string());
}

/// `SHOW name`'s answer; `None` for a setting PostgreSQL would not know either.
pub(crate) fn show<C: ClientInfo + ?Sized>(client: &C, name: &str) -> Option<String> {
    let name = match name {
        "time zone" => "timezone",
        "transaction isolation level" => "transaction_isolation",
        other => other,
    };
    if let Some(value) = client.metadata().get(&format!("{SETTING}{name}")) {
        return Some(value.clone());
    }
    if name == "application_name" {
        return Some(client.metadata().get("application_name").cloned().unwrap_or_default());
    }
    default_setting(name).map(str::to_string)
}

/// A setting as the server starts every session with it (also `current_setting(name)`).
pub(crate) fn default_setting(name: &str) -> Option<&'static str> {
    let value = match name {
        "server_version" => SERVER_VERSION,
        "server_version_num" => "160006",
        "server_encoding" | "client_encoding" => "UTF8",
        "datestyle" => "ISO, YMD",
        "intervalstyle" => "postgres",
        "timezone" => "UTC",
        "transaction_isolation" | "default_transaction_isolation" => "read committed",
        "transaction_read_only" | "default_transaction_read_only" => "on",
        "standard_conforming_strings" | "integer_datetimes" => "on",
        "search_path" => "\"$user\", public",
        "statement_timeout" | "lock_timeout" | "idle_in_transaction_session_timeout" => "0",
        "max_identifier_length" => "63",
        "lc_collate" | "lc_ctype" => "C",
        "is_superuser" => "off",
        "bytea_output" => "hex",
        "extra_float_digits" => "1",
        _ => return None,
    };
    Some(value)
}

/// The client's `SET statement_timeout`, if it set one (`0` turns it off).
pub(crate) fn statement_timeout<C: ClientInfo + ?Sized>(client: &C) -> Option<Duration> {
    let value = client.metadata().get(&format!("{SETTING}statement_timeout"))?;
    parse_setting_duration(value).filter(|d| !d.is_zero())
}

/// PostgreSQL's duration settings: a bare number is milliseconds; units `us`, `ms`, `s`, `min`,
/// `h`, `d`.
pub(crate) fn parse_setting_duration(value: &str) -> Option<Duration> {
    let value = value.trim();
    let split = value.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().ok()?;
    let ms = match unit.trim() {
        "" | "ms" => number,
        "us" => number / 1000.0,
        "s" => number * 1000.0,
        "min" => number * 60_000.0,
        "h" => number * 3_600_000.0,
        "d" => number * 86_400_000.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(ms / 1000.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(sql: &str) -> Statement {
        parse(&PostgresCompatibilityParser::new(), sql).unwrap().remove(0)
    }

    #[test]
    fn drivers_opening_statements_are_answered_not_refused() {
        assert!(
            matches!(one("SET extra_float_digits = 3"), Statement::Set { name, value } if name == "extra_float_digits" && value == "3")
        );
        assert!(
            matches!(one("SET application_name = 'PostgreSQL JDBC Driver'"), Statement::Set { value, .. } if value == "PostgreSQL JDBC Driver")
        );
        assert!(
            matches!(one("SET TIME ZONE 'Europe/Paris'"), Statement::Set { name, value } if name == "timezone" && value == "Europe/Paris")
        );
        assert!(matches!(one("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"), Statement::NoEffect("SET")));
        assert!(
            matches!(one("SHOW transaction isolation level"), Statement::Show(name) if name == "transaction isolation level")
        );
        assert!(matches!(one("BEGIN"), Statement::Transaction(Transaction::Begin)));
        assert!(matches!(one("ROLLBACK"), Statement::Transaction(Transaction::Rollback)));
        assert!(matches!(one("DISCARD ALL"), Statement::NoEffect("DISCARD ALL")));
        assert!(matches!(one("SAVEPOINT \"_pg3_1\""), Statement::NoEffect("SAVEPOINT")));
        assert!(matches!(one("RELEASE \"_pg3_1\""), Statement::NoEffect("RELEASE")));
        assert!(matches!(one("SELECT 1"), Statement::Query(_)));
    }

    #[test]
    fn comment_lookups_answer_null_without_evaluating_their_arguments() {
        let Statement::Query(query) = one("SELECT col_description(CAST('x.y' AS regclass), 1) AS c") else { panic!("a query") };
        assert_eq!(query.to_string(), "SELECT NULL AS c");
    }

    #[test]
    fn grafanas_search_path_idioms_become_what_datafusion_plans() {
        let Statement::Query(query) = one("SELECT CASE WHEN trim(s[i]) = '\"$user\"' THEN user ELSE trim(s[i]) END \
             FROM generate_series(1, 2) AS i, string_to_array(current_setting('search_path'), ',') s")
        else {
            panic!("a query")
        };
        let text = query.to_string();
        assert!(text.contains("THEN session_user ELSE"), "{text}");
        assert!(text.contains("(SELECT value AS i FROM generate_series(1, 2)) AS i"), "{text}");
        assert!(text.contains("(SELECT string_to_array(current_setting('search_path'), ',') AS s) AS s"), "{text}");
        let Statement::Query(kept) = one("SELECT * FROM generate_series(1, 3) AS t(n), \"user\"") else { panic!("a query") };
        assert_eq!(
            kept.to_string(),
            "SELECT * FROM generate_series(1, 3) AS t (n), \"user\"",
            "named columns and quoted names stay"
        );
    }

    #[test]
    fn grafanas_search_path_subquery_becomes_the_list_it_evaluates_to() {
        let picker = "SELECT table_name FROM information_schema.tables ORDER BY CASE WHEN quote_ident(table_schema) IN \
             (SELECT CASE WHEN trim(s[i]) = '\"$user\"' THEN user ELSE trim(s[i]) END FROM generate_series(1, 2) AS i, \
             string_to_array(current_setting('search_path'), ',') s) THEN 0 ELSE 1 END";
        let Statement::Query(query) = one(picker) else { panic!("a query") };
        let text = query.to_string();
        assert!(text.contains("ORDER BY CASE WHEN (quote_ident(table_schema)) IN (session_user, 'public') THEN 0"), "{text}");
        assert!(!text.contains("current_setting"), "{text}");
    }

    #[test]
    fn a_table_is_visible_when_its_schema_is_on_the_search_path() {
        let Statement::Query(query) =
            one("SELECT c.relname FROM pg_catalog.pg_class c WHERE pg_catalog.pg_table_is_visible(c.oid)")
        else {
            panic!("a query")
        };
        let text = query.to_string();
        assert!(text.contains("(c.oid) IN (SELECT visible_class.oid FROM pg_catalog.pg_class"), "{text}");
        assert!(text.contains("nspname IN ('public', 'pg_catalog')"), "{text}");
    }

    #[test]
    fn statements_that_would_write_are_refused_by_name() {
        assert!(matches!(one("INSERT INTO readings VALUES (1)"), Statement::Refused(what) if what == "INSERT INTO"));
        assert!(matches!(one("DROP TABLE devices"), Statement::Refused(what) if what == "DROP TABLE"));
        assert!(matches!(one("SET SESSION AUTHORIZATION admin"), Statement::Refused(_)));
    }

    #[test]
    fn durations_read_as_postgresql_reads_them() {
        assert_eq!(parse_setting_duration("1500"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_setting_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_setting_duration("1min"), Some(Duration::from_secs(60)));
        assert_eq!(parse_setting_duration("soon"), None);
    }
}

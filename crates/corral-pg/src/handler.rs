//! Simple and extended query: every statement gets its own session (a fresh snapshot, scoped to
//! the connection's token), is planned read-only, and streams its rows under the statement
//! timeout and the row limit.
//!
//! A prepared statement is planned twice: at Parse, to describe its parameters and columns, and
//! again at each Execute, so a statement prepared by a long-lived connection (pgjdbc, psycopg
//! after five runs) reads the data as it is now, not as it was when it was prepared.

use crate::PgLimits;
use crate::catalog::PgCatalog;
use crate::error::{error, from_datafusion, read_only};
use crate::login::{Session, TokenLogin};
use crate::statement::{self, Statement, Transaction};
use arrow_pg::datatypes::df::deserialize_parameters_with_server_types;
use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch, into_pg_type};
use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ParamValues;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast;
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use futures::{Sink, StreamExt, stream};
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::data::DataRow;
use pgwire::types::format::FormatOptions;
use std::fmt::Debug;
use std::sync::Arc;
use tokio::time::{Instant, timeout_at};

/// What each connection is served with; one set for the whole door.
pub(crate) struct Handlers {
    pub queries: Arc<Queries>,
    pub login: Arc<TokenLogin>,
    pub cancel: Arc<DefaultCancelHandler>,
}

pub(crate) struct Queries {
    parser: Arc<Parser>,
    limits: PgLimits,
}

impl Queries {
    pub fn new(catalog: Arc<PgCatalog>, limits: PgLimits) -> Queries {
        Queries { parser: Arc::new(Parser { catalog, sql: PostgresCompatibilityParser::new() }), limits }
    }

    /// Runs one statement for `client`, with `parameters` bound if it was prepared.
    async fn run<C>(
        &self,
        client: &mut C,
        statement: &Statement,
        parameters: Option<ParamValues>,
        format: &Format,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ?Sized,
    {
        match statement {
            Statement::Query(query) => self.query(client, query, parameters, format).await,
            Statement::Set { name, value } => {
                if name == "statement_timeout" && statement::parse_setting_duration(value).is_none() {
                    return Err(error("22023", format!("invalid value for parameter \"statement_timeout\": \"{value}\"")));
                }
                statement::remember(client, name, value);
                Ok(Response::Execution(Tag::new("SET")))
            }
            Statement::Show(name) => {
                let value = statement::show(client, name)
                    .ok_or_else(|| error("42704", format!("unrecognized configuration parameter \"{name}\"")))?;
                let field = FieldInfo::new(show_column(name), None, None, Type::TEXT, FieldFormat::Text);
                let fields = Arc::new(vec![field]);
                let mut row = DataRowEncoder::new(fields.clone());
                row.encode_field(&Some(value))?;
                Ok(Response::Query(QueryResponse::new(fields, stream::iter([Ok(row.take_row())]))))
            }
            Statement::Transaction(Transaction::Begin) => Ok(Response::TransactionStart(Tag::new("BEGIN"))),
            Statement::Transaction(Transaction::Commit) => Ok(Response::TransactionEnd(Tag::new("COMMIT"))),
            Statement::Transaction(Transaction::Rollback) => Ok(Response::TransactionEnd(Tag::new("ROLLBACK"))),
            Statement::NoEffect(tag) => Ok(Response::Execution(Tag::new(tag))),
            Statement::Refused(what) => Err(read_only(what)),
        }
    }

    /// Plans `query` in a new session, binds `parameters`, and computes its first batch under the
    /// statement's deadline; the rest streams to the client (see [`Rows`]).
    async fn query<C>(
        &self,
        client: &C,
        query: &ast::Statement,
        parameters: Option<ParamValues>,
        format: &Format,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ?Sized,
    {
        let timeout =
            statement::statement_timeout(client).map_or(self.limits.statement_timeout, |t| t.min(self.limits.statement_timeout));
        let deadline = Instant::now() + timeout;
        let (ctx, plan) = self.parser.plan(client, query).await?;
        let plan = match parameters {
            Some(values) => plan.with_param_values(values).map_err(from_datafusion)?,
            None => plan,
        };
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        let fields = Arc::new(arrow_schema_to_pg_fields(plan.schema().as_arrow(), format, Some(options))?);
        let running = async {
            let df = ctx.execute_logical_plan(plan).await?;
            let mut batches = df.execute_stream().await?;
            // The first batch is where aggregations and sorts do their work: waited for here,
            // inside pgwire's cancel handling. Later batches stream to the client.
            let first = batches.next().await.transpose()?;
            Ok::<_, datafusion::error::DataFusionError>((batches, first))
        };
        let (batches, first) = timeout_at(deadline, running).await.map_err(|_| timed_out(timeout))?.map_err(from_datafusion)?;
        let rows = Rows { batches, first, deadline, timeout, sent: 0, max: self.limits.max_rows, done: false };
        Ok(Response::Query(QueryResponse::new(fields.clone(), rows.encode(fields))))
    }
}

/// `SHOW` answers in a column named after the setting, as PostgreSQL does.
fn show_column(name: &str) -> String {
    match name {
        "time zone" => "TimeZone".into(),
        "transaction isolation level" => "transaction_isolation".into(),
        other => other.into(),
    }
}

fn timed_out(timeout: std::time::Duration) -> PgWireError {
    error("57014", format!("canceling statement due to statement timeout ({} s)", timeout.as_secs_f64()))
}

/// A query's result on its way to the client: batches from DataFusion, encoded as they come,
/// each waited for no later than the statement's deadline, and cut at the row limit.
struct Rows {
    batches: SendableRecordBatchStream,
    first: Option<RecordBatch>,
    deadline: Instant,
    timeout: std::time::Duration,
    sent: usize,
    max: usize,
    done: bool,
}

impl Rows {
    fn encode(self, fields: Arc<Vec<FieldInfo>>) -> impl futures::Stream<Item = PgWireResult<DataRow>> + Send + 'static {
        stream::unfold(self, move |mut rows| {
            let fields = fields.clone();
            async move {
                if rows.done {
                    return None;
                }
                let batch = match rows.first.take() {
                    Some(batch) => Ok(Some(batch)),
                    None => match timeout_at(rows.deadline, rows.batches.next()).await {
                        Ok(next) => next.transpose().map_err(from_datafusion),
                        Err(_) => Err(timed_out(rows.timeout)),
                    },
                };
                let batch = match batch {
                    Ok(Some(batch)) => batch,
                    Ok(None) => return None,
                    Err(e) => {
                        rows.done = true;
                        return Some((vec![Err(e)], rows));
                    }
                };
                let room = rows.max - rows.sent;
                let mut out: Vec<PgWireResult<DataRow>> =
                    encode_recordbatch(fields, batch.slice(0, batch.num_rows().min(room))).collect();
                rows.sent += out.len();
                if batch.num_rows() > room {
                    rows.done = true;
                    out.push(Err(error(
                        "54000",
                        format!("the result has more than {} rows (limits.max_query_rows); add a LIMIT or a WHERE", rows.max),
                    )));
                }
                Some((out, rows))
            }
        })
        .flat_map(stream::iter)
    }
}

#[async_trait]
impl SimpleQueryHandler for Queries {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statements = statement::parse(&self.parser.sql, query)?;
        let mut responses = Vec::with_capacity(statements.len());
        // As PostgreSQL does: what ran before a failing statement is answered, the rest skipped.
        for statement in &statements {
            match self.run(client, statement, None, &Format::UnifiedText).await {
                Ok(response) => responses.push(response),
                Err(e) => {
                    responses.push(Response::Error(Box::new(ErrorInfo::from(e))));
                    break;
                }
            }
        }
        if responses.is_empty() {
            responses.push(Response::EmptyQuery);
        }
        Ok(responses)
    }
}

#[async_trait]
impl ExtendedQueryHandler for Queries {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    async fn do_query<C>(&self, client: &mut C, portal: &Portal<Prepared>, _max_rows: usize) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let prepared = &portal.statement.statement;
        let parameters = if prepared.parameters.is_empty() && portal.parameter_len() == 0 {
            None
        } else {
            let inferred: Vec<Option<&DataType>> = prepared.inferred.iter().map(Option::as_ref).collect();
            let server_types: Vec<Option<&Type>> = prepared.parameters.iter().map(Some).collect();
            Some(deserialize_parameters_with_server_types(portal, &inferred, &server_types)?)
        };
        self.run(client, &prepared.statement, parameters, &portal.result_column_format).await
    }
}

/// A statement as the extended protocol keeps it between Parse and Execute.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    statement: Statement,
    /// Each `$n`'s type as the plan infers it (`None`: the client must say).
    inferred: Vec<Option<DataType>>,
    /// The same, as PostgreSQL types for `ParameterDescription`.
    parameters: Vec<Type>,
    /// The result's columns; `None` for a statement that returns no rows.
    columns: Option<SchemaRef>,
}

pub(crate) struct Parser {
    catalog: Arc<PgCatalog>,
    sql: PostgresCompatibilityParser,
}

impl Parser {
    /// `query` planned read-only in a new session for the connection's token.
    async fn plan<C: ClientInfo + ?Sized>(
        &self,
        client: &C,
        query: &ast::Statement,
    ) -> PgWireResult<(SessionContext, LogicalPlan)> {
        let session = Session::of(client).ok_or_else(|| error("28000", "not logged in"))?;
        let ctx = self.catalog.session(&session).await?;
        let plan =
            ctx.state().statement_to_plan(DfStatement::Statement(Box::new(query.clone()))).await.map_err(from_datafusion)?;
        corral_services::read_only().verify_plan(&plan).map_err(|_| read_only("this statement"))?;
        Ok((ctx, plan))
    }
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(&self, client: &C, sql: &str, _types: &[Option<Type>]) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let mut statements = statement::parse(&self.sql, sql)?;
        if statements.len() > 1 {
            return Err(error("42601", "cannot insert multiple commands into a prepared statement"));
        }
        let Some(statement) = statements.pop() else { return Ok(None) };
        let (inferred, columns) = match &statement {
            Statement::Query(query) => {
                let (_, plan) = self.plan(client, query).await?;
                let mut types: Vec<(usize, Option<DataType>)> = plan
                    .get_parameter_types()
                    .map_err(from_datafusion)?
                    .into_iter()
                    .filter_map(|(id, ty)| Some((id.trim_start_matches('$').parse::<usize>().ok()?, ty)))
                    .collect();
                types.sort_by_key(|(n, _)| *n);
                let count = types.last().map_or(0, |(n, _)| *n);
                let mut inferred = vec![None; count];
                for (n, ty) in types {
                    inferred[n - 1] = ty;
                }
                (inferred, Some(Arc::new(plan.schema().as_arrow().clone())))
            }
            Statement::Show(name) => {
                (Vec::new(), Some(Arc::new(Schema::new(vec![Field::new(show_column(name), DataType::Utf8, true)]))))
            }
            _ => (Vec::new(), None),
        };
        let parameters =
            inferred.iter().map(|ty| ty.as_ref().map_or(Ok(Type::UNKNOWN), into_pg_type)).collect::<PgWireResult<_>>()?;
        Ok(Some(Prepared { statement, inferred, parameters, columns }))
    }

    fn get_parameter_types(&self, prepared: &Prepared) -> PgWireResult<Vec<Type>> {
        Ok(prepared.parameters.clone())
    }

    fn get_result_schema(&self, prepared: &Prepared, format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        match &prepared.columns {
            Some(schema) => arrow_schema_to_pg_fields(schema, format.unwrap_or(&Format::UnifiedText), None),
            None => Ok(Vec::new()),
        }
    }
}

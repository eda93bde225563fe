//! The OpenAPI 3.1 document, built by the same calls that mount the routes.
//!
//! Every REST route is added through [`Api`], which puts the handler on the router *and* records
//! its operation (summary, parameters, body, responses, errors, who may call it) in the document,
//! so a route cannot exist without its description. Schemas come from the request and response
//! types' `schemars::JsonSchema` derives, which read the same `#[serde]` attributes serde does:
//! JSON Schema 2020-12, OpenAPI 3.1's own dialect. Requests are described as serde *reads* them
//! (a field with a default is optional), responses as serde *writes* them; where the two differ
//! for one type, the request's schema is named `<Type>Input`.

use crate::AppState;
use axum::handler::Handler;
use axum::routing::{MethodFilter, MethodRouter};
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};

type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// Where request schemas' shared definitions go until [`Api::finish`] names them (a JSON pointer;
/// references to them start with `#` and end with the name).
const INPUT_DEFS: &str = "/components/schemas/__input__";
const INPUT_REF: &str = "#/components/schemas/__input__/";

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Auth {
    /// An API token (`Authorization: Bearer`) or a console session cookie.
    Api,
    /// A device's own credential: its token, or its client certificate over HTTPS.
    Device,
    /// Either an application or the device itself.
    ApiOrDevice,
    /// InfluxDB's write APIs: an API or device token as `Bearer`/`Token`, as the password of HTTP
    /// basic auth, or as the `p` query parameter (no console session).
    Influx,
    /// Anyone (health, metrics, this document, signed download links).
    Anyone,
}

enum Body {
    Json(SchemaFn),
    Raw { media: &'static str, description: &'static str },
}

struct Answer {
    status: u16,
    description: &'static str,
    /// Media type and schema; `None` for an answer without a body.
    content: Option<(&'static str, Option<SchemaFn>)>,
}

/// One operation's description, handed to [`Api::route`] with its handler.
pub(crate) struct Operation {
    tag: &'static str,
    summary: &'static str,
    description: Option<&'static str>,
    auth: Auth,
    path_params: Vec<(&'static str, &'static str, SchemaFn)>,
    query: Option<SchemaFn>,
    headers: Vec<(&'static str, &'static str)>,
    body: Option<Body>,
    answers: Vec<Answer>,
    /// Headers of the answers: (status, name, description).
    answer_headers: Vec<(u16, &'static str, &'static str)>,
    body_optional: bool,
    errors: BTreeSet<u16>,
}

impl Operation {
    /// An operation in group `tag`, callable with an API token (see [`Operation::auth`]).
    pub(crate) fn new(tag: &'static str, summary: &'static str) -> Self {
        Operation {
            tag,
            summary,
            description: None,
            auth: Auth::Api,
            path_params: Vec::new(),
            query: None,
            headers: Vec::new(),
            body: None,
            answers: Vec::new(),
            answer_headers: Vec::new(),
            body_optional: false,
            errors: BTreeSet::new(),
        }
    }

    pub(crate) fn describe(mut self, text: &'static str) -> Self {
        self.description = Some(text);
        self
    }

    pub(crate) fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// A path parameter of type `T`; parameters not named here are strings.
    pub(crate) fn path<T: JsonSchema>(mut self, name: &'static str, description: &'static str) -> Self {
        self.path_params.push((name, description, T::json_schema));
        self
    }

    /// The query string: each field of `T` (a struct) is one parameter.
    pub(crate) fn query<T: JsonSchema>(mut self) -> Self {
        self.query = Some(T::json_schema);
        self
    }

    /// A request header the operation reads (always optional).
    pub(crate) fn header(mut self, name: &'static str, description: &'static str) -> Self {
        self.headers.push((name, description));
        self
    }

    /// A JSON request body of type `T`.
    pub(crate) fn body<T: JsonSchema>(mut self) -> Self {
        self.body = Some(Body::Json(SchemaGenerator::subschema_for::<T>));
        self
    }

    /// The body may be left out (an empty body means the defaults).
    pub(crate) fn body_optional(mut self) -> Self {
        self.body_optional = true;
        self
    }

    /// A header an answer with `status` always carries (`ETag`, `Location`).
    pub(crate) fn answer_header(mut self, status: u16, name: &'static str, description: &'static str) -> Self {
        self.answer_headers.push((status, name, description));
        self
    }

    /// A request body that is not JSON (CSV, line protocol, a firmware image).
    pub(crate) fn raw_body(mut self, media: &'static str, description: &'static str) -> Self {
        self.body = Some(Body::Raw { media, description });
        self
    }

    /// A JSON answer of type `T`.
    pub(crate) fn returns<T: JsonSchema>(mut self, status: u16, description: &'static str) -> Self {
        let content = Some(("application/json", Some(SchemaGenerator::subschema_for::<T> as SchemaFn)));
        self.answers.push(Answer { status, description, content });
        self
    }

    /// An answer that is not JSON (CSV, Parquet, a file, an event stream).
    pub(crate) fn returns_raw(mut self, status: u16, media: &'static str, description: &'static str) -> Self {
        self.answers.push(Answer { status, description, content: Some((media, None)) });
        self
    }

    /// An answer without a body (204, 101).
    pub(crate) fn returns_nothing(mut self, status: u16, description: &'static str) -> Self {
        self.answers.push(Answer { status, description, content: None });
        self
    }

    /// Error statuses beyond the ones every operation of its kind can answer (see
    /// [`Operation::usual_errors`]): 409, 412, 429...
    pub(crate) fn errors(mut self, statuses: &[u16]) -> Self {
        self.errors.extend(statuses);
        self
    }

    /// What can go wrong anywhere: bad input (400, when there is any input), no or a wrong
    /// credential (401, 403), something named in the path that is not there (404), a body over
    /// the limit (413), the platform starting or overloaded (503) and a fault of ours (500).
    fn usual_errors(&self, has_path_params: bool) -> BTreeSet<u16> {
        let mut statuses: BTreeSet<u16> = [500, 503].into();
        if has_path_params || self.query.is_some() || self.body.is_some() || !self.headers.is_empty() {
            statuses.insert(400);
        }
        if self.auth != Auth::Anyone {
            statuses.extend([401, 403]);
        }
        if has_path_params {
            statuses.insert(404);
        }
        if self.body.is_some() {
            statuses.insert(413);
        }
        statuses.extend(&self.errors);
        statuses
    }
}

/// The router being built and its document: the one way a REST route is added.
pub(crate) struct Api {
    methods: BTreeMap<&'static str, MethodRouter<AppState>>,
    paths: BTreeMap<&'static str, Map<String, Value>>,
    /// Response schemas (serde's serialize contract); definitions land in `components`.
    output: SchemaGenerator,
    /// Request schemas (deserialize contract); renamed against `output`'s in [`Api::finish`].
    input: SchemaGenerator,
}

impl Api {
    pub(crate) fn new() -> Self {
        let output = SchemaSettings::draft2020_12()
            .with(|s| {
                s.definitions_path = "/components/schemas".into();
                s.meta_schema = None;
            })
            .for_serialize()
            .into_generator();
        let input = SchemaSettings::draft2020_12()
            .with(|s| {
                s.definitions_path = INPUT_DEFS.into();
                s.meta_schema = None;
            })
            .for_deserialize()
            .into_generator();
        Api { methods: BTreeMap::new(), paths: BTreeMap::new(), output, input }
    }

    pub(crate) fn get<H: Handler<T, AppState>, T: 'static>(self, path: &'static str, handler: H, op: Operation) -> Self {
        self.route(MethodFilter::GET, "get", path, handler, op)
    }
    pub(crate) fn post<H: Handler<T, AppState>, T: 'static>(self, path: &'static str, handler: H, op: Operation) -> Self {
        self.route(MethodFilter::POST, "post", path, handler, op)
    }
    pub(crate) fn put<H: Handler<T, AppState>, T: 'static>(self, path: &'static str, handler: H, op: Operation) -> Self {
        self.route(MethodFilter::PUT, "put", path, handler, op)
    }
    pub(crate) fn patch<H: Handler<T, AppState>, T: 'static>(self, path: &'static str, handler: H, op: Operation) -> Self {
        self.route(MethodFilter::PATCH, "patch", path, handler, op)
    }
    pub(crate) fn delete<H: Handler<T, AppState>, T: 'static>(self, path: &'static str, handler: H, op: Operation) -> Self {
        self.route(MethodFilter::DELETE, "delete", path, handler, op)
    }

    fn route<H: Handler<T, AppState>, T: 'static>(
        mut self,
        filter: MethodFilter,
        method: &'static str,
        path: &'static str,
        handler: H,
        op: Operation,
    ) -> Self {
        let methods = self.methods.remove(path).unwrap_or_default();
        self.methods.insert(path, methods.on(filter, handler));
        let operation = self.document(method, path, op);
        let previous = self.paths.entry(path).or_default().insert(method.to_string(), operation);
        assert!(previous.is_none(), "{method} {path} is added twice");
        self
    }

    fn document(&mut self, method: &str, path: &'static str, op: Operation) -> Value {
        let names = template_names(path);
        for (name, ..) in &op.path_params {
            assert!(names.contains(name), "{path}: path parameter `{name}` is not in the path");
        }
        let mut parameters = Vec::new();
        for name in &names {
            let declared = op.path_params.iter().find(|(n, ..)| n == name);
            let schema = declared.map_or_else(|| json!({"type": "string"}), |(_, _, schema)| schema(&mut self.input).to_value());
            let mut parameter = json!({"name": name, "in": "path", "required": true, "schema": schema});
            if let Some((_, description, _)) = declared {
                parameter["description"] = json!(description);
            }
            parameters.push(parameter);
        }
        if let Some(query) = op.query {
            parameters.extend(query_parameters(path, query(&mut self.input).to_value()));
        }
        for (name, description) in &op.headers {
            parameters.push(json!({"name": name, "in": "header", "description": description, "schema": {"type": "string"}}));
        }
        let mut operation = json!({
            "tags": [op.tag],
            "summary": op.summary,
            "operationId": operation_id(method, path),
            "security": security(op.auth),
        });
        if let Some(description) = op.description {
            operation["description"] = json!(description);
        }
        if !parameters.is_empty() {
            operation["parameters"] = Value::Array(parameters);
        }
        match &op.body {
            Some(Body::Json(schema)) => {
                let schema = schema(&mut self.input).to_value();
                operation["requestBody"] =
                    json!({"required": !op.body_optional, "content": {"application/json": {"schema": schema}}});
            }
            Some(Body::Raw { media, description }) => {
                operation["requestBody"] = json!({"required": !op.body_optional, "description": description, "content": {*media: {"schema": {"type": "string"}}}});
            }
            None => {}
        }
        let mut responses = Map::new();
        for answer in &op.answers {
            // One status may come in several media types (JSON, or CSV when asked for).
            let response =
                responses.entry(answer.status.to_string()).or_insert_with(|| json!({"description": answer.description}));
            if let Some((media, schema)) = answer.content {
                let schema = schema.map_or_else(|| json!({}), |schema| schema(&mut self.output).to_value());
                response["content"][media] = json!({"schema": schema});
            }
        }
        for (status, name, description) in &op.answer_headers {
            let response = responses.get_mut(&status.to_string());
            let response = response.unwrap_or_else(|| panic!("{method} {path}: header {name} for an answer {status} it lacks"));
            response["headers"][*name] = json!({"description": description, "required": true, "schema": {"type": "string"}});
        }
        for status in op.usual_errors(!names.is_empty()) {
            responses.entry(status.to_string()).or_insert_with(|| error_response(status));
        }
        operation["responses"] = Value::Object(responses);
        operation
    }

    /// The router with every route added, and the document that describes them.
    pub(crate) fn finish(mut self) -> (axum::Router<AppState>, Value) {
        let mut router = axum::Router::new();
        for (path, methods) in std::mem::take(&mut self.methods) {
            router = router.route(path, methods);
        }
        let mut schemas = self.output.take_definitions(true);
        let inputs = self.input.take_definitions(true);
        let renames = input_names(&schemas, &inputs);
        for (name, schema) in inputs {
            let target = &renames[&name];
            if !schemas.contains_key(target) {
                let mut schema = schema;
                rename_refs(&mut schema, &renames);
                schemas.insert(target.clone(), schema);
            }
        }
        schemas.insert(
            "Error".into(),
            json!({
                "type": "object",
                "description": "Every error: what went wrong and, where it helps, what to do about it.",
                "properties": {"error": {"type": "string"}},
                "required": ["error"],
            }),
        );
        let mut paths = Value::Object(self.paths.into_iter().map(|(path, ops)| (path.to_string(), Value::Object(ops))).collect());
        rename_refs(&mut paths, &renames);
        let document = json!({
            "openapi": "3.1.0",
            "info": {
                "title": "Corral",
                "version": env!("CARGO_PKG_VERSION"),
                "description": "The REST API of Corral, an IoT platform: devices and their credentials, \
                    ingest, SQL, twins, commands, firmware campaigns, rules and alarms, retention and exports.",
            },
            "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
            "paths": paths,
            "components": {
                "schemas": schemas,
                "securitySchemes": {
                    "token": {"type": "http", "scheme": "bearer", "description": "An API token (`corral token create`)."},
                    "session": {"type": "apiKey", "in": "cookie", "name": crate::SESSION_COOKIE,
                        "description": "A console session; requests that change something also send its CSRF token in `x-csrf-token`."},
                    "device": {"type": "http", "scheme": "bearer",
                        "description": "A device's own token (or, over HTTPS, its client certificate)."},
                    "basic": {"type": "http", "scheme": "basic",
                        "description": "InfluxDB clients: any user name, an API or device token as the password."},
                    "query_token": {"type": "apiKey", "in": "query", "name": "p",
                        "description": "InfluxDB v1 clients: an API or device token as `p`."},
                },
            },
        });
        (router, document)
    }
}

fn security(auth: Auth) -> Value {
    match auth {
        Auth::Api => json!([{"token": []}, {"session": []}]),
        Auth::Device => json!([{"device": []}]),
        Auth::ApiOrDevice => json!([{"token": []}, {"session": []}, {"device": []}]),
        Auth::Influx => json!([{"token": []}, {"device": []}, {"basic": []}, {"query_token": []}]),
        Auth::Anyone => json!([]),
    }
}

fn error_response(status: u16) -> Value {
    let description = match status {
        400 => "The request is malformed: a parameter, the body or a header is invalid.",
        401 => "No credential, or one that is unknown, expired or revoked.",
        403 => "The credential may not do this (its role or tenant scope).",
        404 => "What the request names does not exist (or is outside the caller's tenant).",
        409 => "It conflicts with what exists.",
        412 => "The `If-Match` version is not the current one.",
        413 => "The body is larger than the limit; nothing was stored.",
        416 => "The range is outside the content.",
        426 => "The request must be a WebSocket upgrade.",
        429 => "Too many requests; retry later.",
        500 => "A fault of the server; nothing acknowledged was lost.",
        503 => "Starting up, shutting down or overloaded; retry after `Retry-After` seconds.",
        504 => "It took longer than the configured timeout.",
        _ => "An error.",
    };
    let mut response = json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    });
    if status == 503 {
        response["headers"] = json!({"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "string"}}});
    }
    if status == 401 {
        response["headers"] = json!({"WWW-Authenticate": {"description": "The scheme to use.", "schema": {"type": "string"}}});
    }
    response
}

/// `{id}` and `{command_id}` in `/devices/{id}/commands/{command_id}/response`.
fn template_names(path: &str) -> Vec<&str> {
    path.split('/').filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}')).collect()
}

/// A name for client generators, unique in the document: the method and the path's words
/// (`get_devices_id`, `post_api_v2_write`).
fn operation_id(method: &str, path: &str) -> String {
    let words: Vec<&str> = path
        .trim_start_matches("/api/v1")
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_start_matches('{').trim_end_matches('}'))
        .collect();
    format!("{method}_{}", words.join("_")).replace(['-', '.'], "_")
}

/// The query string's parameters: one per property of the query type's object schema. `null`
/// is dropped from their types: an absent parameter is how a query string says "none".
fn query_parameters(path: &str, schema: Value) -> Vec<Value> {
    let properties = schema
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("{path}: the query type must be a struct with named fields, its schema is {schema}"));
    let required: BTreeSet<&str> =
        schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    properties
        .iter()
        .map(|(name, property)| {
            let mut property = property.clone();
            let description = property.as_object_mut().and_then(|p| p.remove("description"));
            drop_null(&mut property);
            let mut parameter = json!({"name": name, "in": "query", "schema": property});
            if required.contains(name.as_str()) {
                parameter["required"] = json!(true);
            }
            if let Some(description) = description {
                parameter["description"] = description;
            }
            parameter
        })
        .collect()
}

fn drop_null(schema: &mut Value) {
    let Some(object) = schema.as_object_mut() else { return };
    if let Some(Value::Array(types)) = object.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types[0].clone();
            object.insert("type".into(), only);
        }
    }
    if let Some(Value::Array(options)) = object.get("anyOf") {
        let kept: Vec<Value> = options.iter().filter(|o| o.get("type") != Some(&json!("null"))).cloned().collect();
        if kept.len() == 1 {
            object.remove("anyOf");
            if let Value::Object(only) = &kept[0] {
                for (k, v) in only {
                    object.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
    }
    if let Some(Value::Array(options)) = object.get_mut("enum") {
        options.retain(|o| !o.is_null());
    }
}

/// What each request definition is called in the document: its own name when the response
/// definition of that name is the same schema (or there is none), else `<name>Input`. Repeated
/// until nothing changes, since renaming one definition changes those that refer to it.
fn input_names(outputs: &Map<String, Value>, inputs: &Map<String, Value>) -> BTreeMap<String, String> {
    let mut renames: BTreeMap<String, String> = inputs.keys().map(|k| (k.clone(), k.clone())).collect();
    loop {
        let mut changed = false;
        for (name, schema) in inputs {
            if renames[name] != *name {
                continue;
            }
            let mut schema = schema.clone();
            rename_refs(&mut schema, &renames);
            if outputs.get(name).is_some_and(|output| *output != schema) {
                renames.insert(name.clone(), format!("{name}Input"));
                changed = true;
            }
        }
        if !changed {
            return renames;
        }
    }
}

/// Points request schemas' references at their final names.
fn rename_refs(value: &mut Value, renames: &BTreeMap<String, String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get_mut("$ref")
                && let Some(name) = reference.strip_prefix(INPUT_REF)
            {
                let name = renames.get(name).cloned().unwrap_or_else(|| name.to_string());
                *reference = format!("#/components/schemas/{name}");
            }
            map.values_mut().for_each(|v| rename_refs(v, renames));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rename_refs(v, renames)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(schemars::JsonSchema, serde::Serialize, serde::Deserialize)]
    struct Thing {
        name: String,
        #[serde(default)]
        size: u32,
    }

    #[derive(schemars::JsonSchema, serde::Deserialize)]
    #[allow(dead_code)]
    struct Filter {
        /// Only these.
        name: Option<String>,
        limit: u32,
    }

    async fn nothing() {}

    #[test]
    fn a_type_read_and_written_differently_gets_two_schemas() {
        let (_, doc) = Api::new()
            .post("/things", nothing, Operation::new("things", "Adds a thing").body::<Thing>().returns::<Thing>(201, "Added"))
            .finish();
        let schemas = &doc["components"]["schemas"];
        assert_eq!(schemas["Thing"]["required"], json!(["name", "size"]), "serde always writes size");
        assert_eq!(schemas["ThingInput"]["required"], json!(["name"]), "size has a default when read");
        let op = &doc["paths"]["/things"]["post"];
        assert_eq!(op["requestBody"]["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ThingInput");
        assert_eq!(op["responses"]["201"]["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/Thing");
        assert_eq!(op["responses"]["413"]["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/Error");
    }

    #[test]
    fn path_and_query_parameters_are_described() {
        let (_, doc) = Api::new()
            .get("/things/{id}", nothing, Operation::new("things", "One thing").path::<i64>("id", "Its number").query::<Filter>())
            .finish();
        let parameters = doc["paths"]["/things/{id}"]["get"]["parameters"].as_array().unwrap().clone();
        assert_eq!(
            parameters[0],
            json!({"name": "id", "in": "path", "required": true, "description": "Its number",
            "schema": {"type": "integer", "format": "int64"}})
        );
        let name = parameters.iter().find(|p| p["name"] == "name").unwrap();
        assert_eq!(name["schema"]["type"], "string", "null is not a query value: {name}");
        assert_eq!(name["description"], "Only these.");
        assert!(name.get("required").is_none());
        let limit = parameters.iter().find(|p| p["name"] == "limit").unwrap();
        assert_eq!(limit["required"], true);
        assert!(doc["paths"]["/things/{id}"]["get"]["responses"]["404"].is_object());
    }

    #[test]
    #[should_panic(expected = "is not in the path")]
    fn a_misspelt_path_parameter_is_caught() {
        Api::new().get("/things/{id}", nothing, Operation::new("things", "One thing").path::<i64>("ident", "Its number"));
    }
}

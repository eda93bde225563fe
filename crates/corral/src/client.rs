//! Client commands: `corral device|token|sql` against a running server's REST API (`rules_cli`
//! adds `rule`, `alarm` and `outbox`; `ca_cli` adds `ca`).

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Map, Value, json};

#[derive(Debug, Clone, Args)]
pub struct Conn {
    /// Server base URL.
    #[arg(long, env = "CORRAL_URL", default_value = "http://127.0.0.1:8080")]
    pub(crate) server: String,
    /// API token [default: read from ./corral-data/admin.token or ./corral-demo/admin.token].
    #[arg(long, env = "CORRAL_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Register a device; prints its token once.
    Add {
        id: String,
        #[arg(long)]
        profile: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        site: Option<String>,
        /// Attribute as key=value (repeatable); values that parse as JSON (numbers, true) keep their type.
        #[arg(long = "attr", value_name = "KEY=VALUE")]
        attributes: Vec<String>,
        /// Tag (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[arg(long)]
        gateway: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// List devices, filtered; follows pages up to --limit.
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        site: Option<String>,
        #[arg(long)]
        profile: Option<String>,
        #[arg(long)]
        status: Option<String>,
        /// Free-text search over id, site, profile, tags and attributes.
        #[arg(long)]
        q: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show one device.
    Show {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Decommission a device (its token stops working; its data stays).
    Rm {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Issue a new token for a device; the old one stops working at once, or after
    /// --overlap-secs so the device can move to the new one without an outage.
    RotateToken {
        id: String,
        #[arg(long, default_value_t = 0)]
        overlap_secs: u64,
        #[command(flatten)]
        conn: Conn,
    },
    /// Set the device's pre-shared key for CoAP over DTLS (PSK identity = device id): a random
    /// 128-bit key (32 hex characters, usable as text), printed once, or the one put in at the
    /// factory (--key as text, --key-hex in hex; 16 to 64 bytes). With --remove the device can no
    /// longer open DTLS sessions. Open sessions of the device end either way.
    ///
    /// Then, e.g.: coap-client -u <id> -k <key> -m post -t json -e '{"t": 21.5}'
    ///   coaps://<host>/devices/<id>/telemetry
    Psk {
        id: String,
        #[arg(long, conflicts_with_all = ["remove", "key_hex"])]
        key: Option<String>,
        #[arg(long, conflicts_with = "remove")]
        key_hex: Option<String>,
        #[arg(long)]
        remove: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Approve a device registered by its certificate and waiting (pending-approval): it
    /// becomes active.
    Approve {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Reject a device waiting for approval: it is decommissioned.
    Reject {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token; prints it once.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = ["admin", "operator", "viewer"], default_value = "viewer")]
        role: String,
        /// Restrict the token to one tenant's devices and data.
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// List API tokens (never their secrets).
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Revoke an API token by id.
    Revoke {
        id: i64,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The query, e.g. "SELECT site, count(*) FROM devices GROUP BY site".
    sql: String,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    #[command(flatten)]
    conn: Conn,
}

pub(crate) struct Client {
    http: reqwest::Client,
    pub(crate) base: String,
    token: String,
}

impl Client {
    pub(crate) fn new(conn: &Conn) -> anyhow::Result<Client> {
        let token = match &conn.token {
            Some(t) => t.clone(),
            None => ["./corral-data/admin.token", "./corral-demo/admin.token"]
                .iter()
                .find_map(|p| std::fs::read_to_string(p).ok())
                .map(|s| s.trim().to_string())
                .context("no API token: pass --token or set CORRAL_TOKEN")?,
        };
        Ok(Client { http: reqwest::Client::new(), base: conn.server.trim_end_matches('/').to_string(), token })
    }

    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<reqwest::Response> {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| format!("cannot reach {}", self.base))?;
        if !response.status().is_success() {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
                .unwrap_or(text);
            bail!("{status}: {message}");
        }
        Ok(response)
    }

    pub(crate) async fn json(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        Ok(self.send(method, path, body).await?.json().await?)
    }
}

pub async fn device(cmd: DeviceCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    match cmd {
        DeviceCommand::Add { id, profile, tenant, site, attributes, tags, gateway, conn } => {
            let mut attrs = Map::new();
            for kv in attributes {
                let (k, v) = kv.split_once('=').with_context(|| format!("--attr {kv:?} is not KEY=VALUE"))?;
                attrs.insert(k.to_string(), serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string())));
            }
            let mut body = json!({ "id": id, "attributes": attrs, "tags": tags });
            for (key, value) in [("profile", profile), ("tenant", tenant), ("site", site), ("gateway", gateway)] {
                if let Some(v) = value {
                    body[key] = json!(v);
                }
            }
            let client = Client::new(&conn)?;
            let created = client.json(Method::POST, "/api/v1/devices", Some(body)).await?;
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&created)?);
            } else {
                println!("registered {id}\ntoken (shown once): {}", created["token"].as_str().unwrap_or(""));
                println!(
                    "\nsend data:\n  curl -X POST {}/api/v1/ingest -H 'Authorization: Bearer {}' \\\n    -H 'Content-Type: application/json' -d '{{\"temperature\": 21.5}}'",
                    client.base,
                    created["token"].as_str().unwrap_or("")
                );
            }
        }
        DeviceCommand::List { tenant, site, profile, status, q, limit, conn } => {
            let client = Client::new(&conn)?;
            let mut params: Vec<(&str, String)> = Vec::new();
            for (k, v) in [("tenant", tenant), ("site", site), ("profile", profile), ("status", status), ("q", q)] {
                if let Some(v) = v {
                    params.push((k, v));
                }
            }
            let mut devices = Vec::new();
            let mut after: Option<String> = None;
            let mut total = 0;
            while devices.len() < limit {
                let mut query = params.clone();
                query.push(("limit", (limit - devices.len()).min(1000).to_string()));
                if let Some(a) = &after {
                    query.push(("after", a.clone()));
                }
                let qs = serde_urlencoded(&query);
                let page = client.json(Method::GET, &format!("/api/v1/devices?{qs}"), None).await?;
                total = page["total"].as_u64().unwrap_or(0);
                devices.extend(page["devices"].as_array().cloned().unwrap_or_default());
                match page["next"].as_str() {
                    Some(next) => after = Some(next.to_string()),
                    None => break,
                }
            }
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&json!({ "devices": devices, "total": total }))?);
            } else {
                let columns = ["id", "profile", "tenant", "site", "status", "online", "last_seen"];
                let rows: Vec<Vec<String>> = devices.iter().map(|d| columns.iter().map(|c| cell(&d[*c])).collect()).collect();
                print_table(&columns, &rows);
                println!("({} of {total} devices)", devices.len());
            }
        }
        DeviceCommand::Show { id, conn } => {
            let device = Client::new(&conn)?.json(Method::GET, &format!("/api/v1/devices/{}", percent_encode(&id)), None).await?;
            println!("{}", serde_json::to_string_pretty(&device)?);
        }
        DeviceCommand::Rm { id, conn } => {
            let device =
                Client::new(&conn)?.json(Method::DELETE, &format!("/api/v1/devices/{}", percent_encode(&id)), None).await?;
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&device)?);
            } else {
                println!("decommissioned {id}");
            }
        }
        DeviceCommand::RotateToken { id, overlap_secs, conn } => {
            let path = format!("/api/v1/devices/{}/token?overlap_secs={overlap_secs}", percent_encode(&id));
            let out = Client::new(&conn)?.json(Method::POST, &path, None).await?;
            let old = match out["old_token_valid_until"].as_str() {
                Some(until) => format!("the old token works until {until}"),
                None => "the old token no longer works".to_string(),
            };
            println!(
                "{}",
                if conn.json {
                    serde_json::to_string_pretty(&out)?
                } else {
                    format!("new token for {id} (shown once): {}\n{old}", cell(&out["token"]))
                }
            );
        }
        DeviceCommand::Psk { id, key, key_hex, remove, conn } => {
            let path = format!("/api/v1/devices/{}/psk", percent_encode(&id));
            let client = Client::new(&conn)?;
            if remove {
                client.send(Method::DELETE, &path, None).await?;
                println!(
                    "{}",
                    if conn.json {
                        json!({ "device": id, "has_psk": false }).to_string()
                    } else {
                        format!("{id} has no pre-shared key now")
                    }
                );
            } else {
                let out = client.json(Method::PUT, &path, Some(json!({ "key": key, "key_hex": key_hex }))).await?;
                if conn.json {
                    println!("{}", serde_json::to_string_pretty(&out)?);
                } else {
                    let shown = if out["generated"] == true { " (shown once)" } else { "" };
                    let key = out["key"].as_str().map(|k| format!("key{shown}: {k}\n")).unwrap_or_default();
                    println!("PSK identity: {id}\n{key}key in hex{shown}: {}", cell(&out["key_hex"]));
                }
            }
        }
        DeviceCommand::Approve { id, conn } => decide(&id, "approve", &conn).await?,
        DeviceCommand::Reject { id, conn } => decide(&id, "reject", &conn).await?,
    }
    Ok(())
}

/// `corral device approve|reject`.
async fn decide(id: &str, verb: &str, conn: &Conn) -> anyhow::Result<()> {
    let device =
        Client::new(conn)?.json(reqwest::Method::POST, &format!("/api/v1/devices/{}/{verb}", percent_encode(id)), None).await?;
    println!(
        "{}",
        if conn.json { serde_json::to_string_pretty(&device)? } else { format!("{id} is now {}", cell(&device["status"])) }
    );
    Ok(())
}

pub async fn token(cmd: TokenCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    match cmd {
        TokenCommand::Create { name, role, tenant, conn } => {
            let body = json!({ "name": name, "role": role, "tenant": tenant });
            let out = Client::new(&conn)?.json(Method::POST, "/api/v1/tokens", Some(body)).await?;
            println!(
                "{}",
                if conn.json {
                    serde_json::to_string_pretty(&out)?
                } else {
                    format!("token (shown once): {}", cell(&out["token"]))
                }
            );
        }
        TokenCommand::List { conn } => {
            let out = Client::new(&conn)?.json(Method::GET, "/api/v1/tokens", None).await?;
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                let columns = ["id", "name", "role", "tenant", "revoked", "created_at"];
                let rows: Vec<Vec<String>> = out["tokens"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| columns.iter().map(|c| cell(&t[*c])).collect())
                    .collect();
                print_table(&columns, &rows);
            }
        }
        TokenCommand::Revoke { id, conn } => {
            Client::new(&conn)?.send(Method::DELETE, &format!("/api/v1/tokens/{id}"), None).await?;
            println!("revoked token {id}");
        }
    }
    Ok(())
}

pub async fn sql(args: SqlArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.conn)?;
    let body = json!({ "sql": args.sql });
    if let Format::Csv = args.format {
        let response = client
            .http
            .post(format!("{}/api/v1/query", client.base))
            .bearer_auth(&client.token)
            .header("Accept", "text/csv")
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("{status}: {text}");
        }
        print!("{text}");
        return Ok(());
    }
    let out = client.json(reqwest::Method::POST, "/api/v1/query", Some(body)).await?;
    if matches!(args.format, Format::Json) || args.conn.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let columns: Vec<String> = out["columns"].as_array().into_iter().flatten().map(cell).collect();
    let rows: Vec<Vec<String>> =
        out["rows"].as_array().into_iter().flatten().map(|r| r.as_array().into_iter().flatten().map(cell).collect()).collect();
    let headers: Vec<&str> = columns.iter().map(String::as_str).collect();
    print_table(&headers, &rows);
    let truncated = if out["truncated"].as_bool() == Some(true) { ", truncated" } else { "" };
    println!("({} rows{truncated})", rows.len());
    Ok(())
}

/// The server's answer as it came, for `--json`.
pub(crate) fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub(crate) fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(crate) fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count()).min(60);
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> =
            cells.iter().zip(&widths).map(|(c, w)| format!("{:<w$}", c.chars().take(*w).collect::<String>(), w = *w)).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    line(widths.iter().map(|w| "-".repeat(*w)).collect());
    for row in rows {
        line(row.clone());
    }
}

pub(crate) fn serde_urlencoded(pairs: &[(&str, String)]) -> String {
    pairs.iter().map(|(k, v)| format!("{k}={}", percent_encode(v))).collect::<Vec<_>>().join("&")
}

pub(crate) fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

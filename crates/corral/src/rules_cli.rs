//! `corral rule|alarm|outbox`: rules, alarms and action deliveries of a running server.

use crate::client::{Client, Conn, cell, print_json, print_table, serde_urlencoded};
use anyhow::Context;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

// `Add` carries every flag of a rule; the enum is parsed once per process, so its size is moot.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum RuleCommand {
    /// Create a rule from flags or from a JSON file (`--file rule.json`, `-` for stdin).
    ///
    /// Examples:
    ///   corral rule add --name "vaccines too warm" --profile reefer \
    ///     --condition "temperature > 8 AND attributes.cargo = 'vaccines'" --clear "temperature < 7" \
    ///     --for 5m --severity critical --webhook https://ops.example.com/hooks/corral
    ///   corral rule add --name "reefer offline" --profile reefer --absence 15m
    #[command(verbatim_doc_comment)]
    Add {
        /// The whole rule as JSON (the REST body); other flags are then ignored.
        #[arg(long, value_name = "PATH")]
        file: Option<String>,
        #[arg(long, required_unless_present = "file")]
        name: Option<String>,
        /// SQL boolean expression over fields, attributes.<name> and windows (`avg(t) over 10m`).
        #[arg(long)]
        condition: Option<String>,
        /// Clears the alarm (hysteresis); default: when the condition is false.
        #[arg(long)]
        clear: Option<String>,
        /// The condition must hold this long before the alarm is raised (30s, 5m, 1h).
        #[arg(long = "for", value_name = "DURATION")]
        hold: Option<String>,
        /// Raise when a device sends nothing for this long (instead of --condition).
        #[arg(long, value_name = "DURATION")]
        absence: Option<String>,
        #[arg(long, value_parser = ["critical", "major", "minor", "warning", "info"], default_value = "warning")]
        severity: String,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        profile: Option<String>,
        #[arg(long)]
        site: Option<String>,
        #[arg(long)]
        tag: Option<String>,
        #[arg(long)]
        device: Option<String>,
        #[arg(long, default_value = "telemetry")]
        table: String,
        /// POST raised alarms to this URL (signed; the secret is printed once).
        #[arg(long)]
        webhook: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// List rules.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Show one rule as JSON.
    Show {
        id: i64,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete a rule; its open alarms are cleared.
    Rm {
        id: i64,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Debug, Subcommand)]
pub enum AlarmCommand {
    /// List alarms, newest first.
    List {
        /// Only alarms not cleared.
        #[arg(long)]
        open: bool,
        #[arg(long, value_parser = ["active", "acknowledged", "cleared"])]
        status: Option<String>,
        #[arg(long)]
        device: Option<String>,
        #[arg(long)]
        severity: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show one alarm with its comments.
    Show {
        id: i64,
        #[command(flatten)]
        conn: Conn,
    },
    /// Acknowledge an alarm (someone is on it).
    Ack {
        id: i64,
        #[command(flatten)]
        conn: Conn,
    },
    /// Clear an alarm by hand.
    Clear {
        id: i64,
        #[command(flatten)]
        conn: Conn,
    },
    /// Add a comment to an alarm.
    Comment {
        id: i64,
        text: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// List action deliveries (webhooks, NATS, MQTT, commands), newest first.
    List {
        #[arg(long, value_parser = ["pending", "delivered", "dead"])]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        conn: Conn,
    },
    /// Deliver a dead (or waiting) entry again now, with a fresh attempt budget.
    Retry {
        id: i64,
        #[command(flatten)]
        conn: Conn,
    },
}

pub async fn rule(cmd: RuleCommand) -> anyhow::Result<()> {
    match cmd {
        RuleCommand::Add {
            file,
            name,
            condition,
            clear,
            hold,
            absence,
            severity,
            tenant,
            profile,
            site,
            tag,
            device,
            table,
            webhook,
            conn,
        } => {
            let body: Value = match file {
                Some(path) => {
                    let text = if path == "-" {
                        std::io::read_to_string(std::io::stdin())?
                    } else {
                        std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?
                    };
                    serde_json::from_str(&text).with_context(|| format!("{path} is not JSON"))?
                }
                None => {
                    let mut body = json!({"name": name, "severity": severity, "table": table,
                        "scope": {"profile": profile, "site": site, "tag": tag, "device": device}});
                    for (key, value) in
                        [("condition", condition), ("clear", clear), ("for", hold), ("absence", absence), ("tenant", tenant)]
                    {
                        if let Some(v) = value {
                            body[key] = json!(v);
                        }
                    }
                    if let Some(url) = webhook {
                        body["actions"] = json!([{"type": "webhook", "url": url}]);
                    }
                    body
                }
            };
            let out = Client::new(&conn)?.json(Method::POST, "/api/v1/rules", Some(body)).await?;
            if conn.json {
                return print_json(&out);
            }
            let rule = &out["rule"];
            println!("created rule {} ({})", cell(&rule["id"]), cell(&rule["name"]));
            for action in rule["actions"].as_array().into_iter().flatten() {
                if action["type"] == "webhook" {
                    println!("webhook {} signing secret (shown once): {}", cell(&action["url"]), cell(&action["secret"]));
                }
            }
        }
        RuleCommand::List { conn } => {
            let out = Client::new(&conn)?.json(Method::GET, "/api/v1/rules", None).await?;
            if conn.json {
                return print_json(&out);
            }
            let columns = ["id", "name", "tenant", "severity", "enabled", "condition"];
            let rows: Vec<Vec<String>> = out["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    let mut row: Vec<String> = columns.iter().map(|c| cell(&r[*c])).collect();
                    if r["condition"].is_null() {
                        row[5] = format!("no data for {}", cell(&r["absence"]));
                    }
                    row
                })
                .collect();
            print_table(&columns, &rows);
        }
        RuleCommand::Show { id, conn } => {
            print_json(&Client::new(&conn)?.json(Method::GET, &format!("/api/v1/rules/{id}"), None).await?)?
        }
        RuleCommand::Rm { id, conn } => {
            Client::new(&conn)?.send(Method::DELETE, &format!("/api/v1/rules/{id}"), None).await?;
            println!("deleted rule {id}");
        }
    }
    Ok(())
}

pub async fn alarm(cmd: AlarmCommand) -> anyhow::Result<()> {
    match cmd {
        AlarmCommand::List { open, status, device, severity, limit, conn } => {
            let mut params = vec![("limit", limit.min(1000).to_string())];
            if open {
                params.push(("open", "true".into()));
            }
            for (k, v) in [("status", status), ("device", device), ("severity", severity)] {
                if let Some(v) = v {
                    params.push((k, v));
                }
            }
            let out =
                Client::new(&conn)?.json(Method::GET, &format!("/api/v1/alarms?{}", serde_urlencoded(&params)), None).await?;
            if conn.json {
                return print_json(&out);
            }
            let columns = ["id", "severity", "status", "device", "rule", "count", "last_at", "acknowledged_by"];
            let rows: Vec<Vec<String>> =
                out["alarms"].as_array().into_iter().flatten().map(|a| columns.iter().map(|c| cell(&a[*c])).collect()).collect();
            print_table(&columns, &rows);
        }
        AlarmCommand::Show { id, conn } => {
            print_json(&Client::new(&conn)?.json(Method::GET, &format!("/api/v1/alarms/{id}"), None).await?)?
        }
        AlarmCommand::Ack { id, conn } => {
            let out = Client::new(&conn)?.json(Method::POST, &format!("/api/v1/alarms/{id}/ack"), None).await?;
            if conn.json {
                return print_json(&out);
            }
            println!("alarm {id}: {} by {}", cell(&out["alarm"]["status"]), cell(&out["alarm"]["acknowledged_by"]));
        }
        AlarmCommand::Clear { id, conn } => {
            let out = Client::new(&conn)?.json(Method::POST, &format!("/api/v1/alarms/{id}/clear"), None).await?;
            if conn.json {
                return print_json(&out);
            }
            println!("alarm {id}: cleared by {}", cell(&out["alarm"]["cleared_by"]));
        }
        AlarmCommand::Comment { id, text, conn } => {
            let out = Client::new(&conn)?
                .json(Method::POST, &format!("/api/v1/alarms/{id}/comments"), Some(json!({"text": text})))
                .await?;
            if conn.json {
                return print_json(&out);
            }
            println!("comment {} added to alarm {id}", cell(&out["comment"]["id"]));
        }
    }
    Ok(())
}

pub async fn outbox(cmd: OutboxCommand) -> anyhow::Result<()> {
    match cmd {
        OutboxCommand::List { state, limit, conn } => {
            let mut params = vec![("limit", limit.min(1000).to_string())];
            if let Some(s) = state {
                params.push(("state", s));
            }
            let out =
                Client::new(&conn)?.json(Method::GET, &format!("/api/v1/outbox?{}", serde_urlencoded(&params)), None).await?;
            if conn.json {
                return print_json(&out);
            }
            let columns = ["id", "state", "event", "alarm_id", "attempts", "next_attempt_at", "last_error"];
            let rows: Vec<Vec<String>> = out["entries"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    let mut row: Vec<String> = columns.iter().map(|c| cell(&e[*c])).collect();
                    row[2] = format!("{} → {}", cell(&e["event"]), cell(&e["action"]["type"]));
                    row
                })
                .collect();
            print_table(&columns, &rows);
        }
        OutboxCommand::Retry { id, conn } => {
            let out = Client::new(&conn)?.json(Method::POST, &format!("/api/v1/outbox/{id}/retry"), None).await?;
            if conn.json {
                return print_json(&out);
            }
            println!("outbox entry {id} is {} again", cell(&out["entry"]["state"]));
        }
    }
    Ok(())
}

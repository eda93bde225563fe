//! `corral broker-user add|set|rm|list`: MQTT clients that are neither devices nor API tokens
//! (a gateway, a dashboard, a bridge), with a password and topic rules.

use crate::client::{Client, Conn, cell, percent_encode, print_table};
use crate::user_cli::read_password;
use anyhow::bail;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

#[derive(Debug, Subcommand)]
pub enum BrokerUserCommand {
    /// Add a broker user. Without --password-stdin a password is generated and printed once.
    ///
    /// Each --allow is ACCESS PATTERN: ACCESS is read, write or readwrite; PATTERN a topic
    /// filter in which %u is the user name and %c the client id (as Mosquitto's `pattern`).
    ///
    /// Example: corral broker-user add line-3-gateway --tenant acme \
    ///            --allow 'readwrite plants/line-3/%c/#' --allow 'read devices/+/telemetry'
    #[command(verbatim_doc_comment)]
    Add {
        name: String,
        /// Confine the user to one tenant's messages.
        #[arg(long)]
        tenant: Option<String>,
        /// A topic rule, `ACCESS PATTERN` (repeatable).
        #[arg(long = "allow", value_name = "ACCESS PATTERN")]
        rules: Vec<String>,
        /// Read the password (at least 12 characters) from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Replace a broker user's rules (--allow, repeatable) or password; its connections end.
    Set {
        name: String,
        #[arg(long = "allow", value_name = "ACCESS PATTERN")]
        rules: Vec<String>,
        /// Remove every rule (the user then may use no topic).
        #[arg(long, conflicts_with = "rules")]
        no_rules: bool,
        /// Read a new password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Remove a broker user; its connections end.
    Rm {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// List broker users and their rules (never their passwords).
    List {
        #[command(flatten)]
        conn: Conn,
    },
}

/// `readwrite sensors/%u/#` → `{"access": "readwrite", "pattern": "sensors/%u/#"}`.
fn parse_rule(text: &str) -> anyhow::Result<Value> {
    let Some((access, pattern)) = text.trim().split_once(char::is_whitespace) else {
        bail!("--allow {text:?}: write ACCESS PATTERN, e.g. --allow 'read sensors/#'");
    };
    if !["read", "write", "readwrite"].contains(&access) {
        bail!("--allow {text:?}: ACCESS is read, write or readwrite");
    }
    Ok(json!({ "access": access, "pattern": pattern.trim() }))
}

fn rules_text(user: &Value) -> String {
    let rules = user["rules"].as_array().cloned().unwrap_or_default();
    rules.iter().map(|r| format!("{} {}", cell(&r["access"]), cell(&r["pattern"]))).collect::<Vec<_>>().join(", ")
}

pub async fn broker_user(cmd: BrokerUserCommand) -> anyhow::Result<()> {
    match cmd {
        BrokerUserCommand::Add { name, tenant, rules, password_stdin, conn } => {
            let rules = rules.iter().map(|r| parse_rule(r)).collect::<anyhow::Result<Vec<_>>>()?;
            let password = if password_stdin { Some(read_password()?) } else { None };
            let body = json!({ "name": name, "tenant": tenant, "password": password, "rules": rules });
            let out = Client::new(&conn)?.json(Method::POST, "/api/v1/broker-users", Some(body)).await?;
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                println!("added broker user {name}: {}", rules_text(&out["user"]));
                if let Some(p) = out["password"].as_str() {
                    println!("password (shown once): {p}");
                }
            }
        }
        BrokerUserCommand::Set { name, rules, no_rules, password_stdin, conn } => {
            let mut body = json!({});
            if !rules.is_empty() || no_rules {
                body["rules"] = rules.iter().map(|r| parse_rule(r)).collect::<anyhow::Result<Vec<_>>>()?.into();
            }
            if password_stdin {
                body["password"] = read_password()?.into();
            }
            if body.as_object().is_some_and(|b| b.is_empty()) {
                bail!("nothing to change: give --allow, --no-rules or --password-stdin");
            }
            let path = format!("/api/v1/broker-users/{}", percent_encode(&name));
            let out = Client::new(&conn)?.json(Method::PATCH, &path, Some(body)).await?;
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                println!("changed broker user {name} ({}); its connections ended", rules_text(&out));
            }
        }
        BrokerUserCommand::Rm { name, conn } => {
            let path = format!("/api/v1/broker-users/{}", percent_encode(&name));
            Client::new(&conn)?.send(Method::DELETE, &path, None).await?;
            println!(
                "{}",
                if conn.json { json!({ "removed": name }).to_string() } else { format!("removed broker user {name}") }
            );
        }
        BrokerUserCommand::List { conn } => {
            let out = Client::new(&conn)?.json(Method::GET, "/api/v1/broker-users", None).await?;
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                let users = out["users"].as_array().cloned().unwrap_or_default();
                let rows: Vec<Vec<String>> = users
                    .iter()
                    .map(|u| vec![cell(&u["name"]), cell(&u["tenant"]), rules_text(u), cell(&u["updated_at"])])
                    .collect();
                print_table(&["name", "tenant", "rules", "changed"], &rows);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_read_as_access_then_pattern() {
        assert_eq!(parse_rule("readwrite sensors/%u/#").unwrap(), json!({"access": "readwrite", "pattern": "sensors/%u/#"}));
        assert!(parse_rule("sensors/#").is_err());
        assert!(parse_rule("admin sensors/#").is_err());
    }
}

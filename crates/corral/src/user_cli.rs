//! `corral user add|passwd|rm|list`: the people who sign in to the web console.

use crate::client::{Client, Conn, cell, percent_encode, print_table};
use anyhow::Context;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a console user. Without --password-stdin a password is generated and printed once.
    ///
    /// Example: corral user add alice --role operator --tenant acme
    ///          printf '%s\n' "$PASSWORD" | corral user add bob --role viewer --password-stdin
    #[command(verbatim_doc_comment)]
    Add {
        name: String,
        #[arg(long, value_parser = ["admin", "operator", "viewer"], default_value = "viewer")]
        role: String,
        /// Confine the user to one tenant's devices and data.
        #[arg(long)]
        tenant: Option<String>,
        /// Read the password (at least 12 characters) from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Set a user's password (generated and printed once without --password-stdin); the user's
    /// open sessions end.
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Remove a user; its sessions end.
    Rm {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// List users (never their passwords).
    List {
        #[command(flatten)]
        conn: Conn,
    },
}

/// The first line of standard input, without its line ending.
pub(crate) fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).context("reading the password from standard input")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

pub async fn user(cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Add { name, role, tenant, password_stdin, conn } => {
            let password = if password_stdin { Some(read_password()?) } else { None };
            let body = json!({ "name": name, "role": role, "tenant": tenant, "password": password });
            let out = Client::new(&conn)?.json(Method::POST, "/api/v1/users", Some(body)).await?;
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                println!("added {} ({})", name, cell(&out["user"]["role"]));
                if let Some(p) = out["password"].as_str() {
                    println!("password (shown once): {p}");
                }
            }
        }
        UserCommand::Passwd { name, password_stdin, conn } => {
            let password = if password_stdin { Some(read_password()?) } else { None };
            let path = format!("/api/v1/users/{}/password", percent_encode(&name));
            let out = Client::new(&conn)?.json(Method::PUT, &path, Some(json!({ "password": password }))).await?;
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                println!("password of {name} changed; its sessions ended");
                if let Some(p) = out["password"].as_str() {
                    println!("new password (shown once): {p}");
                }
            }
        }
        UserCommand::Rm { name, conn } => {
            Client::new(&conn)?.send(Method::DELETE, &format!("/api/v1/users/{}", percent_encode(&name)), None).await?;
            println!("{}", if conn.json { json!({ "removed": name }).to_string() } else { format!("removed {name}") });
        }
        UserCommand::List { conn } => {
            let out = Client::new(&conn)?.json(Method::GET, "/api/v1/users", None).await?;
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                let users = out["users"].as_array().cloned().unwrap_or_default();
                let rows: Vec<Vec<String>> = users
                    .iter()
                    .map(|u: &Value| {
                        ["name", "role", "tenant", "created_at", "password_changed_at"].iter().map(|k| cell(&u[*k])).collect()
                    })
                    .collect();
                print_table(&["name", "role", "tenant", "created", "password changed"], &rows);
            }
        }
    }
    Ok(())
}

//! `corral export`: scheduled exports of a running server (to a folder or an S3 bucket).

use crate::client::{Client, Conn, cell, print_json, print_table};
use clap::Subcommand;
use reqwest::Method;
use serde_json::json;

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Export a table (or a query with a `time` column) on a schedule: each run writes the rows
    /// that are new since the last one, one file per UTC day, and lists them in manifest.json.
    ///
    /// Examples:
    ///   corral export add nightly --table telemetry --to s3://lake/corral --every 1d
    ///   corral export add hot-reefers --to finance/reefers --every 1h --format csv \
    ///     --sql "SELECT time, device, temperature FROM telemetry WHERE temperature > 8"
    #[command(verbatim_doc_comment)]
    Add {
        name: String,
        #[arg(long, conflicts_with = "sql", required_unless_present = "sql")]
        table: Option<String>,
        #[arg(long)]
        sql: Option<String>,
        /// `s3://bucket/prefix`, or a folder under the server's exports.dir.
        #[arg(long = "to", value_name = "DESTINATION")]
        destination: String,
        /// How often it runs (15m, 1h, 1d).
        #[arg(long)]
        every: String,
        #[arg(long, value_parser = ["parquet", "csv"], default_value = "parquet")]
        format: String,
        /// How far behind the present a run stops, for rows that arrive late [default: 2m].
        #[arg(long)]
        delay: Option<String>,
        /// Export from this time (RFC 3339) [default: the oldest stored row].
        #[arg(long)]
        from: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// List the exports and how their last run went.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Show one export with its recent runs (JSON).
    Show {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Run an export now; prints what it wrote.
    Run {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Remove an export; the files it wrote stay.
    Rm {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
}

pub async fn export(cmd: ExportCommand) -> anyhow::Result<()> {
    match cmd {
        ExportCommand::Add { name, table, sql, destination, every, format, delay, from, conn } => {
            let body = json!({ "name": name, "table": table, "sql": sql, "destination": destination,
                               "every": every, "format": format, "delay": delay, "from": from });
            let out = Client::new(&conn)?.json(Method::POST, "/api/v1/exports", Some(body)).await?;
            if conn.json {
                return print_json(&out);
            }
            println!("export {name} created; its first run starts now (`corral export show {name}`)");
        }
        ExportCommand::List { conn } => {
            let out = Client::new(&conn)?.json(Method::GET, "/api/v1/exports", None).await?;
            if conn.json {
                return print_json(&out);
            }
            let columns = ["name", "source", "destination", "every", "exported_through", "failures", "last run"];
            let rows: Vec<Vec<String>> = out["exports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    let spec = &e["spec"];
                    let source = if spec["table"].is_null() { "(query)".to_string() } else { cell(&spec["table"]) };
                    let last = &e["runs"][0];
                    let last = match (&last["error"], &last["rows"]) {
                        (serde_json::Value::String(error), _) => format!("failed: {error}"),
                        (_, rows) if !rows.is_null() => format!("{} rows", cell(rows)),
                        _ => "-".into(),
                    };
                    vec![
                        cell(&spec["name"]),
                        source,
                        cell(&spec["destination"]),
                        cell(&spec["every"]),
                        cell(&e["exported_through"]),
                        cell(&e["failures_in_a_row"]),
                        last,
                    ]
                })
                .collect();
            print_table(&columns, &rows);
        }
        ExportCommand::Show { name, conn } => {
            print_json(&Client::new(&conn)?.json(Method::GET, &format!("/api/v1/exports/{name}"), None).await?)?
        }
        ExportCommand::Run { name, conn } => {
            let out = Client::new(&conn)?.json(Method::POST, &format!("/api/v1/exports/{name}/run"), None).await?;
            if conn.json {
                return print_json(&out);
            }
            let run = &out["run"];
            println!("export {name}: {} rows in {} files", cell(&run["rows"]), run["files"].as_array().map_or(0, Vec::len));
            for file in run["files"].as_array().into_iter().flatten() {
                println!("  {} ({} rows, {} bytes)", cell(&file["path"]), cell(&file["rows"]), cell(&file["bytes"]));
            }
        }
        ExportCommand::Rm { name, conn } => {
            Client::new(&conn)?.send(Method::DELETE, &format!("/api/v1/exports/{name}"), None).await?;
            println!("export {name} removed; its files stay where they are");
        }
    }
    Ok(())
}

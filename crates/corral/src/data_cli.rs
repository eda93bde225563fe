//! `corral data`: how long a running server keeps rows (retention), the rollups it keeps beside
//! them, and deleting one device's rows.

use crate::client::{Client, Conn, cell, print_json, print_table, serde_urlencoded};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Retention policies: how long a table keeps rows, for every device or one tenant's.
    #[command(subcommand)]
    Retention(RetentionCommand),
    /// Rollups: coarser tables (avg/min/max/count/first/last per device and bucket) kept up to
    /// date as data lands, so summaries outlive the raw rows.
    #[command(subcommand)]
    Rollup(RollupCommand),
    /// Delete every row a device wrote, in every table (rollups too). The device stays
    /// registered; decommission it with `corral device rm`.
    ///
    /// Example:
    ///   corral data delete-device truck-17
    #[command(verbatim_doc_comment)]
    DeleteDevice {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// List the policies (those from the configuration cannot be changed here).
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Keep TABLE's rows for KEEP (90d, 36h, 2w); with --tenant, only for that tenant's devices,
    /// overriding the table's own policy for them.
    ///
    /// Examples:
    ///   corral data retention set telemetry 30d
    ///   corral data retention set telemetry 365d --tenant acme
    ///   corral data retention set telemetry_1h 730d
    #[command(verbatim_doc_comment)]
    Set {
        table: String,
        keep: String,
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Remove a policy set here: the table (or tenant) then keeps its rows.
    Rm {
        table: String,
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Apply every policy now instead of at the next scheduled run; prints what was deleted.
    Enforce {
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Debug, Subcommand)]
pub enum RollupCommand {
    /// List the rollups.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Create a rollup of SOURCE into NAME; it fills from the stored rows, then follows new ones.
    ///
    /// Example:
    ///   corral data rollup add telemetry_1h --from telemetry --every 1h
    ///   corral data rollup add fuel_1d --from telemetry --every 1d --fields fuel --aggregates min,max,last
    #[command(verbatim_doc_comment)]
    Add {
        name: String,
        #[arg(long = "from", value_name = "TABLE")]
        source: String,
        /// Bucket width: whole minutes that divide a day (1m, 15m, 1h, 6h, 1d).
        #[arg(long)]
        every: String,
        /// Comma-separated: avg, min, max, count, first, last, sum [default: all but sum].
        #[arg(long, value_delimiter = ',')]
        aggregates: Vec<String>,
        /// Comma-separated numeric fields [default: every numeric field].
        #[arg(long, value_delimiter = ',')]
        fields: Vec<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Stop maintaining a rollup; its table keeps the rows it has.
    Rm {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
}

fn print_deletions(out: &Value) {
    let columns = ["table", "reason", "rows_deleted", "files_dropped", "files_rewritten", "kept_from"];
    let rows: Vec<Vec<String>> =
        out["deletions"].as_array().into_iter().flatten().map(|d| columns.iter().map(|c| cell(&d[*c])).collect()).collect();
    if rows.is_empty() {
        println!("nothing to delete");
    } else {
        print_table(&columns, &rows);
    }
}

pub async fn data(cmd: DataCommand) -> anyhow::Result<()> {
    match cmd {
        DataCommand::Retention(cmd) => retention(cmd).await,
        DataCommand::Rollup(cmd) => rollup(cmd).await,
        DataCommand::DeleteDevice { id, conn } => {
            let out = Client::new(&conn)?.json(Method::DELETE, &format!("/api/v1/devices/{id}/data"), None).await?;
            if conn.json {
                return print_json(&out);
            }
            println!("deleted {} rows of {id}", cell(&out["rows_deleted"]));
            print_deletions(&out);
            Ok(())
        }
    }
}

async fn retention(cmd: RetentionCommand) -> anyhow::Result<()> {
    match cmd {
        RetentionCommand::List { conn } => {
            let out = Client::new(&conn)?.json(Method::GET, "/api/v1/retention", None).await?;
            if conn.json {
                return print_json(&out);
            }
            let columns = ["table", "tenant", "keep", "source"];
            let rows: Vec<Vec<String>> = out["policies"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| columns.iter().map(|c| cell(&p[*c])).collect())
                .collect();
            print_table(&columns, &rows);
        }
        RetentionCommand::Set { table, keep, tenant, conn } => {
            let body = json!({ "keep": keep, "tenant": tenant });
            let out = Client::new(&conn)?.json(Method::PUT, &format!("/api/v1/retention/{table}"), Some(body)).await?;
            if conn.json {
                return print_json(&out);
            }
            let scope = tenant.map(|t| format!(" of tenant {t}")).unwrap_or_default();
            println!("{table} keeps rows{scope} for {keep}; older rows go at the next run (`corral data retention enforce` now)");
        }
        RetentionCommand::Rm { table, tenant, conn } => {
            let query = tenant.as_ref().map(|t| format!("?{}", serde_urlencoded(&[("tenant", t.clone())]))).unwrap_or_default();
            Client::new(&conn)?.send(Method::DELETE, &format!("/api/v1/retention/{table}{query}"), None).await?;
            println!("removed the retention policy of {table}");
        }
        RetentionCommand::Enforce { conn } => {
            let out = Client::new(&conn)?.json(Method::POST, "/api/v1/retention/enforce", None).await?;
            if conn.json {
                return print_json(&out);
            }
            print_deletions(&out);
        }
    }
    Ok(())
}

async fn rollup(cmd: RollupCommand) -> anyhow::Result<()> {
    match cmd {
        RollupCommand::List { conn } => {
            let out = Client::new(&conn)?.json(Method::GET, "/api/v1/rollups", None).await?;
            if conn.json {
                return print_json(&out);
            }
            let columns = ["name", "source", "every", "aggregates", "fields"];
            let rows: Vec<Vec<String>> =
                out["rollups"].as_array().into_iter().flatten().map(|r| columns.iter().map(|c| cell(&r[*c])).collect()).collect();
            print_table(&columns, &rows);
        }
        RollupCommand::Add { name, source, every, aggregates, fields, conn } => {
            let body = json!({ "name": name, "source": source, "every": every, "aggregates": aggregates, "fields": fields });
            let out = Client::new(&conn)?.json(Method::POST, "/api/v1/rollups", Some(body)).await?;
            if conn.json {
                return print_json(&out);
            }
            println!("rollup {name} created; it fills from {source}'s stored rows in the background");
        }
        RollupCommand::Rm { name, conn } => {
            Client::new(&conn)?.send(Method::DELETE, &format!("/api/v1/rollups/{name}"), None).await?;
            println!("rollup {name} is no longer maintained; its table keeps its rows");
        }
    }
    Ok(())
}

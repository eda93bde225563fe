//! `corral ca`: certificate authorities and device certificates against a running server
//! (see docs/certificates.md).

use crate::client::{Client, Conn, cell, percent_encode, print_table};
use anyhow::Context;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a CA for a tenant; Corral keeps its key and issues device certificates with it.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, default_value_t = 3650)]
        valid_days: u32,
        #[command(flatten)]
        register: Register,
        #[command(flatten)]
        conn: Conn,
    },
    /// Register your own CA by its certificate (PEM file); Corral only verifies against it.
    Import {
        certificate: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        register: Register,
        #[command(flatten)]
        conn: Conn,
    },
    /// List the CAs.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Issue a certificate for a device: for the key of --csr, else for a key made now (written
    /// to --key-out, shown nowhere else).
    Issue {
        device: String,
        #[arg(long)]
        csr: Option<PathBuf>,
        /// Where to write the certificate [default: <device>.pem].
        #[arg(long)]
        cert_out: Option<PathBuf>,
        /// Where to write a key made by Corral [default: <device>.key, mode 0600].
        #[arg(long)]
        key_out: Option<PathBuf>,
        #[arg(long)]
        ca: Option<String>,
        #[arg(long, default_value_t = 365)]
        valid_days: u32,
        #[command(flatten)]
        conn: Conn,
    },
    /// A device's certificates.
    Certs {
        device: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Revoke a device's certificate by serial or SHA-256 fingerprint.
    Revoke {
        device: String,
        serial: String,
        #[command(flatten)]
        conn: Conn,
    },
}

/// Just-in-time registration of the devices a CA's certificates name.
#[derive(Debug, clap::Args)]
pub struct Register {
    /// Create unknown devices at their first connection.
    #[arg(long)]
    auto_register: bool,
    /// Their profile.
    #[arg(long, requires = "auto_register")]
    register_profile: Option<String>,
    /// Their status: active, or pending-approval (approve with `corral device approve`).
    #[arg(long, requires = "auto_register", value_parser = ["active", "pending-approval"], default_value = "active")]
    register_status: String,
}

impl Register {
    fn body(&self) -> Value {
        if self.auto_register { json!({"profile": self.register_profile, "status": self.register_status}) } else { Value::Null }
    }
}

pub async fn ca(cmd: CaCommand) -> anyhow::Result<()> {
    match cmd {
        CaCommand::Create { name, tenant, valid_days, register, conn } => {
            let body = json!({"name": name, "tenant": tenant, "valid_days": valid_days, "auto_register": register.body()});
            let ca = Client::new(&conn)?.json(Method::POST, "/api/v1/cas", Some(body)).await?;
            print(&conn, &ca, || format!("created CA {} for tenant {}", cell(&ca["id"]), cell(&ca["tenant"])))
        }
        CaCommand::Import { certificate, name, tenant, register, conn } => {
            let pem = std::fs::read_to_string(&certificate).with_context(|| format!("reading {}", certificate.display()))?;
            let body = json!({"name": name, "tenant": tenant, "certificate": pem, "auto_register": register.body()});
            let ca = Client::new(&conn)?.json(Method::POST, "/api/v1/cas", Some(body)).await?;
            print(&conn, &ca, || {
                format!("registered CA {} ({}) for tenant {}", cell(&ca["id"]), cell(&ca["subject"]), cell(&ca["tenant"]))
            })
        }
        CaCommand::List { conn } => {
            let out = Client::new(&conn)?.json(Method::GET, "/api/v1/cas", None).await?;
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                let columns = ["id", "tenant", "name", "managed", "auto_register", "not_after"];
                let cas = out["cas"].as_array().cloned().unwrap_or_default();
                print_table(&columns, &cas.iter().map(|c| columns.iter().map(|k| cell(&c[*k])).collect()).collect::<Vec<_>>());
            }
            Ok(())
        }
        CaCommand::Issue { device, csr, cert_out, key_out, ca, valid_days, conn } => {
            let csr = csr.map(|p| std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))).transpose()?;
            let body = json!({"csr": csr, "ca": ca, "valid_days": valid_days});
            let path = format!("/api/v1/devices/{}/certificate", percent_encode(&device));
            let out = Client::new(&conn)?.json(Method::POST, &path, Some(body)).await?;
            let cert_out = cert_out.unwrap_or_else(|| PathBuf::from(format!("{device}.pem")));
            std::fs::write(&cert_out, cell(&out["certificate"])).with_context(|| format!("writing {}", cert_out.display()))?;
            if let Some(key) = out["private_key"].as_str() {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let key_out = key_out.unwrap_or_else(|| PathBuf::from(format!("{device}.key")));
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&key_out)
                    .with_context(|| format!("writing {} (it must not exist yet)", key_out.display()))?;
                file.write_all(key.as_bytes())?;
                println!("key: {} (mode 0600; Corral keeps no copy)", key_out.display());
            }
            println!(
                "certificate: {} (serial {}, valid until {})",
                cert_out.display(),
                cell(&out["record"]["serial"]),
                cell(&out["record"]["not_after"])
            );
            Ok(())
        }
        CaCommand::Certs { device, conn } => {
            let out = Client::new(&conn)?
                .json(Method::GET, &format!("/api/v1/devices/{}/certificates", percent_encode(&device)), None)
                .await?;
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                let columns = ["serial", "ca", "not_after", "issued_by", "revoked_at"];
                let certs = out["certificates"].as_array().cloned().unwrap_or_default();
                print_table(&columns, &certs.iter().map(|c| columns.iter().map(|k| cell(&c[*k])).collect()).collect::<Vec<_>>());
            }
            Ok(())
        }
        CaCommand::Revoke { device, serial, conn } => {
            let path = format!("/api/v1/devices/{}/certificate/{}", percent_encode(&device), percent_encode(&serial));
            let out = Client::new(&conn)?.json(Method::DELETE, &path, None).await?;
            print(&conn, &out, || format!("revoked certificate {} of {device}", cell(&out["serial"])))
        }
    }
}

fn print(conn: &Conn, out: &Value, line: impl FnOnce() -> String) -> anyhow::Result<()> {
    println!("{}", if conn.json { serde_json::to_string_pretty(out)? } else { line() });
    Ok(())
}

//! `corral`: one binary for the whole platform and its client commands.
//!
//! `corral serve` runs the platform on embedded storage; `corral demo` adds a simulated fleet;
//! `corral device|token|sql` talk to a running server over its REST API.

// Doc comments on the clap types are also the `--help` text, where `<device>` and bare URLs
// read as they should; rustdoc would take them for HTML and links.
#![allow(rustdoc::invalid_html_tags, rustdoc::bare_urls)]

mod broker_user_cli;
mod ca_cli;
mod client;
mod config;
mod data_cli;
mod demo;
mod export_cli;
mod glue;
mod rules_cli;
mod serve;
mod tls;
mod user_cli;

use clap::{Parser, Subcommand};
use config::{ConfigArgs, ServeArgs};

/// Per-thread heaps: the broker's connection tasks and the store's writer allocate and free many
/// small objects on different threads, where glibc's malloc spent its time on arena locks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "corral",
    version,
    about = "Corral: connect, know, secure and analyse every connected asset.",
    long_about = "Corral: connect, know, secure and analyse every connected asset.\n\n\
    Start with `corral demo` to see a simulated fleet, or `corral serve` for an empty platform.\n\
    Client commands (`device`, `token`, `sql`, `rule`, `alarm`, `outbox`) talk to a running server: set --server/CORRAL_URL and\n\
    --token/CORRAL_TOKEN (default: the admin token in ./corral-data/admin.token)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the platform: REST API, ingest, SQL, storage in --data-dir.
    Serve(ServeArgs),
    /// Run the platform with a simulated fleet (3 profiles, 5 sites, 2 tenants, 60 devices).
    Demo {
        #[command(flatten)]
        serve: ServeArgs,
        /// Seconds between two messages of one simulated device.
        #[arg(long, default_value_t = 5)]
        interval_secs: u64,
    },
    /// Print the effective configuration (--set > flags > env > file > defaults) as commented TOML.
    Config(ConfigArgs),
    /// Manage devices in the registry (add, list, show, rm).
    #[command(subcommand)]
    Device(client::DeviceCommand),
    /// Manage API tokens for people and programs.
    #[command(subcommand)]
    Token(client::TokenCommand),
    /// Manage the people who sign in to the web console (add, passwd, rm, list).
    #[command(subcommand)]
    User(user_cli::UserCommand),
    /// Manage MQTT broker users: clients that are neither devices nor API tokens, with a
    /// password and topic rules (add, set, rm, list).
    #[command(subcommand)]
    BrokerUser(broker_user_cli::BrokerUserCommand),
    /// Certificate authorities and device certificates (X.509 identity, mTLS).
    #[command(subcommand)]
    Ca(ca_cli::CaCommand),
    /// Run a read-only SQL query, e.g. `corral sql "SELECT count(*) FROM telemetry"`.
    Sql(client::SqlArgs),
    /// Manage rules: conditions over telemetry that raise alarms and trigger actions.
    #[command(subcommand)]
    Rule(rules_cli::RuleCommand),
    /// List, acknowledge, clear and comment alarms.
    #[command(subcommand)]
    Alarm(rules_cli::AlarmCommand),
    /// Inspect and retry action deliveries (webhooks, NATS, MQTT, commands).
    #[command(subcommand)]
    Outbox(rules_cli::OutboxCommand),
    /// How long data is kept (retention per table and tenant), rollups, deleting a device's rows.
    #[command(subcommand)]
    Data(data_cli::DataCommand),
    /// Scheduled exports of a table or query to Parquet/CSV in a folder or an S3 bucket.
    #[command(subcommand)]
    Export(export_cli::ExportCommand),
    /// Print the REST API's OpenAPI 3.1 document (as served at /api/v1/openapi.json), e.g. to
    /// generate a client: `corral openapi > corral-openapi.json`.
    Openapi,
}

fn main() -> std::process::ExitCode {
    // reqwest's TLS (webhooks over HTTPS; the CLI against an https:// server) uses rustls with the
    // process-wide provider: ring, the one this workspace builds (aws-lc-rs needs cmake).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    // The log filter is part of the config (flag > env > file); a config error is reported below.
    let log = match &cli.command {
        Command::Serve(a) | Command::Config(ConfigArgs { serve: a, .. }) | Command::Demo { serve: a, .. } => {
            a.resolve().map(|c| c.log).unwrap_or_else(|_| "info".into())
        }
        _ => "warn".into(),
    };
    init_logging(&log);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(cli.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve::run(args.resolve()?).await,
        Command::Demo { serve, interval_secs } => {
            let mut config = serve.resolve()?;
            if serve.data_dir.is_none() && serve.config.is_none() {
                config.data_dir = "./corral-demo".into();
            }
            demo::run(config, std::time::Duration::from_secs(interval_secs.max(1))).await
        }
        Command::Config(args) if args.markdown => {
            print!("{}", config::settings::markdown());
            Ok(())
        }
        Command::Config(args) => {
            print!("{}", args.serve.resolve()?.render());
            Ok(())
        }
        Command::Device(cmd) => client::device(cmd).await,
        Command::Token(cmd) => client::token(cmd).await,
        Command::User(cmd) => user_cli::user(cmd).await,
        Command::BrokerUser(cmd) => broker_user_cli::broker_user(cmd).await,
        Command::Ca(cmd) => ca_cli::ca(cmd).await,
        Command::Sql(args) => client::sql(args).await,
        Command::Rule(cmd) => rules_cli::rule(cmd).await,
        Command::Alarm(cmd) => rules_cli::alarm(cmd).await,
        Command::Outbox(cmd) => rules_cli::outbox(cmd).await,
        Command::Data(cmd) => data_cli::data(cmd).await,
        Command::Export(cmd) => export_cli::export(cmd).await,
        Command::Openapi => {
            println!("{:#}", corral_http::openapi());
            Ok(())
        }
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("warning: log filter {filter:?} is invalid ({e}); using info");
        tracing_subscriber::EnvFilter::new("info")
    });
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

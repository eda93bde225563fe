//! `corral-bench`: whole-system benchmarks against a real corral process.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "corral-bench", about = "Whole-system benchmarks for Corral (each starts its own server).")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Concurrent HTTP writers of JSON batches with durable acks: rows/s, values/s, fsyncs/s,
    /// bytes on disk per value after persistence, peak RSS.
    Ingest(corral_bench::ingest::IngestArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Ingest(args) => corral_bench::ingest::run(args).await,
    }
}

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
    /// Write a deterministic TSBS-"iot"-shaped truck fleet (readings, diagnostics) as line
    /// protocol and CSV.
    FleetGen(corral_bench::fleet::FleetArgs),
    /// Load the fleet into Corral, InfluxDB, VictoriaMetrics and PostgreSQL (each started here on
    /// loopback) and compare ingest rate, bytes per value and fleet query latency.
    Peers(corral_bench::peers::PeersArgs),
    /// Corral's MQTT broker against Mosquitto 2.0 (both started here on loopback): fan-in QoS 0/1
    /// (durable for Corral), fan-out, 1:1 pairs, idle connections' RSS, publish-to-subscriber latency.
    Mqtt(corral_bench::mqtt::MqttArgs),
    /// Rules on the ingest path: ingest rate with 0, 10 and 100 active rules, and
    /// publish-to-webhook latency at a steady message rate.
    Rules(corral_bench::rules::RulesArgs),
    /// CoAP ingest from many sensors, Confirmable and Non-confirmable, against libcoap's own
    /// coap-server answering the same requests (both started here on loopback).
    Coap(corral_bench::coap::CoapArgs),
    /// MQTTS connection set-up rate (full TLS handshakes per second) with tokens and with client
    /// certificates, against Mosquitto 2.0 with TLS (both started here on loopback).
    Mqtts(corral_bench::mqtts::MqttsArgs),
    /// CoAP over DTLS with pre-shared keys: sessions set up per second and readings per second
    /// over open sessions, against libcoap's coap-server-openssl (both started here on loopback).
    Coaps(corral_bench::coaps::CoapsArgs),
    /// Device twin: desired change (REST PATCH) to delivery at the device over MQTT with 10,000
    /// devices connected, against Mosquitto 2.0 publishing the same documents retained QoS 1.
    Twin(corral_bench::twin::TwinArgs),
    /// Tracked command round trip (REST → device over MQTT → answer → REST) with 1,000 devices
    /// connected, against Mosquitto 2.0 carrying a bare request and answer between two clients.
    Commands(corral_bench::commands::CommandsArgs),
    /// A firmware campaign to 10,000 simulated MQTT devices (1 MiB artifact, downloaded, hashed
    /// and signature-checked by each): total time, CPU, RSS, and telemetry ingest with and without it.
    Campaign(corral_bench::campaign::CampaignArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // reqwest has rustls without a provider of its own in this workspace: install ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match Cli::parse().command {
        Command::Ingest(args) => corral_bench::ingest::run(args).await,
        Command::FleetGen(args) => corral_bench::fleet::run(args),
        Command::Peers(args) => corral_bench::peers::run(args).await,
        Command::Mqtt(args) => corral_bench::mqtt::run(args).await,
        Command::Rules(args) => corral_bench::rules::run(args).await,
        Command::Coap(args) => corral_bench::coap::run(args).await,
        Command::Mqtts(args) => corral_bench::mqtts::run(args).await,
        Command::Coaps(args) => corral_bench::coaps::run(args).await,
        Command::Twin(args) => corral_bench::twin::run(args).await,
        Command::Commands(args) => corral_bench::commands::run(args).await,
        Command::Campaign(args) => corral_bench::campaign::run(args).await,
    }
}

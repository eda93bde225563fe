//! A standalone broker for trying corral-mqtt with real clients and for the crash tests, which
//! run it as a child process and SIGKILL it.
//!
//! ```text
//! cargo run -p corral-mqtt --example broker -- --addr 127.0.0.1:1883 --data-dir /tmp/mqtt
//! ```
//!
//! Anonymous clients may use any topic outside `devices/`; user `dev1` / password `pw1` is a
//! device of tenant `acme`; user `admin` / password `secret` an admin application. Prints
//! `listening proto=mqtt addr=<ip:port>` once bound.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use corral_mqtt::*;

struct ExampleHooks;

#[async_trait::async_trait]
impl BrokerHooks for ExampleHooks {
    async fn authenticate(&self, req: &ConnectRequest) -> Result<Identity, ConnectRefusal> {
        match (req.username.as_deref(), req.password.as_deref()) {
            (Some("dev1"), Some(b"pw1")) => Ok(Identity::Device { id: "dev1".into(), tenant: "acme".into(), children: vec![] }),
            (Some("admin"), Some(b"secret")) => {
                Ok(Identity::Application { name: "admin".into(), principal: "admin".into(), role: Role::Admin, tenant: None })
            }
            _ => Err(ConnectRefusal::BadCredentials),
        }
    }

    fn on_platform_publish(&self, _who: &Identity, p: &InboundPublish) -> Result<PlatformWrite, PublishRefusal> {
        tracing::info!(topic = %p.topic, bytes = p.payload.len(), "platform publish");
        Ok(Box::pin(async { Ok(()) }))
    }

    fn device_tenant(&self, device: &str) -> Option<String> {
        (device == "dev1").then(|| "acme".into())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "corral_mqtt=info".into()))
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let mut addr = "127.0.0.1:1883".to_string();
    let mut config = BrokerConfig { allow_anonymous: true, ..BrokerConfig::default() };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => addr = args.next().ok_or("--addr needs a value")?,
            "--data-dir" => config.data_dir = Some(args.next().ok_or("--data-dir needs a value")?.into()),
            "--snapshot-every" => config.snapshot_every_ops = args.next().ok_or("--snapshot-every needs a value")?.parse()?,
            "--qos0-backlog" => config.max_qos0_backlog = args.next().ok_or("--qos0-backlog needs a value")?.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let broker = Broker::new(config, Arc::new(ExampleHooks))?;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening proto=mqtt addr={}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let server = tokio::spawn({
        let broker = broker.clone();
        async move { broker.serve_tcp(listener).await }
    });
    tokio::signal::ctrl_c().await?;
    broker.shutdown(Duration::from_secs(5)).await;
    server.await??;
    Ok(())
}

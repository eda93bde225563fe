//! `corral serve`: wires every room in data-path order. No business logic lives here.
//!
//! identity (registry, CAs) → store (WAL replay) → commands and rules → twins → artifacts →
//! pipeline → doors (MQTT, CoAP) → SQL and its system tables → campaign rollouts → HTTP; then
//! wait for SIGTERM/SIGINT, disconnect MQTT clients, drain in-flight requests, persist the write
//! buffer, flush presence, close the twin database, exit.

use crate::config::Config;
use crate::glue;
use anyhow::Context;
use corral_http::{AppState, HttpLimits, HttpMetrics};
use corral_ingest::{Pipeline, Sink};
use corral_registry::{Registry, SqliteRegistry};
use corral_services::{
    Clock, CommandBus, Commands, Connections, DeviceTwins, Identity, MetricsSource, OnlineStatus, SystemClock,
};
use corral_store::{QueryEngine, Store, SystemTables};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// A running platform: where it listens, how to stop it, and the admin credential a client may use.
pub struct Running {
    pub http_addr: SocketAddr,
    pub mqtt_addr: Option<SocketAddr>,
    pub coap_addr: Option<SocketAddr>,
    pub coaps_addr: Option<SocketAddr>,
    pub pg_addr: Option<SocketAddr>,
    pub admin_token: Option<String>,
    pub stop: watch::Sender<bool>,
    pub done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub async fn start(config: Config) -> anyhow::Result<Running> {
    let data_dir = absolute(&config.data_dir)?;
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating data dir {}", data_dir.display()))?;

    // Identity: the registry, the tenants' CAs, and the one service every door asks.
    let registry: Arc<dyn Registry> =
        Arc::new(SqliteRegistry::open(&data_dir.join("registry.db")).await.context("opening the registry")?);
    let admin_token = bootstrap_admin(registry.as_ref(), &data_dir).await?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let authorities = corral_pki::Authorities::open(registry.clone(), data_dir.join("ca"), provider)
        .await
        .context("loading the certificate authorities")?;
    let identity: Arc<dyn Identity> = Arc::new(corral_pki::Identities::new(registry.clone(), authorities.clone()));

    // Storage: WAL replay, then the persister.
    let store = open_store(&config, &data_dir).await?;
    let persister = tokio::spawn(store.clone().run_persister());

    // Reactions: commands to devices (whatever their door) and the rules.
    let commands: Arc<dyn Commands> = Arc::new(CommandBus::default());
    let platform = Arc::new(glue::RulesPlatform { registry: registry.clone(), store: store.clone(), broker: Default::default() });
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // Tracked commands: recorded before they are sent, carried by every door, answered or expired.
    let ledger = Arc::new(
        corral_commands::SqliteLedger::open(&data_dir.join(corral_commands::DATABASE_FILE), clock.now_ms())
            .await
            .context("opening the command ledger")?,
    );
    let tracker = corral_commands::Tracker::new(ledger.clone(), commands.clone(), clock.clone());
    tracker.start().await.context("starting the command tracker")?;
    if let Some(retention) = config.commands.retention() {
        tracker.keep_finished_for(retention);
    }
    let rules_db = data_dir.join("rules.db");
    let rules =
        corral_rules::Rules::open(&rules_db, config.rules.clone(), platform.clone(), Arc::new(tracker.clone()), clock.clone())
            .await
            .context("opening the rules database")?;

    // Fleet operations: device twins (desired/reported), beside the registry, off the data path.
    let twin_settings = config.twin.clone();
    let twins: Arc<dyn corral_twin::TwinStore> = Arc::new(
        corral_twin::SqliteTwins::open(&data_dir.join(corral_twin::DATABASE_FILE), clock.clone(), twin_settings.clone())
            .await
            .context("opening the twin database")?,
    );
    let twin_devices = Arc::new(glue::TwinDevices(registry.clone()));
    corral_twin::follow_devices(twins.clone(), twin_devices.clone()).await.context("giving every device its twin")?;
    let device_twins: Arc<dyn DeviceTwins> =
        Arc::new(corral_twin::TwinDoors::new(twins.clone(), twin_settings).with_directory(twin_devices));

    // Firmware artifacts and campaigns: their book, and the artifact store under the data directory.
    let campaign_book = Arc::new(
        corral_campaigns::SqliteCampaigns::open(&data_dir.join(corral_campaigns::DATABASE_FILE), clock.now_ms())
            .await
            .context("opening the campaign database")?,
    );
    let artifacts = Arc::new(
        corral_campaigns::Artifacts::open(
            &data_dir.join("artifacts"),
            campaign_book.clone(),
            clock.clone(),
            config.campaigns.max_artifact_bytes(),
        )
        .await
        .context("opening the artifact store")?,
    );

    // The corridor every door submits to.
    let live = corral_http::LiveFeed::default();
    let pipeline = Pipeline::new(Arc::new(store.clone()), registry.clone())
        .with_observer(Arc::new(rules.clone()))
        .with_observer(Arc::new(live.clone()));
    let sink: Arc<dyn Sink> = Arc::new(pipeline);

    // Doors: MQTT, CoAP (HTTP last, below).
    let handshake_failures = crate::tls::HandshakeFailures::new("mqtts");
    let https_failures = crate::tls::HandshakeFailures::new("https");
    let broker_users: Arc<dyn corral_services::BrokerUsers> = registry.clone();
    let door = corral_mqtt::PlatformDoor::new(identity.clone(), sink.clone(), registry.clone())
        .with_twins(device_twins.clone())
        .with_commands(commands.clone())
        .with_broker_users(broker_users.clone());
    let mqtt = start_broker(
        &config,
        &data_dir,
        BrokerServices { door: &door, identity: &identity, commands: &commands, twins: &device_twins, users: &broker_users },
        &authorities,
        &handshake_failures,
    )
    .await?;
    if let Some(mqtt) = &mqtt {
        let _ = platform.broker.set(mqtt.broker.clone());
    }
    let coap_services = corral_coap::Services {
        identity: identity.clone(),
        commands: commands.clone(),
        sink: sink.clone(),
        twins: device_twins.clone(),
        artifacts: Some(artifacts.clone()),
    };
    let coap = start_coap(&config, coap_services).await?;
    let coap_servers: Vec<corral_coap::CoapServer> = [&coap.plain, &coap.secure].into_iter().flatten().cloned().collect();

    // SQL over the store and the platform's own tables.
    let connections: Arc<dyn Connections> = match &mqtt {
        Some(_) => Arc::new(door.connected()),
        None => Arc::new(()),
    };
    let online: Arc<dyn OnlineStatus> = Arc::new(corral_rules::Online { rules: rules.clone(), connections });
    let tables = SystemTables::new(vec![
        Arc::new(corral_registry::DevicesTable { registry: registry.clone(), online: online.clone() }),
        Arc::new(corral_rules::AlarmsTable(rules.clone())),
        Arc::new(corral_registry::CertificatesTable(registry.clone())),
        Arc::new(corral_twin::TwinsTable(twins.clone())),
        Arc::new(corral_commands::CommandsTable(ledger.clone())),
        Arc::new(corral_campaigns::CampaignsTable(campaign_book.clone())),
        Arc::new(corral_campaigns::CampaignDevicesTable(campaign_book.clone())),
    ])?;
    let engine = Arc::new(
        QueryEngine::new(store.clone(), tables, config.limits.query_memory_mb << 20).context("setting up the SQL engine")?,
    );
    let sql: Arc<dyn corral_services::SqlService> = engine.clone();

    // Retention and rollups over the store; they read tenants' devices from the registry.
    let lifecycle = corral_store::Lifecycle::open(
        store.clone(),
        engine,
        Arc::new(glue::LifecycleRegistry(registry.clone())),
        clock.clone(),
        config.storage.lifecycle_settings(),
    )
    .context("opening the data lifecycle (retention, rollups)")?;
    let lifecycle_task = tokio::spawn(lifecycle.clone().run());
    // Scheduled exports read through the same SQL; a failing one raises a platform alarm.
    let exports =
        corral_exports::Exports::open(&data_dir, config.exports.clone(), sql.clone(), Arc::new(rules.clone()), clock.clone())
            .map_err(|e| anyhow::anyhow!("opening the exports: {e}"))?;
    let exports_task = tokio::spawn(exports.clone().run());

    // Campaigns follow their devices' reports from now on, and pick up where they were.
    let fleet = Arc::new(glue::CampaignFleet { registry: registry.clone(), sql: sql.clone(), twins: twins.clone() });
    let rollouts = corral_campaigns::Rollouts::new(
        campaign_book.clone(),
        artifacts.clone(),
        Arc::new(tracker.clone()),
        fleet,
        clock.clone(),
    );
    rollouts.start(true).await.context("resuming the campaigns")?;

    let ready = Arc::new(AtomicBool::new(false));
    let mut metrics_sources: Vec<Arc<dyn MetricsSource>> = vec![
        Arc::new(store.clone()),
        Arc::new(rules.clone()),
        rollouts.metrics(),
        Arc::new(lifecycle.clone()),
        Arc::new(exports.clone()),
    ];
    if let Some(mqtt) = &mqtt {
        metrics_sources.push(Arc::new(corral_mqtt::DoorMetrics(mqtt.broker.clone(), door.connected())));
        if mqtt.tls.is_some() {
            metrics_sources.push(Arc::new(handshake_failures.clone()));
        }
    }
    metrics_sources.extend(coap_servers.iter().map(|s| Arc::new(s.clone()) as Arc<dyn MetricsSource>));
    if config.https_addr()?.is_some() {
        metrics_sources.push(Arc::new(https_failures.clone()));
    }
    let pg = start_pg(&config, sql.clone(), identity.clone(), &authorities).await?;
    let state = AppState {
        registry: registry.clone(),
        identity,
        commands,
        sink,
        sql,
        metrics_sources,
        http_metrics: Arc::new(HttpMetrics::default()),
        limits: HttpLimits {
            max_body_bytes: config.limits.max_body_bytes,
            query_timeout: Duration::from_secs(config.limits.query_timeout_secs),
            max_query_rows: config.limits.max_query_rows,
            ..HttpLimits::default()
        },
        ready: ready.clone(),
        mqtt_ws: mqtt
            .as_ref()
            .map(|mqtt| Arc::new(glue::MqttWebSocket(mqtt.broker.clone())) as Arc<dyn corral_http::MqttOverWebSocket>),
        rules: Arc::new(rules.clone()),
        online,
        authorities: Arc::new(authorities.clone()),
        live,
        twins: twins.clone(),
        tracker: tracker.clone(),
        rollouts,
        lifecycle: Arc::new(lifecycle),
        exports: Arc::new(exports),
    };

    // Bound before the HTTP listener: its log line is the last, and tests wait for it.
    let https = match (config.https_addr()?, &config.mqtt.tls_cert, &config.mqtt.tls_key) {
        (Some(addr), Some(cert), Some(key)) => {
            let acceptor = crate::tls::acceptor(cert, key, authorities.verifier(), &[b"http/1.1"])?;
            let listener =
                tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding the HTTPS listener to {addr}"))?;
            tracing::info!(proto = %"https", addr = %listener.local_addr()?, "listening");
            Some((listener, acceptor))
        }
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(config.http_addr()?)
        .await
        .with_context(|| format!("binding the HTTP listener to {}", config.http))?;
    let http_addr = listener.local_addr()?;
    tracing::info!(proto = %"http", addr = %http_addr, "listening");

    let presence = tokio::spawn(flush_presence(registry.clone()));
    let (stop, mut stopped) = watch::channel(false);
    let pg_addr = match pg {
        Some((door, listener)) => {
            let addr = listener.local_addr()?;
            tokio::spawn(door.serve(listener, stop.subscribe()));
            Some(addr)
        }
        None => None,
    };
    let coap_served: Vec<_> = coap_servers
        .iter()
        .cloned()
        .map(|server| {
            let stopped = stop.subscribe();
            tokio::spawn(async move { server.serve(stopped).await })
        })
        .collect();
    let device_ports = corral_console::DevicePorts {
        mqtt: mqtt.as_ref().map(|m| m.addr.port()),
        mqtts: mqtt.as_ref().and_then(|m| m.tls_addr).map(|a| a.port()),
        coap: coap.plain.as_ref().and_then(|s| s.local_addr().ok()).map(|a| a.port()),
        coaps: coap.secure.as_ref().and_then(|s| s.local_addr().ok()).map(|a| a.port()),
    };
    let app = corral_http::router(state, corral_console::router(registry.clone(), device_ports));
    let https =
        https.map(|(listener, acceptor)| tokio::spawn(crate::tls::serve_https(listener, acceptor, app.clone(), https_failures)));
    ready.store(true, Ordering::Relaxed);
    let mqtt_addr = mqtt.as_ref().map(|mqtt| mqtt.addr);
    let coap_addr = coap.plain.as_ref().and_then(|coap| coap.local_addr().ok());
    let coaps_addr = coap.secure.as_ref().and_then(|coap| coap.local_addr().ok());
    let done = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
            ready.store(false, Ordering::Relaxed);
            tracing::info!("shutting down: disconnecting MQTT clients, draining in-flight requests");
            if let Some(https) = https {
                https.abort(); // no new HTTPS connections
            }
            if let Some(mqtt) = mqtt {
                if let Some(tls) = mqtt.tls {
                    tls.abort(); // no new MQTTS clients; connected ones are in the broker's hands
                }
                // Clients get DISCONNECT 0x8B; publishes already being made durable finish first.
                mqtt.broker.shutdown(Duration::from_secs(5)).await;
                let _ = mqtt.served.await;
            }
            // CoAP stopped reading at the same signal; let its requests being written finish.
            for served in coap_served {
                let _ = served.await;
            }
            for server in coap_servers {
                server.drain(Duration::from_secs(5)).await;
            }
        };
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(shutdown)
            .await
            .context("HTTP server")?;
        // Ingest has stopped: let the rules evaluate what was acknowledged before going.
        rules.settle(Duration::from_secs(5)).await;
        presence.abort();
        lifecycle_task.abort();
        exports_task.abort();
        persister.abort();
        store.close().await.context("persisting the write buffer at shutdown")?;
        registry.flush_last_seen().await.context("flushing last_seen")?;
        // Last, after the HTTP door drained: no twin or command request can still be writing.
        twins.close().await;
        ledger.close().await;
        campaign_book.close().await;
        tracing::info!("stopped cleanly");
        Ok(())
    });
    Ok(Running { http_addr, mqtt_addr, coap_addr, coaps_addr, pg_addr, admin_token, stop, done })
}

/// The running MQTT broker: dropped at shutdown, after `broker.shutdown` and `served` ended.
struct MqttListener {
    broker: corral_mqtt::Broker,
    addr: SocketAddr,
    /// The task accepting TCP connections; ends when the broker shuts down.
    served: tokio::task::JoinHandle<()>,
    /// The MQTTS accept loop, if TLS is configured; aborted at shutdown.
    tls: Option<tokio::task::JoinHandle<()>>,
    tls_addr: Option<SocketAddr>,
}

/// The PostgreSQL wire door on its listener (unless `off`), over the same SQL service and identity
/// as the REST API, with TLS when the server has a certificate.
async fn start_pg(
    config: &Config,
    sql: Arc<dyn corral_services::SqlService>,
    identity: Arc<dyn Identity>,
    authorities: &corral_pki::Authorities,
) -> anyhow::Result<Option<(corral_pg::PgDoor, tokio::net::TcpListener)>> {
    let Some(addr) = config.pg_addr()? else { return Ok(None) };
    let tls = match (&config.mqtt.tls_cert, &config.mqtt.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::acceptor(cert, key, authorities.verifier(), &[b"postgresql"])?),
        _ => None,
    };
    let limits = corral_pg::PgLimits {
        statement_timeout: Duration::from_secs(config.limits.query_timeout_secs),
        // Rows stream to the client instead of being held, so the bound is the CSV export's.
        max_rows: config.limits.max_query_rows.saturating_mul(10),
    };
    let door = corral_pg::PgDoor::new(sql, identity, limits, tls, config.pg.cleartext)
        .map_err(|e| anyhow::anyhow!("setting up pg_catalog: {e}"))?;
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding the PostgreSQL listener to {addr}"))?;
    tracing::info!(proto = %"pg", addr = %listener.local_addr()?, "listening");
    Ok(Some((door, listener)))
}

/// The store under `<data>/store`, opened (WAL replay) off the async threads.
async fn open_store(config: &Config, data_dir: &Path) -> anyhow::Result<Store> {
    let mut store_config = config.storage.store_config(data_dir.join("store"));
    store_config.max_columns_per_table = config.limits.max_columns_per_table;
    tokio::task::spawn_blocking(move || Store::open(store_config)).await?.context("opening the store (WAL replay)")
}

/// What the broker serves devices with: its door into the platform, and the services it carries.
struct BrokerServices<'a> {
    door: &'a corral_mqtt::PlatformDoor,
    identity: &'a Arc<dyn Identity>,
    commands: &'a Arc<dyn Commands>,
    twins: &'a Arc<dyn DeviceTwins>,
    users: &'a Arc<dyn corral_services::BrokerUsers>,
}

/// The MQTT broker on its listener (unless `off`), with its state under `<data>/mqtt`, carrying
/// the platform's commands and device twins, and disconnecting devices whose token, status or
/// gateway changes, and broker users whose password or rules change.
async fn start_broker(
    config: &Config,
    data_dir: &Path,
    BrokerServices { door, identity, commands, twins, users }: BrokerServices<'_>,
    authorities: &corral_pki::Authorities,
    handshake_failures: &crate::tls::HandshakeFailures,
) -> anyhow::Result<Option<MqttListener>> {
    let Some(addr) = config.mqtt_addr()? else { return Ok(None) };
    let m = &config.mqtt;
    let broker_config = m.broker_config(data_dir.join("mqtt"));
    let broker =
        corral_mqtt::Broker::new(broker_config, Arc::new(door.clone())).context("starting the MQTT broker (state replay)")?;
    corral_mqtt::carry_commands(broker.clone(), commands.clone()).context("carrying commands over MQTT")?;
    tokio::spawn(corral_mqtt::disconnect_on_credential_changes(broker.clone(), identity.clone()));
    tokio::spawn(corral_mqtt::disconnect_on_broker_user_changes(broker.clone(), users.clone()));
    corral_mqtt::carry_twins(broker.clone(), twins.clone()).await.context("carrying device twins over MQTT")?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding the MQTT listener to {addr}"))?;
    let mqtt_addr = listener.local_addr()?;
    tracing::info!(proto = %"mqtt", addr = %mqtt_addr, "listening");
    let served = tokio::spawn({
        let broker = broker.clone();
        async move {
            if let Err(e) = broker.serve_tcp(listener).await {
                tracing::error!(error = %e, "MQTT listener failed");
            }
        }
    });
    let (tls, tls_addr) = match (config.mqtts_addr()?, &m.tls_cert, &m.tls_key) {
        (Some(addr), Some(cert), Some(key)) => {
            let acceptor = crate::tls::acceptor(cert, key, authorities.verifier(), &[])?;
            let listener =
                tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding the MQTTS listener to {addr}"))?;
            let tls_addr = listener.local_addr()?;
            tracing::info!(proto = %"mqtts", addr = %tls_addr, "listening");
            (
                Some(tokio::spawn(crate::tls::serve_mqtts(listener, acceptor, broker.clone(), handshake_failures.clone()))),
                Some(tls_addr),
            )
        }
        _ => (None, None),
    };
    Ok(Some(MqttListener { broker, addr: mqtt_addr, served, tls, tls_addr }))
}

/// The CoAP servers: in the clear and over DTLS, each on its UDP socket unless `off`.
struct CoapServers {
    plain: Option<corral_coap::CoapServer>,
    secure: Option<corral_coap::CoapServer>,
}

/// Starts the CoAP servers; each hears the platform's commands and credential changes itself.
async fn start_coap(config: &Config, services: corral_coap::Services) -> anyhow::Result<CoapServers> {
    let limits = corral_ingest::decode::Limits::default();
    let plain = match config.coap_addr()? {
        Some(addr) => Some(
            corral_coap::CoapServer::bind(addr, config.coap.server(), services.clone(), limits)
                .await
                .context("starting the CoAP server")?,
        ),
        None => None,
    };
    let secure = match config.coaps_addr()? {
        Some(addr) => Some(
            corral_coap::CoapServer::bind_dtls(addr, config.coap.server(), config.coap.dtls(), services, limits)
                .await
                .context("starting the CoAP over DTLS server")?,
        ),
        None => None,
    };
    for (proto, server) in [("coap", &plain), ("coaps", &secure)] {
        if let Some(server) = server {
            tracing::info!(proto = %proto, addr = %server.local_addr()?, "listening");
        }
    }
    Ok(CoapServers { plain, secure })
}

/// Runs until SIGTERM or SIGINT, then stops cleanly.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let running = start(config).await?;
    wait_for_signal().await;
    let _ = running.stop.send(true);
    running.done.await?
}

pub async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

/// First start: create the administrator exactly as the contract says — the secret from
/// CORRAL_ADMIN_TOKEN if set, else generated, printed once and saved 0600 in admin.token.
async fn bootstrap_admin(registry: &dyn Registry, data_dir: &Path) -> anyhow::Result<Option<String>> {
    let preset = std::env::var("CORRAL_ADMIN_TOKEN").ok().filter(|s| !s.is_empty());
    let created = registry.bootstrap_admin(preset.as_deref()).await.context("creating the first administrator")?;
    let token_file = data_dir.join("admin.token");
    match created {
        Some(secret) if preset.is_none() => {
            // Written whole or not at all (tmp + rename), replacing any stale file from an earlier
            // registry, so the file always holds the token that works.
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let tmp = data_dir.join("admin.token.tmp");
            let _ = std::fs::remove_file(&tmp);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("writing {}", tmp.display()))?;
            writeln!(file, "{secret}")?;
            file.sync_all()?;
            std::fs::rename(&tmp, &token_file).with_context(|| format!("writing {}", token_file.display()))?;
            println!(
                "\nFirst start: created the administrator token (shown once, also in {}):\n\n    {secret}\n",
                token_file.display()
            );
            Ok(Some(secret))
        }
        Some(secret) => Ok(Some(secret)),
        None => Ok(preset.or_else(|| std::fs::read_to_string(&token_file).ok().map(|s| s.trim().to_string()))),
    }
}

async fn flush_presence(registry: Arc<dyn Registry>) {
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if let Err(e) = registry.flush_last_seen().await {
            tracing::warn!(error = %e, "could not flush last_seen; will retry");
        }
    }
}

fn absolute(path: &Path) -> anyhow::Result<std::path::PathBuf> {
    Ok(if path.is_absolute() { path.to_path_buf() } else { std::env::current_dir()?.join(path) })
}

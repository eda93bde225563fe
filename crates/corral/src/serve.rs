//! `corral serve`: wires every room in data-path order. No business logic lives here.
//!
//! registry → store (WAL replay) → pipeline → HTTP listener; then wait for SIGTERM/SIGINT, drain
//! in-flight requests, persist the write buffer, flush presence, exit.

use crate::config::Config;
use crate::glue;
use anyhow::Context;
use corral_http::{AppState, HttpLimits, HttpMetrics};
use corral_ingest::Pipeline;
use corral_registry::Registry;
use corral_store::{QueryEngine, Store, StoreConfig};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// A running platform: where it listens, how to stop it, and the admin credential a client may use.
pub struct Running {
    pub http_addr: SocketAddr,
    pub admin_token: Option<String>,
    pub stop: watch::Sender<bool>,
    pub done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub async fn start(config: Config) -> anyhow::Result<Running> {
    let data_dir = absolute(&config.data_dir)?;
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating data dir {}", data_dir.display()))?;

    let registry = Registry::open(&data_dir.join("registry.db")).await.context("opening the registry")?;
    let admin_token = bootstrap_admin(&registry, &data_dir).await?;

    let mut store_config = StoreConfig::new(data_dir.join("store"));
    store_config.buffer_ceiling_bytes = config.storage.buffer_ceiling_mb << 20;
    store_config.persist_bytes = config.storage.persist_mb << 20;
    store_config.persist_age = Duration::from_secs(config.storage.persist_age_secs);
    store_config.backpressure_wait = Duration::from_secs(config.storage.backpressure_wait_secs);
    store_config.wal_segment_bytes = config.storage.wal_segment_mb << 20;
    store_config.max_columns_per_table = config.limits.max_columns_per_table;
    let store = tokio::task::spawn_blocking(move || Store::open(store_config))
        .await?
        .context("opening the store (WAL replay)")?;
    let persister = tokio::spawn(store.clone().run_persister());

    let pipeline = Pipeline::new(
        Arc::new(glue::StoreSink(store.clone())),
        Arc::new(glue::RegistryPresence(registry.clone())),
    );
    let directory = Arc::new(glue::RegistryDirectory(registry.clone()));
    let engine = QueryEngine::new(store.clone(), directory, config.limits.query_memory_mb << 20)
        .context("setting up the SQL engine")?;
    let ready = Arc::new(AtomicBool::new(false));
    let state = AppState {
        registry: registry.clone(),
        sink: Arc::new(pipeline),
        sql: Arc::new(glue::Sql(engine)),
        metrics_sources: vec![Arc::new(glue::StoreMetrics(store.clone()))],
        http_metrics: Arc::new(HttpMetrics::default()),
        limits: HttpLimits {
            max_body_bytes: config.limits.max_body_bytes,
            query_timeout: Duration::from_secs(config.limits.query_timeout_secs),
            max_query_rows: config.limits.max_query_rows,
            ..HttpLimits::default()
        },
        ready: ready.clone(),
    };

    let listener = tokio::net::TcpListener::bind(config.http_addr()?)
        .await
        .with_context(|| format!("binding the HTTP listener to {}", config.http))?;
    let http_addr = listener.local_addr()?;
    tracing::info!(proto = %"http", addr = %http_addr, "listening");

    let presence = tokio::spawn(flush_presence(registry.clone()));
    let (stop, mut stopped) = watch::channel(false);
    let app = corral_http::router(state);
    ready.store(true, Ordering::Relaxed);
    let done = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
            ready.store(false, Ordering::Relaxed);
            tracing::info!("shutting down: draining in-flight requests");
        };
        axum::serve(listener, app).with_graceful_shutdown(shutdown).await.context("HTTP server")?;
        presence.abort();
        persister.abort();
        store.close().await.context("persisting the write buffer at shutdown")?;
        registry.flush_last_seen().await.context("flushing last_seen")?;
        tracing::info!("stopped cleanly");
        Ok(())
    });
    Ok(Running { http_addr, admin_token, stop, done })
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
async fn bootstrap_admin(registry: &Registry, data_dir: &Path) -> anyhow::Result<Option<String>> {
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
            println!("\nFirst start: created the administrator token (shown once, also in {}):\n\n    {secret}\n", token_file.display());
            Ok(Some(secret))
        }
        Some(secret) => Ok(Some(secret)),
        None => Ok(preset.or_else(|| std::fs::read_to_string(&token_file).ok().map(|s| s.trim().to_string()))),
    }
}

async fn flush_presence(registry: Registry) {
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

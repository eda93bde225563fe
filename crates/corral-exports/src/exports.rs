//! The scheduled exports: their book (`exports.json`, replaced atomically), the loop that runs
//! each when it is due, retries with backoff, and the platform alarm raised after
//! `alarm_after_failures` failures in a row and cleared by the next success.
//!
//! Progress is saved after every file: the manifest lists the file first, then the export's
//! high-water mark moves past it. A crash in between repeats that window, whose file has the
//! same name and is overwritten.

use crate::run::{ExportedFile, Target, export_window, record, rfc3339};
use crate::{Destination, Export, ExportSettings, ExportSpec};
use async_trait::async_trait;
use corral_model::{ErrorKind, WireError};
use corral_services::{Clock, PlatformAlarms, SqlService, read_only};
use object_store::path::Path as ObjectPath;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

const FILE: &str = "exports.json";
const NANOS_PER_DAY: i64 = 86_400_000_000_000;
/// Runs kept per export for `GET /api/v1/exports/{name}`.
const RUNS_KEPT: usize = 20;

/// One run, as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "ExportRun")]
pub struct Run {
    /// RFC 3339.
    #[schemars(with = "corral_model::schema::Rfc3339")]
    pub started_at: String,
    /// RFC 3339.
    #[schemars(with = "corral_model::schema::Rfc3339")]
    pub finished_at: String,
    /// `schedule`, `retry` or `manual`.
    pub trigger: String,
    /// Rows exported, in all its files.
    pub rows: u64,
    /// The files it wrote, one per UTC day with new rows.
    pub files: Vec<ExportedFile>,
    /// Why it failed; the files before the failure stay exported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Run {
    fn starting(at_ns: i64, trigger: &str) -> Run {
        Run {
            started_at: rfc3339(at_ns),
            finished_at: String::new(),
            trigger: trigger.to_string(),
            rows: 0,
            files: Vec::new(),
            error: None,
        }
    }
}

/// An export and where it stands.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ExportStatus {
    pub spec: ExportSpec,
    /// The tenant whose rows it exports (the creator's scope); null: every tenant's.
    pub tenant: Option<String>,
    pub created_by: String,
    /// Rows older than this are exported (RFC 3339); null before the first run.
    #[schemars(with = "corral_model::schema::Rfc3339OrNull")]
    pub exported_through: Option<String>,
    /// Runs that failed since the last one that did not (retried with backoff).
    pub failures_in_a_row: u32,
    /// When it runs next (RFC 3339).
    #[schemars(with = "corral_model::schema::Rfc3339")]
    pub next_run_at: String,
    /// Its latest runs (up to 20), newest first.
    pub runs: VecDeque<Run>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    spec: ExportSpec,
    tenant: Option<String>,
    created_by: String,
    through_ns: Option<i64>,
    failures: u32,
    next_run_ns: i64,
    runs: VecDeque<Run>,
}

impl Job {
    fn status(&self) -> ExportStatus {
        ExportStatus {
            spec: self.spec.clone(),
            tenant: self.tenant.clone(),
            created_by: self.created_by.clone(),
            exported_through: self.through_ns.map(rfc3339),
            failures_in_a_row: self.failures,
            next_run_at: rfc3339(self.next_run_ns),
            runs: self.runs.clone(),
        }
    }

    fn visible(&self, scope: Option<&str>) -> bool {
        scope.is_none_or(|s| self.tenant.as_deref() == Some(s))
    }
}

/// What the REST routes and the CLI ask of the exports.
#[async_trait]
pub trait ExportBook: Send + Sync + 'static {
    async fn exports(&self, scope: Option<&str>) -> Vec<ExportStatus>;
    async fn export(&self, name: &str, scope: Option<&str>) -> Result<ExportStatus, WireError>;
    /// Creates an export of `scope`'s rows (the creator's tenant); it first runs at once.
    async fn create(&self, spec: ExportSpec, scope: Option<&str>, by: &str) -> Result<ExportStatus, WireError>;
    async fn remove(&self, name: &str, scope: Option<&str>) -> Result<(), WireError>;
    /// Runs it now, whatever its schedule; answers how the run went.
    async fn run_now(&self, name: &str, scope: Option<&str>) -> Result<Run, WireError>;
}

#[derive(Default)]
struct Counters {
    runs_ok: AtomicU64,
    runs_failed: AtomicU64,
    rows: AtomicU64,
    bytes: AtomicU64,
}

/// Cheap to clone; every clone is the same book.
#[derive(Clone)]
pub struct Exports {
    inner: Arc<Inner>,
}

struct Inner {
    sql: Arc<dyn SqlService>,
    alarms: Arc<dyn PlatformAlarms>,
    clock: Arc<dyn Clock>,
    settings: ExportSettings,
    /// Where local destinations live.
    local_root: PathBuf,
    path: PathBuf,
    jobs: Mutex<Vec<Job>>,
    /// One run at a time: the scheduler's and those asked for.
    running: tokio::sync::Mutex<()>,
    counters: Counters,
}

impl Exports {
    /// Loads `exports.json` from `data_dir`; local destinations go under `settings.dir` or
    /// `<data_dir>/exports`.
    pub fn open(
        data_dir: &std::path::Path,
        settings: ExportSettings,
        sql: Arc<dyn SqlService>,
        alarms: Arc<dyn PlatformAlarms>,
        clock: Arc<dyn Clock>,
    ) -> Result<Exports, String> {
        let path = data_dir.join(FILE);
        let jobs: Vec<Job> = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}; fix or remove it", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        };
        let local_root = settings.dir.clone().unwrap_or_else(|| data_dir.join("exports"));
        let inner = Inner {
            sql,
            alarms,
            clock,
            settings,
            local_root,
            path,
            jobs: Mutex::new(jobs),
            running: tokio::sync::Mutex::new(()),
            counters: Counters::default(),
        };
        Ok(Exports { inner: Arc::new(inner) })
    }

    fn jobs(&self) -> MutexGuard<'_, Vec<Job>> {
        self.inner.jobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn save(&self, jobs: &[Job]) -> Result<(), String> {
        let tmp = self.inner.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(jobs).expect("exports serialize");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.inner.path)?;
            // The rename is durable only once the directory is.
            let dir = self.inner.path.parent().unwrap_or(std::path::Path::new("."));
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| format!("writing {}: {e}", self.inner.path.display()))
    }

    /// Runs until dropped: every second, the exports that are due.
    pub async fn run(self) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.run_due().await;
        }
    }

    /// Runs every export whose time has come; returns how many ran.
    pub async fn run_due(&self) -> usize {
        let now = self.inner.clock.now_ns();
        let due: Vec<(String, u32)> =
            self.jobs().iter().filter(|j| j.next_run_ns <= now).map(|j| (j.spec.name.clone(), j.failures)).collect();
        for (name, failures) in &due {
            let trigger = if *failures > 0 { "retry" } else { "schedule" };
            if let Err(e) = self.run_job(name, trigger).await {
                tracing::debug!(export = %name, error = %e.message, "export not run");
            }
        }
        due.len()
    }

    fn target(&self, export: &Export) -> Result<Target, String> {
        let s = &self.inner.settings;
        let (store, prefix): (Arc<dyn object_store::ObjectStore>, String) = match &export.destination {
            Destination::S3 { bucket, prefix } => {
                let mut builder =
                    object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket).with_region(&s.s3_region);
                if let Some(endpoint) = &s.s3_endpoint {
                    builder = builder.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
                }
                (
                    Arc::new(builder.build().map_err(|e| format!("S3 destination {}: {e}", export.spec.destination))?),
                    prefix.clone(),
                )
            }
            Destination::Local { folder } => {
                let dir = self.inner.local_root.join(folder);
                std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(&dir).map_err(|e| e.to_string())?;
                (Arc::new(store), String::new())
            }
        };
        let folder = ObjectPath::from_iter(prefix.split('/').filter(|p| !p.is_empty()).chain([export.spec.name.as_str()]));
        Ok(Target { store, folder })
    }

    /// One run of `name`: every UTC day of its new window, a file each, progress saved after
    /// every file. The run's outcome is recorded, and alarms raised or cleared.
    async fn run_job(&self, name: &str, trigger: &str) -> Result<Run, WireError> {
        let _one_at_a_time = self.inner.running.lock().await;
        let job = self.jobs().iter().find(|j| j.spec.name == name).cloned();
        let Some(job) = job else { return Err(WireError::new(ErrorKind::NotFound, format!("no export named {name}"))) };
        let export = Export::new(job.spec.clone())?;
        let started = self.inner.clock.now_ns();
        let run = Run::starting(started, trigger);
        // Its own task: a run that panics (a library's bug on some input) fails that run, not
        // the scheduler.
        let this = self.clone();
        let work = export.clone();
        let ran = tokio::spawn(async move {
            let mut run = run;
            let outcome = this.export_new_rows(&job, &work, started, &mut run).await;
            (outcome, run)
        })
        .await;
        let (outcome, mut run) = match ran {
            Ok(done) => done,
            Err(e) => (Err(format!("the run stopped unexpectedly ({e}); see the server log")), Run::starting(started, trigger)),
        };
        let finished = self.inner.clock.now_ns();
        run.finished_at = rfc3339(finished);
        run.error = outcome.err();
        self.finish(name, &export, &run, finished).await;
        Ok(run)
    }

    async fn export_new_rows(&self, job: &Job, export: &Export, now: i64, run: &mut Run) -> Result<(), String> {
        let target = self.target(export)?;
        let end = now - export.delay_ns;
        let start = match job.through_ns.or(export.from_ns) {
            Some(start) => start,
            None => match self.oldest(job, export).await? {
                Some(oldest) => oldest,
                None => end, // nothing stored yet: start from here
            },
        };
        let mut from = start;
        while from < end {
            let day_end = (from.div_euclid(NANOS_PER_DAY) + 1) * NANOS_PER_DAY;
            let to = day_end.min(end);
            let file = export_window(self.inner.sql.as_ref(), job.tenant.as_deref(), export, &target, (from, to), now).await?;
            if let Some(file) = &file {
                run.rows += file.rows;
                self.inner.counters.rows.fetch_add(file.rows, Ordering::Relaxed);
                self.inner.counters.bytes.fetch_add(file.bytes, Ordering::Relaxed);
                run.files.push(file.clone());
            }
            record(&target, export, file, to).await?;
            self.advance(&job.spec.name, to)?;
            from = to;
        }
        if start >= end && job.through_ns.is_none() {
            record(&target, export, None, end).await?;
            self.advance(&job.spec.name, end)?;
        }
        Ok(())
    }

    async fn oldest(&self, job: &Job, export: &Export) -> Result<Option<i64>, String> {
        let ctx = self.inner.sql.session(job.tenant.as_deref()).await.map_err(|e| e.message)?;
        let df = match ctx.sql_with_options(&export.oldest_sql(), read_only()).await {
            Ok(df) => df,
            // The table does not exist yet: nothing to export.
            Err(e) if e.to_string().contains("not found") => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let batches = df.collect().await.map_err(|e| e.to_string())?;
        use arrow::array::{Array, AsArray};
        let oldest = batches.iter().find(|b| b.num_rows() > 0).and_then(|b| {
            let column = b.column(0).as_primitive::<arrow::datatypes::Int64Type>();
            column.is_valid(0).then(|| column.value(0))
        });
        Ok(oldest)
    }

    fn advance(&self, name: &str, through_ns: i64) -> Result<(), String> {
        let mut jobs = self.jobs();
        if let Some(job) = jobs.iter_mut().find(|j| j.spec.name == name) {
            job.through_ns = Some(through_ns);
        }
        self.save(&jobs)
    }

    /// Records the run; schedules the next one (sooner, with backoff, after a failure); raises
    /// the alarm after too many failures in a row, clears it after a success.
    async fn finish(&self, name: &str, export: &Export, run: &Run, now: i64) {
        let alarm_key = format!("export:{name}");
        let (raise, clear, tenant, failures) = {
            let mut jobs = self.jobs();
            let Some(job) = jobs.iter_mut().find(|j| j.spec.name == name) else { return };
            let was_failing = job.failures >= self.inner.settings.alarm_after_failures;
            match &run.error {
                None => {
                    self.inner.counters.runs_ok.fetch_add(1, Ordering::Relaxed);
                    job.failures = 0;
                    job.next_run_ns = now + export.every_ns;
                    tracing::info!(export = %name, rows = run.rows, files = run.files.len(), "export ran");
                }
                Some(error) => {
                    self.inner.counters.runs_failed.fetch_add(1, Ordering::Relaxed);
                    job.failures += 1;
                    let backoff = self.inner.settings.retry_secs.saturating_mul(1 << job.failures.min(16).saturating_sub(1));
                    let backoff_ns = i64::try_from(backoff).unwrap_or(i64::MAX / 2).saturating_mul(1_000_000_000);
                    job.next_run_ns = now + backoff_ns.min(export.every_ns);
                    tracing::warn!(export = %name, failures = job.failures, %error, "export failed; retrying");
                }
            }
            job.runs.push_front(run.clone());
            job.runs.truncate(RUNS_KEPT);
            let failing = job.failures >= self.inner.settings.alarm_after_failures;
            let outcome = (failing, was_failing && !failing, job.tenant.clone(), job.failures);
            if let Err(e) = self.save(&jobs) {
                tracing::error!(export = %name, error = %e, "saving the export's state failed");
            }
            outcome
        };
        if raise {
            let message = format!("export {name} failed {failures} times in a row: {}", run.error.as_deref().unwrap_or(""));
            self.inner.alarms.raise(&alarm_key, tenant.as_deref(), &format!("export {name}"), &message).await;
        } else if clear {
            self.inner.alarms.clear(&alarm_key).await;
        }
    }

    /// How many exports' last run failed, for `/metrics`.
    fn failing(&self) -> usize {
        self.jobs().iter().filter(|j| j.failures > 0).count()
    }
}

#[async_trait]
impl ExportBook for Exports {
    async fn exports(&self, scope: Option<&str>) -> Vec<ExportStatus> {
        self.jobs().iter().filter(|j| j.visible(scope)).map(Job::status).collect()
    }

    async fn export(&self, name: &str, scope: Option<&str>) -> Result<ExportStatus, WireError> {
        let jobs = self.jobs();
        let job = jobs.iter().find(|j| j.spec.name == name && j.visible(scope));
        job.map(Job::status).ok_or_else(|| WireError::new(ErrorKind::NotFound, format!("no export named {name}")))
    }

    async fn create(&self, spec: ExportSpec, scope: Option<&str>, by: &str) -> Result<ExportStatus, WireError> {
        let export = Export::new(spec)?;
        // Plan the query now, so a typo is a 400 and not a failing schedule.
        let ctx = self.inner.sql.session(scope).await?;
        let now = self.inner.clock.now_ns();
        if let Err(e) = ctx.sql_with_options(&export.window_sql(now, now), read_only()).await {
            let missing_table = export.spec.table.is_some() && e.to_string().contains("not found");
            if !missing_table {
                return Err(WireError::bad_input(format!("the export's query does not plan: {e}")));
            }
        }
        self.target(&export).map_err(WireError::bad_input)?;
        let job = Job {
            spec: export.spec,
            tenant: scope.map(str::to_string),
            created_by: by.to_string(),
            through_ns: None,
            failures: 0,
            next_run_ns: now,
            runs: VecDeque::new(),
        };
        let mut jobs = self.jobs();
        if jobs.iter().any(|j| j.spec.name == job.spec.name) {
            return Err(WireError::new(ErrorKind::Conflict, format!("an export named {} exists", job.spec.name)));
        }
        jobs.push(job.clone());
        self.save(&jobs).map_err(WireError::internal)?;
        Ok(job.status())
    }

    async fn remove(&self, name: &str, scope: Option<&str>) -> Result<(), WireError> {
        let _not_while_running = self.inner.running.lock().await;
        {
            let mut jobs = self.jobs();
            let before = jobs.len();
            jobs.retain(|j| !(j.spec.name == name && j.visible(scope)));
            if jobs.len() == before {
                return Err(WireError::new(ErrorKind::NotFound, format!("no export named {name}")));
            }
            self.save(&jobs).map_err(WireError::internal)?;
        }
        self.inner.alarms.clear(&format!("export:{name}")).await;
        Ok(())
    }

    async fn run_now(&self, name: &str, scope: Option<&str>) -> Result<Run, WireError> {
        self.export(name, scope).await?;
        self.run_job(name, "manual").await
    }
}

impl corral_services::MetricsSource for Exports {
    fn render(&self, out: &mut String) {
        let c = &self.inner.counters;
        let mut out = corral_services::metrics::Exposition::new(out);
        out.family("corral_export_runs_total", "Scheduled and manual export runs, by result.", "counter")
            .sample(&[("result", "ok")], c.runs_ok.load(Ordering::Relaxed))
            .sample(&[("result", "failed")], c.runs_failed.load(Ordering::Relaxed));
        out.counter("corral_export_rows_total", "Rows written to export files.", c.rows.load(Ordering::Relaxed));
        out.counter("corral_export_bytes_total", "Bytes of export files written.", c.bytes.load(Ordering::Relaxed));
        out.gauge("corral_exports_failing", "Exports whose last run failed.", self.failing());
    }
}

//! A durable outbox: what a room must tell the outside world is committed to its own SQLite
//! database in the same transaction as the change that caused it, then delivered at least once.
//!
//! # Place on the data path
//!
//! ```text
//! pipeline ──► rules ──► alarm change + its outbox entries (one transaction) ──► Outbox::run ──► Deliver
//!              (later: campaigns, exports — each in its own database, same queue)    retries,     webhook, NATS,
//!                                                                                    dead letters  MQTT, command
//! ```
//!
//! The host owns the database file and its migrations; it creates the `outbox` table there
//! ([`schema::create`]) and enqueues inside its own transaction ([`Outbox::enqueue`]), so an entry
//! exists exactly when the change that caused it does: no crash can leave one without the other.
//! The delivery loop ([`Outbox::run`]) reads the host's [`corral_services::Clock`], attempts due
//! entries in parallel through the host's [`Deliver`], retries failures with exponential backoff
//! and jitter, and parks an entry as `dead` after the attempt limit or a permanent failure, where
//! the host's API lists it ([`Outbox::list`]) and an operator can retry it ([`Outbox::retry`]).
//! Every entry carries an idempotency key that receivers use to drop the duplicates a crash
//! between delivery and bookkeeping can cause.
//!
//! # Main types
//!
//! - [`Outbox`]: the queue's handle, shared by writers, the host's API and the delivery loop.
//! - [`NewEntry`]: what a writer enqueues — an opaque owner (`owner_kind`, `owner_id`), a tenant,
//!   the event, the host's target (stored as JSON) and the payload.
//! - [`Deliver`]: the host's half, one attempt to carry a [`Delivery`] to its target, failing with
//!   an [`AttemptError`] that says whether to retry.
//! - [`Record`], [`Scope`], [`ListFilter`], [`State`]: what lists and retries see.
//! - [`RetryPolicy`]; [`MetricNames`], the host's names for the counters; [`OutboxError`].
//!
//! # Example
//!
//! ```
//! use corral_outbox::{AttemptError, Deliver, Delivery, Family, MetricNames, NewEntry, Outbox, RetryPolicy, State};
//! use corral_services::ManualClock;
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! /// Prints the payload; the target is just a name.
//! struct Print;
//! impl Deliver for Print {
//!     type Target = String;
//!     fn kind(&self, _: &String) -> &'static str { "print" }
//!     async fn deliver(&self, d: &Delivery<String>) -> Result<(), AttemptError> {
//!         println!("{} → {}", d.payload, d.target);
//!         Ok(())
//!     }
//! }
//!
//! const F: Family = Family { name: "demo", help: "Demo." };
//! static NAMES: MetricNames =
//!     MetricNames { pending: F, delivered: F, failed_attempts: F, dead: F, delivery_seconds: F, kind_label: "kind" };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let options = sqlx::sqlite::SqliteConnectOptions::new().filename(dir.path().join("host.db")).create_if_missing(true);
//! let pool = sqlx::SqlitePool::connect_with(options).await?;
//! corral_outbox::schema::create(&mut *pool.acquire().await?).await?;
//!
//! let clock = ManualClock::at(1_800_000_000_000_000_000);
//! let retry = RetryPolicy { max_attempts: 5, base_ms: 1_000, max_ms: 60_000, concurrency: 8 };
//! let outbox = Arc::new(Outbox::open(pool.clone(), retry, Arc::new(clock.clone()), &NAMES).await?);
//!
//! // The host's change and its entry commit together.
//! let mut tx = pool.begin().await?;
//! let entry = NewEntry {
//!     idempotency_key: "export-7-done".into(), owner_kind: "export", owner_id: 7, tenant: Some("acme".into()),
//!     event: "done".into(), target: "ops".to_string(), payload: "export 7 is ready".into(),
//! };
//! let added = outbox.enqueue(&mut tx, &[entry]).await?;
//! tx.commit().await?;
//! outbox.enqueued(added);
//!
//! // In a server: tokio::spawn(outbox.clone().run(Print)). Here, by hand:
//! assert_eq!(outbox.deliver_due(&Print).await?, 1);
//! let listed = outbox.list(&Default::default()).await?;
//! assert_eq!((listed[0].state, listed[0].attempts), (State::Delivered, 1));
//! # Ok(())
//! # }
//! ```

mod delivery;
mod entry;
mod error;
mod metrics;
mod outbox;
pub mod schema;

#[cfg(test)]
mod tests;

pub use delivery::{AttemptError, Deliver, Delivery, RetryPolicy};
pub use entry::{ListFilter, NewEntry, Record, Scope, State};
pub use error::OutboxError;
pub use metrics::{Family, MetricNames};
pub use outbox::Outbox;

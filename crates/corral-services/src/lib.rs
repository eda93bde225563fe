//! The platform's services, as every door and room sees them.
//!
//! Place on the data path: beside it. A door (`corral-mqtt`, `corral-coap`, `corral-http`) asks
//! [`Identity`] whom a credential names, submits what it decoded to the ingest `Sink`, hears the
//! commands for its devices from [`Commands`] and answers queries through [`SqlService`]. It never
//! sees the registry, the rules or the store themselves: those rooms *implement* these traits, and
//! the binary picks the implementations in one place (embedded now; cluster-backed later, behind
//! the same traits).
//!
//! | trait | what it answers | implemented by |
//! |---|---|---|
//! | [`Identity`] | which device or application a credential is; whether a gateway speaks for a device; a device's tenant | `corral-pki` (`Identities`: registry tokens and PSKs, CA certificates) |
//! | [`Commands`] | send a command to a device, whatever door it uses; hear the answers | [`CommandBus`] (in process) |
//! | [`Reported`] | what a device says about itself (attributes) | `corral-registry` |
//! | [`BrokerUsers`] | MQTT clients with a user name, password and topic rules (not devices, not tokens) | `corral-registry` |
//! | [`DeviceTwins`] | the device side of twins: reported patches, desired documents and their changes, `get` | `corral-twin` (`TwinDoors`) |
//! | [`IssueCommands`] | tracked commands a room sends itself (a rule's action, a campaign) | `corral-commands` (`Tracker`) |
//! | [`ArtifactDownloads`] | a firmware artifact, a piece at a time, for a door that cuts it into blocks | `corral-campaigns` |
//! | [`SqlService`], [`SystemTable`] | read-only SQL (one statement, or a scoped session for a door that plans its own); the platform's own tables in it | `corral-store`; `devices`, `certificates` by the registry, `alarms` by the rules |
//! | [`OnlineStatus`], [`Connections`] | whether devices are online; who holds a connection | `corral-rules` (offline windows), `corral-mqtt` |
//! | [`DataLifecycle`] | retention per table and tenant, rollups, deleting a device's data | `corral-store` (`Lifecycle`) |
//! | [`PlatformAlarms`] | alarms about the platform itself (an export that keeps failing) | `corral-rules` |
//! | [`MetricsSource`] | Prometheus lines for `/metrics`, written with [`metrics::Exposition`] | every room that counts |
//! | [`Clock`] | what time it is, for behaviour that depends on it (windows, absence, retries) | [`SystemClock`]; [`ManualClock`] in tests |
//!
//! ```
//! use corral_services::{Command, Commands, CommandBus};
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let bus = CommandBus::default();
//! let mut coap = bus.subscribe(); // a door listens before anything is sent
//! let command = Command::new(corral_model::DeviceId::new("meter-1").unwrap(), None, "reboot", b"{}".to_vec(), None);
//! bus.send(command).await.unwrap();
//! assert_eq!(coap.recv().await.unwrap().id, "reboot");
//! # }
//! ```

mod alarms;
mod artifacts;
mod broker_users;
mod clock;
mod commands;
mod identity;
mod lifecycle;
pub mod metrics;
mod presence;
mod sql;
mod twins;

pub use alarms::PlatformAlarms;
pub use artifacts::ArtifactDownloads;
pub use broker_users::{BrokerLogin, BrokerUsers, TopicAccess, TopicRule};
pub use clock::{Clock, ManualClock, SystemClock};
pub use commands::{Carried, Command, CommandBus, CommandOrder, CommandProgress, CommandResponse, Commands, IssueCommands};
pub use identity::{Application, Caller, Credential, DeviceCaller, Identity, Reported, Role};
pub use lifecycle::{DataLifecycle, Deletion, PolicySource, RetentionPolicy, RollupSpec, parse_duration};
pub use metrics::MetricsSource;
pub use presence::{Connection, Connections, DeviceFacts, OnlineStatus};
pub use sql::{SqlResult, SqlService, SystemTable, read_only};
pub use twins::{DesiredMessage, DesiredNotice, DeviceTwins, ReportedNotice};

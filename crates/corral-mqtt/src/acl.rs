//! Least-privilege topic access rules for each kind of [`Identity`].
//!
//! - Device: only `devices/<own id or child>/<something>` for both publish and subscribe; a
//!   wildcard in the device level (`devices/+/...`, `#`) is denied.
//! - Application: may subscribe to anything (a tenant scope then filters what it receives).
//!   Viewers may not publish; operators and admins may, but not to the device→platform topics
//!   (telemetry, attributes, reported twin, a command's answer: those speak for a device). A tenant-scoped one
//!   publishes only to devices of its tenant and under `tenants/<its tenant>/`, its own
//!   namespace; an unscoped one anywhere else too.
//! - Broker user: publishes where a write rule allows, never under `devices/` (it speaks for no
//!   device) nor, when tenant-scoped, under another tenant's `tenants/`; receives what a read
//!   rule allows (of its tenant's messages, when scoped).
//! - Anonymous (open mode): publishes anything outside `devices/`, `alarms/` and `tenants/`, and
//!   subscribes to any filter (`#` included), receiving only what no tenant owns.
//! - What a subscriber receives is checked per message ([`Audience`]), not only per filter: a
//!   wildcard is granted as a broker grants it, and never carries what its owner may not read.
//! - Nobody publishes to `$`-topics, `alarms/` or a device's twin outputs (`devices/<id>/twin`,
//!   `devices/<id>/twin/desired`): all are the server's (alarm events carry the tenant of the
//!   alarm, which a client must not be able to forge; a device must be able to trust that its
//!   desired document is the platform's).

use std::sync::Arc;

use crate::hooks::{BrokerHooks, Identity, Role};
use crate::topic;

/// Whose messages a subscription receives, fixed from its owner's identity when it subscribes
/// and checked for each message routed to it. The check is a pointer-sized compare and a look
/// at the topic's first level, so it needs no cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Audience {
    /// Unscoped applications, and devices (whose filters the ACL confines to their own topics).
    Everything,
    /// A tenant-scoped application: its tenant's messages only.
    Tenant(Arc<str>),
    /// An anonymous client (open mode): messages no tenant owns, outside the platform's
    /// namespaces (`devices/`, `tenants/`, `alarms/`).
    Public,
    /// A broker user: topics one of its read filters matches (of its tenant, when scoped).
    User { tenant: Option<Arc<str>>, read: Arc<[String]> },
}

impl Audience {
    pub fn of(who: &Identity) -> Audience {
        match who {
            Identity::Application { tenant: Some(tenant), .. } => Audience::Tenant(Arc::from(tenant.as_str())),
            Identity::Application { tenant: None, .. } | Identity::Device { .. } => Audience::Everything,
            Identity::Anonymous => Audience::Public,
            Identity::User { tenant, read, .. } => {
                Audience::User { tenant: tenant.as_deref().map(Arc::from), read: read.clone() }
            }
        }
    }

    /// May a message on `topic_name` whose data belongs to `origin` (a tenant) reach it?
    pub fn receives(&self, topic_name: &str, origin: &Option<Arc<str>>) -> bool {
        match self {
            Audience::Everything => true,
            Audience::Tenant(scope) => origin.as_deref() == Some(&**scope),
            Audience::Public => origin.is_none() && !matches!(first_level(topic_name), "devices" | "tenants" | "alarms"),
            Audience::User { tenant, read } => {
                tenant.as_ref().is_none_or(|t| origin.as_deref() == Some(&**t))
                    && read.iter().any(|f| topic::matches(f, topic_name))
            }
        }
    }
}

/// Where the ACL learns the tenant of the device a topic names. The rules are synchronous and
/// must not wait for the registry: a connection looks the tenant up first (see
/// [`device_to_resolve`]) and passes the answer as [`Resolved`]; any [`BrokerHooks`] also serves,
/// with what it knows without waiting.
pub(crate) trait DeviceTenants {
    fn tenant_of_device(&self, device: &str) -> Option<String>;
}

impl<H: BrokerHooks + ?Sized> DeviceTenants for H {
    fn tenant_of_device(&self, device: &str) -> Option<String> {
        self.device_tenant(device)
    }
}

/// The tenant of the one device a topic names, looked up before the ACL ran (`None`: unknown
/// device, or the topic names none).
pub(crate) struct Resolved<'a>(pub Option<&'a str>);

impl DeviceTenants for Resolved<'_> {
    fn tenant_of_device(&self, _device: &str) -> Option<String> {
        self.0.map(str::to_owned)
    }
}

/// The device whose tenant a publish of `who` to `topic_name` needs: an application (other than
/// a viewer) publishing to `devices/<id>/...`, a command. A tenant-scoped one is allowed only
/// within its tenant, and the message carries the device's tenant either way. `None` when
/// neither the ACL nor the message depends on it (devices carry their own tenant; everything
/// else is decided without it).
pub(crate) fn device_to_resolve<'t>(who: &Identity, topic_name: &'t str) -> Option<&'t str> {
    match who {
        Identity::Application { role, .. } if !servers_own(topic_name) && application_may_publish_to(*role, topic_name) => {
            topic::device_of(topic_name)
        }
        _ => None,
    }
}

/// `$`-topics, `alarms/` and twin outputs: nobody publishes there but the server.
fn servers_own(topic_name: &str) -> bool {
    topic_name.starts_with('$') || first_level(topic_name) == "alarms" || topic::is_twin_output(topic_name)
}

/// Whether an application of `role` may publish to `topic_name` at all: viewers never do, and no
/// application speaks for a device (telemetry, attributes, reported twin, a command's answer).
fn application_may_publish_to(role: Role, topic_name: &str) -> bool {
    role != Role::Viewer && topic::platform_topic(topic_name).is_none() && !topic::is_command_answer(topic_name)
}

/// May `who` publish to `topic` (a valid topic name)?
pub(crate) fn may_publish(who: &Identity, topic_name: &str, tenants: &dyn DeviceTenants) -> bool {
    if servers_own(topic_name) {
        return false;
    }
    match who {
        Identity::Device { id, children, .. } => match topic::device_of(topic_name) {
            Some(device) => device == id || children.iter().any(|c| c == device),
            None => false,
        },
        Identity::Application { role, tenant, .. } => {
            if !application_may_publish_to(*role, topic_name) {
                return false;
            }
            match (tenant, topic::device_of(topic_name)) {
                (Some(tenant), Some(device)) => tenants.tenant_of_device(device).as_deref() == Some(tenant.as_str()),
                (Some(tenant), None) => in_tenant_namespace(topic_name, tenant),
                (None, _) => true,
            }
        }
        Identity::User { tenant, write, .. } => {
            let namespace_ok = match (first_level(topic_name), tenant) {
                ("devices", _) => false,
                ("tenants", Some(tenant)) => in_tenant_namespace(topic_name, tenant),
                _ => true,
            };
            namespace_ok && write.iter().any(|f| topic::matches(f, topic_name))
        }
        Identity::Anonymous => !matches!(first_level(topic_name), "devices" | "tenants"),
    }
}

/// `tenants/<tenant>/...`: where a tenant-scoped application publishes what is not a command.
fn in_tenant_namespace(topic_name: &str, tenant: &str) -> bool {
    let mut levels = topic_name.split('/');
    levels.next() == Some("tenants") && levels.next() == Some(tenant) && levels.next().is_some()
}

/// May `who` subscribe to `filter` (valid, with any `$share/<group>/` prefix removed)?
pub(crate) fn may_subscribe(who: &Identity, filter: &str) -> bool {
    match who {
        Identity::Device { id, children, .. } => {
            let mut levels = filter.split('/');
            let (Some("devices"), Some(device), Some(_)) = (levels.next(), levels.next(), levels.next()) else {
                return false;
            };
            device == id || children.iter().any(|c| c == device)
        }
        // What they may not read is filtered per message (Audience).
        Identity::Application { .. } | Identity::User { .. } | Identity::Anonymous => true,
    }
}

fn first_level(s: &str) -> &str {
    s.split('/').next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::{ConnectRefusal, ConnectRequest};

    struct Tenants;
    #[async_trait::async_trait]
    impl BrokerHooks for Tenants {
        async fn authenticate(&self, _: &ConnectRequest) -> Result<Identity, ConnectRefusal> {
            Err(ConnectRefusal::NotAuthorized)
        }
        fn on_platform_publish(
            &self,
            _: &Identity,
            _: &crate::InboundPublish,
        ) -> Result<crate::PlatformWrite, crate::PublishRefusal> {
            Ok(Box::pin(async { Ok(()) }))
        }
        fn device_tenant(&self, device: &str) -> Option<String> {
            match device {
                "a1" => Some("acme".into()),
                "b1" => Some("beta".into()),
                _ => None,
            }
        }
    }

    fn device() -> Identity {
        Identity::Device { id: "gw".into(), tenant: "acme".into(), children: vec!["c1".into()] }
    }

    fn app(role: Role, tenant: Option<&str>) -> Identity {
        Identity::Application { name: "app".into(), principal: "app".into(), role, tenant: tenant.map(Into::into) }
    }

    #[test]
    fn devices_stay_under_their_own_and_childrens_topics() {
        let d = device();
        assert!(may_publish(&d, "devices/gw/telemetry", &Tenants));
        assert!(may_publish(&d, "devices/c1/telemetry", &Tenants));
        assert!(!may_publish(&d, "devices/other/telemetry", &Tenants));
        assert!(!may_publish(&d, "devices/gw", &Tenants));
        assert!(!may_publish(&d, "elsewhere", &Tenants));
        assert!(may_subscribe(&d, "devices/gw/commands/#"));
        assert!(may_subscribe(&d, "devices/c1/+"));
        assert!(!may_subscribe(&d, "devices/+/commands/#"));
        assert!(!may_subscribe(&d, "#"));
        assert!(!may_subscribe(&d, "devices/gw"));
        assert!(!may_subscribe(&d, "devices/#"));
    }

    #[test]
    fn applications_by_role_and_tenant() {
        assert!(may_subscribe(&app(Role::Viewer, None), "#"));
        assert!(!may_publish(&app(Role::Viewer, None), "devices/a1/commands/x", &Tenants));
        assert!(may_publish(&app(Role::Operator, None), "devices/a1/commands/x", &Tenants));
        assert!(may_publish(&app(Role::Operator, Some("acme")), "devices/a1/commands/x", &Tenants));
        assert!(!may_publish(&app(Role::Operator, Some("acme")), "devices/b1/commands/x", &Tenants));
        assert!(!may_publish(&app(Role::Admin, Some("acme")), "devices/unknown/commands/x", &Tenants));
        assert!(!may_publish(&app(Role::Admin, None), "devices/a1/telemetry", &Tenants));
        assert!(!may_publish(&app(Role::Admin, None), "devices/a1/commands/c1/response", &Tenants), "the device answers");
        assert!(may_publish(&device(), "devices/gw/commands/c1/response", &Tenants));
        assert!(!may_publish(&app(Role::Admin, None), "$SYS/x", &Tenants));
    }

    /// Regression (tenant isolation): an acme operator published and retained
    /// `alarms/globex/globex-d1`, which unscoped subscribers took for a globex alarm event.
    #[test]
    fn nobody_forges_alarm_events_or_leaves_its_tenants_namespace() {
        for who in [app(Role::Operator, Some("acme")), app(Role::Admin, None), device(), Identity::Anonymous] {
            assert!(!may_publish(&who, "alarms/globex/globex-d1", &Tenants), "{who:?}");
            assert!(!may_publish(&who, "alarms/acme/a1", &Tenants), "{who:?}");
        }
        let acme = app(Role::Operator, Some("acme"));
        assert!(may_publish(&acme, "tenants/acme/dispatch", &Tenants));
        assert!(!may_publish(&acme, "tenants/acme", &Tenants));
        assert!(!may_publish(&acme, "tenants/globex/dispatch", &Tenants));
        assert!(!may_publish(&acme, "ops/anything", &Tenants));
        assert!(may_publish(&app(Role::Operator, None), "ops/anything", &Tenants));
        assert!(!may_publish(&Identity::Anonymous, "tenants/acme/x", &Tenants));
    }

    /// A device trusts its desired document and twin answers because only the platform
    /// publishes them; the device itself reports and asks.
    #[test]
    fn nobody_but_the_platform_publishes_a_devices_twin_outputs() {
        for who in [device(), app(Role::Admin, None), app(Role::Operator, Some("acme"))] {
            assert!(!may_publish(&who, "devices/gw/twin/desired", &Tenants), "{who:?}");
            assert!(!may_publish(&who, "devices/gw/twin", &Tenants), "{who:?}");
        }
        assert!(may_publish(&device(), "devices/gw/twin/reported", &Tenants));
        assert!(may_publish(&device(), "devices/gw/twin/get", &Tenants));
        assert!(may_subscribe(&device(), "devices/gw/twin/desired"));
    }

    #[test]
    fn anonymous_stays_outside_devices() {
        let a = Identity::Anonymous;
        assert!(may_publish(&a, "lobby/chat", &Tenants));
        assert!(!may_publish(&a, "devices/a1/telemetry", &Tenants));
        // Any filter is granted; what it may not read never reaches it.
        for filter in ["lobby/#", "#", "+/+", "+/a1/telemetry", "devices/#"] {
            assert!(may_subscribe(&a, filter), "{filter}");
        }
        let public = Audience::of(&a);
        let acme: Option<Arc<str>> = Some(Arc::from("acme"));
        assert!(public.receives("lobby/chat", &None));
        assert!(public.receives("$SYS/broker/uptime", &None));
        for topic in ["devices/a1/telemetry", "tenants/acme/x", "alarms/acme/a1"] {
            assert!(!public.receives(topic, &None), "{topic}");
        }
        assert!(!public.receives("ops/x", &acme), "a tenant's data, wherever it is published");
    }

    #[test]
    fn broker_users_follow_their_rules_and_tenant() {
        let user = |tenant: Option<&str>| Identity::User {
            name: "gw".into(),
            tenant: tenant.map(Into::into),
            read: Arc::from(vec!["sensors/gw/#".to_string(), "devices/+/telemetry".to_string(), "tenants/acme/#".to_string()]),
            write: Arc::from(vec!["sensors/gw/#".to_string(), "devices/#".to_string(), "tenants/#".to_string()]),
        };
        let scoped = user(Some("acme"));
        assert!(may_publish(&scoped, "sensors/gw/t1", &Tenants));
        assert!(!may_publish(&scoped, "sensors/other/t1", &Tenants), "no rule");
        assert!(!may_publish(&scoped, "devices/a1/telemetry", &Tenants), "speaks for no device, whatever its rules");
        assert!(may_publish(&scoped, "tenants/acme/x", &Tenants));
        assert!(!may_publish(&scoped, "tenants/globex/x", &Tenants), "another tenant's namespace");
        assert!(!may_publish(&scoped, "$SYS/x", &Tenants) && !may_publish(&scoped, "alarms/acme/a1", &Tenants));
        assert!(may_subscribe(&scoped, "#"));
        let acme: Option<Arc<str>> = Some(Arc::from("acme"));
        let globex: Option<Arc<str>> = Some(Arc::from("globex"));
        let reads = Audience::of(&scoped);
        assert!(reads.receives("devices/a1/telemetry", &acme));
        assert!(!reads.receives("devices/b1/telemetry", &globex), "another tenant's device");
        assert!(!reads.receives("devices/a1/commands/c1", &acme), "no read rule");
        assert!(!reads.receives("sensors/gw/t1", &None), "a scoped user reads only its tenant's messages");
        let unscoped = Audience::of(&user(None));
        assert!(unscoped.receives("sensors/gw/t1", &None) && unscoped.receives("devices/b1/telemetry", &globex));
    }

    #[test]
    fn audiences_follow_the_identity() {
        let acme: Option<Arc<str>> = Some(Arc::from("acme"));
        let globex: Option<Arc<str>> = Some(Arc::from("globex"));
        let scoped = Audience::of(&app(Role::Viewer, Some("acme")));
        assert!(scoped.receives("devices/a1/telemetry", &acme));
        assert!(!scoped.receives("devices/b1/telemetry", &globex));
        assert!(!scoped.receives("lobby/chat", &None));
        let unscoped = Audience::of(&app(Role::Viewer, None));
        assert!(unscoped.receives("devices/b1/telemetry", &globex) && unscoped.receives("lobby/chat", &None));
        assert_eq!(Audience::of(&device()), Audience::Everything);
    }
}

//! Which webhook targets Corral may call. A rule author controls the URL, so without this a
//! webhook is a way to make the server POST to its own admin port, the cloud metadata service
//! (169.254.169.254) or anything else on the private network (SSRF).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Webhook target policy, checked by host name before resolving and again on every address
/// the name resolves to (the addresses actually connected to, so DNS rebinding cannot slip by).
///
/// Entries in `allow` and `deny` are an IP (`127.0.0.1`, `::1`), a CIDR (`10.0.0.0/8`,
/// `fd00::/8`), a host name (`hooks.example.com`) or a wildcard (`*.example.com`, which matches
/// any subdomain but not `example.com` itself).
///
/// - `deny` always wins: a target matching a deny entry is refused, whatever else matches.
/// - Private (RFC 1918, `fc00::/7`), loopback, link-local, unspecified, multicast, broadcast and
///   CGNAT (`100.64.0.0/10`) addresses, also in IPv4-mapped IPv6 form, are refused unless
///   `allow_private` is set or the address or host name matches an `allow` entry.
/// - `allow` only widens, `deny` only narrows: public addresses stay allowed even when `allow`
///   is non-empty and the target matches none of its entries. `allow` exists to open specific
///   internal hosts; it is not an allow-list of the only permitted targets (and because deny
///   wins, `deny = ["0.0.0.0/0"]` plus `allow` entries would refuse everything).
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TargetPolicy {
    /// Webhook targets allowed although private, loopback or link-local (IPs, CIDRs, host names, *.domains).
    pub allow: Vec<String>,
    /// Targets always refused (deny wins over allow).
    pub deny: Vec<String>,
    /// Allow every private, loopback and link-local target (labs only).
    pub allow_private: bool,
}

impl TargetPolicy {
    /// Checks that every entry parses; the message names the bad entry.
    pub fn validate(&self) -> Result<(), String> {
        self.entries().map(|_| ())
    }

    /// Checks a host name before it is resolved. Only the deny list applies by name here: whether
    /// a name is allowed depends on the addresses it resolves to ([`Self::check_ip`]). An IP
    /// literal is checked as an address right away.
    pub fn check_host(&self, host: &str) -> Result<(), String> {
        let host = normalize_host(host);
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.check_ip(&host, ip);
        }
        let (_, deny) = self.entries()?;
        if let Some(entry) = deny.iter().find(|e| e.matches_name(&host)) {
            return Err(denied(&host, None, entry));
        }
        Ok(())
    }

    /// Checks one address `host` resolved to (or the address itself when the URL names an IP).
    pub fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), String> {
        let host = normalize_host(host);
        // `::ffff:10.0.0.1` reaches 10.0.0.1, so it is judged (and matched) as that address.
        let ip = ip.to_canonical();
        let (allow, deny) = self.entries()?;
        if let Some(entry) = deny.iter().find(|e| e.matches(&host, ip)) {
            return Err(denied(&host, Some(ip), entry));
        }
        let Some(kind) = special_kind(ip) else { return Ok(()) };
        if self.allow_private || allow.iter().any(|e| e.matches(&host, ip)) {
            return Ok(());
        }
        Err(format!(
            "webhook target {} is {kind} address; allow it with rules.webhooks.allow = [\"{ip}\"] \
             (or rules.webhooks.allow_private = true for every private target)",
            describe(&host, Some(ip)),
        ))
    }

    fn entries(&self) -> Result<(Vec<Entry>, Vec<Entry>), String> {
        let parse = |list: &[String], name: &str| -> Result<Vec<Entry>, String> {
            list.iter().map(|s| Entry::parse(s).map_err(|e| format!("rules.webhooks.{name}: {e}"))).collect()
        };
        Ok((parse(&self.allow, "allow")?, parse(&self.deny, "deny")?))
    }
}

/// One parsed `allow` / `deny` entry. Parsed on every check (lists are short, a request is not),
/// which keeps `TargetPolicy` plain config and makes a bad entry fail closed.
#[derive(Debug, Clone, PartialEq)]
enum Entry {
    Net(Cidr),
    Host(String),
    /// `*.example.com`, stored as `.example.com`.
    Suffix(String),
}

impl Entry {
    fn parse(text: &str) -> Result<Entry, String> {
        let s = text.trim();
        if let Some((_, rest)) = s.split_once("://") {
            let host = rest.split(['/', ':', '?']).next().unwrap_or_default();
            return Err(format!("{text:?} is a URL; write the host alone, e.g. \"{host}\""));
        }
        if s.contains('/') {
            return Cidr::parse(s).map(Entry::Net);
        }
        if let Ok(ip) = s.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            let ip = ip.to_canonical();
            let bits = if ip.is_ipv4() { 32 } else { 128 };
            return Ok(Entry::Net(Cidr { base: ip, bits }));
        }
        let (suffix, name) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let name = normalize_host(name);
        let label_ok = |l: &str| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if name.is_empty() || !name.split('.').all(label_ok) {
            return Err(format!("{text:?} is not an IP, CIDR (10.0.0.0/8), host name or wildcard (*.example.com)"));
        }
        Ok(if suffix { Entry::Suffix(format!(".{name}")) } else { Entry::Host(name) })
    }

    fn matches_name(&self, host: &str) -> bool {
        match self {
            Entry::Host(name) => host == name,
            Entry::Suffix(suffix) => host.ends_with(suffix.as_str()),
            Entry::Net(_) => false,
        }
    }

    fn matches(&self, host: &str, ip: IpAddr) -> bool {
        match self {
            Entry::Net(cidr) => cidr.contains(ip),
            _ => self.matches_name(host),
        }
    }
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Entry::Net(c) => write!(f, "{}/{}", c.base, c.bits),
            Entry::Host(h) => f.write_str(h),
            Entry::Suffix(s) => write!(f, "*{s}"),
        }
    }
}

/// An address block. Hand-written because it is twenty lines and the only use.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Cidr {
    base: IpAddr,
    bits: u8,
}

impl Cidr {
    fn parse(text: &str) -> Result<Cidr, String> {
        let bad = |why: &str| format!("{text:?} is not a valid CIDR: {why}");
        let (addr, len) = text.split_once('/').ok_or_else(|| bad("missing /"))?;
        let base: IpAddr = addr.parse().map_err(|_| bad("bad address"))?;
        let max = if base.is_ipv4() { 32 } else { 128 };
        let bits: u8 = len.parse().ok().filter(|b| *b <= max).ok_or_else(|| bad(&format!("prefix length must be 0..={max}")))?;
        // Addresses are matched in canonical form, so ::ffff:10.0.0.0/104 becomes 10.0.0.0/8.
        let cidr = match base.to_canonical() {
            v4 @ IpAddr::V4(_) if base.is_ipv6() && bits >= 96 => Cidr { base: v4, bits: bits - 96 },
            _ => Cidr { base, bits },
        };
        // A typo like 10.0.0.1/8 usually means 10.0.0.0/8; say so rather than guess.
        if cidr.network(cidr.base) != to_bits(cidr.base) {
            return Err(bad("address has bits set past the prefix length"));
        }
        Ok(cidr)
    }

    fn contains(&self, ip: IpAddr) -> bool {
        // IPv4 blocks match IPv4 addresses, IPv6 blocks IPv6 ones (callers canonicalize mapped).
        ip.is_ipv4() == self.base.is_ipv4() && self.network(ip) == to_bits(self.base)
    }

    fn network(&self, ip: IpAddr) -> u128 {
        let width = if ip.is_ipv4() { 32 } else { 128 };
        let host_bits = u32::from(width - self.bits);
        let mask = if host_bits >= 128 { 0 } else { u128::MAX << host_bits };
        to_bits(ip) & mask
    }
}

fn to_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Why an address is off-limits by default, phrased to follow "is" in a message; `None` for an
/// ordinary public address.
fn special_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(match () {
        _ if ip.is_loopback() => "a loopback",
        _ if ip.is_private() => "a private (RFC 1918)",
        _ if ip.is_link_local() => "a link-local",
        // 0.0.0.0/8 is "this network"; Linux connects 0.0.0.0 to the local host.
        _ if a == 0 => "an unspecified",
        _ if ip.is_multicast() => "a multicast",
        _ if ip.is_broadcast() => "the broadcast",
        _ if a == 100 && (64..128).contains(&b) => "a carrier-grade NAT (100.64.0.0/10)",
        _ => return None,
    })
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    Some(match () {
        _ if ip.is_loopback() => "a loopback",
        _ if ip.is_unspecified() => "an unspecified",
        _ if first & 0xfe00 == 0xfc00 => "a private (unique local, fc00::/7)",
        _ if first & 0xffc0 == 0xfe80 => "a link-local",
        _ if ip.is_multicast() => "a multicast",
        _ => return None,
    })
}

/// Host names compare case-insensitively and without the trailing root dot; IPv6 literals come
/// from URLs with brackets.
fn normalize_host(host: &str) -> String {
    host.trim().trim_start_matches('[').trim_end_matches(']').trim_end_matches('.').to_ascii_lowercase()
}

fn describe(host: &str, ip: Option<IpAddr>) -> String {
    match ip {
        Some(ip) if host.parse::<IpAddr>().map(|h| h.to_canonical()) != Ok(ip) => {
            format!("{ip} ({host})")
        }
        Some(ip) => ip.to_string(),
        None => host.to_string(),
    }
}

fn denied(host: &str, ip: Option<IpAddr>, entry: &Entry) -> String {
    format!(
        "webhook target {} is refused by rules.webhooks.deny entry \"{entry}\"; \
         remove that entry to allow it",
        describe(host, ip)
    )
}

#[cfg(test)]
mod tests;

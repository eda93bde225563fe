//! The policy on addresses and names alone; webhook tests cover it on real connections.

use super::*;

fn policy(allow: &[&str], deny: &[&str]) -> TargetPolicy {
    let list = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
    TargetPolicy { allow: list(allow), deny: list(deny), allow_private: false }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn default_refuses_every_special_range_and_says_how_to_allow_it() {
    let p = TargetPolicy::default();
    let cases = [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd12::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
    ];
    for (addr, kind) in cases {
        let err = p.check_ip(addr, ip(addr)).unwrap_err();
        assert!(err.contains(kind), "{addr}: {err}");
        assert!(err.contains("rules.webhooks.allow"), "{addr}: {err}");
    }
    let err = p.check_ip("localhost", ip("127.0.0.1")).unwrap_err();
    assert_eq!(
        err,
        "webhook target 127.0.0.1 (localhost) is a loopback address; allow it with \
         rules.webhooks.allow = [\"127.0.0.1\"] (or rules.webhooks.allow_private = true \
         for every private target)"
    );
}

#[test]
fn public_addresses_pass_even_with_a_non_matching_allow_list() {
    for p in [TargetPolicy::default(), policy(&["hooks.internal"], &[])] {
        p.check_ip("example.com", ip("93.184.215.14")).unwrap();
        p.check_ip("example.com", ip("2606:2800:21f:cb07:6820:80da:af6b:8b2c")).unwrap();
        p.check_ip("x", ip("100.128.0.1")).unwrap(); // just past CGNAT
        p.check_host("example.com").unwrap();
    }
}

#[test]
fn allow_entries_open_private_targets_by_ip_cidr_name_and_wildcard() {
    let p = policy(&["127.0.0.1", "10.0.0.0/8", "hooks.internal", "*.svc.local", "fd00::/8"], &[]);
    p.check_ip("127.0.0.1", ip("127.0.0.1")).unwrap();
    p.check_ip("::ffff:127.0.0.1", ip("::ffff:127.0.0.1")).unwrap();
    p.check_ip("a", ip("10.200.0.1")).unwrap();
    p.check_ip("Hooks.Internal.", ip("192.168.0.9")).unwrap();
    p.check_ip("a.b.svc.local", ip("172.16.0.1")).unwrap();
    p.check_ip("b", ip("fd00::5")).unwrap();
    assert!(p.check_ip("svc.local", ip("172.16.0.1")).is_err(), "wildcard needs a subdomain");
    assert!(p.check_ip("127.0.0.2", ip("127.0.0.2")).is_err());
    let open = TargetPolicy { allow_private: true, ..TargetPolicy::default() };
    open.check_ip("localhost", ip("::1")).unwrap();
}

#[test]
fn deny_wins_over_allow_and_allow_private() {
    let mut p = policy(&["10.0.0.0/8", "*.example.com"], &["10.9.0.0/16", "evil.example.com"]);
    p.allow_private = true;
    p.check_ip("a", ip("10.1.0.1")).unwrap();
    let err = p.check_ip("a", ip("10.9.0.1")).unwrap_err();
    assert!(err.contains("deny entry \"10.9.0.0/16\""), "{err}");
    assert!(p.check_ip("a", ip("::ffff:10.9.0.1")).is_err(), "mapped form is denied too");
    let err = p.check_host("EVIL.example.com").unwrap_err();
    assert!(err.contains("evil.example.com"), "{err}");
    assert!(p.check_ip("evil.example.com", ip("93.184.215.14")).is_err());
    let public = policy(&[], &["203.0.113.0/24"]);
    assert!(public.check_ip("x", ip("203.0.113.7")).is_err());
    assert!(public.check_host("203.0.113.7").is_err(), "IP literal host is checked as an IP");
}

#[test]
fn validate_names_the_bad_entry() {
    policy(&["::1", "[::1]", "10.0.0.0/8", "0.0.0.0/0", "::/0", "a-b.c_d", "*.x.io"], &[]).validate().unwrap();
    for (entry, why) in [
        ("10.0.0.1/8", "bits set"),
        ("10.0.0.0/33", "0..=32"),
        ("fd00::/129", "0..=128"),
        ("10.0.0.0/x", "0..=32"),
        ("nope/8", "bad address"),
        ("http://a.com:80/x", "write the host alone, e.g. \"a.com\""),
        ("a..b", "not an IP"),
        ("*", "not an IP"),
        ("", "not an IP"),
    ] {
        let err = policy(&[], &[entry]).validate().unwrap_err();
        assert!(err.contains(&format!("{entry:?}")) && err.contains(why), "{entry}: {err}");
        assert!(err.starts_with("rules.webhooks.deny"), "{err}");
    }
    // A broken entry fails closed instead of being skipped.
    assert!(policy(&[], &["10.0.0.1/8"]).check_ip("x", ip("8.8.8.8")).is_err());
}

#[test]
fn cidr_matching_at_the_edges() {
    let c = Cidr::parse("100.64.0.0/10").unwrap();
    assert!(c.contains(ip("100.127.255.255")));
    assert!(!c.contains(ip("100.128.0.0")));
    assert!(!c.contains(ip("::1")), "families never cross");
    let all = Cidr::parse("0.0.0.0/0").unwrap();
    assert!(all.contains(ip("8.8.8.8")));
    let mapped = Cidr::parse("::ffff:10.0.0.0/104").unwrap();
    assert!(mapped.contains(ip("10.255.0.1")));
    let p = policy(&["::ffff:127.0.0.1"], &[]);
    p.check_ip("x", ip("127.0.0.1")).unwrap();
    let host = Cidr::parse("2001:db8::1/128").unwrap();
    assert!(host.contains(ip("2001:db8::1")) && !host.contains(ip("2001:db8::2")));
}

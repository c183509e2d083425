//! The model of Istio's address rules (tests/support/istio_model.rs) on the cases of issue 17's
//! table: which address each proxy knows, who answers the name, what Istio's allocator writes.
//! No apiserver needed; the e2e that uses the model is tests/kube_e2e/proxies.rs.

#[path = "support/istio_model.rs"]
mod istio_model;

use std::collections::BTreeSet;
use std::net::IpAddr;

use istio_model::*;

const ON: Istiod = Istiod { allocator: true };
const OFF: Istiod = Istiod { allocator: false };
const PROFILES: [Proxy; 3] = [DEFAULT_SIDECAR, CAPTURE_SIDECAR, WAYPOINT];
/// A VIP globaldns would answer (its default range, 240.10.0.0/16).
const VIP: &str = "240.10.3.4";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn tcp(name: &str) -> Entry {
    Entry::new(
        "ns",
        name,
        &[&format!("{name}.ns.global")],
        &[(9000, "TCP")],
    )
}

fn with_status(mut e: Entry, pairs: &[(&str, &str)]) -> Entry {
    e.status = pairs
        .iter()
        .map(|(v, h)| StatusAddress {
            value: v.to_string(),
            host: h.to_string(),
        })
        .collect();
    e
}

fn host<'a>(v: &'a View, name: &str) -> &'a HostView {
    v.lookup(name).unwrap_or_else(|| panic!("{name} unknown")).1
}

/// The port's listener for the host, in the view of `proxy`.
fn listen(entries: &[Entry], istiod: Istiod, proxy: Proxy, name: &str, port: u16) -> Listen {
    host(&View::of(entries, istiod, proxy), name).ports[&port]
        .1
        .clone()
}

fn dns(entries: &[Entry], istiod: Istiod, proxy: Proxy, name: &str) -> Dns {
    host(&View::of(entries, istiod, proxy), name).dns.clone()
}

#[test]
fn spec_addresses_are_known_to_every_proxy_with_the_allocator_on_or_off() {
    let mut e = tcp("own");
    e.addresses = vec!["10.9.0.1".into()];
    // A status address someone wrote is ignored when spec.addresses is set.
    let es = [with_status(e, &[("240.240.0.9", "own.ns.global")])];
    for istiod in [ON, OFF] {
        for p in PROFILES {
            let l = listen(&es, istiod, p, "own.ns.global", 9000);
            assert_eq!(
                l.addresses,
                BTreeSet::from([ip("10.9.0.1")]),
                "{} {istiod:?}",
                p.name()
            );
            assert!(!l.by_address(ip("240.240.0.9")));
        }
        let answered = Dns::Proxy(BTreeSet::from([ip("10.9.0.1")]));
        assert_eq!(dns(&es, istiod, CAPTURE_SIDECAR, "own.ns.global"), answered);
        assert_eq!(dns(&es, istiod, WAYPOINT, "own.ns.global"), answered);
        assert_eq!(
            dns(&es, istiod, DEFAULT_SIDECAR, "own.ns.global"),
            Dns::Upstream,
            "a sidecar without DNS capture asks DNS for every name"
        );
    }
}

#[test]
fn status_addresses_reach_only_capturing_proxies_and_waypoints_with_the_allocator_on() {
    let e = with_status(tcp("auto"), &[("240.240.0.1", "auto.ns.global")]);
    let es = [e];
    for p in [CAPTURE_SIDECAR, WAYPOINT] {
        let l = listen(&es, ON, p, "auto.ns.global", 9000);
        assert!(l.by_address(ip("240.240.0.1")), "{}", p.name());
        assert_eq!(
            dns(&es, ON, p, "auto.ns.global"),
            Dns::Proxy(BTreeSet::from([ip("240.240.0.1")]))
        );
    }
    // The default sidecar: only the wildcard listener, shared by every TCP service of the port.
    let l = listen(&es, ON, DEFAULT_SIDECAR, "auto.ns.global", 9000);
    assert!(!l.by_address(ip("240.240.0.1")));
    assert_eq!(l.wildcard, Some(Wildcard::SharedTcp));
    // Allocator off: istiod ignores status.addresses; everyone asks DNS, nobody knows it.
    for p in PROFILES {
        let l = listen(&es, OFF, p, "auto.ns.global", 9000);
        assert!(!l.by_address(ip("240.240.0.1")), "{}", p.name());
        assert_eq!(dns(&es, OFF, p, "auto.ns.global"), Dns::Upstream);
    }
}

#[test]
fn status_addresses_are_ignored_for_none_opted_out_and_user_addressed_entries() {
    let status = |e: Entry| with_status(e, &[("240.240.0.1", "x.ns.global")]);
    let mut none = Entry::new("ns", "x", &["x.ns.global"], &[(9000, "TCP")]);
    none.resolution = Resolution::None;
    let mut opted = Entry::new("ns", "x", &["x.ns.global"], &[(9000, "TCP")]);
    opted.labels.insert(OPT_OUT_LABEL.into(), "False".into());
    for e in [status(none), status(opted)] {
        assert!(!v2_auto_allocates(ON, &e));
        for p in PROFILES {
            let l = listen(std::slice::from_ref(&e), ON, p, "x.ns.global", 9000);
            assert!(l.addresses.is_empty(), "{} {e:?}", p.name());
        }
    }
    // Any other label value does not opt out.
    let mut kept = Entry::new("ns", "x", &["x.ns.global"], &[(9000, "TCP")]);
    kept.labels.insert(OPT_OUT_LABEL.into(), "no".into());
    assert!(v2_auto_allocates(ON, &kept));
}

#[test]
fn no_proxy_knows_the_vip_globaldns_answers_unless_written_where_istio_reads() {
    let plain = tcp("plain");
    for istiod in [ON, OFF] {
        for p in PROFILES {
            let v = View::of(std::slice::from_ref(&plain), istiod, p);
            let h = host(&v, "plain.ns.global");
            assert_eq!(
                h.unroutable_ports(ip(VIP), p.kind),
                vec![9000],
                "{}",
                p.name()
            );
        }
    }
    // Written into spec.addresses (globaldns's spec write-back): every proxy listens on it.
    let mut written = tcp("plain");
    written.addresses = vec![VIP.into()];
    for istiod in [ON, OFF] {
        for p in PROFILES {
            let v = View::of(std::slice::from_ref(&written), istiod, p);
            assert!(host(&v, "plain.ns.global")
                .unroutable_ports(ip(VIP), p.kind)
                .is_empty());
        }
    }
    // Written into status.addresses: only capturing proxies and waypoints, only allocator on.
    let status = with_status(tcp("plain"), &[(VIP, "plain.ns.global")]);
    let routable = |istiod, p: Proxy| {
        let v = View::of(std::slice::from_ref(&status), istiod, p);
        host(&v, "plain.ns.global")
            .unroutable_ports(ip(VIP), p.kind)
            .is_empty()
    };
    assert!(routable(ON, CAPTURE_SIDECAR) && routable(ON, WAYPOINT));
    assert!(!routable(ON, DEFAULT_SIDECAR));
    assert!(!routable(OFF, CAPTURE_SIDECAR) && !routable(OFF, WAYPOINT));
}

#[test]
fn http_and_tls_route_on_the_wildcard_tcp_needs_an_address() {
    let web = Entry::new("ns", "web", &["web.ns.global"], &[(8000, "HTTP")]);
    let mut tls = Entry::new("ns", "tls", &["*.tls.ns.global"], &[(443, "TLS")]);
    tls.resolution = Resolution::DynamicDns;
    let auto = Entry::new("ns", "auto", &["auto.ns.global"], &[(7000, "")]);
    let mut none = Entry::new("ns", "none", &["none.ns.global"], &[(9000, "TCP")]);
    none.resolution = Resolution::None;
    let es = [web, tls, auto, none];
    let v = View::of(&es, OFF, DEFAULT_SIDECAR);
    assert_eq!(
        host(&v, "web.ns.global").ports[&8000].1.wildcard,
        Some(Wildcard::Host)
    );
    // A wildcard host is found for any name below it.
    assert_eq!(
        host(&v, "a.b.tls.ns.global").ports[&443].1.wildcard,
        Some(Wildcard::Sni)
    );
    assert!(v.lookup("tls.ns.global").is_none());
    assert_eq!(host(&v, "auto.ns.global").ports[&7000].0, PortKind::Auto);
    assert_eq!(
        host(&v, "none.ns.global").ports[&9000].1.wildcard,
        Some(Wildcard::Passthrough)
    );
    // For a sidecar only TCP and auto-detected ports need the address; a waypoint needs it on
    // every port.
    assert!(host(&v, "web.ns.global")
        .unroutable_ports(ip(VIP), ProxyKind::Sidecar)
        .is_empty());
    assert_eq!(
        host(&v, "auto.ns.global").unroutable_ports(ip(VIP), ProxyKind::Sidecar),
        vec![7000]
    );
    let w = View::of(&es, OFF, WAYPOINT);
    assert_eq!(
        host(&w, "web.ns.global").unroutable_ports(ip(VIP), ProxyKind::Waypoint),
        vec![8000]
    );
}

#[test]
fn several_tcp_hosts_share_the_wildcard_unless_each_has_its_own_status_address() {
    let multi = Entry::new(
        "ns",
        "multi",
        &["m1.ns.global", "m2.ns.global"],
        &[(9001, "TCP")],
    );
    for h in ["m1.ns.global", "m2.ns.global"] {
        let l = listen(std::slice::from_ref(&multi), ON, DEFAULT_SIDECAR, h, 9001);
        assert_eq!(l.wildcard, Some(Wildcard::SharedTcp));
        assert!(l.addresses.is_empty());
    }
    // spec.addresses are every host's: both hosts on one address, still one TCP service.
    let mut shared = multi.clone();
    shared.addresses = vec!["10.9.0.2".into()];
    for h in ["m1.ns.global", "m2.ns.global"] {
        let l = listen(std::slice::from_ref(&shared), OFF, DEFAULT_SIDECAR, h, 9001);
        assert_eq!(l.addresses, BTreeSet::from([ip("10.9.0.2")]));
    }
    // Istio's allocator gives each host its own address.
    let mut alloc = Allocator::default();
    let status = alloc.reconcile(ON, &multi).expect("allocated");
    let mut e = multi.clone();
    e.status = status;
    for (h, want) in [
        ("m1.ns.global", "240.240.0.1"),
        ("m2.ns.global", "240.240.0.2"),
    ] {
        let l = listen(std::slice::from_ref(&e), ON, CAPTURE_SIDECAR, h, 9001);
        assert_eq!(l.addresses, BTreeSet::from([ip(want)]), "{h}");
    }
}

#[test]
fn cidrs_invalid_and_host_length_prefixes_in_spec_addresses() {
    let mut e = Entry::new("ns", "net", &["net.ns.global"], &[(9000, "TCP")]);
    e.resolution = Resolution::Static;
    e.addresses = vec!["10.8.0.0/16".into(), "10.7.0.1/32".into(), "bogus".into()];
    let v = View::of(std::slice::from_ref(&e), ON, CAPTURE_SIDECAR);
    let h = host(&v, "net.ns.global");
    let l = &h.ports[&9000].1;
    assert!(
        l.by_address(ip("10.8.3.3")),
        "inside the CIDR's filter chain"
    );
    assert!(l.by_address(ip("10.7.0.1")));
    assert!(!l.by_address(ip("10.9.0.1")));
    // The name table holds IPs only: the CIDR is not an answer.
    assert_eq!(h.dns, Dns::Proxy(BTreeSet::from([ip("10.7.0.1")])));
    // A host whose every address is invalid gets no service at all.
    let mut bad = tcp("bad");
    bad.addresses = vec!["not-an-ip".into()];
    assert!(View::of(&[bad], ON, DEFAULT_SIDECAR)
        .lookup("bad.ns.global")
        .is_none());
}

#[test]
fn allocator_assigns_from_its_prefixes_and_leaves_covered_entries_alone() {
    let mut alloc = Allocator::default();
    let e = tcp("a");
    let status = alloc.reconcile(ON, &e).expect("allocated");
    assert_eq!(
        status,
        vec![
            StatusAddress {
                value: "240.240.0.1".into(),
                host: "a.ns.global".into()
            },
            StatusAddress {
                value: "2001:2::1".into(),
                host: "a.ns.global".into()
            },
        ]
    );
    assert_eq!(
        alloc.reconcile(OFF, &tcp("b")),
        None,
        "no controller with the flag off"
    );
    // Every host has a status address, whatever its value (outside the prefix too): left alone.
    let foreign = with_status(tcp("c"), &[(VIP, "c.ns.global")]);
    assert_eq!(alloc.reconcile(ON, &foreign), None);
    // Addresses outside the prefixes are not tracked; inside, in use (warming).
    let mut warmed = Allocator::default();
    warmed.warm(&[with_status(
        tcp("d"),
        &[("240.240.0.1", "d.ns.global"), (VIP, "x")],
    )]);
    let next = warmed.reconcile(ON, &tcp("e")).unwrap();
    assert_eq!(next[0].value, "240.240.0.2");
    // A host without an address gets one, the others keep theirs, a host no longer listed is
    // dropped.
    let mut two = Entry::new(
        "ns",
        "two",
        &["p.ns.global", "q.ns.global"],
        &[(80, "HTTP")],
    );
    two = with_status(
        two,
        &[(VIP, "p.ns.global"), ("240.240.9.9", "gone.ns.global")],
    );
    let patched = alloc.reconcile(ON, &two).unwrap();
    let hosts: Vec<(&str, &str)> = patched
        .iter()
        .map(|s| (s.value.as_str(), s.host.as_str()))
        .collect();
    assert_eq!(
        hosts,
        vec![
            (VIP, "p.ns.global"),
            ("240.240.0.2", "q.ns.global"),
            ("2001:2::2", "q.ns.global")
        ]
    );
}

#[test]
fn allocator_skips_wildcards_except_dynamic_dns_and_clears_entries_it_no_longer_serves() {
    let mut alloc = Allocator::default();
    let wild = Entry::new("ns", "w", &["*.w.ns.global"], &[(443, "TLS")]);
    // Nothing to allocate: the (empty) kept set equals the (empty) set with addresses.
    assert_eq!(alloc.reconcile(ON, &wild), None);
    let mut dynamic = wild.clone();
    dynamic.resolution = Resolution::DynamicDns;
    let s = alloc.reconcile(ON, &dynamic).unwrap();
    assert_eq!(s[0].host, "*.w.ns.global");
    // The DNS proxy answers names below the wildcard with it.
    let mut e = dynamic.clone();
    e.status = s.clone();
    assert_eq!(
        dns(
            std::slice::from_ref(&e),
            ON,
            CAPTURE_SIDECAR,
            "api.w.ns.global"
        ),
        Dns::Proxy(BTreeSet::from([ip(&s[0].value)]))
    );
    // Once spec.addresses is written (globaldns's spec write-back, a person), the allocator
    // clears the status addresses, whoever wrote them; and hands the freed address out next.
    let mut written = with_status(tcp("x"), &[("240.240.0.1", "x.ns.global")]);
    written.addresses = vec![VIP.into()];
    let mut fresh = Allocator::default();
    fresh.warm(std::slice::from_ref(&written));
    assert_eq!(fresh.reconcile(ON, &written), Some(vec![]));
    assert_eq!(
        fresh.reconcile(ON, &tcp("y")).unwrap()[0].value,
        "240.240.0.1"
    );
    let mut opted = with_status(tcp("z"), &[(VIP, "z.ns.global")]);
    opted.labels.insert(OPT_OUT_LABEL.into(), "false".into());
    assert_eq!(fresh.reconcile(ON, &opted), Some(vec![]));
}

/// The in-memory allocation istiod makes with its allocator off, used only by proxies with
/// `ISTIO_META_DNS_AUTO_ALLOCATE` and DNS capture; the values are those of Istio's own
/// Test_legacyAutoAllocateIP_conditions (pilot/pkg/serviceregistry/serviceentry/controller_test.go).
#[test]
fn legacy_auto_allocation_with_the_allocator_off() {
    let legacy = Proxy {
        dns_auto_allocate: true,
        ..CAPTURE_SIDECAR
    };
    let foo = Entry::new("", "foo", &["foo.com"], &[(9000, "TCP")]);
    let l = listen(std::slice::from_ref(&foo), OFF, legacy, "foo.com", 9000);
    assert_eq!(l.addresses, BTreeSet::from([ip("240.240.227.81")]));
    let s = services(std::slice::from_ref(&foo), OFF);
    assert_eq!(s[0].auto_v6, Some("2001:2::f0f0:e351".parse().unwrap()));
    // A colliding pair, resolved by the second hash.
    let pair = Entry::new(
        "",
        "pair",
        &["a17061.example.com", "a44155.example.com"],
        &[(80, "HTTP")],
    );
    let s = services(&[pair], OFF);
    assert_eq!(s[0].auto_v4, Some("240.240.25.11".parse().unwrap()));
    assert_eq!(s[1].auto_v4, Some("240.240.31.17".parse().unwrap()));
    assert_eq!(s[0].auto_v6, Some("2001:2::f0f0:19b".parse().unwrap()));
    let a = Entry::new("a", "a", &["a.example.com"], &[(80, "HTTP")]);
    assert_eq!(
        services(&[a], OFF)[0].auto_v4,
        Some("240.240.134.206".parse().unwrap())
    );
    // Not used without DNS_AUTO_ALLOCATE, and not made with the allocator on.
    let l = listen(
        std::slice::from_ref(&foo),
        OFF,
        CAPTURE_SIDECAR,
        "foo.com",
        9000,
    );
    assert!(l.addresses.is_empty());
    assert_eq!(services(std::slice::from_ref(&foo), ON)[0].auto_v4, None);
}

#[test]
fn entries_read_from_the_apiservers_json() {
    let json = serde_json::json!({
        "metadata": {"name": "n", "namespace": "ns",
                     "labels": {OPT_OUT_LABEL: "false"}},
        "spec": {"hosts": ["n.ns.global"], "addresses": ["10.0.0.1"],
                 "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
                 "resolution": "DNS", "location": "MESH_INTERNAL"},
        "status": {"addresses": [{"value": "240.240.0.3", "host": "n.ns.global"}]}
    });
    let e = Entry::from_json(&json);
    assert_eq!(e.key(), "ns/n");
    assert_eq!(e.addresses, vec!["10.0.0.1".to_string()]);
    assert_eq!(
        e.ports,
        vec![Port {
            number: 80,
            protocol: "HTTP".into()
        }]
    );
    assert_eq!(e.resolution, Resolution::Dns);
    assert_eq!(e.labels[OPT_OUT_LABEL], "false");
    assert_eq!(e.status_by_host()["n.ns.global"], vec![ip("240.240.0.3")]);
    // No resolution: the proto default, NONE.
    let bare = serde_json::json!({"metadata": {"name": "b"}, "spec": {"hosts": ["b.global"]}});
    assert_eq!(Entry::from_json(&bare).resolution, Resolution::None);
}

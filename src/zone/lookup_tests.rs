//! The answer engine as a table: (question) → (outcome, answer records, authority records),
//! straight over a snapshot built by the `ZoneBuilder`.

use hickory_proto::rr::{Name, RecordType};

use super::{AddressReport, AddressSource, HostReport, Outcome, Snapshot, ZoneBuilder, ZoneConfig};
use crate::serviceentry::{SrvPort, Transport};

/// A served host's report (also used by the journal's and the secondary's tests).
pub(crate) fn host(
    addresses: &[&str],
    ports: &[(&str, Transport, u16)],
    wildcard: bool,
) -> HostReport {
    HostReport {
        served: true,
        wildcard,
        reason: None,
        addresses: addresses
            .iter()
            .map(|a| AddressReport {
                address: a.parse().unwrap(),
                source: AddressSource::Spec,
                objects: vec![],
            })
            .collect(),
        ports: ports
            .iter()
            .map(|(name, transport, number)| SrvPort {
                name: name.to_string(),
                transport: *transport,
                number: *number,
            })
            .collect(),
        objects: vec![],
        rule: None,
        conflict: None,
    }
}

fn snapshot() -> Snapshot {
    let cfg = ZoneConfig {
        zones: vec!["global".into()],
        reverse_zones: vec![],
        ns: vec![],
        ttl: 30,
    };
    let mut b = ZoneBuilder::new(&cfg, &["240.10.0.0/16".parse().unwrap()]);
    let ports = [("http", Transport::Tcp, 8000), ("dns", Transport::Udp, 53)];
    let hosts = [
        (
            "httpbin.bar.global",
            host(&["240.10.1.1", "fd00:10::1"], &ports, false),
        ),
        ("v4only.bar.global", host(&["240.10.1.2"], &[], false)),
        ("*.wild.global", host(&["240.10.2.1"], &[], true)),
        ("*.deep.wild.global", host(&["240.10.2.2"], &[], true)),
        ("exact.wild.global", host(&["240.10.2.3"], &[], false)),
    ];
    for (name, report) in hosts {
        assert!(b.set_host(name, Some(report)));
    }
    b.snapshot()
}

/// The outcome's name, and whether it came from a wildcard.
fn kind(o: &Outcome<'_>) -> &'static str {
    match o {
        Outcome::Answer {
            wildcard: false, ..
        } => "answer",
        Outcome::Answer { wildcard: true, .. } => "wildcard",
        Outcome::NoData => "nodata",
        Outcome::NxDomain => "nxdomain",
        Outcome::Refused => "refused",
    }
}

/// (qname, qtype, outcome, rcode, answer records, authority as "owner TYPE").
type Row = (
    &'static str,
    RecordType,
    &'static str,
    &'static str,
    Vec<String>,
    &'static [&'static str],
);

const GLOBAL_SOA: &[&str] = &["global. SOA"];
const NONE: &[&str] = &[];

#[test]
fn every_kind_of_question_gets_its_outcome_and_sections() {
    use RecordType::*;
    let a = |owner: &str, ip: &str| format!("{owner}. 30 IN A {ip}");
    #[rustfmt::skip]
    let table: Vec<Row> = vec![
        // Positive, NODATA (other type, other family), NXDOMAIN, empty non-terminal.
        ("httpbin.bar.global", A, "answer", "NOERROR", vec![a("httpbin.bar.global", "240.10.1.1")], NONE),
        ("httpbin.bar.global", AAAA, "answer", "NOERROR", vec!["httpbin.bar.global. 30 IN AAAA fd00:10::1".into()], NONE),
        ("v4only.bar.global", AAAA, "nodata", "NOERROR", vec![], GLOBAL_SOA),
        ("httpbin.bar.global", TXT, "nodata", "NOERROR", vec![], GLOBAL_SOA),
        ("nope.bar.global", A, "nxdomain", "NXDOMAIN", vec![], GLOBAL_SOA),
        ("deeper.httpbin.bar.global", A, "nxdomain", "NXDOMAIN", vec![], GLOBAL_SOA),
        ("bar.global", A, "nodata", "NOERROR", vec![], GLOBAL_SOA),
        // Wildcards: any depth, exact beats wildcard, longer beats shorter, never the parent.
        ("x.y.wild.global", A, "wildcard", "NOERROR", vec![a("x.y.wild.global", "240.10.2.1")], NONE),
        ("exact.wild.global", A, "answer", "NOERROR", vec![a("exact.wild.global", "240.10.2.3")], NONE),
        ("x.exact.wild.global", A, "wildcard", "NOERROR", vec![a("x.exact.wild.global", "240.10.2.1")], NONE),
        ("a.b.deep.wild.global", A, "wildcard", "NOERROR", vec![a("a.b.deep.wild.global", "240.10.2.2")], NONE),
        ("deep.wild.global", A, "wildcard", "NOERROR", vec![a("deep.wild.global", "240.10.2.1")], NONE),
        ("x.wild.global", AAAA, "nodata", "NOERROR", vec![], GLOBAL_SOA),
        ("wild.global", A, "nodata", "NOERROR", vec![], GLOBAL_SOA),
        // The apex, and a name server inside the zone (exists without data).
        ("global", SOA, "answer", "NOERROR", vec![], NONE),
        ("global", NS, "answer", "NOERROR", vec!["global. 30 IN NS ns.global.".into()], NONE),
        ("global", A, "nodata", "NOERROR", vec![], GLOBAL_SOA),
        ("ns.global", A, "nodata", "NOERROR", vec![], GLOBAL_SOA),
        // SRV, its `_tcp` empty non-terminal, a port the host does not have.
        ("_http._tcp.httpbin.bar.global", SRV, "answer", "NOERROR", vec!["_http._tcp.httpbin.bar.global. 30 IN SRV 0 100 8000 httpbin.bar.global.".into()], NONE),
        ("_dns._udp.httpbin.bar.global", SRV, "answer", "NOERROR", vec!["_dns._udp.httpbin.bar.global. 30 IN SRV 0 100 53 httpbin.bar.global.".into()], NONE),
        ("_http._tcp.httpbin.bar.global", A, "nodata", "NOERROR", vec![], GLOBAL_SOA),
        ("_tcp.httpbin.bar.global", SRV, "nodata", "NOERROR", vec![], GLOBAL_SOA),
        ("_udp.v4only.bar.global", SRV, "nxdomain", "NXDOMAIN", vec![], GLOBAL_SOA),
        ("_nope._tcp.httpbin.bar.global", SRV, "nxdomain", "NXDOMAIN", vec![], GLOBAL_SOA),
        // PTR in the reverse zone of the range.
        ("1.1.10.240.in-addr.arpa", PTR, "answer", "NOERROR", vec!["1.1.10.240.in-addr.arpa. 30 IN PTR httpbin.bar.global.".into()], NONE),
        ("9.9.10.240.in-addr.arpa", PTR, "nxdomain", "NXDOMAIN", vec![], &["10.240.in-addr.arpa. SOA"]),
        // ANY: RFC 8482 HINFO at names, the SOA at the apex.
        ("httpbin.bar.global", ANY, "answer", "NOERROR", vec!["httpbin.bar.global. 30 IN HINFO RFC8482 ".into()], NONE),
        ("x.wild.global", ANY, "wildcard", "NOERROR", vec!["x.wild.global. 30 IN HINFO RFC8482 ".into()], NONE),
        ("_http._tcp.httpbin.bar.global", ANY, "answer", "NOERROR", vec!["_http._tcp.httpbin.bar.global. 30 IN HINFO RFC8482 ".into()], NONE),
        // Out of every zone.
        ("example.com", A, "refused", "REFUSED", vec![], NONE),
        ("240.in-addr.arpa", PTR, "refused", "REFUSED", vec![], NONE),
    ];
    let snap = snapshot();
    for (qname, qtype, outcome, rcode, answers, authority) in table {
        let name = Name::from_ascii(format!("{qname}.")).unwrap();
        let what = format!("{qname} {qtype}");
        assert_eq!(kind(&snap.resolve(&name, qtype).outcome), outcome, "{what}");
        let ans = snap.lookup(&name, qtype);
        assert_eq!(crate::dns::rcode_label(ans.rcode), rcode, "{what}");
        assert_eq!(ans.authoritative, outcome != "refused", "{what}");
        let got: Vec<String> = ans.answers.iter().map(|r| r.to_string()).collect();
        if qtype == SOA {
            // The serial is the build time: check the owner and type only.
            assert_eq!(ans.answers.len(), 1, "{what}");
            assert_eq!(ans.answers[0].record_type(), SOA, "{what}");
        } else {
            assert_eq!(got, answers, "{what}");
        }
        let auth: Vec<String> = ans
            .authority
            .iter()
            .map(|r| format!("{} {}", r.name, r.record_type()))
            .collect();
        assert_eq!(auth, authority, "{what}");
        let additional: Vec<String> = ans.additional.iter().map(|r| r.to_string()).collect();
        let expected_additional: &[&str] = if qtype == SRV && outcome == "answer" {
            &[
                "httpbin.bar.global. 30 IN A 240.10.1.1",
                "httpbin.bar.global. 30 IN AAAA fd00:10::1",
            ]
        } else {
            &[]
        };
        assert_eq!(additional, expected_additional, "{what}");
    }
}

#[test]
fn owners_take_the_query_spelling() {
    use RecordType::*;
    let snap = snapshot();
    for (qname, qtype, owner_type) in [
        ("HttpBin.BAR.global", A, A),
        ("HttpBin.BAR.global", ANY, HINFO),
        ("X.y.WILD.global", A, A),
        ("_HTTP._tcp.HttpBin.bar.global", SRV, SRV),
        ("1.1.10.240.IN-ADDR.arpa", PTR, PTR),
        ("GLOBAL", SOA, SOA),
        ("Global", NS, NS),
        ("global", SOA, SOA),
    ] {
        let name = Name::from_ascii(format!("{qname}.")).unwrap();
        let ans = snap.lookup(&name, qtype);
        assert_eq!(ans.answers.len(), 1, "{qname} {qtype}");
        let r = &ans.answers[0];
        assert_eq!(r.record_type(), owner_type, "{qname} {qtype}");
        assert!(r.name.eq_case(&name), "{qname} {qtype}: owner {}", r.name);
    }
    // The authority SOA stays the zone's own name.
    let name = Name::from_ascii("Nope.BAR.global.").unwrap();
    assert_eq!(
        snap.lookup(&name, A).authority[0].name.to_ascii(),
        "global."
    );
}

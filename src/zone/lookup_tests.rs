//! The answer engine as a table: one [`Case`] per question, with everything expected of its
//! answer written in the row (outcome, rcode, AA, each section), straight over a snapshot built
//! by the `ZoneBuilder`.

use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::{NameServer, Outcome, Snapshot, ZoneBuilder, ZoneConfig, ZoneHost};
use crate::serviceentry::{SrvPort, Transport};

/// A served host (also used by the journal's and the secondary's tests).
pub(crate) fn host(addresses: &[&str], ports: &[(&str, Transport, u16)]) -> ZoneHost {
    let ports = ports.iter().map(|(name, transport, number)| SrvPort {
        name: name.to_string(),
        transport: *transport,
        number: *number,
    });
    ZoneHost::new(ZoneHost::serving(addresses).into_parts().0, ports.collect())
}

fn snapshot() -> Snapshot {
    let cfg = ZoneConfig {
        zones: vec!["global".into()],
        reverse_zones: vec![],
        ns: vec![
            NameServer {
                name: "ns.global".into(),
                addresses: vec!["10.0.0.53".parse().unwrap(), "fd00::53".parse().unwrap()],
            },
            NameServer {
                name: "ns.example.net".into(),
                addresses: vec![],
            },
        ],
        ttl: 30,
    };
    let mut b = ZoneBuilder::new(&cfg, &["240.10.0.0/16".parse().unwrap()]);
    let hosts = [
        (
            "httpbin.bar.global",
            host(
                &["240.10.1.1", "fd00:10::1"],
                &[("http", Transport::Tcp, 8000), ("dns", Transport::Udp, 53)],
            ),
        ),
        ("v4only.bar.global", ZoneHost::serving(&["240.10.1.2"])),
        ("*.wild.global", ZoneHost::serving(&["240.10.2.1"])),
        ("*.deep.wild.global", ZoneHost::serving(&["240.10.2.2"])),
        ("exact.wild.global", ZoneHost::serving(&["240.10.2.3"])),
    ];
    for (name, h) in hosts {
        assert!(b.set_host(name, Some(h)));
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

/// A record in master-file form, the SOA serial (the build time) written `SERIAL`.
fn line(r: &Record) -> String {
    match &r.data {
        RData::SOA(soa) => format!(
            "{} {} IN SOA {} {} SERIAL {} {} {} {}",
            r.name, r.ttl, soa.mname, soa.rname, soa.refresh, soa.retry, soa.expire, soa.minimum
        ),
        _ => r.to_string(),
    }
}

fn lines<'r>(records: impl IntoIterator<Item = &'r Record>) -> Vec<String> {
    records.into_iter().map(line).collect()
}

/// One question and its expected answer. Unset sections are expected empty; `outcome` and
/// `rcode` are never right unset.
struct Case {
    qname: &'static str,
    qtype: RecordType,
    /// "answer", "wildcard", "nodata", "nxdomain" or "refused".
    outcome: &'static str,
    rcode: &'static str,
    authoritative: bool,
    answers: &'static [&'static str],
    authority: &'static [&'static str],
    additional: &'static [&'static str],
}

impl Default for Case {
    fn default() -> Self {
        Case {
            qname: "",
            qtype: RecordType::A,
            outcome: "",
            rcode: "",
            authoritative: true,
            answers: &[],
            authority: &[],
            additional: &[],
        }
    }
}

const GLOBAL_SOA: &[&str] =
    &["global. 30 IN SOA ns.global. hostmaster.global. SERIAL 3600 600 86400 30"];
const REVERSE_SOA: &[&str] = &["10.240.in-addr.arpa. 30 IN SOA ns.global. \
     hostmaster.10.240.in-addr.arpa. SERIAL 3600 600 86400 30"];
const HTTPBIN_ADDRESSES: &[&str] = &[
    "httpbin.bar.global. 30 IN A 240.10.1.1",
    "httpbin.bar.global. 30 IN AAAA fd00:10::1",
];
const NS_ADDRESSES: &[&str] = &[
    "ns.global. 30 IN A 10.0.0.53",
    "ns.global. 30 IN AAAA fd00::53",
];

fn cases() -> Vec<Case> {
    use RecordType::*;
    let nodata = |qname, qtype| Case {
        qname,
        qtype,
        outcome: "nodata",
        rcode: "NOERROR",
        authority: GLOBAL_SOA,
        ..Default::default()
    };
    let nxdomain = |qname, qtype| Case {
        qname,
        qtype,
        outcome: "nxdomain",
        rcode: "NXDOMAIN",
        authority: GLOBAL_SOA,
        ..Default::default()
    };
    let refused = |qname, qtype| Case {
        qname,
        qtype,
        outcome: "refused",
        rcode: "REFUSED",
        authoritative: false,
        ..Default::default()
    };
    vec![
        // Positive, NODATA (other type, other family), NXDOMAIN, empty non-terminal.
        Case {
            qname: "httpbin.bar.global",
            outcome: "answer",
            rcode: "NOERROR",
            answers: &["httpbin.bar.global. 30 IN A 240.10.1.1"],
            ..Default::default()
        },
        Case {
            qname: "httpbin.bar.global",
            qtype: AAAA,
            outcome: "answer",
            rcode: "NOERROR",
            answers: &["httpbin.bar.global. 30 IN AAAA fd00:10::1"],
            ..Default::default()
        },
        nodata("v4only.bar.global", AAAA),
        nodata("httpbin.bar.global", TXT),
        nxdomain("nope.bar.global", A),
        nxdomain("deeper.httpbin.bar.global", A),
        nodata("bar.global", A),
        // Wildcards: any depth, exact beats wildcard, longer beats shorter, never the parent.
        Case {
            qname: "x.y.wild.global",
            outcome: "wildcard",
            rcode: "NOERROR",
            answers: &["x.y.wild.global. 30 IN A 240.10.2.1"],
            ..Default::default()
        },
        Case {
            qname: "exact.wild.global",
            outcome: "answer",
            rcode: "NOERROR",
            answers: &["exact.wild.global. 30 IN A 240.10.2.3"],
            ..Default::default()
        },
        Case {
            qname: "x.exact.wild.global",
            outcome: "wildcard",
            rcode: "NOERROR",
            answers: &["x.exact.wild.global. 30 IN A 240.10.2.1"],
            ..Default::default()
        },
        Case {
            qname: "a.b.deep.wild.global",
            outcome: "wildcard",
            rcode: "NOERROR",
            answers: &["a.b.deep.wild.global. 30 IN A 240.10.2.2"],
            ..Default::default()
        },
        Case {
            qname: "deep.wild.global",
            outcome: "wildcard",
            rcode: "NOERROR",
            answers: &["deep.wild.global. 30 IN A 240.10.2.1"],
            ..Default::default()
        },
        nodata("x.wild.global", AAAA),
        nodata("wild.global", A),
        // The apex; its NS answer carries the in-zone name server's addresses (RFC 1034
        // §4.3.2 step 6), not the out-of-zone one's; that name server exists with its glue.
        Case {
            qname: "global",
            qtype: SOA,
            outcome: "answer",
            rcode: "NOERROR",
            answers: GLOBAL_SOA,
            ..Default::default()
        },
        Case {
            qname: "global",
            qtype: NS,
            outcome: "answer",
            rcode: "NOERROR",
            answers: &[
                "global. 30 IN NS ns.global.",
                "global. 30 IN NS ns.example.net.",
            ],
            additional: NS_ADDRESSES,
            ..Default::default()
        },
        nodata("global", A),
        Case {
            qname: "ns.global",
            outcome: "answer",
            rcode: "NOERROR",
            answers: &["ns.global. 30 IN A 10.0.0.53"],
            ..Default::default()
        },
        nodata("ns.global", TXT),
        // SRV, its `_tcp` empty non-terminal, a port the host does not have.
        Case {
            qname: "_http._tcp.httpbin.bar.global",
            qtype: SRV,
            outcome: "answer",
            rcode: "NOERROR",
            answers: &["_http._tcp.httpbin.bar.global. 30 IN SRV 0 100 8000 httpbin.bar.global."],
            additional: HTTPBIN_ADDRESSES,
            ..Default::default()
        },
        Case {
            qname: "_dns._udp.httpbin.bar.global",
            qtype: SRV,
            outcome: "answer",
            rcode: "NOERROR",
            answers: &["_dns._udp.httpbin.bar.global. 30 IN SRV 0 100 53 httpbin.bar.global."],
            additional: HTTPBIN_ADDRESSES,
            ..Default::default()
        },
        nodata("_http._tcp.httpbin.bar.global", A),
        nodata("_tcp.httpbin.bar.global", SRV),
        nxdomain("_udp.v4only.bar.global", SRV),
        nxdomain("_nope._tcp.httpbin.bar.global", SRV),
        // PTR in the reverse zone of the range, whose name server is outside it: no additional.
        Case {
            qname: "1.1.10.240.in-addr.arpa",
            qtype: PTR,
            outcome: "answer",
            rcode: "NOERROR",
            answers: &["1.1.10.240.in-addr.arpa. 30 IN PTR httpbin.bar.global."],
            ..Default::default()
        },
        Case {
            authority: REVERSE_SOA,
            ..nxdomain("9.9.10.240.in-addr.arpa", PTR)
        },
        Case {
            qname: "10.240.in-addr.arpa",
            qtype: NS,
            outcome: "answer",
            rcode: "NOERROR",
            answers: &[
                "10.240.in-addr.arpa. 30 IN NS ns.global.",
                "10.240.in-addr.arpa. 30 IN NS ns.example.net.",
            ],
            ..Default::default()
        },
        // ANY: RFC 8482 HINFO at names, the SOA at the apex.
        Case {
            qname: "httpbin.bar.global",
            qtype: ANY,
            outcome: "answer",
            rcode: "NOERROR",
            answers: &["httpbin.bar.global. 30 IN HINFO RFC8482 "],
            ..Default::default()
        },
        Case {
            qname: "x.wild.global",
            qtype: ANY,
            outcome: "wildcard",
            rcode: "NOERROR",
            answers: &["x.wild.global. 30 IN HINFO RFC8482 "],
            ..Default::default()
        },
        Case {
            qname: "_http._tcp.httpbin.bar.global",
            qtype: ANY,
            outcome: "answer",
            rcode: "NOERROR",
            answers: &["_http._tcp.httpbin.bar.global. 30 IN HINFO RFC8482 "],
            ..Default::default()
        },
        Case {
            qname: "global",
            qtype: ANY,
            outcome: "answer",
            rcode: "NOERROR",
            answers: GLOBAL_SOA,
            ..Default::default()
        },
        // Out of every zone.
        refused("example.com", A),
        refused("240.in-addr.arpa", PTR),
    ]
}

#[test]
fn every_kind_of_question_gets_its_outcome_and_sections() {
    let snap = snapshot();
    for case in cases() {
        let name = Name::from_ascii(format!("{}.", case.qname)).unwrap();
        let what = format!("{} {}", case.qname, case.qtype);
        let outcome = snap.resolve(&name, case.qtype).outcome;
        assert_eq!(kind(&outcome), case.outcome, "{what}");
        let ans = snap.lookup(&name, case.qtype);
        assert_eq!(crate::dns::rcode_label(ans.rcode), case.rcode, "{what}");
        assert_eq!(ans.authoritative, case.authoritative, "{what}");
        let answers = lines(ans.answers.iter().map(|r| &**r));
        assert_eq!(answers, case.answers, "{what}: answer");
        let authority = lines(ans.authority.iter().copied());
        assert_eq!(authority, case.authority, "{what}: authority");
        let additional = lines(&ans.additional);
        assert_eq!(additional, case.additional, "{what}: additional");
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
        ("global", SOA, SOA),
    ] {
        let name = Name::from_ascii(format!("{qname}.")).unwrap();
        let ans = snap.lookup(&name, qtype);
        assert_eq!(ans.answers.len(), 1, "{qname} {qtype}");
        let r = &ans.answers[0];
        assert_eq!(r.record_type(), owner_type, "{qname} {qtype}");
        assert!(r.name.eq_case(&name), "{qname} {qtype}: owner {}", r.name);
    }
    // Every NS record of the apex takes it; its additional data and the authority SOA keep the
    // zone's own names.
    let name = Name::from_ascii("Global.").unwrap();
    let ans = snap.lookup(&name, NS);
    assert_eq!(ans.answers.len(), 2);
    assert!(ans.answers.iter().all(|r| r.name.eq_case(&name)));
    assert_eq!(ans.additional[0].name.to_ascii(), "ns.global.");
    let name = Name::from_ascii("Nope.BAR.global.").unwrap();
    assert_eq!(
        snap.lookup(&name, A).authority[0].name.to_ascii(),
        "global."
    );
}

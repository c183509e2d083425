//! Protocol conformance against Knot's and BIND's behaviour, through real sockets: the UDP fast
//! path, hickory-server's UDP loop (`--udp-fast-path false`) and TCP, each asked with `dig`.

mod common;

use common::*;

/// The two servers (fast path, hickory-server's UDP loop), on the answers fixture. One fast-path
/// worker: every query meets the same cache.
fn servers() -> Vec<(&'static str, tempfile::TempDir, Server)> {
    let (t1, fast) = start_fixture(&["--udp-workers", "1"], &[]);
    let (t2, hickory) = start_fixture(&["--udp-fast-path", "false"], &[]);
    vec![("fast path", t1, fast), ("hickory loop", t2, hickory)]
}

/// Every way to ask one server: UDP and TCP.
const TRANSPORTS: [&[&str]; 2] = [&[], &["+tcp"]];

/// Runs dig over every server and transport; `f` gets a description and a dig runner.
fn each_way(f: impl Fn(&str, &dyn Fn(&[&str]) -> Dig)) {
    for (server, _t, s) in servers() {
        for transport in TRANSPORTS {
            let what = format!("{server} {transport:?}");
            let ask = |args: &[&str]| {
                // Without a cookie (an EDNS option): the fast path may answer from its cache.
                let mut all = vec!["+nocookie"];
                all.extend_from_slice(transport);
                all.extend_from_slice(args);
                let d = dig(s.dns, &all);
                assert!(
                    !d.status.is_empty(),
                    "{what} dig {all:?}: no answer\n{}",
                    d.raw
                );
                d
            };
            f(&what, &ask);
        }
    }
}

#[test]
fn classes_other_than_in_are_refused() {
    each_way(|what, ask| {
        // Asked in IN first: a cached IN answer must not be replayed to another class.
        for _ in 0..2 {
            let d = ask(&["httpbin.bar.global", "A"]);
            assert_eq!(d.status, "NOERROR", "{what}:\n{}", d.raw);
            assert_eq!(d.answer.len(), 1, "{what}:\n{}", d.raw);
            for class in ["CH", "HS", "NONE", "CLASS999"] {
                for (name, rtype) in [
                    ("httpbin.bar.global", "A"),
                    ("global", "SOA"),
                    ("nope.global", "A"),
                ] {
                    let d = ask(&["-c", class, "-t", rtype, name]);
                    assert_eq!(d.status, "REFUSED", "{what} {class} {name}:\n{}", d.raw);
                    assert!(d.answer.is_empty(), "{what} {class} {name}:\n{}", d.raw);
                    assert!(d.authority.is_empty(), "{what} {class} {name}:\n{}", d.raw);
                    assert!(
                        !d.flags.iter().any(|f| f == "aa"),
                        "{what} {class}:\n{}",
                        d.raw
                    );
                    assert!(
                        d.question[0].contains(class),
                        "{what}: question echoed\n{}",
                        d.raw
                    );
                }
            }
        }
        // ANY (a query class only) is answered from IN.
        let d = ask(&["-c", "ANY", "-t", "A", "httpbin.bar.global"]);
        assert_eq!(d.status, "NOERROR", "{what} ANY:\n{}", d.raw);
        assert_eq!(d.answer.len(), 1, "{what} ANY:\n{}", d.raw);
    });
}

/// The EDNS flags dig prints (`; EDNS: version: 0, flags: do; udp: 1232`).
fn edns_flags(d: &Dig) -> String {
    let line = d
        .raw
        .lines()
        .find(|l| l.starts_with("; EDNS:"))
        .unwrap_or_else(|| panic!("no OPT in the response:\n{}", d.raw));
    line.split("flags:")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn the_do_bit_is_echoed_and_never_replayed_to_the_other_kind() {
    each_way(|what, ask| {
        for (name, rtype, status, answers) in [
            ("httpbin.bar.global", "A", "NOERROR", 1),
            ("httpbin.bar.global", "TXT", "NOERROR", 0),
            ("nope.bar.global", "A", "NXDOMAIN", 0),
        ] {
            // Alternating, twice: each kind of answer is cached by the fast path on first use.
            for dnssec in [false, true, false, true] {
                let mut args = vec![name, rtype];
                if dnssec {
                    args.push("+dnssec");
                }
                let d = ask(&args);
                let w = format!("{what} {name} {rtype} +dnssec={dnssec}");
                assert_eq!(d.status, status, "{w}:\n{}", d.raw);
                let expected = if dnssec { "do" } else { "" };
                assert_eq!(edns_flags(&d), expected, "{w}:\n{}", d.raw);
                // Unsigned: the same records either way, no RRSIG.
                assert_eq!(d.answer.len(), answers, "{w}:\n{}", d.raw);
                assert!(!d.raw.contains("RRSIG"), "{w}:\n{}", d.raw);
            }
        }
    });
}

#[test]
fn answers_are_owned_by_the_query_spelling() {
    each_way(|what, ask| {
        for (spellings, rtype) in [
            (
                [
                    "HttpBin.BAR.global",
                    "httpbin.bar.global",
                    "HTTPBIN.bar.GLOBAL",
                ],
                "A",
            ),
            (
                ["X.y.Wild.GLOBAL", "x.y.wild.global", "X.Y.WILD.global"],
                "A",
            ),
            (
                [
                    "HttpBin.BAR.global",
                    "httpbin.bar.global",
                    "hTTPBIN.bar.global",
                ],
                "ANY",
            ),
            (
                [
                    "_Http._TCP.httpbin.Bar.global",
                    "_http._tcp.httpbin.bar.global",
                    "_HTTP._tcp.HTTPBIN.bar.global",
                ],
                "SRV",
            ),
            (["GLOBAL", "global", "Global"], "SOA"),
            (["GLOBAL", "global", "Global"], "NS"),
        ] {
            // Twice round: the second time the fast path answers from its cache.
            for name in spellings.iter().chain(&spellings) {
                let d = ask(&[name, rtype]);
                let w = format!("{what} {name} {rtype}");
                assert_eq!(d.status, "NOERROR", "{w}:\n{}", d.raw);
                assert!(!d.answer.is_empty(), "{w}:\n{}", d.raw);
                for row in &d.answer {
                    assert_eq!(row[0], format!("{name}."), "{w}: owner\n{}", d.raw);
                }
            }
        }
        // Negative answers: the SOA in authority is the zone's own name.
        let d = ask(&["Nope.BAR.Global", "A"]);
        assert_eq!(d.status, "NXDOMAIN", "{what}:\n{}", d.raw);
        assert_eq!(d.authority[0][0], "global.", "{what}:\n{}", d.raw);
    });
}

#[test]
fn the_apex_ns_answer_carries_the_in_zone_name_servers_address() {
    // RFC 1034 §4.3.2 step 6, as Knot answers: the default name server `ns.global` (inside the
    // zone) takes the --listen address, 127.0.0.1, and a resolver gets it with the NS set.
    each_way(|what, ask| {
        // Twice: the second time the fast path may answer from its cache.
        for spelling in ["global", "Global"] {
            let d = ask(&[spelling, "NS"]);
            let w = format!("{what} {spelling} NS");
            assert_eq!(d.status, "NOERROR", "{w}:\n{}", d.raw);
            assert_eq!(d.answer_data(), ["ns.global."], "{w}:\n{}", d.raw);
            let glue: Vec<String> = d.additional.iter().map(|r| r.join(" ")).collect();
            assert_eq!(glue, ["ns.global. 30 IN A 127.0.0.1"], "{w}:\n{}", d.raw);
        }
        // The reverse zone's name server is outside it: no additional data.
        let d = ask(&["10.240.in-addr.arpa", "NS"]);
        assert_eq!(d.answer_data(), ["ns.global."], "{what}:\n{}", d.raw);
        assert!(d.additional.is_empty(), "{what}: reverse NS\n{}", d.raw);
    });
}

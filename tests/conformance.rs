//! Protocol conformance against Knot's and BIND's behaviour, through real sockets: the UDP fast
//! path, hickory-server's UDP loop (`--udp-fast-path false`) and TCP, each asked with `dig`.

mod common;

use common::*;

/// The two servers (fast path, hickory-server's UDP loop), on the answers fixture.
fn servers() -> Vec<(&'static str, tempfile::TempDir, Server)> {
    let (t1, fast) = start_fixture(&[], &[]);
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
                let mut all = transport.to_vec();
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

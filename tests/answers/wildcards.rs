//! Wildcards: any depth, and losing to exact names and longer wildcards.

use std::collections::BTreeSet;

use hickory_proto::rr::RecordType;

use crate::common::*;
use crate::support::*;

#[test]
fn wildcards_match_any_depth_and_lose_to_exact_and_longer() {
    let (_t, s) = fixture(&[]);
    let mut wild_vip = BTreeSet::new();
    for t in BOTH {
        let w = |x: &str| format!("{t:?} {x}");
        // DYNAMIC_DNS wildcard: one VIP, the owner is the query name, at any depth.
        for qname in [
            "x.wild.global.",
            "a.b.c.wild.global.",
            "Mixed-Case.Wild.Global.",
        ] {
            let m = q(&s, t, qname, RecordType::A);
            let got = positive(&m, qname, RecordType::A, 30, &w(qname));
            assert_eq!(got.len(), 1, "{t:?} {qname}: {m:?}");
            assert!(vip_range().contains(&got[0]), "{t:?} {qname}: {}", got[0]);
            wild_vip.insert(got[0]);
            let m = q(&s, t, qname, RecordType::AAAA);
            nodata(&m, "global.", 30, &w(&format!("{qname} AAAA")));
        }
        // Never the wildcard's own parent.
        let m = q(&s, t, "wild.global.", RecordType::A);
        nodata(
            &m,
            "global.",
            30,
            &w("wild.global is not matched by *.wild.global"),
        );
        let m = q(&s, t, "mix.global.", RecordType::A);
        nodata(
            &m,
            "global.",
            30,
            &w("mix.global is not matched by *.mix.global"),
        );

        for (qname, want, why) in [
            (
                "exact.mix.global.",
                "10.4.0.2",
                "exact host beats *.mix.global",
            ),
            (
                "x.b.mix.global.",
                "10.4.0.2",
                "exact host beats *.mix.global (deep)",
            ),
            ("foo.mix.global.", "10.4.0.1", "*.mix.global"),
            (
                "foo.bar.baz.mix.global.",
                "10.4.0.1",
                "*.mix.global at depth 3",
            ),
            (
                "sub.exact.mix.global.",
                "10.4.0.1",
                "below an exact host: *.mix.global",
            ),
            (
                "foo.a.mix.global.",
                "10.4.0.3",
                "*.a.mix.global beats *.mix.global",
            ),
            ("x.y.a.mix.global.", "10.4.0.3", "*.a.mix.global at depth 2"),
        ] {
            let m = q(&s, t, qname, RecordType::A);
            assert_eq!(
                positive(&m, qname, RecordType::A, 30, &w(qname)),
                ips(&[want]),
                "{t:?} {qname}: {why}"
            );
        }
        // ANY on a wildcard match: the RFC 8482 HINFO, owned by the query name.
        let m = q(&s, t, "any.wild.global.", RecordType::ANY);
        check_header(&m, &w("wildcard ANY"));
        assert_eq!(m.answers.len(), 1, "{t:?}: {m:?}");
        assert_eq!(m.answers[0].name, name("any.wild.global."));
        assert_eq!(m.answers[0].record_type(), RecordType::HINFO);
    }
    assert_eq!(
        wild_vip.len(),
        1,
        "every name below *.wild.global gets the wildcard's one VIP: {wild_vip:?}"
    );
}

/// `a.mix.global` is "below mix.global" and no longer wildcard covers it (`*.a.mix.global` does
/// not match `a.mix.global` itself), so the contract's "any depth" gives it `*.mix.global`'s
/// address — exactly as the server already does for `b.mix.global`, which is likewise only the
/// parent of another host (`x.b.mix.global`).
#[test]
fn wildcard_covers_names_that_only_exist_as_parents() {
    let (_t, s) = fixture(&[]);
    for t in BOTH {
        for qname in ["b.mix.global.", "a.mix.global."] {
            let m = q(&s, t, qname, RecordType::A);
            assert_eq!(
                answer_addrs(&m),
                ips(&["10.4.0.1"]),
                "{t:?} {qname} A: *.mix.global matches any name below mix.global (the contract's \
                 'any depth'); got rcode {} with answers {:?}",
                m.metadata.response_code,
                m.answers
            );
        }
    }
}

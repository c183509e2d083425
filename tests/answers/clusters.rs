//! Several clusters listing one host.

use std::collections::BTreeSet;
use std::time::Duration;

use hickory_proto::rr::RecordType;

use crate::common::*;
use crate::support::*;

#[test]
fn clusters_listing_one_host_give_the_union_and_one_vip() {
    let (_t, s) = fixture(&[]);
    let mut vips = BTreeSet::new();
    for t in BOTH {
        let w = |x: &str| format!("{t:?} {x}");
        let m = q(&s, t, "multi.bar.global.", RecordType::A);
        assert_eq!(
            positive(&m, "multi.bar.global.", RecordType::A, 30, &w("multi A")),
            ips(&["10.5.0.1", "10.5.0.2", "10.5.0.3"]),
            "{t:?}: union over c1 and c2, de-duplicated (10.5.0.2 is in both): {m:?}"
        );
        let m = q(&s, t, "multi.bar.global.", RecordType::AAAA);
        assert_eq!(
            positive(
                &m,
                "multi.bar.global.",
                RecordType::AAAA,
                30,
                &w("multi AAAA")
            ),
            ips(&["fd00:5::1"])
        );
        let m = q(&s, t, "vipboth.bar.global.", RecordType::A);
        let got = positive(&m, "vipboth.bar.global.", RecordType::A, 30, &w("vipboth"));
        assert_eq!(
            got.len(),
            1,
            "{t:?}: one VIP for a host listed without address in two clusters: {m:?}"
        );
        assert!(vip_range().contains(&got[0]));
        vips.insert(got[0]);
    }
    assert_eq!(vips.len(), 1, "same VIP over UDP and TCP");
}

#[test]
fn a_cluster_adding_an_address_extends_the_union() {
    let (_t, s) = fixture(&[]);
    let c3 = s.zones.join("c3");
    std::fs::create_dir_all(&c3).unwrap();
    write_file(
        &c3.join("m.yaml"),
        &se("multi", "bar", &["multi.bar.global"], &["10.5.0.9"], ""),
    );
    eventually(
        Duration::from_secs(5),
        "c3's address joins the union",
        || {
            let m = q(&s, Transport::Udp, "multi.bar.global.", RecordType::A);
            (answer_addrs(&m).len() == 4).then_some(())
        },
    );
    for t in BOTH {
        let m = q(&s, t, "multi.bar.global.", RecordType::A);
        assert_eq!(
            answer_addrs(&m),
            ips(&["10.5.0.1", "10.5.0.2", "10.5.0.3", "10.5.0.9"]),
            "{t:?}"
        );
    }
}

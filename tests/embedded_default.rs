//! The README's first command: the server on the shipped `zones/` answers httpbin.bar.global.

mod common;
use common::*;
use hickory_proto::rr::{RData, RecordType};

#[test]
fn shipped_zones_answer_httpbin_over_udp_and_tcp() {
    let zones = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("zones");
    let state = tempfile::tempdir().unwrap();
    let s = Server::start(&zones, state.path(), &[]);
    let mut seen = Vec::new();
    for t in BOTH {
        let m = query(s.dns, t, "httpbin.bar.global.", RecordType::A);
        assert!(m.metadata.authoritative, "{t:?}: AA must be set");
        let ips: Vec<_> = m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect();
        assert_eq!(ips.len(), 1, "{t:?}: {m:?}");
        assert!("240.10.0.0/16"
            .parse::<ipnet::Ipv4Net>()
            .unwrap()
            .contains(&ips[0]));
        seen.push(ips[0]);
    }
    assert_eq!(seen[0], seen[1], "UDP and TCP give the same VIP");
    let d = dig(s.dns, &["httpbin.bar.global"]);
    assert_eq!(d.status, "NOERROR");
    assert_eq!(d.answer_data(), vec![seen[0].to_string()]);
}

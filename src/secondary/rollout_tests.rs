//! A secondary answers byte-for-byte what its primary answers: after the AXFR, after each of
//! 1,000 IXFRs of random changes, after the primary restarts from its journal on disk (with a
//! change made while it was down), and after moving to another replica with its own serials.
//! The primary is the real builder, snapshot and journal file; the secondary the real checks
//! (`zone_data`, `content`) and assembler; what travels is what `Snapshot::axfr` and
//! `Snapshot::version_of_content` give (the DNS layer around them is tested over sockets in
//! tests/secondary.rs).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{LowerName, Name, RecordType};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::content::{self, Content};
use super::convert::Assembler;
use super::wire::Exchanged;
use super::zone_data::{self, Received, ZoneData};
use super::{apply_change, Change};
use crate::dns::Handler;
use crate::metrics::Metrics;
use crate::published::Published;
use crate::serviceentry::{SrvPort, Transport};
use crate::zone::{messages, JournalFile, Snapshot, ZoneBuilder, ZoneHost};

const HOSTS: usize = 40;

use super::convert::tests::cfg;

fn host(i: usize) -> String {
    if i == 0 {
        "*.wild.global".into()
    } else {
        format!("h{i}.ns{}.global", i % 3)
    }
}

/// A random host `i`, or None (the host gone).
fn report(rng: &mut StdRng, i: usize) -> Option<ZoneHost> {
    if rng.random_bool(0.2) {
        return None;
    }
    let addresses = (0..rng.random_range(1..3))
        .map(|_| IpAddr::from([240, 10, rng.random_range(0..2), rng.random_range(0..8)]))
        .collect();
    let ports = if i == 0 || rng.random_bool(0.5) {
        vec![]
    } else {
        vec![SrvPort {
            name: "http".into(),
            transport: Transport::Tcp,
            number: rng.random_range(80..83),
        }]
    };
    Some(ZoneHost::new(addresses, ports))
}

/// A primary: the builder fed from `hosts`, its journal on disk.
struct Primary {
    builder: ZoneBuilder,
    file: JournalFile,
    snap: Arc<Snapshot>,
}

impl Primary {
    /// Starts on `dir` from the sources' `hosts` (in random order), continuing the journal
    /// found there.
    fn start(
        dir: &Path,
        hosts: &BTreeMap<usize, ZoneHost>,
        floor: u32,
        rng: &mut StdRng,
    ) -> Primary {
        let (cfg, ranges) = cfg();
        let mut builder = ZoneBuilder::new(&cfg, &ranges);
        builder.keep_journal();
        builder.serial_floor(floor);
        let (file, lineage) = JournalFile::open(dir, builder.fingerprint(), floor);
        if let Some(l) = lineage {
            builder.resume(l);
        }
        let mut order: Vec<_> = hosts.iter().collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        for (i, r) in order {
            builder.set_host(&host(*i), Some(r.clone()));
        }
        let mut p = Primary {
            builder,
            file,
            snap: Arc::new(Snapshot::empty(&cfg, &ranges)),
        };
        p.publish();
        p
    }

    fn publish(&mut self) {
        let snap = self.builder.snapshot();
        self.file.persist(&snap).expect("journal written");
        self.snap = Arc::new(snap);
    }
}

/// A secondary's zones: what it holds of each and their content, and the snapshot it serves.
struct Secondary {
    zones: BTreeMap<Name, (ZoneData, Content)>,
    assembler: Assembler,
    /// Which primary its zones came from.
    from: usize,
}

impl Secondary {
    /// Transfers every zone from `primary` (number `id`) as the refresh loop does: AXFR the
    /// first time, then IXFR with our content's digest. Returns how each went: "axfr", "ixfr"
    /// or "full" (an IXFR answered with the whole zone).
    fn transfer(&mut self, p: &Snapshot, id: usize) -> Vec<&'static str> {
        let mut how = vec![];
        for zone in p.apex_names() {
            let apex = Name::from(zone.clone());
            // What the primary's DNS layer streams (dns/reply.rs), message by message.
            let axfr = || p.axfr(p.transfer_order(&zone).unwrap()).collect();
            let (received, kind) = match self.zones.get(&apex) {
                None => {
                    let r = zone_data::receive(&apex, axfr(), None).unwrap();
                    (r, "axfr")
                }
                Some((cur, content)) => {
                    // A globaldns primary's records share its one TTL: the digest is known.
                    let digest = content.digest().expect("the digest of our content");
                    // What the primary's DNS layer sends (dns/reply.rs).
                    let found = p.version_of_content(&zone, digest.value());
                    let ixfr = found.and_then(|(serial, now)| Some((p.ixfr(&zone, serial)?, now)));
                    let got = match ixfr {
                        Some((m, now)) => Exchanged {
                            records: messages(m).collect(),
                            echo: Some([digest.value().to_bytes(), now.to_bytes()].concat()),
                        },
                        None => Exchanged {
                            records: axfr(),
                            echo: None,
                        },
                    };
                    let same = self.from == id;
                    let r = content::receive_ixfr(&apex, cur, content, same, got, &self.assembler)
                        .unwrap();
                    (r, "ixfr")
                }
            };
            let (soa, change, kind) = match received {
                Received::Full(z) => {
                    let kind = if kind == "ixfr" { "full" } else { kind };
                    (z.soa.clone(), Change::Full(z), kind)
                }
                Received::Incremental { soa, delta } => {
                    (soa.clone(), Change::TransferDelta { soa, delta }, kind)
                }
                Received::UpToDate => {
                    how.push("uptodate");
                    continue;
                }
            };
            let (cur, content) = self.zones.entry(apex.clone()).or_insert_with(|| {
                let cur = ZoneData {
                    from: None,
                    soa: soa.clone(),
                };
                (cur, Content::default())
            });
            apply_change(&mut self.assembler, &apex, change, content);
            cur.soa = soa;
            how.push(kind);
        }
        self.from = id;
        how
    }
}

/// The answers of a snapshot to every question about the universe of hosts, as bytes.
fn answers(snap: &Arc<Snapshot>) -> Vec<Vec<u8>> {
    let (cfg, ranges) = cfg();
    let published = Arc::new(Published::new(Snapshot::empty(&cfg, &ranges)));
    published.publish_arc(snap.clone());
    let handler = Handler::plain(published, Arc::new(Metrics::new()));
    let src: SocketAddr = "127.0.0.1:5300".parse().unwrap();
    let mut names: Vec<(String, RecordType)> = vec![
        ("global.".into(), RecordType::SOA),
        ("global.".into(), RecordType::NS),
        ("10.240.in-addr.arpa.".into(), RecordType::SOA),
        ("x.wild.global.".into(), RecordType::A),
    ];
    for i in 1..HOSTS {
        let h = host(i);
        names.push((format!("{h}."), RecordType::A));
        names.push((format!("_http._tcp.{h}."), RecordType::SRV));
    }
    for a in 0..2 {
        for b in 0..8 {
            names.push((format!("{b}.{a}.10.240.in-addr.arpa."), RecordType::PTR));
        }
    }
    names
        .iter()
        .map(|(n, t)| {
            let mut q = Message::query();
            q.metadata.id = 7;
            q.add_query(Query::query(Name::from_ascii(n).unwrap(), *t));
            handler
                .wire_on(&q.to_vec().unwrap(), src, crate::dns::Transport::Tcp)
                .expect("an answer")
                .bytes
        })
        .collect()
}

fn zone_lines(snap: &Snapshot) -> Vec<String> {
    snap.apex_names()
        .iter()
        .flat_map(|z: &LowerName| snap.zone_records(z))
        .map(|r| r.to_string())
        .collect()
}

fn same_answers(primary: &Arc<Snapshot>, secondary: &mut Secondary, when: &str) {
    let s = Arc::new(secondary.assembler.snapshot());
    let mut p_lines = zone_lines(primary);
    let mut s_lines = zone_lines(&s);
    p_lines.sort();
    s_lines.sort();
    let only = |a: &[String], b: &[String]| -> Vec<String> {
        a.iter().filter(|l| !b.contains(l)).cloned().collect()
    };
    assert!(
        p_lines == s_lines,
        "zone content {when}: primary only {:?}, secondary only {:?}",
        only(&p_lines, &s_lines),
        only(&s_lines, &p_lines)
    );
    assert!(answers(primary) == answers(&s), "answers differ {when}");
}

fn change(rng: &mut StdRng, hosts: &mut BTreeMap<usize, ZoneHost>) -> (usize, Option<ZoneHost>) {
    let i = rng.random_range(0..HOSTS);
    let r = report(rng, i);
    match &r {
        Some(r) => hosts.insert(i, r.clone()),
        None => hosts.remove(&i),
    };
    (i, r)
}

fn follow_through_changes_restarts_and_a_replica(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = scratch();
    let mut hosts: BTreeMap<usize, ZoneHost> = BTreeMap::new();
    for i in 0..HOSTS {
        if let Some(r) = report(&mut rng, i) {
            hosts.insert(i, r);
        }
    }
    let mut a = Primary::start(dir.path(), &hosts, 1_000, &mut rng);
    let mut sec = Secondary {
        zones: BTreeMap::new(),
        assembler: {
            let (cfg, ranges) = cfg();
            Assembler::new(&cfg, &ranges)
        },
        from: 0,
    };
    assert_eq!(sec.transfer(&a.snap, 0), ["axfr", "axfr"]);
    same_answers(&a.snap, &mut sec, "after the AXFR");

    for step in 0..1_000 {
        // One to three host changes per publish.
        for _ in 0..rng.random_range(1..4) {
            let (i, r) = change(&mut rng, &mut hosts);
            a.builder.set_host(&host(i), r);
        }
        a.publish();
        let how = sec.transfer(&a.snap, 0);
        assert!(how.iter().all(|h| *h == "ixfr"), "step {step}: {how:?}");
        if step % 50 == 0 {
            same_answers(&a.snap, &mut sec, &format!("after IXFR {step}"));
        }
    }
    same_answers(&a.snap, &mut sec, "after 1,000 IXFRs");

    // Restarts: unchanged (the same serial: nothing to transfer), then with a change made
    // while down (one IXFR of it).
    let serial = a.snap.serial;
    drop(a);
    let a = Primary::start(dir.path(), &hosts, 1_000, &mut rng);
    assert_eq!(
        a.snap.serial, serial,
        "an unchanged content keeps its serial"
    );
    assert_eq!(sec.transfer(&a.snap, 0), ["ixfr", "ixfr"]);
    drop(a);
    // Port 97 is never drawn: a change for sure.
    hosts.insert(6, unique(97));
    let mut a = Primary::start(dir.path(), &hosts, 1_000, &mut rng);
    assert!(a.snap.serial > serial);
    assert_eq!(
        sec.transfer(&a.snap, 0),
        ["ixfr", "ixfr"],
        "after a restart"
    );
    same_answers(&a.snap, &mut sec, "after a primary restart with a change");
    hosts.remove(&6);
    a.builder.set_host(&host(6), None);
    a.publish();
    assert_eq!(sec.transfer(&a.snap, 0), ["ixfr", "ixfr"]);

    // Another replica: its own state directory and serials, the same sources. Our content is
    // its first version: an IXFR by content, then its changes.
    let other = scratch();
    let hosts_now: BTreeMap<usize, ZoneHost> = a
        .snap
        .hosts()
        .into_iter()
        .map(|(h, r)| ((0..HOSTS).find(|i| host(*i) == h).unwrap(), r.into_owned()))
        .collect();
    let mut b = Primary::start(other.path(), &hosts_now, a.snap.serial + 500, &mut rng);
    assert_ne!(b.snap.serial, a.snap.serial);
    assert_eq!(
        sec.transfer(&b.snap, 1),
        ["ixfr", "ixfr"],
        "a replica switch"
    );
    same_answers(&b.snap, &mut sec, "after moving to the other replica");
    for _ in 0..3 {
        let (i, r) = change(&mut rng, &mut hosts);
        b.builder.set_host(&host(i), r);
    }
    // Port 98 is never drawn: content no other version had.
    b.builder.set_host(&host(4), Some(unique(98)));
    b.publish();
    assert_eq!(sec.transfer(&b.snap, 1), ["ixfr", "ixfr"]);
    same_answers(&b.snap, &mut sec, "after the other replica's change");

    // Content the first replica never had (our port 98; its new content port 99): the whole
    // forward zone.
    let mut c_hosts = hosts.clone();
    c_hosts.insert(5, unique(99));
    let c = Primary::start(dir.path(), &c_hosts, 1_000, &mut rng);
    let how = sec.transfer(&c.snap, 0);
    assert_eq!(
        how[0], "full",
        "content never held by that primary: {how:?}"
    );
    same_answers(&c.snap, &mut sec, "after a full transfer");
}

/// A report with a port no random change gives.
fn unique(port: u16) -> ZoneHost {
    crate::zone::lookup_tests::host(&["240.10.1.7"], &[("http", Transport::Tcp, port)])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2, ..ProptestConfig::default() })]
    #[test]
    fn a_secondary_answers_what_its_primary_answers_through_restarts_and_replicas(seed in any::<u64>()) {
        follow_through_changes_restarts_and_a_replica(seed);
    }
}

/// A state directory in memory when there is one: the journal's fsync per publish would make
/// the disk, not the code, the test's time.
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::tempdir_in(shm) {
            return d;
        }
    }
    tempfile::tempdir().unwrap()
}

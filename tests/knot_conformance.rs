//! Conformance against Knot DNS: the same data (`globaldns zonefile` of a realistic zones/ tree)
//! loaded into knotd and served by `globaldns serve`, both asked the same 1,500 deterministic,
//! varied questions (and every apex's NS set, whose additional section carries the in-zone name
//! server's address, over UDP with and without EDNS and over TCP) over real sockets, and the
//! responses compared field by field:
//! rcode, header flags, question, every section as sorted record sets (TTLs and owner case
//! included) and the OPT record.
//!
//! Normalised on both sides before comparing (documented differences that are not answers):
//! - the SOA serial: `serve` and `zonefile` each derive one, and they need not be equal;
//! - the case of names other than the question and the answers' owners (RFC 4343: names compare
//!   without case): Knot compresses the SOA of a negative answer, and names in record data,
//!   against the question, so they take the question's case; we write the zone's;
//! - the OPT payload size: we advertise the client's size clamped to 512..=1232, Knot always
//!   its own 1232; both are within RFC 6891 (the field is the sender's own buffer size).
//!
//! Excepted queries (counted and listed, not compared), each for a reason:
//! - type ANY: RFC 8482 allows either a minimal answer or everything; we answer one synthesised
//!   `HINFO "RFC8482" ""`, Knot answers every RRset it has (see [`ANY`]);
//! - opcode UPDATE: not implemented here, so NOTIMP (RFC 2136 §3); Knot implements it and
//!   answers FORMERR, NOTAUTH or REFUSED (its update ACL);
//! - the CD bit: we copy it to the response (RFC 4035 §3.1.6, as BIND does), Knot always
//!   clears it; excepted when it is the only difference (see [`cd_only`]);
//! - a UDP answer within a few bytes of the client's limit: hickory-server writes the first
//!   answer owner in full where Knot compresses it against the question, so we truncate it
//!   (TC, the client retries over TCP) where Knot's fits (see [`owner_uncompressed`]);
//! - Istio's wildcard rule: `*.bar.global` matches every name below `bar.global` (longest
//!   wildcard suffix wins), where RFC 4592 uses the wildcard of the closest encloser only, so a
//!   name below an existing name (or an empty non-terminal itself) under a wildcard is answered
//!   by the wildcard here and NXDOMAIN/NODATA by Knot (see [`istio_wildcard`]).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use hickory_proto::op::{Edns, Message, OpCode, Query};
use hickory_proto::rr::rdata::opt::{EdnsOption, NSIDPayload};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

const QUERIES: usize = 1500;
const RANGES: [&str; 2] = ["240.10.0.0/16", "fd00:10::/64"];

/// Why a query is not compared.
const ANY: &str = "RFC 8482 ANY";
const WILDCARD: &str = "Istio wildcard rule";
const CD: &str = "CD copied";
const UPDATE: &str = "UPDATE not implemented";
const OWNER: &str = "first owner not compressed";

/// The zones/ tree: VIP hosts with SRV ports, dual-stack user addresses, a host with more
/// addresses than 512 or 600 bytes hold, shared addresses (a PTR with two names), wildcards
/// at several depths with exact names and empty non-terminals below them, an empty
/// non-terminal chain, and a second cluster.
fn write_zones(dir: &Path) {
    let mut docs = Vec::new();
    for i in 0..24 {
        let udp = if i % 3 == 0 {
            ", {name: dns, number: 53, protocol: UDP}"
        } else {
            ""
        };
        docs.push(se(
            &format!("svc-{i}"),
            &format!("ns-{}", i % 4),
            &[&format!("svc-{i}.ns-{}.global", i % 4)],
            &[],
            &format!("  ports: [{{name: http, number: 8080, protocol: HTTP}}{udp}]\n"),
        ));
    }
    docs.push(se(
        "dual",
        "d",
        &["dual.d.global"],
        &["240.0.0.9", "fd00:99::9", "240.10.3.3"],
        "  ports: [{name: grpc-api, number: 9000, protocol: GRPC}]\n",
    ));
    docs.push(se("only6", "d", &["only6.d.global"], &["fd00:99::6"], ""));
    docs.push(se(
        "shared",
        "s",
        &["one.s.global", "two.s.global"],
        &["240.10.8.8"],
        "",
    ));
    let many: Vec<String> = (0..60)
        .map(|i| format!("240.1.0.{i}"))
        .chain((0..20).map(|i| format!("fd00:1::{i:x}")))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    docs.push(se("big", "b", &["big.b.global"], &many, ""));
    // 30 A records: more than 512 bytes, less than 600.
    let mid: Vec<String> = (0..30).map(|i| format!("240.2.0.{i}")).collect();
    let mid: Vec<&str> = mid.iter().map(String::as_str).collect();
    docs.push(se("mid", "b", &["mid.b.global"], &mid, ""));
    docs.push(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: wild, namespace: wild}\nspec:\n  hosts: [\"*.wild.global\"]\n  ports: [{name: https, number: 443, protocol: TLS}]\n  location: MESH_INTERNAL\n  resolution: DYNAMIC_DNS\n".to_string(),
    );
    docs.push(se(
        "mix",
        "mix",
        &["*.mix.global"],
        &["10.4.0.1", "fd00:4::1"],
        "",
    ));
    docs.push(se("mix-a", "mix", &["*.a.mix.global"], &["10.4.0.3"], ""));
    docs.push(se(
        "mix-deep",
        "mix",
        &["*.deep.a.mix.global"],
        &["10.4.0.4"],
        "",
    ));
    docs.push(se(
        "mix-exact",
        "mix",
        &["exact.mix.global", "x.b.mix.global"],
        &["10.4.0.2"],
        "",
    ));
    docs.push(se(
        "chain",
        "c",
        &["leaf.e3.e2.e1.chain.global"],
        &["10.6.0.1"],
        "",
    ));
    write_file(&dir.join("main.yaml"), &docs.join("---\n"));
    std::fs::create_dir_all(dir.join("west")).unwrap();
    write_file(
        &dir.join("west/west.yaml"),
        &[
            se("remote", "w", &["remote.w.global"], &[], ""),
            se("svc-1", "other", &["svc-1.ns-1.global"], &[], ""),
        ]
        .join("---\n"),
    );
}

/// The master files `globaldns zonefile` prints, one (apex, text) per zone.
fn zonefile(zones: &Path, state: &Path) -> Vec<(String, String)> {
    let mut cmd = Command::new(BIN);
    cmd.arg("zonefile")
        .arg("--zones")
        .arg(zones)
        .arg("--state-dir")
        .arg(state);
    for r in RANGES {
        cmd.args(["--vip-range", r]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut files: Vec<(String, String)> = vec![];
    for line in text.lines() {
        if let Some(origin) = line.strip_prefix("$ORIGIN ") {
            files.push((origin.trim().to_string(), String::new()));
        }
        let last = files.last_mut().expect("$ORIGIN first");
        last.1.push_str(line);
        last.1.push('\n');
    }
    files
}

/// A throw-away knotd serving `files` on 127.0.0.1:`port`. Killed on drop.
struct Knot {
    child: Child,
    addr: SocketAddr,
    _tmp: tempfile::TempDir,
}

impl Knot {
    fn start(files: &[(String, String)], port: u16) -> Knot {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        for sub in ["run", "db", "zones"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let mut zones = String::new();
        for (apex, text) in files {
            let path = d.join("zones").join(format!("{apex}zone"));
            std::fs::write(&path, text).unwrap();
            zones.push_str(&format!(
                "  - domain: \"{apex}\"\n    file: \"{}\"\n",
                path.display()
            ));
        }
        // No CHAOS identity/version answers (we answer no CH data), a read-only server.
        let conf = format!(
            "server:\n    rundir: \"{r}\"\n    listen: 127.0.0.1@{port}\n    identity: \"\"\n    version: \"\"\n\
             log:\n  - target: stderr\n    any: notice\n\
             database:\n    storage: \"{db}\"\n\
             template:\n  - id: default\n    zonefile-sync: -1\n    zonefile-load: whole\n    journal-content: none\n\
             zone:\n{zones}",
            r = d.join("run").display(),
            db = d.join("db").display(),
        );
        std::fs::write(d.join("knot.conf"), conf).unwrap();
        let child = Command::new("knotd")
            .arg("-c")
            .arg(d.join("knot.conf"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("knotd.log")).unwrap())
            .spawn()
            .expect("knotd is installed (scripts/test.sh installs knot)");
        let knot = Knot {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _tmp: tmp,
        };
        for (apex, _) in files {
            eventually(Duration::from_secs(20), "knotd serving every zone", || {
                let q = Ask::new(apex, RecordType::SOA);
                let (m, _) = udp(knot.addr, &q.bytes(), q.id, 1)?;
                m.answers.first().map(|_| ())
            });
        }
        knot
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One question and how it is asked.
#[derive(Clone, Debug)]
struct Ask {
    id: u16,
    name: String,
    rtype: RecordType,
    class: DNSClass,
    /// None: no OPT; Some((payload, DO, version)).
    edns: Option<(u16, bool, u8)>,
    rd: bool,
    cd: bool,
    tcp: bool,
    odd: Odd,
}

/// Unusual messages, a few percent of the corpus.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Odd {
    No,
    /// Opcode STATUS or UPDATE.
    Opcode(OpCode),
    /// No question at all.
    NoQuestion,
    /// An EDNS option: a client cookie (10), NSID asked (3), an unassigned code.
    Option(u16),
}

impl Ask {
    fn new(name: &str, rtype: RecordType) -> Ask {
        Ask {
            id: 1,
            name: name.to_string(),
            rtype,
            class: DNSClass::IN,
            edns: None,
            rd: false,
            cd: false,
            tcp: false,
            odd: Odd::No,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = self.id;
        m.metadata.recursion_desired = self.rd;
        m.metadata.checking_disabled = self.cd;
        if let Odd::Opcode(op) = self.odd {
            m.metadata.op_code = op;
        }
        let mut q = Query::query(Name::from_ascii(&self.name).unwrap(), self.rtype);
        q.set_query_class(self.class);
        if self.odd != Odd::NoQuestion {
            m.add_query(q);
        }
        if let Some((payload, dnssec_ok, version)) = self.edns {
            let mut e = Edns::new();
            e.set_max_payload(payload);
            e.set_dnssec_ok(dnssec_ok);
            e.set_version(version);
            match self.odd {
                Odd::Option(3) => e
                    .options_mut()
                    .insert(EdnsOption::NSID(NSIDPayload::try_from(&[][..]).unwrap())),
                Odd::Option(code) => e
                    .options_mut()
                    .insert(EdnsOption::Unknown(code, vec![7; 8])),
                _ => {}
            }
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    fn describe(&self) -> String {
        format!(
            "{}{} {} {}{}{}{}{}",
            if self.odd == Odd::No {
                String::new()
            } else {
                format!("{:?} ", self.odd)
            },
            self.name,
            self.class,
            self.rtype,
            match self.edns {
                None => " noedns".to_string(),
                Some((p, d, v)) => format!(" edns(v{v} {p}{})", if d { " DO" } else { "" }),
            },
            if self.rd { " rd" } else { "" },
            if self.cd { " cd" } else { "" },
            if self.tcp { " tcp" } else { " udp" },
        )
    }
}

/// One UDP exchange (the response and its size) from a fresh socket; None when nothing matching came in `tries` tries.
fn udp(server: SocketAddr, query: &[u8], id: u16, tries: usize) -> Option<(Message, usize)> {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 65535];
    for _ in 0..tries {
        sock.send_to(query, server).unwrap();
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            if from != server {
                continue;
            }
            let m = Message::from_vec(&buf[..n]).expect("a response that parses");
            if m.metadata.id == id {
                return Some((m, n));
            }
        }
    }
    None
}

fn tcp(server: SocketAddr, query: &[u8]) -> (Message, usize) {
    let mut s = TcpStream::connect(server).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    s.write_all(&framed).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).unwrap();
    (
        Message::from_vec(&buf).expect("a response that parses"),
        buf.len(),
    )
}

fn exchange(server: SocketAddr, ask: &Ask) -> (Message, usize) {
    let bytes = ask.bytes();
    if ask.tcp {
        tcp(server, &bytes)
    } else {
        udp(server, &bytes, ask.id, 5)
            .unwrap_or_else(|| panic!("no answer from {server} to {}", ask.describe()))
    }
}

/// A record as compared: owner as sent (case kept, when `exact_owner`), TTL, class, type, data
/// (names in it lower-cased); the SOA serial left out.
fn record_line(r: &Record, exact_owner: bool) -> String {
    let data = match &r.data {
        RData::SOA(soa) => format!(
            "{} {} SERIAL {} {} {} {}",
            soa.mname, soa.rname, soa.refresh, soa.retry, soa.expire, soa.minimum
        ),
        d => d.to_string(),
    };
    let owner = r.name.to_string();
    format!(
        "{} {} {} {} {}",
        if exact_owner {
            owner
        } else {
            owner.to_ascii_lowercase()
        },
        r.ttl,
        r.dns_class,
        r.record_type(),
        data.to_ascii_lowercase()
    )
}

/// Everything compared of a response, normalised.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    rcode: String,
    flags: String,
    question: Vec<String>,
    answer: Vec<String>,
    authority: Vec<String>,
    additional: Vec<String>,
    /// (version, DO); the payload is normalised away (see the module doc).
    opt: Option<(u8, bool)>,
}

fn seen(m: &Message) -> Seen {
    let h = &m.metadata;
    let sorted = |rs: &[Record], exact_owner| {
        let mut v: Vec<String> = rs.iter().map(|r| record_line(r, exact_owner)).collect();
        v.sort();
        v
    };
    let flag = |on: bool, s: &'static str| if on { s } else { "" };
    Seen {
        rcode: format!("{:?}", h.response_code),
        flags: [
            flag(
                h.message_type == hickory_proto::op::MessageType::Response,
                "qr ",
            ),
            flag(h.authoritative, "aa "),
            flag(h.truncation, "tc "),
            flag(h.recursion_desired, "rd "),
            flag(h.recursion_available, "ra "),
            flag(h.authentic_data, "ad "),
            flag(h.checking_disabled, "cd "),
        ]
        .concat(),
        question: m
            .queries
            .iter()
            .map(|q| format!("{} {} {}", q.name(), q.query_class(), q.query_type()))
            .collect(),
        answer: sorted(&m.answers, true),
        authority: sorted(&m.authorities, false),
        additional: sorted(&m.additionals, false),
        opt: m.edns.as_ref().map(|e| (e.version(), e.flags().dnssec_ok)),
    }
}

/// The zone's names, to tell where Istio's wildcard rule and RFC 4592 part.
struct ZoneModel {
    apexes: Vec<String>,
    /// Every owner, lower-cased, without the trailing dot.
    owners: BTreeSet<String>,
    /// Owners and every name between them and their apex (empty non-terminals).
    existing: BTreeSet<String>,
    /// Parents of wildcards: `*.bar.global` → `bar.global`.
    wildcard_parents: BTreeSet<String>,
}

fn parent(name: &str) -> Option<&str> {
    name.split_once('.').map(|(_, p)| p)
}

impl ZoneModel {
    fn new(files: &[(String, String)]) -> ZoneModel {
        let mut m = ZoneModel {
            apexes: files
                .iter()
                .map(|(a, _)| a.trim_end_matches('.').to_string())
                .collect(),
            owners: BTreeSet::new(),
            existing: BTreeSet::new(),
            wildcard_parents: BTreeSet::new(),
        };
        for (apex, text) in files {
            let apex = apex.trim_end_matches('.').to_string();
            for line in text.lines().filter(|l| !l.starts_with('$')) {
                let owner = line.split_whitespace().next().unwrap();
                let owner = owner.trim_end_matches('.').to_ascii_lowercase();
                if let Some(p) = owner.strip_prefix("*.") {
                    m.wildcard_parents.insert(p.to_string());
                }
                m.owners.insert(owner.clone());
                let mut n = owner.as_str();
                while n.len() > apex.len() {
                    m.existing.insert(n.to_string());
                    n = parent(n).unwrap();
                }
                m.existing.insert(apex.clone());
            }
        }
        m
    }

    fn in_zone(&self, name: &str) -> bool {
        self.apexes
            .iter()
            .any(|a| name == a || name.ends_with(&format!(".{a}")))
    }

    /// True where Istio's rule (longest wildcard suffix, checked before empty non-terminals)
    /// and RFC 4592 (the closest encloser's wildcard, if any) give different answers.
    fn istio_wildcard(&self, qname: &str) -> bool {
        let q = qname.trim_end_matches('.').to_ascii_lowercase();
        if !self.in_zone(&q) || self.owners.contains(&q) {
            return false;
        }
        let mut istio = None;
        let mut p = parent(&q);
        while let Some(n) = p {
            if self.wildcard_parents.contains(n) {
                istio = Some(n);
                break;
            }
            p = parent(n);
        }
        if self.existing.contains(&q) {
            // An empty non-terminal: RFC 4592 answers NODATA, never from a wildcard.
            return istio.is_some();
        }
        let mut encloser = parent(&q);
        while let Some(n) = encloser.filter(|n| !self.existing.contains(*n)) {
            encloser = parent(n);
        }
        let rfc = encloser.filter(|e| self.wildcard_parents.contains(*e));
        istio != rfc
    }
}

/// Names worth asking about, in groups drawn with a weight: hosts (among them the big ones),
/// names covered by wildcards at several depths, SRV owners, reverse names, empty
/// non-terminals (the chain, `_tcp`, reverse), apexes, non-existent names below every kind
/// of name, and names outside the zones.
fn name_groups(model: &ZoneModel) -> Vec<(u32, Vec<String>)> {
    let forward = |n: &&String| !n.ends_with("arpa");
    let hosts: Vec<String> = model
        .owners
        .iter()
        .filter(forward)
        .filter(|n| !n.starts_with('*') && !n.starts_with('_') && !model.apexes.contains(n))
        .cloned()
        .chain(
            ["big.b.global", "mid.b.global"]
                .repeat(6)
                .into_iter()
                .map(String::from),
        )
        .collect();
    let services: Vec<String> = model
        .owners
        .iter()
        .filter(|n| n.starts_with('_'))
        .cloned()
        .collect();
    let ptrs: Vec<String> = model
        .owners
        .iter()
        .filter(|n| n.ends_with("arpa") && !model.apexes.contains(n))
        .cloned()
        .collect();
    let ents: Vec<String> = model.existing.difference(&model.owners).cloned().collect();
    let mut wild = vec![];
    for p in &model.wildcard_parents {
        for prefix in ["foo", "a.b", "x.y.z", "_http._tcp.q", "*", "_tcp.w"] {
            wild.push(format!("{prefix}.{p}"));
        }
    }
    let mut negative = vec![];
    for owner in model.owners.iter().filter(|n| !n.starts_with('*')) {
        negative.push(format!("nope.{owner}"));
        if forward(&owner) && !owner.starts_with('_') {
            negative.extend([
                format!("_nope._tcp.{owner}"),
                format!("_http._udp.{owner}"),
                format!("_udp.{owner}"),
            ]);
        }
    }
    negative.extend(
        [
            "nope.global",
            "deeper.nope.ns-1.global",
            "1.2.10.240.in-addr.arpa",
            "99.99.10.240.in-addr.arpa",
            "f.f.f.f.0.0.0.0.0.0.0.0.0.1.0.0.0.0.d.f.ip6.arpa",
        ]
        .map(String::from),
    );
    let outside = [
        "3.2.1.10.in-addr.arpa",
        "in-addr.arpa",
        "arpa",
        "example.com",
        "globalx",
        "xglobal",
        "version.bind",
        "id.server",
        "global.example.com",
        ".",
    ]
    .map(String::from)
    .to_vec();
    vec![
        (30, hosts),
        (12, wild),
        (10, services),
        (10, ptrs),
        (8, ents),
        (12, negative),
        (6, model.apexes.clone()),
        (6, outside),
    ]
}

fn vary_case(rng: &mut StdRng, name: &str) -> String {
    match rng.random_range(0..4) {
        0 => name.to_ascii_uppercase(),
        1 => name
            .chars()
            .map(|c| {
                if rng.random_bool(0.4) {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect(),
        _ => name.to_string(),
    }
}

fn asks(model: &ZoneModel) -> Vec<Ask> {
    use RecordType::*;
    let mut rng = StdRng::seed_from_u64(0x6b6e6f74);
    let groups = name_groups(model);
    let weights: u32 = groups.iter().map(|g| g.0).sum();
    let types = [
        A, A, A, AAAA, AAAA, SRV, SRV, PTR, PTR, SOA, NS, TXT, MX, CNAME, ANY, HTTPS, SVCB, CAA,
        DS, DNSKEY, NULL,
    ];
    let classes = [DNSClass::CH, DNSClass::HS, DNSClass::NONE, DNSClass::ANY];
    let mut out = Vec::new();
    for _ in 0..QUERIES {
        let mut pick = rng.random_range(0..weights);
        let group = groups
            .iter()
            .find(|(w, _)| {
                let here = pick < *w;
                pick = pick.saturating_sub(*w);
                here
            })
            .unwrap();
        let name = group.1.choose(&mut rng).unwrap().clone();
        // Mostly the type the name has data of.
        let mut rtype = *types.choose(&mut rng).unwrap();
        if rng.random_bool(0.5) {
            rtype = if name.ends_with("arpa") {
                PTR
            } else if name.starts_with('_') {
                SRV
            } else {
                *[A, AAAA].choose(&mut rng).unwrap()
            };
        }
        let class = if rng.random_bool(0.9) {
            DNSClass::IN
        } else {
            *classes.choose(&mut rng).unwrap()
        };
        let edns = match rng.random_range(0..10) {
            0..=2 => None,
            n => {
                let payload = *[512u16, 600, 1232, 4096].choose(&mut rng).unwrap();
                Some((
                    payload,
                    rng.random_bool(0.3),
                    u8::from(n == 9 && rng.random_bool(0.3)),
                ))
            }
        };
        let name = vary_case(&mut rng, &name);
        out.push(Ask {
            id: rng.random(),
            name: if name == "." {
                name
            } else {
                format!("{name}.")
            },
            rtype,
            class,
            edns,
            rd: rng.random_bool(0.5),
            cd: rng.random_bool(0.05),
            tcp: rng.random_bool(0.2),
            odd: match rng.random_range(0..100) {
                0 => Odd::Opcode(OpCode::Status),
                1 => Odd::Opcode(OpCode::Update),
                2 => Odd::NoQuestion,
                3..=5 if edns.is_some() => {
                    Odd::Option(*[3u16, 10, 65001].choose(&mut rng).unwrap())
                }
                _ => Odd::No,
            },
        });
    }
    // The apex NS sets, whatever the draw: `global.`'s carries its name server's address in the
    // additional section (RFC 1034 §4.3.2 step 6), on each path that answers it.
    for apex in &model.apexes {
        for (edns, tcp) in [(None, false), (Some((1232, false, 0)), false), (None, true)] {
            out.push(Ask {
                id: rng.random(),
                edns,
                tcp,
                ..Ask::new(&format!("{apex}."), NS)
            });
        }
    }
    out
}

/// Why a question is not compared, if it is not.
fn exception(model: &ZoneModel, ask: &Ask) -> Option<&'static str> {
    if ask.odd == Odd::Opcode(OpCode::Update) {
        return Some(UPDATE);
    }
    let lower = ask.name.trim_end_matches('.').to_ascii_lowercase();
    let in_class = matches!(ask.class, DNSClass::IN | DNSClass::ANY);
    let plain = in_class
        && ask.edns.is_none_or(|(_, _, v)| v == 0)
        && matches!(ask.odd, Odd::No | Odd::Option(_));
    if plain && model.in_zone(&lower) && ask.rtype == RecordType::ANY {
        return Some(ANY);
    }
    if plain && model.istio_wildcard(&lower) {
        return Some(WILDCARD);
    }
    None
}

/// The CD bit: we copy it (RFC 4035 §3.1.6, as BIND does), Knot always clears it. The CD
/// exception when that is the only difference.
fn cd_only(ours: &Seen, knot: &Seen) -> Option<&'static str> {
    let mut without = ours.clone();
    without.flags = ours.flags.replace("cd ", "");
    (ours.flags.contains("cd ") && without == *knot).then_some(CD)
}

/// hickory-server echoes the question as the request's bytes and registers them, type and
/// class included, as one compression target that no name can match: the first answer owner
/// is written in full where Knot points at the question, `len(qname) - 2` bytes more. An
/// answer that fits the UDP limit within that margin is truncated by us, not by Knot.
fn owner_uncompressed(
    ask: &Ask,
    ours: &Seen,
    knot: &Seen,
    knot_len: usize,
) -> Option<&'static str> {
    let limit = ask
        .edns
        .map_or(512, |(p, _, _)| usize::from(p.clamp(512, 1232)));
    let qname_len = ask.name.len() + 1;
    let margin = knot_len + qname_len - 2 > limit;
    (!ask.tcp && ours.flags.contains("tc ") && !knot.flags.contains("tc ") && margin)
        .then_some(OWNER)
}

#[test]
fn answers_agree_with_knot_on_the_same_zone_data() {
    let (_t, zones, state) = dirs();
    write_zones(&zones);
    let files = zonefile(&zones, &state);
    assert!(files.len() >= 3, "global. and two reverse zones: {files:?}");
    let model = ZoneModel::new(&files);
    let mut flags = vec![];
    for r in RANGES {
        flags.extend(["--vip-range", r]);
    }
    let ours = Server::start(&zones, &state, &flags);
    let knot = Knot::start(&files, free_ports(1));

    let asks = asks(&model);
    let mut agree = 0;
    let mut excepted: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut differ = vec![];
    // What Knot answered, to show (and check) that the corpus covers every kind of answer.
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    // Agreed NS answers with addresses in the additional section.
    let mut ns_with_glue = vec![];
    for ask in &asks {
        let ((a, _), (b, knot_len)) = (exchange(ours.dns, ask), exchange(knot.addr, ask));
        let (a, b) = (seen(&a), seen(&b));
        *kinds.entry(b.rcode.clone()).or_default() += 1;
        if b.flags.contains("tc ") {
            *kinds.entry("truncated".into()).or_default() += 1;
        }
        if !b.answer.is_empty() {
            *kinds.entry("with answers".into()).or_default() += 1;
        }
        if a == b {
            agree += 1;
            if ask.rtype == RecordType::NS && !b.additional.is_empty() {
                ns_with_glue.push(ask.describe());
            }
            continue;
        }
        let detail = format!("{}\n  ours: {a:?}\n  knot: {b:?}", ask.describe());
        let why = exception(&model, ask)
            .or_else(|| cd_only(&a, &b))
            .or_else(|| owner_uncompressed(ask, &a, &b, knot_len));
        match why {
            Some(why) => excepted.entry(why).or_default().push(detail),
            None => differ.push(detail),
        }
    }
    let excepted_n: usize = excepted.values().map(Vec::len).sum();
    println!(
        "Knot conformance: {agree} of {} agree, {excepted_n} differ as documented ({})",
        asks.len(),
        excepted
            .iter()
            .map(|(k, v)| format!("{k} {}", v.len()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("Knot's answers: {kinds:?}");
    for kind in [
        "NoError",
        "NXDomain",
        "Refused",
        "FormErr",
        "NotImp",
        "BADSIG",
        "truncated",
    ] {
        // (hickory names rcode 16 BADSIG; in an OPT-carrying response it is BADVERS.)
        assert!(
            kinds.get(kind).is_some_and(|n| *n >= 5),
            "few {kind}: {kinds:?}"
        );
    }
    for (why, list) in &excepted {
        println!(
            "excepted ({why}), e.g.:\n{}",
            list[..list.len().min(3)].join("\n")
        );
    }
    assert!(
        differ.is_empty(),
        "{} of {} differ from Knot:\n{}",
        differ.len(),
        asks.len(),
        differ.join("\n")
    );
    assert!(agree >= 1000, "at least 1,000 compared queries: {agree}");
    // The UDP fast path (no EDNS, and EDNS), the TCP path: each answered the glue as Knot did.
    for path in [" noedns udp", " edns(v0 1232) udp", " noedns tcp"] {
        assert!(
            ns_with_glue
                .iter()
                .any(|d| d.starts_with("global. IN NS") && d.ends_with(path)),
            "global. NS{path} agreed with its glue: {ns_with_glue:?}"
        );
    }
}

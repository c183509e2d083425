//! What must hold for any input of each parser of outside input: one function per fuzz target,
//! panicking on a violation. Shared with the main suite's property tests, which include this
//! file, so that the fuzzers and CI check the same properties.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use globaldns::alloc::file_store::{self, FileStore};
use globaldns::alloc::store::MemoryStore;
use globaldns::alloc::{Allocator, Table};
use globaldns::dns::{Handler, Transport, MAX_UDP_PAYLOAD};
use globaldns::fastpath::{shape, Responder};
use globaldns::kube::clusters::{client_for, ConfigSource};
use globaldns::metrics::Metrics;
use globaldns::pipeline::Pipeline;
use globaldns::published::Published;
use globaldns::registry::SourceKey;
use globaldns::source::files::parse_text;
use globaldns::zone::ZoneConfig;
use hickory_proto::op::{Message, MessageType};

const RANGES: [&str; 2] = ["240.10.0.0/16", "fd00:10::/64"];

/// A zone with the shapes the answer engine knows: plain, dual-stack, wildcard, SRV, many
/// addresses (truncation), a host with no address.
pub const ZONE_YAML: &str = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc, namespace: ns}
spec:
  hosts: [svc.ns.global, other.ns.global]
  location: MESH_INTERNAL
  resolution: DNS
  ports: [{name: http, number: 8080, protocol: HTTP}, {name: dns, number: 53, protocol: UDP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dual, namespace: d}
spec:
  hosts: [dual.d.global]
  addresses: [240.0.0.9, "fd00:99::9"]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: w, namespace: w}
spec:
  hosts: ["*.w.global"]
  addresses: [240.0.1.1]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: none, namespace: n}
spec:
  hosts: [none.n.global]
  resolution: NONE
"#;

/// The zones the YAML checks validate against.
pub fn zones() -> Vec<String> {
    vec!["global".to_string()]
}

/// The DNS request path: [`Handler::wire`] over UDP and TCP, the fast path's [`shape`] and its
/// cache ([`Responder`]), on one snapshot.
pub struct DnsTarget {
    handler: Arc<Handler>,
    responder: Responder,
    key: Vec<u8>,
    out: Vec<u8>,
}

impl DnsTarget {
    pub fn new() -> DnsTarget {
        let zones = zones();
        let (entries, problems) = parse_text(ZONE_YAML, "zone.yaml", "local", &zones).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        let ranges: Vec<ipnet::IpNet> = RANGES.iter().map(|r| r.parse().unwrap()).collect();
        let cfg = ZoneConfig {
            zones,
            reverse_zones: vec![],
            ns: vec![],
            ttl: 30,
        };
        let mut pipeline = Pipeline::new(
            &cfg,
            &ranges,
            true,
            Allocator::new(&ranges, 60, Table::new()),
        );
        let unit = SourceKey {
            cluster: "local".into(),
            unit: "zone.yaml".into(),
        };
        pipeline.set_unit(unit, entries);
        let snap = pipeline
            .pass(1, &mut MemoryStore::default())
            .unwrap()
            .snapshot;
        let handler = Arc::new(Handler::plain(
            Arc::new(Published::new(snap)),
            Arc::new(Metrics::new()),
        ));
        let mut responder = Responder::new(handler.clone());
        responder.begin_batch();
        DnsTarget {
            handler,
            responder,
            key: Vec::new(),
            out: Vec::new(),
        }
    }

    /// Never panics; every reply parses back as a response to the packet's id, within the UDP
    /// limit over UDP; the fast path sends exactly what the general path does.
    pub fn check(&mut self, packet: &[u8]) {
        let src: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        if let Some(s) = shape(packet, &mut self.key) {
            assert!(s.question_end <= packet.len());
        }
        for transport in [Transport::Udp, Transport::Tcp] {
            let udp = transport == Transport::Udp;
            let Some(wire) = self.handler.wire_on(packet, src, transport) else {
                continue;
            };
            let reply = Message::from_vec(&wire.bytes).unwrap_or_else(|e| {
                panic!(
                    "reply {:02x?} to {packet:02x?} (udp {udp}) does not parse: {e}",
                    wire.bytes
                )
            });
            assert_eq!(reply.metadata.message_type, MessageType::Response);
            assert_eq!(
                reply.metadata.id,
                u16::from_be_bytes([packet[0], packet[1]]),
                "reply to {packet:02x?} has another id"
            );
            if udp {
                assert!(wire.bytes.len() <= usize::from(MAX_UDP_PAYLOAD));
                let sent = self.responder.answer(packet, src, &mut self.out);
                assert!(sent, "the fast path sends nothing for {packet:02x?}");
                assert_eq!(self.out, wire.bytes, "fast path differs for {packet:02x?}");
            }
        }
    }
}

impl Default for DnsTarget {
    fn default() -> Self {
        Self::new()
    }
}

/// ServiceEntry YAML as a file or a cluster gives it: parsed, then validated.
pub fn check_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((entries, problems)) = parse_text(text, "fuzz.yaml", "local", &zones()) {
        // Whatever was accepted is within the zones; whatever was refused says which object.
        for e in &entries {
            for h in &e.hosts {
                assert!(globaldns::serviceentry::in_zones(h, &zones()), "{h:?}");
            }
        }
        for p in &problems {
            assert!(p.object.starts_with("fuzz.yaml"), "{p:?}");
        }
    }
}

/// The allocation store's files: a state directory on tmpfs when there is one (fsyncs).
pub struct AllocTarget {
    dir: tempfile::TempDir,
}

impl AllocTarget {
    pub fn new() -> AllocTarget {
        let shm = PathBuf::from("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        };
        AllocTarget { dir: dir.unwrap() }
    }

    /// `data` is the base, a NUL, then the log (no NUL: the base alone; empty part: no file).
    /// Never panics; a table that is read is saved and read back unchanged.
    pub fn check(&mut self, data: &[u8]) {
        let dir = self.dir.path();
        let (base, log) = match data.iter().position(|b| *b == 0) {
            Some(i) => (&data[..i], &data[i + 1..]),
            None => (data, &[][..]),
        };
        for (name, body) in [(file_store::FILE_NAME, base), (file_store::LOG_NAME, log)] {
            let path = dir.join(name);
            if body.is_empty() {
                let _ = std::fs::remove_file(&path);
            } else {
                std::fs::write(&path, body).unwrap();
            }
        }
        let Ok(table) = file_store::read_table(dir) else {
            return;
        };
        let mut store = FileStore::open(dir).unwrap();
        store.save(&table).unwrap();
        assert_eq!(store.load().unwrap(), table, "not read back as saved");
    }
}

impl Default for AllocTarget {
    fn default() -> Self {
        Self::new()
    }
}

/// A remote secret's kubeconfig, as far as a client (no request is made).
pub struct KubeconfigTarget {
    rt: tokio::runtime::Runtime,
}

impl KubeconfigTarget {
    pub fn new() -> KubeconfigTarget {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        KubeconfigTarget { rt }
    }

    pub fn check(&self, data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let _ = self
            .rt
            .block_on(client_for(&ConfigSource::Inline(text.to_string())));
    }
}

impl Default for KubeconfigTarget {
    fn default() -> Self {
        Self::new()
    }
}

/// A zone transfer from a primary: first byte odd for the reverse zone, then the TCP stream.
pub fn check_transfer(data: &[u8]) {
    let Some((first, stream)) = data.split_first() else {
        return;
    };
    if let Ok(snaps) = globaldns::secondary::replay_transfers(stream, first & 1 == 1) {
        assert!(!snaps.is_empty());
    }
}

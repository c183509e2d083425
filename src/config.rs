//! Command-line flags; every flag can also come from a `GLOBALDNS_*` environment variable
//! (lists comma-separated), which is how the DaemonSet configures the server.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;

use crate::dns::ConnectionCap;
use crate::serviceentry::{normalise_name, validate_host};
use crate::zone::{NameServer, ZoneConfig};

/// `serve`'s default `--listen`; `zonefile` prints what a server listening there would serve.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5353";

#[derive(Parser, Debug)]
#[command(
    name = "globaldns",
    version,
    about = "Authoritative DNS for Istio .global ServiceEntry hosts, with stable VIPs"
)]
pub struct Cli {
    /// Log format.
    #[arg(
        long,
        env = "GLOBALDNS_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax). hickory_server stays at warn unless named: it logs
    /// every query at info, which halves throughput.
    #[arg(long, env = "GLOBALDNS_LOG", default_value = "info", global = true)]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the DNS server.
    Serve(Box<ServeArgs>),
    /// Validate ServiceEntry files (or directories) and print what each host would be served.
    Check(CheckArgs),
    /// Print the allocation table of a state directory.
    Allocations(AllocationsArgs),
    /// Print everything the server would answer as RFC 1035 zone files (allocating like serve).
    Zonefile(ZonefileArgs),
    /// Spec write-back housekeeping in Kubernetes clusters.
    #[command(subcommand, name = "write-back")]
    WriteBack(WriteBackCommand),
}

#[derive(Subcommand, Debug)]
pub enum WriteBackCommand {
    /// Give up every field globaldns owns (its spec.addresses) in every ServiceEntry of the
    /// clusters, for turning spec write-back off; a field someone else also owns stays theirs.
    Withdraw(WithdrawArgs),
}

#[derive(Args, Debug)]
pub struct WithdrawArgs {
    /// The cluster globaldns runs in (service account).
    #[arg(long)]
    pub in_cluster: bool,
    /// Name for the --in-cluster cluster in messages.
    #[arg(long, default_value = "local")]
    pub cluster_name: String,
    /// A cluster from a kubeconfig file: NAME=PATH[#CONTEXT] (repeatable).
    #[arg(long = "cluster", value_delimiter = ',', value_parser = crate::kube::parse_cluster_flag)]
    pub clusters: Vec<crate::kube::ClusterFlag>,
    /// Only say which entries would change (server-side dry run).
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ZoneArgs {
    /// Zone to serve (repeatable).
    #[arg(
        long = "zone",
        env = "GLOBALDNS_ZONE",
        value_delimiter = ',',
        default_value = "global",
        value_parser = parse_zone
    )]
    pub zones: Vec<String>,
    /// VIP range (repeatable; IPv4 and/or IPv6 CIDRs).
    #[arg(
        long = "vip-range",
        env = "GLOBALDNS_VIP_RANGE",
        value_delimiter = ',',
        default_value = "240.10.0.0/16"
    )]
    pub vip_ranges: Vec<IpNet>,
    /// TTL of answers; also the SOA minimum (negative-caching TTL).
    #[arg(long, env = "GLOBALDNS_TTL", default_value_t = 30)]
    pub ttl: u32,
    /// Name server for SOA and NS, NAME or NAME=ADDRESS (repeatable; repeat a name for more
    /// addresses). A name inside a served zone needs an address (served as its A/AAAA, the glue
    /// secondaries need). Default: ns.<first zone> with the --listen addresses (not 0.0.0.0/::).
    #[arg(long = "ns", env = "GLOBALDNS_NS", value_delimiter = ',')]
    pub ns: Vec<NsArg>,
    /// Extra reverse zone to serve PTR in (repeatable), besides those covering the VIP ranges.
    #[arg(
        long = "reverse-zone",
        env = "GLOBALDNS_REVERSE_ZONE",
        value_delimiter = ',',
        value_parser = parse_zone
    )]
    pub reverse_zones: Vec<String>,
    /// The home cluster: answers are what its mesh knows (its own addresses for hosts it lists).
    /// In file mode zones/*.yaml are cluster "local" and zones/NAME/ cluster NAME; in a cluster,
    /// Istio's cluster ID of the cluster this instance serves.
    #[arg(long, env = "GLOBALDNS_CLUSTER_NAME", default_value = "local")]
    pub cluster_name: String,
    /// Serve the home cluster's Istio status.addresses for hosts without spec.addresses.
    #[arg(long, env = "GLOBALDNS_PREFER_ISTIO_STATUS", default_value_t = true, action = clap::ArgAction::Set)]
    pub prefer_istio_status: bool,
}

/// A `--zone` or `--reverse-zone`: a name below the root made of DNS-1123 labels, normalised
/// (lower case, no trailing dot). Refused at start, with the reason, rather than served oddly: an
/// empty one would be the root zone, a malformed one would have no name server.
fn parse_zone(raw: &str) -> Result<String, String> {
    let zone = normalise_name(raw);
    if zone.is_empty() {
        return Err("the root zone cannot be served; name a zone such as `global`".into());
    }
    validate_host(&zone)?;
    if zone.starts_with("*.") {
        return Err("a zone cannot be a wildcard".into());
    }
    Ok(zone)
}

impl ZoneArgs {
    pub fn normalised_zones(&self) -> Vec<String> {
        let mut z = self.zones.clone();
        z.dedup();
        z
    }

    pub fn zone_config(&self) -> ZoneConfig {
        ZoneConfig {
            zones: self.normalised_zones(),
            reverse_zones: self.reverse_zones.clone(),
            ns: name_servers(&self.ns),
            ttl: self.ttl,
        }
    }

    /// Without `--ns`: the default name server with the `listen` addresses as its glue (none
    /// when every one is 0.0.0.0 or ::). Then refuses name servers a secondary could not load.
    fn resolve_name_servers(&mut self, listen: &[SocketAddr]) -> anyhow::Result<()> {
        if self.ns.is_empty() {
            let name = format!(
                "ns.{}",
                self.normalised_zones()
                    .first()
                    .map_or("global", |z| z.as_str())
            );
            let mut ips: Vec<IpAddr> = listen.iter().map(|a| a.ip()).collect();
            ips.retain(|ip| !ip.is_unspecified());
            self.ns = if ips.is_empty() {
                vec![NsArg {
                    name,
                    address: None,
                }]
            } else {
                ips.into_iter()
                    .map(|ip| NsArg {
                        name: name.clone(),
                        address: Some(ip),
                    })
                    .collect()
            };
        }
        self.zone_config()
            .check_name_servers(&self.vip_ranges)
            .map_err(anyhow::Error::msg)
    }
}

/// One `--ns`: NAME or NAME=ADDRESS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NsArg {
    pub name: String,
    pub address: Option<IpAddr>,
}

impl FromStr for NsArg {
    type Err = String;

    fn from_str(raw: &str) -> Result<NsArg, String> {
        let (name, address) = match raw.split_once('=') {
            Some((n, a)) => {
                let ip = a
                    .trim()
                    .parse()
                    .map_err(|_| format!("{a:?} is not an IP address (NAME=ADDRESS)"))?;
                (n, Some(ip))
            }
            None => (raw, None),
        };
        let name = normalise_name(name.trim());
        if name.is_empty() || hickory_proto::rr::Name::from_ascii(&name).is_err() {
            return Err(format!("{raw:?}: not a name server name"));
        }
        Ok(NsArg { name, address })
    }
}

/// The `--ns` flags grouped by name, in first-seen order.
fn name_servers(args: &[NsArg]) -> Vec<NameServer> {
    let mut out: Vec<NameServer> = Vec::new();
    for a in args {
        let i = match out.iter().position(|s| s.name == a.name) {
            Some(i) => i,
            None => {
                out.push(NameServer {
                    name: a.name.clone(),
                    addresses: vec![],
                });
                out.len() - 1
            }
        };
        if let Some(ip) = a.address.filter(|ip| !out[i].addresses.contains(ip)) {
            out[i].addresses.push(ip);
        }
    }
    out
}

#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// Directory of ServiceEntry YAML (top level: cluster "local"; <dir>/<cluster>/: that cluster).
    #[arg(long = "zones", env = "GLOBALDNS_ZONES", default_value = "zones")]
    pub zones_dir: PathBuf,
    /// Directory of the allocation table (allocations.json).
    #[arg(long, env = "GLOBALDNS_STATE_DIR", default_value = "state")]
    pub state_dir: PathBuf,
    /// How long a VIP stays reserved for a host after its last ServiceEntry went away.
    #[arg(long, env = "GLOBALDNS_VIP_HOLD", default_value = "24h", value_parser = humantime::parse_duration)]
    pub vip_hold: Duration,
}

// `serve`'s flags, grouped by what they configure: answers (zones, VIP ranges, home cluster),
// the allocation store, the Kubernetes sources (and store), zone transfer, listeners.
#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub zone: ZoneArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    // --- Kubernetes (src/kube): clusters, --store kube, --write-back ---
    #[command(flatten)]
    pub kube: crate::kube::KubeArgs,
    // --- end Kubernetes ---
    #[command(flatten)]
    pub transfer: TransferArgs,
    #[command(flatten)]
    pub listen: ListenArgs,
    #[command(flatten)]
    pub grpc: GrpcArgs,
}

// CoreDNS's gRPC DnsService (src/grpc): off unless --grpc-listen is given.
#[derive(Args, Debug)]
pub struct GrpcArgs {
    /// Serve CoreDNS's gRPC DnsService (its `grpc` plugin's upstream) on this address
    /// (repeatable; port 0 picks a free port, logged at start). Off by default.
    #[arg(long, env = "GLOBALDNS_GRPC_LISTEN", value_delimiter = ',')]
    pub grpc_listen: Vec<SocketAddr>,
    /// gRPC over TLS: the server's certificate chain (PEM); needs --grpc-tls-key.
    #[arg(long, env = "GLOBALDNS_GRPC_TLS_CERT", requires = "grpc_tls_key")]
    pub grpc_tls_cert: Option<PathBuf>,
    /// The private key of --grpc-tls-cert (PEM).
    #[arg(long, env = "GLOBALDNS_GRPC_TLS_KEY", requires = "grpc_tls_cert")]
    pub grpc_tls_key: Option<PathBuf>,
    /// With TLS: clients must present a certificate issued by this CA (PEM), as CoreDNS's
    /// `tls CERT KEY CA` does.
    #[arg(long, env = "GLOBALDNS_GRPC_TLS_CLIENT_CA", requires = "grpc_tls_cert")]
    pub grpc_tls_client_ca: Option<PathBuf>,
    /// Open gRPC connections per --grpc-listen address; one more is closed at once.
    #[arg(long, env = "GLOBALDNS_GRPC_MAX_CONNECTIONS", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub grpc_max_connections: u32,
    /// Concurrent calls per gRPC connection (HTTP/2 max concurrent streams); clients queue the
    /// rest.
    #[arg(long, env = "GLOBALDNS_GRPC_MAX_STREAMS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub grpc_max_streams: u32,
    /// A gRPC connection with no call for this long is closed (0s: never); the client
    /// reconnects on its next call.
    #[arg(long, env = "GLOBALDNS_GRPC_IDLE_TIMEOUT", default_value = "5m", value_parser = humantime::parse_duration)]
    pub grpc_idle_timeout: Duration,
    /// HTTP/2 PING on each gRPC connection this often to find dead peers (0s: never).
    #[arg(long, env = "GLOBALDNS_GRPC_KEEPALIVE", default_value = "60s", value_parser = humantime::parse_duration)]
    pub grpc_keepalive: Duration,
    /// A PING not answered within this closes the gRPC connection.
    #[arg(long, env = "GLOBALDNS_GRPC_KEEPALIVE_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub grpc_keepalive_timeout: Duration,
}

impl GrpcArgs {
    pub fn limits(&self) -> crate::grpc::Limits {
        crate::grpc::Limits {
            connections: ConnectionCap::new(self.grpc_max_connections, self.grpc_idle_timeout),
            max_streams: self.grpc_max_streams,
            keepalive: self.grpc_keepalive,
            keepalive_timeout: self.grpc_keepalive_timeout,
        }
    }

    /// None: plaintext (the loopback sidecar layout).
    pub fn tls(&self) -> Option<crate::grpc::TlsFiles> {
        Some(crate::grpc::TlsFiles {
            cert: self.grpc_tls_cert.clone()?,
            key: self.grpc_tls_key.clone()?,
            client_ca: self.grpc_tls_client_ca.clone(),
        })
    }
}

// Listeners: where DNS and admin are served, and the limits of the DNS listeners.
#[derive(Args, Debug)]
pub struct ListenArgs {
    /// DNS address, UDP and TCP (repeatable; port 0 picks a free port, logged at start).
    #[arg(long, env = "GLOBALDNS_LISTEN", value_delimiter = ',', default_value = DEFAULT_LISTEN)]
    pub listen: Vec<SocketAddr>,
    /// Admin HTTP address (metrics, health, debug).
    #[arg(long, env = "GLOBALDNS_ADMIN", default_value = "127.0.0.1:9153")]
    pub admin: SocketAddr,
    /// Answer UDP with the fast path (SO_REUSEPORT workers, batched syscalls, cached wire
    /// answers); false serves UDP with hickory-server's own loop, like TCP.
    #[arg(long, env = "GLOBALDNS_UDP_FAST_PATH", default_value_t = true, action = clap::ArgAction::Set)]
    pub udp_fast_path: bool,
    /// UDP worker threads per --listen address for the fast path (default: one per CPU).
    #[arg(long, env = "GLOBALDNS_UDP_WORKERS")]
    pub udp_workers: Option<usize>,
    /// Response rate limiting: at most N UDP responses a second per client /24 (IPv4) or /56
    /// (IPv6); 0 = off. TCP is never limited.
    #[arg(long, env = "GLOBALDNS_RATE_LIMIT", default_value_t = 0)]
    pub rate_limit: u32,
    /// With --rate-limit: every K-th limited response is sent truncated (TC, empty) so that a
    /// real client retries over TCP; the others are dropped. 0 drops them all.
    #[arg(long, env = "GLOBALDNS_RATE_LIMIT_SLIP", default_value_t = 2)]
    pub rate_limit_slip: u32,
    /// Open DNS TCP connections per --listen address; beyond it a new connection closes the one
    /// idle longest.
    #[arg(long, env = "GLOBALDNS_TCP_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub tcp_max_connections: u32,
    /// A DNS TCP connection with no complete message for this long is closed.
    #[arg(long, env = "GLOBALDNS_TCP_IDLE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub tcp_idle_timeout: Duration,
    /// Kernel send buffer of each DNS TCP connection, in bytes (SO_SNDBUF); 0 leaves it to the
    /// kernel, which grows it up to net.ipv4.tcp_wmem's maximum (4 MiB by default) for a
    /// transfer to a secondary that reads slowly.
    #[arg(long, env = "GLOBALDNS_TCP_SEND_BUFFER", default_value_t = 0)]
    pub tcp_send_buffer: u32,
}

impl ListenArgs {
    pub fn tcp_limits(&self) -> crate::dns::TcpLimits {
        crate::dns::TcpLimits {
            connections: ConnectionCap::new(self.tcp_max_connections, self.tcp_idle_timeout),
            send_buffer: self.tcp_send_buffer as usize,
        }
    }
}

impl ServeArgs {
    /// Settles the name servers before anything starts (see [`ZoneArgs::ns`]). A secondary
    /// serves its primaries' NS records and glue: its own flags are not checked.
    pub fn resolve_name_servers(&mut self) -> anyhow::Result<()> {
        if !self.transfer.primaries.is_empty() {
            return Ok(());
        }
        self.zone.resolve_name_servers(&self.listen.listen)
    }
}

/// `HOST:PORT` (an IPv6 address in brackets): the port is required, the host resolved later.
fn parse_host_port(raw: &str) -> Result<String, String> {
    let (host, port) = raw
        .rsplit_once(':')
        .ok_or_else(|| format!("{raw:?}: expected HOST:PORT"))?;
    port.parse::<u16>()
        .map_err(|_| format!("{raw:?}: {port:?} is not a port"))?;
    if host.is_empty() || (host.contains(':') && !host.starts_with('[')) {
        return Err(format!(
            "{raw:?}: expected HOST:PORT ([ADDRESS]:PORT for IPv6)"
        ));
    }
    Ok(raw.to_string())
}

/// Zone transfer: a primary's transfers and NOTIFYs, or a secondary's primaries.
#[derive(Args, Debug, Clone)]
pub struct TransferArgs {
    /// Networks allowed to transfer the zones (AXFR/IXFR over TCP) and to send NOTIFY
    /// (repeatable; default none).
    #[arg(
        long = "allow-transfer",
        env = "GLOBALDNS_ALLOW_TRANSFER",
        value_delimiter = ','
    )]
    pub allow_transfer: Vec<IpNet>,
    /// Secondary mode: transfer the zones from this primary (HOST:PORT, repeatable) instead of
    /// reading ServiceEntries; no Kubernetes access, no store.
    /// A host name is resolved at every refresh and each of its addresses is a primary of its
    /// own (a headless Service names every primary pod).
    #[arg(long = "primary", env = "GLOBALDNS_PRIMARY", value_delimiter = ',', value_parser = parse_host_port)]
    pub primaries: Vec<String>,
    /// Secondary: how often the primaries' SOA serials are checked (besides NOTIFY).
    #[arg(long, env = "GLOBALDNS_REFRESH", default_value = "5s", value_parser = humantime::parse_duration)]
    pub refresh: Duration,
    /// Primary: also NOTIFY these secondaries (HOST:PORT, repeatable) of every new serial;
    /// secondaries that transferred recently are notified without being listed.
    #[arg(long = "notify", env = "GLOBALDNS_NOTIFY", value_delimiter = ',')]
    pub notify: Vec<SocketAddr>,
    /// Zone transfers (AXFR, IXFR) sent at once, as BIND's `transfers-out`; one more waits up
    /// to --transfers-out-wait for a turn, then is answered SERVFAIL (its secondary retries).
    #[arg(long, env = "GLOBALDNS_TRANSFERS_OUT", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub transfers_out: u32,
    /// How long a transfer over --transfers-out waits for a turn before SERVFAIL.
    #[arg(long, env = "GLOBALDNS_TRANSFERS_OUT_WAIT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub transfers_out_wait: Duration,
    /// TSIG key for transfers and NOTIFY, NAME:ALGORITHM:BASE64 (hmac-sha256/384/512). When set,
    /// unsigned or badly signed transfers and NOTIFYs are refused.
    #[arg(long, env = "GLOBALDNS_TSIG_KEY", conflicts_with = "tsig_key_file")]
    pub tsig_key: Option<crate::tsig::TsigKey>,
    /// The TSIG key from a file (the flag's form), e.g. a mounted Secret.
    #[arg(long, env = "GLOBALDNS_TSIG_KEY_FILE")]
    pub tsig_key_file: Option<PathBuf>,
}

impl TransferArgs {
    /// The TSIG key of either flag.
    pub fn key(&self) -> anyhow::Result<Option<crate::tsig::TsigKey>> {
        match (&self.tsig_key, &self.tsig_key_file) {
            (Some(k), _) => Ok(Some(k.clone())),
            (None, Some(path)) => Ok(Some(crate::tsig::read_key_file(path)?)),
            (None, None) => Ok(None),
        }
    }
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// ServiceEntry YAML files, or directories laid out like --zones.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub zone: ZoneArgs,
    /// Cluster that files named directly belong to.
    #[arg(long, default_value = "local")]
    pub cluster: String,
    /// State directory to read (never written) so that existing VIPs are shown.
    #[arg(long, env = "GLOBALDNS_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Judge routability as a server with this `--write-back` would (`spec`: eligible entries
    /// get their VIP in spec.addresses).
    #[arg(long, value_delimiter = ',', default_value = "off")]
    pub write_back: Vec<crate::kube::WriteBack>,
}

#[derive(Args, Debug)]
pub struct AllocationsArgs {
    #[arg(long, env = "GLOBALDNS_STATE_DIR", default_value = "state")]
    pub state_dir: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ZonefileArgs {
    #[command(flatten)]
    pub zone: ZoneArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

impl ZonefileArgs {
    /// As `serve` would with its default `--listen`.
    pub fn resolve_name_servers(&mut self) -> anyhow::Result<()> {
        let listen: SocketAddr = DEFAULT_LISTEN.parse().expect("a socket address");
        self.zone.resolve_name_servers(&[listen])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> ServeArgs {
        let mut all = vec!["globaldns", "serve"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all).unwrap().command {
            Command::Serve(a) => *a,
            _ => unreachable!(),
        }
    }

    fn name_servers(args: &[&str]) -> anyhow::Result<Vec<NameServer>> {
        let mut a = serve(args);
        a.resolve_name_servers()?;
        Ok(a.zone.zone_config().ns)
    }

    fn ns(name: &str, addrs: &[&str]) -> NameServer {
        NameServer {
            name: name.into(),
            addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn ns_flags_name_servers_with_their_addresses() {
        assert_eq!(
            name_servers(&[
                "--ns",
                "NS1.Global.=10.0.0.53",
                "--ns",
                "ns2.example.net",
                "--ns",
                "ns1.global=fd00::53",
            ])
            .unwrap(),
            [
                ns("ns1.global", &["10.0.0.53", "fd00::53"]),
                ns("ns2.example.net", &[]),
            ]
        );
        assert!(Cli::try_parse_from(["globaldns", "serve", "--ns", "ns.global=nope"]).is_err());
        assert!(Cli::try_parse_from(["globaldns", "serve", "--ns", "=10.0.0.1"]).is_err());
    }

    #[test]
    fn grpc_is_off_by_default_and_tls_needs_both_files() {
        let plain = serve(&[]);
        assert!(plain.grpc.grpc_listen.is_empty());
        assert!(plain.grpc.tls().is_none());
        let tls = serve(&[
            "--grpc-listen",
            "127.0.0.1:8053",
            "--grpc-listen",
            "[::1]:8053",
            "--grpc-tls-cert",
            "c.pem",
            "--grpc-tls-key",
            "k.pem",
            "--grpc-idle-timeout",
            "0s",
        ]);
        assert_eq!(tls.grpc.grpc_listen.len(), 2);
        let files = tls.grpc.tls().unwrap();
        assert_eq!(
            (files.cert.to_str(), files.client_ca),
            (Some("c.pem"), None)
        );
        assert!(tls.grpc.limits().connections.idle_timeout.is_zero());
        for half in [
            &["--grpc-tls-cert", "c.pem"][..],
            &["--grpc-tls-key", "k.pem"],
            &["--grpc-tls-client-ca", "ca.pem"],
            &["--grpc-max-streams", "0"],
        ] {
            let mut args = vec!["globaldns", "serve"];
            args.extend_from_slice(half);
            assert!(Cli::try_parse_from(args).is_err(), "{half:?}");
        }
    }

    #[test]
    fn the_default_name_server_takes_the_listen_addresses_or_is_refused() {
        assert_eq!(
            name_servers(&[]).unwrap(),
            [ns("ns.global", &["127.0.0.1"])]
        );
        assert_eq!(
            name_servers(&["--zone", "mesh", "--listen", "0.0.0.0:53,[::1]:53"]).unwrap(),
            [ns("ns.mesh", &["::1"])]
        );
        let err = name_servers(&["--listen", "0.0.0.0:5353"]).unwrap_err();
        assert!(err.to_string().contains("--ns ns.global=ADDRESS"), "{err}");
        // An explicit in-zone name needs its own address, whatever --listen is.
        assert!(name_servers(&["--ns", "ns1.global"]).is_err());
        // A secondary serves its primaries' NS records: nothing to check.
        let mut secondary = serve(&["--listen", "0.0.0.0:5353", "--primary", "10.0.0.1:53"]);
        secondary.resolve_name_servers().unwrap();
    }
}

//! Command-line flags; every flag can also come from a `GLOBALDNS_*` environment variable
//! (lists comma-separated), which is how the DaemonSet configures the server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;

use crate::serviceentry::normalise_name;
use crate::zone::ZoneConfig;

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
}

#[derive(Args, Debug, Clone)]
pub struct ZoneArgs {
    /// Zone to serve (repeatable).
    #[arg(
        long = "zone",
        env = "GLOBALDNS_ZONE",
        value_delimiter = ',',
        default_value = "global"
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
    /// Name server names for SOA and NS (repeatable; default ns.<first zone>).
    #[arg(long = "ns", env = "GLOBALDNS_NS", value_delimiter = ',')]
    pub ns: Vec<String>,
    /// Extra reverse zone to serve PTR in (repeatable), besides those covering the VIP ranges.
    #[arg(
        long = "reverse-zone",
        env = "GLOBALDNS_REVERSE_ZONE",
        value_delimiter = ','
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

impl ZoneArgs {
    pub fn normalised_zones(&self) -> Vec<String> {
        let mut z: Vec<String> = self.zones.iter().map(|z| normalise_name(z)).collect();
        z.dedup();
        z
    }

    pub fn zone_config(&self) -> ZoneConfig {
        ZoneConfig {
            zones: self.normalised_zones(),
            reverse_zones: self
                .reverse_zones
                .iter()
                .map(|z| normalise_name(z))
                .collect(),
            ns: self.ns.iter().map(|n| normalise_name(n)).collect(),
            ttl: self.ttl,
        }
    }
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
    /// DNS address, UDP and TCP (repeatable; port 0 picks a free port, logged at start).
    #[arg(
        long = "listen",
        env = "GLOBALDNS_LISTEN",
        value_delimiter = ',',
        default_value = "127.0.0.1:5353"
    )]
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
    /// Open DNS TCP connections per --listen address; beyond it a new connection closes the one
    /// idle longest.
    #[arg(long, env = "GLOBALDNS_TCP_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub tcp_max_connections: u32,
    /// A DNS TCP connection with no complete message for this long is closed.
    #[arg(long, env = "GLOBALDNS_TCP_IDLE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub tcp_idle_timeout: Duration,
}

impl ServeArgs {
    pub fn tcp_limits(&self) -> crate::dns::TcpLimits {
        crate::dns::TcpLimits {
            max_connections: self.tcp_max_connections as usize,
            idle_timeout: self.tcp_idle_timeout,
        }
    }
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
    #[arg(long = "primary", env = "GLOBALDNS_PRIMARY", value_delimiter = ',')]
    pub primaries: Vec<SocketAddr>,
    /// Secondary: how often the primaries' SOA serials are checked (besides NOTIFY).
    #[arg(long, env = "GLOBALDNS_REFRESH", default_value = "5s", value_parser = humantime::parse_duration)]
    pub refresh: Duration,
    /// Primary: also NOTIFY these secondaries (HOST:PORT, repeatable) of every new serial;
    /// secondaries that transferred recently are notified without being listed.
    #[arg(long = "notify", env = "GLOBALDNS_NOTIFY", value_delimiter = ',')]
    pub notify: Vec<SocketAddr>,
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

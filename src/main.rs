//! globaldns: CLI and wiring only.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Parser;
use globaldns::published::Published;
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

use globaldns::alloc::file_store::{self, FileStore};
use globaldns::alloc::store::{self, check_ranges, MemoryStore, Store};
use globaldns::config::{
    AllocationsArgs, CheckArgs, Cli, Command, LogFormat, ServeArgs, WriteBackCommand, ZonefileArgs,
};
use globaldns::engine::{Engine, Input};
use globaldns::health::Health;
use globaldns::kube::WriteBackModes;
use globaldns::metrics::Metrics;
use globaldns::pipeline::{Pass, Pipeline};
use globaldns::source::{files, Events, SourceEvent};
use globaldns::zone::{unix_now, JournalFile, Snapshot};
use globaldns::{admin, dns, fastpath};

// mimalloc, not glibc's malloc: at 100,000 hosts the server makes millions of small allocations
// (parse trees, names, entries, reports) from several threads; glibc's arenas spent a third of
// the parse in malloc/free and kept a fragmented heap well above what is live.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The allocator's options, set before the Rust runtime's first allocation: a constructor
/// (`.init_array`) runs before `main` and before the runtime's set-up.
#[used]
#[link_section = ".init_array"]
static CONFIGURE_ALLOCATOR: extern "C" fn() = {
    extern "C" fn configure() {
        globaldns::memory::configure_allocator();
    }
    configure
};

/// Turns transparent huge pages off for this process. mimalloc asks for them on its arenas, and
/// with the kernel's default `max_ptes_none` khugepaged fills a whole 2 MiB page around any live
/// 4 KiB one: at 100,000 hosts that kept ~25 MiB of freed memory resident after the first load and
/// grew RSS by ~2 MiB a minute while idle. Without them start-up was no slower (fewer bytes to
/// zero), and answers come from a few MiB of hot data.
fn no_transparent_huge_pages() {
    // SAFETY: prctl with integer arguments only; a kernel without the option returns EINVAL.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

fn main() -> ExitCode {
    no_transparent_huge_pages();
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log);
    let serving = matches!(cli.command, Command::Serve(_));
    let result = match cli.command {
        Command::Serve(mut a) => a.resolve_name_servers().and_then(|()| serve(*a)),
        Command::Check(a) => check(a),
        Command::Allocations(a) => allocations(a),
        Command::Zonefile(mut a) => a.resolve_name_servers().and_then(|()| zonefile(a)),
        Command::WriteBack(WriteBackCommand::Withdraw(a)) => {
            globaldns::kube::writeback::withdraw::command(&a)
        }
    };
    match result {
        Ok(code) => code,
        // `globaldns allocations | head`: the reader has all it wanted.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            if serving {
                // The server's log may be JSON for a collector: the reason goes there.
                error!("{e:#}");
            } else {
                eprintln!("error: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn init_logging(format: LogFormat, filter: &str) {
    let mut f = EnvFilter::new(filter);
    if !filter.contains("hickory_server") {
        f = f.add_directive("hickory_server=warn".parse().expect("static directive"));
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(f)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn serve(args: ServeArgs) -> Result<ExitCode> {
    let ranges = args.zone.vip_ranges.clone();
    let zone_cfg = args.zone.zone_config();
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let snapshot = Arc::new(Published::new(Snapshot::empty(&zone_cfg, &ranges)));

    // Secondary mode: the zones come from --primary servers; no sources, store or engine.
    let secondary = !args.transfer.primaries.is_empty();
    let key = args.transfer.key()?;
    // A primary (anyone serving transfers) keeps a journal for IXFR and NOTIFYs its secondaries.
    let transfers_on = !secondary
        && (!args.transfer.allow_transfer.is_empty() || !args.transfer.notify.is_empty());
    // Held until exit: the Kubernetes sources run on its runtime.
    let kube = if secondary {
        globaldns::secondary::check_args(&args)?;
        None
    } else {
        start_primary(&args, &metrics, &health, &snapshot, transfers_on)?
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // A worker idle after a burst of transfers hands back what it freed (see memory.rs).
        .on_thread_park(globaldns::memory::on_park)
        .build()?;
    runtime.block_on(async move {
        // The lead's NOTIFY receiver wakes zones through this; the loops run on their own.
        let trigger = secondary.then(|| {
            globaldns::secondary::start(globaldns::secondary::SecondaryContext {
                zone: zone_cfg.clone(),
                ranges: ranges.clone(),
                primaries: args.transfer.primaries.clone(),
                key: key.clone(),
                refresh: args.transfer.refresh,
                metrics: metrics.clone(),
                health: health.clone(),
                published: snapshot.clone(),
            })
        });
        let mut servers = Vec::new();
        let mut bound = Vec::new();
        let transfers = Arc::new(globaldns::notify::Transfers::new(metrics.clone()));
        // A secondary accepts NOTIFY from its primaries: it refreshes the zone named at once.
        let notify = trigger.map(|t| {
            let on: dns::OnNotify = Arc::new(move |zone, from, serial| {
                t.is_primary(from) && t.notify_from(zone, serial.map(|s| (from, s)))
            });
            on
        });
        let handler = dns::Handler {
            snapshot: snapshot.clone(),
            metrics: metrics.clone(),
            allow_transfer: args.transfer.allow_transfer.clone(),
            transfers: transfers.clone(),
            transfers_out: Arc::new(dns::TransfersOut::new(
                args.transfer.transfers_out as usize,
                args.transfer.transfers_out_wait,
                Some(metrics.clone()),
            )),
            notify,
            key: key.as_ref().map(|k| k.signer()),
            rate_limit: (args.listen.rate_limit > 0).then(|| {
                Arc::new(dns::RateLimiter::new(
                    args.listen.rate_limit,
                    args.listen.rate_limit_slip,
                ))
            }),
        };
        // gRPC (CoreDNS's DnsService) answers with the same handler, as TCP does.
        let mut grpc = Vec::new();
        for addr in &args.grpc.grpc_listen {
            let server = globaldns::grpc::start(
                *addr,
                Arc::new(handler.clone()),
                args.grpc.limits(),
                args.grpc.tls().as_ref(),
            )
            .await?;
            grpc.push(server);
        }
        let stop_udp = Arc::new(AtomicBool::new(false));
        for addr in &args.listen.listen {
            if args.listen.udp_fast_path {
                let workers = args
                    .listen
                    .udp_workers
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
                let (udp, tcp) = fastpath::bind(*addr, workers).await?;
                bound.push(tcp.local_addr()?);
                fastpath::spawn(udp, Arc::new(handler.clone()), stop_udp.clone())?;
                servers.push(dns::tcp_server(
                    handler.clone(),
                    tcp,
                    args.listen.tcp_limits(),
                ));
            } else {
                let (udp, tcp) = dns::bind(*addr).await?;
                bound.push(udp.local_addr()?);
                servers.push(dns::server(
                    handler.clone(),
                    udp,
                    tcp,
                    args.listen.tcp_limits(),
                ));
            }
        }
        if transfers_on {
            tokio::spawn(
                globaldns::notify::Notifier {
                    published: snapshot.clone(),
                    transfers,
                    targets: args.transfer.notify.clone(),
                    port: bound[0].port(),
                    own: bound.clone(),
                    key: key.clone(),
                    metrics: metrics.clone(),
                }
                .run(),
            );
        }
        let admin_listener = tokio::net::TcpListener::bind(args.listen.admin)
            .await
            .with_context(|| format!("cannot bind admin {}", args.listen.admin))?;
        let admin_addr = admin_listener.local_addr()?;
        let state = admin::AdminState {
            metrics,
            health,
            snapshot,
        };
        tokio::spawn(async move {
            if let Err(e) = admin::serve(admin_listener, state).await {
                error!(error = %e, "admin server stopped");
            }
        });
        let dns_list: Vec<String> = bound.iter().map(|a| a.to_string()).collect();
        let grpc_list: Vec<String> = grpc.iter().map(|g| g.addr.to_string()).collect();
        let grpc_field = if grpc_list.is_empty() {
            String::new()
        } else {
            format!(" grpc={}", grpc_list.join(","))
        };
        info!(
            "listening dns={} admin={}{}",
            dns_list.join(","),
            admin_addr,
            grpc_field
        );

        shutdown_signal().await;
        info!("shutting down");
        stop_udp.store(true, std::sync::atomic::Ordering::Relaxed);
        for s in servers {
            s.shutdown().await;
        }
        for g in grpc {
            g.shutdown().await;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    if let Some(kube) = &kube {
        // A successor claims new hosts first from now on, without waiting out the lease.
        kube.release_claimer();
    }
    Ok(ExitCode::SUCCESS)
}

/// The primary's write side: sources (files, Kubernetes), the allocation store and the engine
/// thread that turns their events into published snapshots.
fn start_primary(
    args: &ServeArgs,
    metrics: &Arc<Metrics>,
    health: &Arc<Health>,
    snapshot: &Arc<Published>,
    journal: bool,
) -> Result<Option<globaldns::kube::Kube>> {
    let ranges = args.zone.vip_ranges.clone();
    let zone_cfg = args.zone.zone_config();
    let (tx, rx) = mpsc::channel::<Input>();
    let events = Events::new(tx.clone());
    // --- Kubernetes (src/kube): cluster sources, the allocation store (the file store unless
    // --store kube), write-back. Without Kubernetes flags `kube` is None: the file-based server,
    // unchanged. With them, the file source runs too only when the --zones directory exists.
    if WriteBackModes::of(&args.kube.write_back)?.any() && !args.kube.enabled() {
        anyhow::bail!("--write-back writes into Kubernetes ServiceEntries: it needs --in-cluster or a --cluster");
    }
    let mut kube = globaldns::kube::start(
        &args.kube,
        globaldns::kube::KubeContext {
            home: args.zone.cluster_name.clone(),
            tx: events.clone(),
            metrics: metrics.clone(),
            health: health.clone(),
            zones: args.zone.normalised_zones(),
            ranges: ranges.clone(),
            snapshot: snapshot.clone(),
            list: args.kube.kube_list,
        },
    )?;
    let mut store: Box<dyn Store> = match kube.as_mut().and_then(|k| k.take_store()) {
        Some(kube_store) => kube_store,
        None => Box::new(FileStore::open(&args.store.state_dir)?),
    };
    let allocator = store::open(store.as_mut(), &ranges, args.store.vip_hold.as_secs())?;
    store.subscribe(Arc::new(move |ev| {
        // Err: the engine has stopped, the process is exiting; nothing is waiting for it.
        tx.send(Input::Store(ev)).ok();
    }));
    let files_on = kube.is_none() || args.store.zones_dir.is_dir();
    // --- end Kubernetes ---
    if files_on {
        health.expect(files::SOURCE_NAME);
        files::spawn(
            &args.store.zones_dir,
            args.zone.normalised_zones(),
            events,
            metrics.clone(),
        )?;
    }
    let write_back = WriteBackModes::of(&args.kube.write_back)?;
    let mut pipeline = Pipeline::new(&zone_cfg, &ranges, args.zone.prefer_istio_status, allocator)
        .home_cluster(&args.zone.cluster_name)
        .spec_write_back(write_back.spec && kube.is_some());
    let serial_floor = globaldns::serial_floor::SerialFloor::open(&args.store.state_dir)?;
    pipeline.serial_floor(serial_floor.floor());
    // The journal survives restarts in the state directory (zone/journal_file.rs).
    let journal_file = if journal {
        pipeline.keep_journal();
        let (file, lineage) = JournalFile::open(
            &args.store.state_dir,
            pipeline.zone_fingerprint(),
            serial_floor.floor(),
        );
        if let Some(l) = lineage {
            pipeline.resume_journal(l);
        }
        Some(file)
    } else {
        JournalFile::remove(&args.store.state_dir);
        None
    };
    let engine = Engine {
        journal_file,
        serial_floor: Some(serial_floor),
        pipeline,
        store,
        snapshot: snapshot.clone(),
        metrics: metrics.clone(),
        health: health.clone(),
    };
    let engine_thread = std::thread::Builder::new()
        .name("engine".into())
        .spawn(move || {
            globaldns::background::lower_this_thread();
            engine.run(rx)
        })?;
    // Without the engine nothing would ever change again while DNS kept answering: better to
    // exit and be restarted than to serve silently stale data.
    std::thread::spawn(move || {
        let outcome = engine_thread.join();
        error!(
            panicked = outcome.is_err(),
            "engine thread stopped; exiting"
        );
        std::process::exit(70);
    });
    Ok(kube)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// One synchronous pass of the pipeline over a set of events, made durable in `store`: used by
/// `check` (in memory) and `zonefile` (the state directory).
fn build_once(
    events: Vec<SourceEvent>,
    args: &globaldns::config::ZoneArgs,
    store: &mut dyn Store,
    hold_secs: u64,
    spec_write_back: bool,
) -> Result<Pass> {
    let allocator = store::open(store, &args.vip_ranges, hold_secs)?;
    let mut pipeline = Pipeline::new(
        &args.zone_config(),
        &args.vip_ranges,
        args.prefer_istio_status,
        allocator,
    )
    .home_cluster(&args.cluster_name)
    .spec_write_back(spec_write_back);
    for ev in events {
        match ev {
            SourceEvent::Unit { key, entries } => {
                pipeline.set_unit(key, entries);
            }
            SourceEvent::RemoveUnit(k) => {
                pipeline.remove_unit(&k);
            }
            _ => {}
        }
    }
    pipeline.pass(unix_now(), store)
}

fn check(args: CheckArgs) -> Result<ExitCode> {
    check_ranges(&args.zone.vip_ranges)?;
    let zones = args.zone.normalised_zones();
    let table = match &args.state_dir {
        Some(d) => file_store::read_table(d)?,
        None => Default::default(),
    };
    let mut events = Vec::new();
    let mut problems = 0usize;
    let mut files_read = 0usize;
    for path in &args.files {
        let units: Vec<(std::path::PathBuf, String)> = if path.is_dir() {
            files::yaml_files(path)
                .into_iter()
                .filter_map(|f| files::unit_key(path, &f).map(|k| (f, k.cluster)))
                .collect()
        } else {
            vec![(path.clone(), args.cluster.clone())]
        };
        for (file, cluster) in units {
            files_read += 1;
            match files::parse_file(&file, &cluster, &zones) {
                Ok((entries, found)) => {
                    for p in &found {
                        eprintln!(
                            "{}: {p}",
                            if p.skipped_object { "error" } else { "warning" }
                        );
                    }
                    problems += found.len();
                    events.push(SourceEvent::Unit {
                        key: globaldns::registry::SourceKey {
                            cluster,
                            unit: file.display().to_string(),
                        },
                        entries,
                    });
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    problems += 1;
                }
            }
        }
    }
    let spec_write_back = WriteBackModes::of(&args.write_back)?.spec;
    let reports = build_once(
        events,
        &args.zone,
        &mut MemoryStore { table },
        0,
        spec_write_back,
    )?
    .reports;
    let mut out = std::io::stdout().lock();
    let mut conflicts = 0usize;
    let mut unroutable = 0usize;
    for (host, r) in reports.hosts() {
        let addrs: Vec<String> = r
            .addresses
            .iter()
            .map(|a| format!("{} ({})", a.address, a.source))
            .collect();
        let served = if r.served {
            addrs.join(", ")
        } else {
            format!("NOT SERVED: {}", r.reason.unwrap_or_default())
        };
        let ports: Vec<String> = r
            .ports
            .iter()
            .map(|p| {
                format!(
                    "_{}._{}:{}",
                    p.name,
                    format!("{:?}", p.transport).to_lowercase(),
                    p.number
                )
            })
            .collect();
        writeln!(
            out,
            "{host}\t{served}\tports: {}\tfrom: {}",
            if ports.is_empty() {
                "-".into()
            } else {
                ports.join(" ")
            },
            r.objects.join(" ")
        )?;
        if let Some(u) = &r.tcp_unroutable {
            unroutable += 1;
            // A comment line too: why default sidecars cannot route its TCP ports, what to do.
            writeln!(out, "# tcp-unroutable {host}: {u}; {}", u.fix())?;
        }
        if let Some(c) = &r.conflict {
            conflicts += 1;
            // A comment line: the host lines keep their four fields for scripts.
            writeln!(out, "# conflict {host}: {}", conflict_line(c))?;
        }
    }
    if conflicts > 0 {
        // Not a problem of the files (the exit code says nothing of it): each instance answers
        // its home cluster's addresses.
        writeln!(
            out,
            "# {conflicts} hosts listed with different addresses by different clusters (home: {})",
            args.zone.cluster_name
        )?;
    }
    if unroutable > 0 {
        // Not a problem of the files either: HTTP and TLS still route by Host and SNI.
        writeln!(
            out,
            "# {unroutable} hosts with TCP ports that default sidecars (no DNS capture) cannot \
             route by address: their TCP traffic shares 0.0.0.0:<port> (README: \"Which address \
             a proxy routes\")"
        )?;
    }
    writeln!(
        out,
        "# {} files, {} hosts ({} served), {} problems",
        files_read,
        reports.host_count(),
        reports.served_hosts(),
        problems
    )?;
    Ok(if problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `spec, istio-status: local=[spec 10.0.0.1] west=[spec 10.0.0.2]`: the kinds, then what
/// each listing cluster has.
fn conflict_line(c: &globaldns::host_view::Conflict) -> String {
    let kinds: Vec<&str> = [(c.spec, "spec"), (c.istio_status, "istio-status")]
        .into_iter()
        .filter_map(|(on, k)| on.then_some(k))
        .collect();
    let clusters: Vec<String> = c
        .clusters
        .iter()
        .map(|(name, a)| {
            let list = |v: &[std::net::IpAddr]| {
                v.iter()
                    .map(|ip| ip.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let mut parts = Vec::new();
            if !a.spec.is_empty() {
                parts.push(format!("spec {}", list(&a.spec)));
            }
            if !a.istio_status.is_empty() {
                parts.push(format!("istio-status {}", list(&a.istio_status)));
            }
            format!("{name}=[{}]", parts.join("; "))
        })
        .collect();
    format!("{}: {}", kinds.join(", "), clusters.join(" "))
}

fn allocations(args: AllocationsArgs) -> Result<ExitCode> {
    let table = file_store::read_table(&args.state_dir)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &table)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "{:<50} {:<16} {:<40} STATE", "HOST", "IPV4", "IPV6")?;
    for (host, a) in &table {
        let state = match a.released_at {
            None => "active".to_string(),
            Some(t) => format!(
                "held since {}",
                humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(t))
            ),
        };
        let v4 = a.ipv4.map_or("-".into(), |i| i.to_string());
        let v6 = a.ipv6.map_or("-".into(), |i| i.to_string());
        writeln!(out, "{host:<50} {v4:<16} {v6:<40} {state}")?;
    }
    let held = table.values().filter(|a| a.released_at.is_some()).count();
    writeln!(out, "# {} hosts, {} held", table.len(), held)?;
    Ok(ExitCode::SUCCESS)
}

fn zonefile(args: ZonefileArgs) -> Result<ExitCode> {
    check_ranges(&args.zone.vip_ranges)?;
    let mut store = FileStore::open(&args.store.state_dir)?;
    let events = files::load_once(
        &args.store.zones_dir,
        args.zone.normalised_zones(),
        Arc::new(Metrics::new()),
    )?;
    let snap = build_once(
        events,
        &args.zone,
        &mut store,
        args.store.vip_hold.as_secs(),
        false,
    )?
    .snapshot;
    let mut out = std::io::stdout().lock();
    let apexes: BTreeSet<_> = snap.apex_names().into_iter().collect();
    for apex in apexes {
        writeln!(out, "$ORIGIN {apex}")?;
        for r in snap.zone_records(&apex) {
            writeln!(out, "{r}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

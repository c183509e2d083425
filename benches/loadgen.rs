//! A UDP DNS load generator cheap enough not to be the limit: connected sockets, queries out in
//! `sendmmsg` batches, answers in with `recvmmsg`, every query timed (1 µs buckets up to 100 ms).
//!
//! ```sh
//! cargo bench --bench loadgen -- --server 127.0.0.1:5353 --queries FILE \
//!     [--rate QPS | --rate 0 --window W] [--duration S] [--threads T] [--sockets S] \
//!     [--timeout-ms MS] [--server-pid PID] [--edns]
//! ```
//!
//! `--rate QPS` is an open loop: queries leave on schedule whatever the answers do. `--rate 0`
//! keeps `--window` queries in flight per socket (as fast as the server answers). The query file
//! has dnsperf's format, `<name> <type>` per line; each thread starts at its own offset and loops.
//! With `--server-pid`, the server's CPU (utime+stime from /proc/PID/stat, all threads) over the
//! measured window is divided by the answers received in it.
//!
//! Prints a summary to stderr and one `key=value` line to stdout. Percentiles count queries
//! unanswered after the timeout as infinitely slow (`inf`). Loopback only; bounded (≤ 600 s).
//!
//! Each answer is timed twice: when the generator reads it (`p50_us`…, what a client sees) and
//! when it arrived in the socket (`arr_p50_us`…, the kernel's `SO_TIMESTAMPNS`), so that time
//! the generator itself spent off its core (a busy client core) can be told from the server's.

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use globaldns::fastpath::{arrival_ns, realtime_ns, stamp_arrivals};

const BATCH: usize = 64;
const RECV_BUF: usize = 4096;
const SEND_BUF: usize = 512;
/// Histogram: 1 µs buckets up to this many µs, then one overflow bucket.
const HIST_US: usize = 100_000;

struct Opts {
    server: SocketAddr,
    queries: String,
    rate: f64,
    window: usize,
    duration: f64,
    threads: usize,
    sockets: usize,
    timeout: Duration,
    server_pid: Option<u32>,
    edns: bool,
}

fn fail(msg: &str) -> ! {
    eprintln!("loadgen: {msg}");
    std::process::exit(2);
}

fn parse_args() -> Opts {
    let mut o = Opts {
        server: "127.0.0.1:5353".parse().unwrap(),
        queries: String::new(),
        rate: 0.0,
        window: 100,
        duration: 10.0,
        threads: 1,
        sockets: 4,
        timeout: Duration::from_millis(1000),
        server_pid: None,
        edns: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| fail(&format!("{a} needs a value")))
        };
        fn num<T: std::str::FromStr>(v: String, what: &str) -> T {
            v.parse()
                .unwrap_or_else(|_| fail(&format!("bad {what}: {v}")))
        }
        match a.as_str() {
            "--server" => o.server = num(value(), "--server"),
            "--queries" => o.queries = value(),
            "--rate" => o.rate = num(value(), "--rate"),
            "--window" => o.window = num(value(), "--window"),
            "--duration" => o.duration = num(value(), "--duration"),
            "--threads" => o.threads = num(value(), "--threads"),
            "--sockets" => o.sockets = num(value(), "--sockets"),
            "--timeout-ms" => o.timeout = Duration::from_millis(num(value(), "--timeout-ms")),
            "--server-pid" => o.server_pid = Some(num(value(), "--server-pid")),
            "--edns" => o.edns = true,
            "--bench" => {}
            "-h" | "--help" => {
                println!(
                    "loadgen --server 127.0.0.1:PORT --queries FILE [--rate QPS|0] [--window W] \
                     [--duration S] [--threads T] [--sockets S] [--timeout-ms MS] \
                     [--server-pid PID] [--edns]"
                );
                std::process::exit(0);
            }
            other => fail(&format!("unknown argument {other}")),
        }
    }
    if !o.server.ip().is_loopback() {
        fail("--server must be a loopback address");
    }
    if o.queries.is_empty() {
        fail("--queries FILE is required");
    }
    if !(o.duration > 0.0 && o.duration <= 600.0) {
        fail("--duration must be in (0, 600]");
    }
    if o.threads == 0 || o.sockets == 0 || o.window == 0 || o.window > 30_000 || o.rate < 0.0 {
        fail("--threads, --sockets and --window must be positive (window ≤ 30000), --rate ≥ 0");
    }
    o
}

fn qtype(t: &str) -> Option<u16> {
    Some(match t.to_ascii_uppercase().as_str() {
        "A" => 1,
        "NS" => 2,
        "CNAME" => 5,
        "SOA" => 6,
        "PTR" => 12,
        "MX" => 15,
        "TXT" => 16,
        "AAAA" => 28,
        "SRV" => 33,
        "ANY" => 255,
        other => other.strip_prefix("TYPE")?.parse().ok()?,
    })
}

/// The file's queries as wire messages with ID 0 and no flags (RD clear).
fn load_queries(path: &str, edns: bool) -> Vec<Vec<u8>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| fail(&format!("{path}: {e}")));
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut it = line.split_whitespace();
        let name = it.next().unwrap();
        let t = it.next().unwrap_or("A");
        let t = qtype(t).unwrap_or_else(|| fail(&format!("{path}:{}: bad type {t}", n + 1)));
        let mut q = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)];
        for label in name
            .trim_end_matches('.')
            .split('.')
            .filter(|l| !l.is_empty())
        {
            if label.len() > 63 {
                fail(&format!("{path}:{}: label too long", n + 1));
            }
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&t.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        if edns {
            // OPT: root, type 41, payload 1232, no flags, no options.
            q.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0]);
        }
        if q.len() > SEND_BUF {
            fail(&format!("{path}:{}: query too long", n + 1));
        }
        out.push(q);
    }
    if out.is_empty() {
        fail(&format!("{path}: no queries"));
    }
    out
}

#[derive(Default)]
struct Stats {
    sent: u64,
    /// Answers received before the end of the sending window (what qps and CPU are over).
    answered_in_window: u64,
    answered: u64,
    lost: u64,
    unexpected: u64,
    noerror: u64,
    nodata: u64,
    nxdomain: u64,
    other_rcode: u64,
    id_busy: u64,
    /// Latency by the time the answer was read, and by the time it arrived in the socket.
    hist: Vec<u64>,
    arr_hist: Vec<u64>,
}

impl Stats {
    fn merge(&mut self, o: &Stats) {
        self.sent += o.sent;
        self.answered_in_window += o.answered_in_window;
        self.answered += o.answered;
        self.lost += o.lost;
        self.unexpected += o.unexpected;
        self.noerror += o.noerror;
        self.nodata += o.nodata;
        self.nxdomain += o.nxdomain;
        self.other_rcode += o.other_rcode;
        self.id_busy += o.id_busy;
        for (mine, theirs) in [(&mut self.hist, &o.hist), (&mut self.arr_hist, &o.arr_hist)] {
            if mine.is_empty() {
                *mine = vec![0; HIST_US + 1];
            }
            for (a, b) in mine.iter_mut().zip(theirs) {
                *a += b;
            }
        }
    }

    /// The q-quantile in µs of `hist` over answered + lost queries (lost = infinitely slow).
    fn quantile(&self, hist: &[u64], q: f64) -> Option<f64> {
        let total = self.answered + self.lost;
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (us, n) in hist.iter().enumerate() {
            seen += n;
            if seen >= rank {
                // Bucket us holds [us, us+1) µs: report its middle.
                return Some(us as f64 + 0.5);
            }
        }
        Some(f64::INFINITY)
    }
}

/// One connected socket's state: send times by query ID and the order they were sent in.
struct Sock {
    sock: UdpSocket,
    /// Send time in ns since the start, plus 1 (0: the ID is free).
    sent_at: Vec<u64>,
    order: VecDeque<(u16, u64)>,
    next_id: u16,
    outstanding: usize,
    sent: u64,
    /// Phase of this socket's schedule (fraction of one interval), so sockets interleave.
    phase: f64,
}

struct Bufs {
    send: Vec<[u8; SEND_BUF]>,
    send_iov: Vec<libc::iovec>,
    send_hdr: Vec<libc::mmsghdr>,
    recv: Vec<[u8; RECV_BUF]>,
    recv_iov: Vec<libc::iovec>,
    recv_hdr: Vec<libc::mmsghdr>,
    /// Control buffers for each answer's SO_TIMESTAMPNS (u64 for cmsghdr's alignment).
    recv_ctl: Vec<[u64; CTL_WORDS]>,
}

const CTL_WORDS: usize = 8;

impl Bufs {
    fn new() -> Box<Bufs> {
        fn zeroed<T>() -> Vec<T> {
            // SAFETY: only used for iovec and mmsghdr, plain C structs for which zero is valid.
            (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect()
        }
        let mut b = Box::new(Bufs {
            send: vec![[0; SEND_BUF]; BATCH],
            send_iov: zeroed(),
            send_hdr: zeroed(),
            recv: vec![[0; RECV_BUF]; BATCH],
            recv_iov: zeroed(),
            recv_hdr: zeroed(),
            recv_ctl: vec![[0; CTL_WORDS]; BATCH],
        });
        for i in 0..BATCH {
            b.recv_iov[i].iov_base = b.recv[i].as_mut_ptr().cast();
            b.recv_iov[i].iov_len = RECV_BUF;
            b.recv_hdr[i].msg_hdr.msg_iov = &mut b.recv_iov[i];
            b.recv_hdr[i].msg_hdr.msg_iovlen = 1;
            b.send_iov[i].iov_base = b.send[i].as_mut_ptr().cast();
            b.send_hdr[i].msg_hdr.msg_iov = &mut b.send_iov[i];
            b.send_hdr[i].msg_hdr.msg_iovlen = 1;
        }
        b
    }
}

struct Shared {
    opts: Opts,
    queries: Vec<Vec<u8>>,
    start: Barrier,
}

fn ns(d: Duration) -> u64 {
    d.as_nanos() as u64
}

impl Sock {
    /// Sends up to `n` queries (≤ BATCH) in one sendmmsg; returns how many left.
    fn send(
        &mut self,
        n: usize,
        b: &mut Bufs,
        queries: &[Vec<u8>],
        qi: &mut usize,
        now: u64,
        st: &mut Stats,
    ) -> usize {
        let mut k = 0;
        while k < n {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1);
            if self.sent_at[usize::from(id)] != 0 {
                st.id_busy += 1;
                break;
            }
            let q = &queries[*qi];
            *qi = (*qi + 1) % queries.len();
            b.send[k][..q.len()].copy_from_slice(q);
            b.send[k][..2].copy_from_slice(&id.to_be_bytes());
            b.send_iov[k].iov_len = q.len();
            self.sent_at[usize::from(id)] = now + 1;
            self.order.push_back((id, now));
            k += 1;
        }
        if k == 0 {
            return 0;
        }
        // SAFETY: the headers point at b's buffers, alive for the call; the socket is connected.
        let r =
            unsafe { libc::sendmmsg(self.sock.as_raw_fd(), b.send_hdr.as_mut_ptr(), k as u32, 0) };
        let done = if r < 0 { 0 } else { r as usize };
        // Unsent queries free their IDs again (they stay in `order`, which skips freed IDs).
        for i in done..k {
            let id = u16::from_be_bytes([b.send[i][0], b.send[i][1]]);
            self.sent_at[usize::from(id)] = 0;
        }
        self.outstanding += done;
        self.sent += done as u64;
        st.sent += done as u64;
        done
    }

    /// Reads every answer waiting; returns how many datagrams were read.
    fn recv(&mut self, b: &mut Bufs, start: Instant, window_end: u64, st: &mut Stats) -> usize {
        let mut total = 0;
        loop {
            for i in 0..BATCH {
                // The kernel shortens msg_controllen to what it wrote: set it again every call.
                b.recv_hdr[i].msg_hdr.msg_control = b.recv_ctl[i].as_mut_ptr().cast();
                b.recv_hdr[i].msg_hdr.msg_controllen = CTL_WORDS * 8;
            }
            // SAFETY: the headers point at b's receive buffers, alive for the call.
            let n = unsafe {
                libc::recvmmsg(
                    self.sock.as_raw_fd(),
                    b.recv_hdr.as_mut_ptr(),
                    BATCH as u32,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n <= 0 {
                return total;
            }
            let now = ns(start.elapsed());
            // Arrival stamps are wall-clock: map them onto `now`'s clock by the offset between
            // the two clocks now (both read within a microsecond).
            let real_now = realtime_ns();
            for i in 0..n as usize {
                let len = b.recv_hdr[i].msg_len as usize;
                let m = &b.recv[i][..len];
                if len < 12 || m[2] & 0x80 == 0 {
                    st.unexpected += 1;
                    continue;
                }
                let id = usize::from(u16::from_be_bytes([m[0], m[1]]));
                let at = self.sent_at[id];
                if at == 0 {
                    st.unexpected += 1; // after its timeout, or a duplicate
                    continue;
                }
                self.sent_at[id] = 0;
                self.outstanding -= 1;
                let us = ((now - (at - 1)) / 1000) as usize;
                st.hist[us.min(HIST_US)] += 1;
                let arrived = arrival_ns(&b.recv_hdr[i].msg_hdr)
                    .map_or(now, |t| now.saturating_sub(real_now.saturating_sub(t)));
                let us = (arrived.saturating_sub(at - 1) / 1000) as usize;
                st.arr_hist[us.min(HIST_US)] += 1;
                st.answered += 1;
                if now <= window_end {
                    st.answered_in_window += 1;
                }
                let ancount = u16::from_be_bytes([m[6], m[7]]);
                match m[3] & 0xF {
                    0 if ancount > 0 => st.noerror += 1,
                    0 => st.nodata += 1,
                    3 => st.nxdomain += 1,
                    _ => st.other_rcode += 1,
                }
            }
            total += n as usize;
            if (n as usize) < BATCH {
                return total;
            }
        }
    }

    /// Forgets queries older than the timeout (lost) and answered ones at the front.
    fn expire(&mut self, now: u64, timeout: u64, st: &mut Stats) {
        while let Some(&(id, at)) = self.order.front() {
            let slot = &mut self.sent_at[usize::from(id)];
            if *slot != at + 1 {
                self.order.pop_front(); // answered, or never sent
            } else if now.saturating_sub(at) > timeout {
                *slot = 0;
                self.outstanding -= 1;
                st.lost += 1;
                self.order.pop_front();
            } else {
                break;
            }
        }
    }
}

fn run_thread(t: usize, shared: Arc<Shared>) -> (Stats, Instant) {
    let o = &shared.opts;
    let local: SocketAddr = if o.server.is_ipv6() {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    }
    .parse()
    .unwrap();
    let mut socks: Vec<Sock> = (0..o.sockets)
        .map(|s| {
            let sock = UdpSocket::bind(local).unwrap_or_else(|e| fail(&format!("bind: {e}")));
            sock.connect(o.server)
                .unwrap_or_else(|e| fail(&format!("connect: {e}")));
            let r = socket2::SockRef::from(&sock);
            let _ = r.set_recv_buffer_size(4 << 20);
            let _ = r.set_send_buffer_size(4 << 20);
            stamp_arrivals(sock.as_raw_fd())
                .unwrap_or_else(|e| fail(&format!("setsockopt SO_TIMESTAMPNS: {e}")));
            Sock {
                sock,
                sent_at: vec![0; 1 << 16],
                order: VecDeque::new(),
                next_id: 0,
                outstanding: 0,
                sent: 0,
                phase: s as f64 / o.sockets as f64,
            }
        })
        .collect();
    let fds: Vec<libc::pollfd> = socks
        .iter()
        .map(|s| libc::pollfd {
            fd: s.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let mut b = Bufs::new();
    let mut st = Stats {
        hist: vec![0; HIST_US + 1],
        arr_hist: vec![0; HIST_US + 1],
        ..Stats::default()
    };
    let mut qi = (t * 7919 * o.sockets) % shared.queries.len();
    let per_sock_rate = o.rate / (o.threads * o.sockets) as f64;
    let timeout = ns(o.timeout);
    let window_end = (o.duration * 1e9) as u64;
    shared.start.wait();
    let start = Instant::now();
    loop {
        let now = ns(start.elapsed());
        let sending = now < window_end;
        let mut busy = false;
        let mut next_due = u64::MAX;
        for s in socks.iter_mut() {
            if sending {
                let want = if o.rate > 0.0 {
                    let due = (now as f64 * per_sock_rate / 1e9 + s.phase).floor() as u64;
                    let when = ((s.sent + 1) as f64 - s.phase) / per_sock_rate * 1e9;
                    next_due = next_due.min(when as u64);
                    due.saturating_sub(s.sent) as usize
                } else {
                    o.window.saturating_sub(s.outstanding)
                };
                if want > 0 {
                    busy |= s.send(
                        want.min(BATCH),
                        &mut b,
                        &shared.queries,
                        &mut qi,
                        now,
                        &mut st,
                    ) > 0;
                }
            }
            busy |= s.recv(&mut b, start, window_end, &mut st) > 0;
            s.expire(ns(start.elapsed()), timeout, &mut st);
        }
        if !sending && socks.iter().all(|s| s.outstanding == 0) {
            break;
        }
        if busy {
            continue;
        }
        // Idle: wait for an answer or the next send, spinning when that is under 20 µs away.
        let now = ns(start.elapsed());
        let wait = if sending && o.rate > 0.0 {
            next_due.saturating_sub(now)
        } else {
            1_000_000
        };
        if wait < 20_000 {
            continue;
        }
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: wait.min(1_000_000) as i64,
        };
        let mut fds = fds.clone();
        // SAFETY: fds is a valid array of pollfd for the call; no signal mask change.
        unsafe {
            libc::ppoll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                &ts,
                std::ptr::null(),
            )
        };
    }
    (st, start)
}

fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn self_cpu_s() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn main() {
    let opts = parse_args();
    let queries = load_queries(&opts.queries, opts.edns);
    let threads = opts.threads;
    let shared = Arc::new(Shared {
        queries,
        start: Barrier::new(threads + 1),
        opts,
    });
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let shared = shared.clone();
            std::thread::spawn(move || run_thread(t, shared))
        })
        .collect();
    let o = &shared.opts;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu0 = o.server_pid.and_then(proc_cpu_ticks);
    let self0 = self_cpu_s();
    shared.start.wait();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(o.duration));
    let cpu1 = o.server_pid.and_then(proc_cpu_ticks);
    let window = t0.elapsed().as_secs_f64();
    let mut st = Stats::default();
    for h in handles {
        let (s, _) = h.join().expect("generator thread");
        st.merge(&s);
    }
    let gen_cpu = self_cpu_s() - self0;
    let qps = st.answered_in_window as f64 / window;
    let fmt = |v: Option<f64>| match v {
        Some(v) if v.is_finite() => format!("{v:.1}"),
        Some(_) => "inf".into(),
        None => "-".into(),
    };
    let (srv_cpu, cpu_us) = match (cpu0, cpu1) {
        (Some(a), Some(b)) => {
            let s = (b - a) as f64 / hz;
            (
                format!("{s:.2}"),
                format!("{:.3}", s * 1e6 / st.answered_in_window.max(1) as f64),
            )
        }
        _ => ("-".into(), "-".into()),
    };
    let (p50, p99, p999) = (
        st.quantile(&st.hist, 0.5),
        st.quantile(&st.hist, 0.99),
        st.quantile(&st.hist, 0.999),
    );
    let (a50, a99, a999) = (
        st.quantile(&st.arr_hist, 0.5),
        st.quantile(&st.arr_hist, 0.99),
        st.quantile(&st.arr_hist, 0.999),
    );
    let max = st
        .hist
        .iter()
        .rposition(|&n| n > 0)
        .map(|us| us as f64 + 0.5);
    eprintln!(
        "loadgen: {:.1} s, target rate {}, sent {} ({:.0}/s), answered {} ({qps:.0}/s in the window), \
         lost {}, p50/p99/p99.9 {}/{}/{} µs (by arrival {}/{}/{}), server CPU {srv_cpu} s = {cpu_us} µs/answer, \
         generator CPU {gen_cpu:.2} s",
        window,
        if o.rate > 0.0 { format!("{:.0}", o.rate) } else { format!("max (window {})", o.window) },
        st.sent,
        st.sent as f64 / window,
        st.answered,
        st.lost,
        fmt(p50),
        fmt(p99),
        fmt(p999),
        fmt(a50),
        fmt(a99),
        fmt(a999),
    );
    if o.rate > 0.0 && (st.sent as f64) < 0.98 * o.rate * window {
        eprintln!(
            "loadgen: WARNING: sent {:.0}/s, below the target rate",
            st.sent as f64 / window
        );
    }
    println!(
        "duration={window:.3} rate={} sent={} answered={} answered_in_window={} lost={} \
         unexpected={} qps={qps:.0} p50_us={} p99_us={} p999_us={} max_us={} arr_p50_us={} \
         arr_p99_us={} arr_p999_us={} srv_cpu_s={srv_cpu} \
         cpu_us_per_answer={cpu_us} gen_cpu_s={gen_cpu:.2} noerror={} nodata={} nxdomain={} \
         other_rcode={} id_busy={}",
        o.rate,
        st.sent,
        st.answered,
        st.answered_in_window,
        st.lost,
        st.unexpected,
        fmt(p50),
        fmt(p99),
        fmt(p999),
        fmt(max),
        fmt(a50),
        fmt(a99),
        fmt(a999),
        st.noerror,
        st.nodata,
        st.nxdomain,
        st.other_rcode,
        st.id_busy,
    );
}

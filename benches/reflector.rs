//! The floor: a null UDP reflector running the fast path's own worker loop
//! (`globaldns::fastpath::worker`: recvmmsg, 64-message batches, sendmmsg back to each source)
//! on the fast path's own sockets (`bind_reuseport`: SO_REUSEPORT, 4 MiB receive buffer), with
//! no DNS work: each datagram goes back as it came, with only the QR bit set so that a load
//! generator can count it as an answer.
//!
//! ```sh
//! cargo bench --bench reflector -- --listen 127.0.0.1:5399 [--workers N] [--max-seconds S]
//! ```
//! Loopback only; exits on SIGTERM/SIGINT or after `--max-seconds` (default 3600).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use globaldns::fastpath::{bind_reuseport, worker, Answerer};

struct Reflect;

impl Answerer for Reflect {
    fn answer(&mut self, packet: &[u8], _src: SocketAddr, out: &mut Vec<u8>) -> bool {
        out.clear();
        if packet.len() < 12 {
            return false;
        }
        out.extend_from_slice(packet);
        out[2] |= 0x80;
        true
    }
}

static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    SIGNALLED.store(true, Ordering::Relaxed);
}

fn main() {
    let mut listen: SocketAddr = "127.0.0.1:5399".parse().unwrap();
    let mut workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut max_seconds = 3600u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| fail(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--listen" => listen = value().parse().unwrap_or_else(|_| fail("bad --listen")),
            "--workers" => workers = value().parse().unwrap_or_else(|_| fail("bad --workers")),
            "--max-seconds" => {
                max_seconds = value()
                    .parse()
                    .unwrap_or_else(|_| fail("bad --max-seconds"))
            }
            // cargo bench passes --bench to harness=false targets.
            "--bench" => {}
            "-h" | "--help" => {
                println!("reflector --listen 127.0.0.1:PORT [--workers N] [--max-seconds S]");
                return;
            }
            other => fail(&format!("unknown argument {other}")),
        }
    }
    if !listen.ip().is_loopback() {
        fail("--listen must be a loopback address");
    }
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let sockets = bind_reuseport(listen, workers).unwrap_or_else(|e| fail(&format!("{e:#}")));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("udp-{i}"))
                .spawn(move || worker(s, Reflect, stop))
                .expect("spawn")
        })
        .collect();
    eprintln!("reflector: {workers} worker(s) on {listen}");
    let deadline = Instant::now() + Duration::from_secs(max_seconds);
    while !SIGNALLED.load(Ordering::Relaxed) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("reflector: {msg}");
    std::process::exit(2);
}

//! knotd (Knot DNS, from Debian) as a secondary of a globaldns primary, with its log kept.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

const ZONE: &str = "global";

/// A throw-away knotd: secondary of `primary` for `global.`, notified by it, on a free port.
pub struct Knot {
    child: Child,
    pub addr: SocketAddr,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Knot {
    /// Knot on 127.0.0.1:`port` (from [`free_ports`], so that the primary can be told it first).
    pub fn secondary_of(primary: SocketAddr, port: u16) -> Knot {
        Knot::secondary_with_key(primary, port, None)
    }

    /// The same, transferring and accepting NOTIFY with a TSIG key `NAME:ALG:SECRET`.
    pub fn secondary_with_key(primary: SocketAddr, port: u16, key: Option<&str>) -> Knot {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        for d in ["run", "db", "zones"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let (keys, remote_key) = match key.map(|k| k.splitn(3, ':').collect::<Vec<_>>()) {
            Some(k) => (
                format!(
                    "key:\n  - id: {}\n    algorithm: {}\n    secret: {}\n",
                    k[0], k[1], k[2]
                ),
                format!("    key: {}\n", k[0]),
            ),
            None => (String::new(), String::new()),
        };
        let conf = format!(
            "{keys}server:\n    rundir: \"{d}/run\"\n    listen: 127.0.0.1@{port}\n    automatic-acl: on\n\
             log:\n  - target: stderr\n    any: info\n\
             database:\n    storage: \"{d}/db\"\n\
             remote:\n  - id: primary\n    address: {ip}@{pport}\n{remote_key}\
             zone:\n  - domain: {ZONE}\n    master: primary\n    file: \"{d}/zones/{ZONE}.zone\"\n    zonefile-sync: -1\n    journal-content: changes\n",
            d = dir.display(),
            ip = primary.ip(),
            pport = primary.port(),
        );
        std::fs::write(dir.join("knot.conf"), conf).unwrap();
        let child = Command::new("knotd")
            .arg("-c")
            .arg(dir.join("knot.conf"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("knotd.log")).unwrap())
            .spawn()
            .expect("knotd is installed (the test command installs knot)");
        Knot {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
            _tmp: tmp,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("knotd.log")).unwrap_or_default()
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- knotd log:\n{}", self.log());
        }
    }
}

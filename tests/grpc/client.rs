//! The gRPC client of these tests: `dns_client.py` (Python's grpcio, not our code) in a child
//! process, asked one JSON line at a time. One process is one grpcio channel, as CoreDNS keeps one
//! per upstream.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

use serde_json::{json, Value};

/// A call's gRPC status: its code's name (`INVALID_ARGUMENT`) and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: String,
    pub details: String,
}

pub type Reply = Result<Vec<u8>, Status>;

pub struct GrpcClient {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl GrpcClient {
    /// A plaintext channel to `addr` (CoreDNS's `grpc . ADDR`).
    pub fn plain(addr: SocketAddr) -> GrpcClient {
        GrpcClient::spawn(&[addr.to_string()])
    }

    /// `dns_client.py` with these arguments (target first; see the script for TLS options).
    pub fn spawn(args: &[String]) -> GrpcClient {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/grpc/dns_client.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 (scripts/test.sh installs it with grpcio)");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        GrpcClient {
            child,
            stdin,
            lines,
        }
    }

    fn ask(&mut self, request: Value, timeout: Duration) -> Value {
        writeln!(self.stdin, "{request}").expect("write to dns_client.py");
        // The client's own call deadline comes first; this only catches a stuck client.
        let line = self
            .lines
            .recv_timeout(timeout + Duration::from_secs(30))
            .unwrap_or_else(|e| {
                panic!("dns_client.py gave no reply to {request} ({e}): is grpcio installed?")
            });
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("dns_client.py said {line:?}: {e}"))
    }

    /// One `Query` call, failing at once if the channel is not connected.
    pub fn query(&mut self, msg: &[u8]) -> Reply {
        self.call(msg, false, Duration::from_secs(10))
    }

    /// One `Query` call that waits up to `timeout` for the channel to (re)connect.
    pub fn query_waiting(&mut self, msg: &[u8], timeout: Duration) -> Reply {
        self.call(msg, true, timeout)
    }

    fn call(&mut self, msg: &[u8], wait: bool, timeout: Duration) -> Reply {
        let request = json!({
            "op": "query", "msg": hex(msg), "wait": wait, "timeout": timeout.as_secs_f64(),
        });
        reply(&self.ask(request, timeout))
    }

    /// Every message sent at once, as concurrent calls on the one channel.
    pub fn burst(&mut self, msgs: &[Vec<u8>]) -> Vec<Reply> {
        let timeout = Duration::from_secs(30);
        let msgs: Vec<String> = msgs.iter().map(|m| hex(m)).collect();
        let request = json!({"op": "burst", "msgs": msgs, "timeout": timeout.as_secs_f64()});
        let out = self.ask(request, timeout);
        out["replies"]
            .as_array()
            .unwrap_or_else(|| panic!("burst: {out}"))
            .iter()
            .map(reply)
            .collect()
    }

    /// A server-streaming call of `method`: its messages, or its status.
    pub fn stream(&mut self, method: &str, msg: &[u8]) -> Result<Vec<Vec<u8>>, Status> {
        let request = json!({"op": "stream", "method": method, "msg": hex(msg), "timeout": 10});
        let out = self.ask(request, Duration::from_secs(10));
        match out["msgs"].as_array() {
            Some(msgs) => Ok(msgs.iter().map(|m| unhex(m.as_str().unwrap())).collect()),
            None => Err(status(&out)),
        }
    }
}

impl Drop for GrpcClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn reply(v: &Value) -> Reply {
    if v["ok"] == true {
        Ok(unhex(v["msg"].as_str().expect("msg")))
    } else {
        Err(status(v))
    }
}

fn status(v: &Value) -> Status {
    Status {
        code: v["code"].as_str().unwrap_or_default().to_string(),
        details: v["details"].as_str().unwrap_or_default().to_string(),
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

//! gRPC over TLS with a CA made here by openssl: a client trusting it is answered as over
//! plaintext; a client without it, or a plaintext one, is refused; with --grpc-tls-client-ca a
//! client must also present a certificate from that CA.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use crate::client::{hex, GrpcClient};
use crate::common::*;
use crate::grpc_addr;
use crate::support::{raw_query, udp_exchange};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// openssl req's arguments for a new unencrypted P-256 key.
const NEW_P256_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// A CA, and the certificates it issued: `server` (for 127.0.0.1) and `client`.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let mut ca = vec![
            "req",
            "-x509",
            "-days",
            "2",
            "-subj",
            "/CN=globaldns test CA",
        ];
        ca.extend_from_slice(&NEW_P256_KEY);
        ca.extend_from_slice(&["-keyout", "ca.key", "-out", "ca.pem"]);
        openssl(dir, &ca);
        let pki = Pki {
            dir: dir.to_path_buf(),
        };
        pki.issue(
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth",
        );
        pki.issue("client", "extendedKeyUsage=clientAuth");
        pki
    }

    fn issue(&self, name: &str, ext: &str) {
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        let mut req = vec!["req", "-subj", "/CN=globaldns test"];
        req.extend_from_slice(&NEW_P256_KEY);
        req.extend_from_slice(&["-keyout", &key, "-out", &csr]);
        openssl(&self.dir, &req);
        let ext_file = format!("{name}.ext");
        std::fs::write(
            self.dir.join(&ext_file),
            format!("basicConstraints=CA:FALSE\n{ext}\n"),
        )
        .unwrap();
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext_file,
                "-out",
                &pem,
            ],
        );
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    fn server_flags(&self) -> Vec<String> {
        vec![
            "--grpc-tls-cert".into(),
            self.path("server.pem"),
            "--grpc-tls-key".into(),
            self.path("server.key"),
        ]
    }
}

fn query() -> Vec<u8> {
    raw_query("httpbin.bar.global.", RecordType::A, None)
        .to_vec()
        .unwrap()
}

fn start(pki: &Pki, extra: &[&str]) -> (tempfile::TempDir, Server) {
    let mut flags: Vec<String> = vec!["--grpc-listen".into(), "127.0.0.1:0".into()];
    flags.extend(pki.server_flags());
    flags.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = flags.iter().map(|s| s.as_str()).collect();
    fixture(&refs)
}

fn refused(mut client: GrpcClient, what: &str) {
    let status = client.query(&query()).unwrap_err();
    assert_eq!(status.code, "UNAVAILABLE", "{what}: {status:?}");
}

#[test]
fn tls_clients_trusting_the_ca_are_answered_and_others_refused() {
    let t = tempfile::tempdir().unwrap();
    let pki = Pki::new(t.path());
    let (_t, s) = start(&pki, &[]);
    let target = grpc_addr(&s).to_string();

    let mut trusting = GrpcClient::spawn(&[target.clone(), "--ca".into(), pki.path("ca.pem")]);
    let q = query();
    let answer = trusting.query_waiting(&q, Duration::from_secs(10)).unwrap();
    assert_eq!(hex(&answer), hex(&udp_exchange(s.dns, &q).unwrap()));
    let m = Message::from_vec(&answer).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1);

    refused(
        GrpcClient::spawn(&[target.clone(), "--system-roots".into()]),
        "a client without the CA",
    );
    refused(GrpcClient::spawn(&[target]), "a plaintext client");
    // The refusals cost the server nothing: it still answers.
    trusting.query(&query()).unwrap();
}

#[test]
fn with_a_client_ca_a_client_certificate_is_required() {
    let t = tempfile::tempdir().unwrap();
    let pki = Pki::new(t.path());
    let ca = pki.path("ca.pem");
    let (_t, s) = start(&pki, &["--grpc-tls-client-ca", &ca]);
    let target = grpc_addr(&s).to_string();

    let mut with_cert = GrpcClient::spawn(&[
        target.clone(),
        "--ca".into(),
        ca.clone(),
        "--cert".into(),
        pki.path("client.pem"),
        "--key".into(),
        pki.path("client.key"),
    ]);
    let answer = with_cert
        .query_waiting(&query(), Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        Message::from_vec(&answer).unwrap().metadata.response_code,
        ResponseCode::NoError
    );
    refused(
        GrpcClient::spawn(&[target.clone(), "--ca".into(), ca.clone()]),
        "a client without a certificate",
    );
    let t2 = tempfile::tempdir().unwrap();
    let stranger = Pki::new(t2.path());
    refused(
        GrpcClient::spawn(&[
            target,
            "--ca".into(),
            ca,
            "--cert".into(),
            stranger.path("client.pem"),
            "--key".into(),
            stranger.path("client.key"),
        ]),
        "a client whose certificate another CA issued",
    );
    with_cert.query(&query()).unwrap();
}

#[test]
fn unreadable_or_wrong_tls_files_stop_the_server_at_start() {
    let t = tempfile::tempdir().unwrap();
    let (_z, zones, state) = dirs();
    let junk = t.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let junk = junk.display().to_string();
    let missing = t.path().join("missing.pem").display().to_string();
    for (what, cert, key) in [("missing", &missing, &missing), ("junk", &junk, &junk)] {
        let flags = [
            "--grpc-listen",
            "127.0.0.1:0",
            "--grpc-tls-cert",
            cert,
            "--grpc-tls-key",
            key,
        ];
        let mut child = serve_command(&zones, &state, &flags).spawn().unwrap();
        let status = eventually(Duration::from_secs(20), "the server to exit", || {
            child.try_wait().unwrap()
        });
        assert!(
            !status.success(),
            "{what} TLS files: the server must not start"
        );
        let mut log = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
        assert!(
            log.contains("gRPC TLS"),
            "{what}: the reason is logged:\n{log}"
        );
    }
}

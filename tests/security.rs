//! Secrets stay secret: a server given a kubeconfig with a bearer token and a password (for a
//! cluster that is not there, so its errors are logged) and a TSIG key never shows them in its
//! log, `/debug/hosts` or `/metrics`.

mod common;
use common::*;

use std::time::Duration;

const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXRva2VuLWZvci10ZXN0cw.Zm9vYmFyYmF6cXV4";
const PASSWORD: &str = "hunter2-Pa55w0rd-never-logged";
/// base64 of 32 bytes: the TSIG secret.
const TSIG_SECRET: &str = "c2VjcmV0LXRzaWcta2V5LW5ldmVyLWluLWxvZ3MhIQ==";

#[test]
fn tokens_passwords_and_tsig_keys_are_never_shown() {
    let (t, zones, state) = dirs();
    write_file(
        &zones.join("a.yaml"),
        &se("h", "bar", &["h.bar.global"], &[], ""),
    );
    // Nothing listens on this port: the cluster's watch fails and is retried, and logged.
    let dead = free_ports(1);
    let kubeconfig = t.path().join("east.yaml");
    write_file(
        &kubeconfig,
        &format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: east\n\
             clusters:\n- name: east\n  cluster:\n    server: https://127.0.0.1:{dead}\n    insecure-skip-tls-verify: true\n\
             users:\n- name: admin\n  user:\n    token: {TOKEN}\n- name: basic\n  user:\n    username: admin\n    password: {PASSWORD}\n\
             contexts:\n- name: east\n  context:\n    cluster: east\n    user: admin\n- name: basic\n  context:\n    cluster: east\n    user: basic\n"
        ),
    );
    let east = format!("east={}", kubeconfig.display());
    let west = format!("west={}#basic", kubeconfig.display());
    let key = format!("xfr-key:hmac-sha256:{TSIG_SECRET}");
    let s = Server::spawn(
        &zones,
        &state,
        &[
            "--cluster",
            &east,
            "--cluster",
            &west,
            "--tsig-key",
            &key,
            "--allow-transfer",
            "127.0.0.0/8",
            "--log",
            "debug",
        ],
    )
    .unwrap_or_else(|log| panic!("server did not start:\n{log}"));
    // Both clusters' failures have been logged (with the debug detail) before we look.
    eventually(
        Duration::from_secs(30),
        "both clusters' errors logged",
        || {
            let log = s.log.lock().unwrap().join("\n");
            let failed = |c: &str| {
                log.lines()
                    .any(|l| l.contains(c) && (l.contains("WARN") || l.contains("ERROR")))
            };
            (failed("east") && failed("west")).then_some(())
        },
    );
    // A signed transfer with the key, and an unsigned one (refused), exercise the TSIG paths.
    let signed = dig(
        s.dns,
        &[
            "-y",
            &format!("hmac-sha256:xfr-key:{TSIG_SECRET}"),
            "global",
            "AXFR",
        ],
    );
    let unsigned = dig(s.dns, &["global", "AXFR"]);
    assert!(!signed.raw.is_empty() && !unsigned.raw.is_empty());

    let (_, hosts) = s.get("/debug/hosts");
    let (_, metrics) = s.get("/metrics");
    let (_, ready) = s.get("/readyz");
    let log = s.log.lock().unwrap().join("\n");
    for (what, text) in [
        ("log", &log),
        ("/debug/hosts", &hosts),
        ("/metrics", &metrics),
        ("/readyz", &ready),
    ] {
        assert!(!text.is_empty(), "{what} is empty");
        for secret in [TOKEN, PASSWORD, TSIG_SECRET] {
            assert!(!text.contains(secret), "{what} shows a secret:\n{text}");
            // Nor a recognisable part of it.
            assert!(
                !text.contains(&secret[..16]),
                "{what} shows part of a secret:\n{text}"
            );
        }
    }
    assert!(
        ready.contains("east"),
        "the pending cluster is named: {ready}"
    );
}

//! One channel under load, across server restarts, idle and over the connection cap.

use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use crate::client::GrpcClient;
use crate::common::*;
use crate::grpc_addr;
use crate::support::raw_query;

fn a_query(name: &str, id: u16) -> Vec<u8> {
    let mut q = raw_query(name, RecordType::A, None);
    q.metadata.id = id;
    q.to_vec().unwrap()
}

fn answered(grpc: &mut GrpcClient, wait: Duration, what: &str) -> Message {
    let reply = grpc
        .query_waiting(&a_query("httpbin.bar.global.", 7), wait)
        .unwrap_or_else(|e| panic!("{what}: {e:?}"));
    let m = Message::from_vec(&reply).unwrap();
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NoError,
        "{what}: {m:?}"
    );
    assert_eq!(m.answers.len(), 1, "{what}: {m:?}");
    m
}

#[test]
fn two_hundred_concurrent_calls_on_one_channel_are_all_answered() {
    // Fewer streams than calls: the client queues the rest, as HTTP/2 says.
    let (_t, s) = fixture(&["--grpc-listen", "127.0.0.1:0", "--grpc-max-streams", "64"]);
    let mut grpc = GrpcClient::plain(grpc_addr(&s));
    let queries: Vec<Vec<u8>> = (0..200u16)
        .map(|i| {
            let name = if i % 2 == 0 {
                "httpbin.bar.global."
            } else {
                "nope.bar.global."
            };
            a_query(name, 5000 + i)
        })
        .collect();
    let replies = grpc.burst(&queries);
    assert_eq!(replies.len(), 200);
    for (i, reply) in replies.iter().enumerate() {
        let bytes = reply.as_ref().unwrap_or_else(|e| panic!("call {i}: {e:?}"));
        let m = Message::from_vec(bytes).unwrap();
        assert_eq!(m.metadata.id, 5000 + i as u16, "call {i}");
        let want = if i % 2 == 0 {
            ResponseCode::NoError
        } else {
            ResponseCode::NXDomain
        };
        assert_eq!(m.metadata.response_code, want, "call {i}: {m:?}");
    }
    // One channel is one connection.
    assert_eq!(metric0(&s, "globaldns_grpc_connections"), 1.0);
    let nx = "globaldns_dns_queries_total{qtype=\"A\",rcode=\"NXDOMAIN\",transport=\"grpc\"}";
    assert_eq!(metric0(&s, nx), 100.0);
}

#[test]
fn the_client_reconnects_to_a_restarted_server() {
    let (_t, zones, state) = dirs();
    write_file(&zones.join("main.yaml"), &testdata("answers/main.yaml"));
    let p = free_ports(3);
    let (dns, admin, grpc_at) = (
        format!("127.0.0.1:{p}"),
        format!("127.0.0.1:{}", p + 1),
        format!("127.0.0.1:{}", p + 2),
    );
    let flags = [
        "--listen",
        &dns,
        "--admin",
        &admin,
        "--grpc-listen",
        &grpc_at,
    ];
    let s = Server::start(&zones, &state, &flags);
    let mut grpc = GrpcClient::plain(grpc_addr(&s));
    answered(&mut grpc, Duration::from_secs(10), "first call");

    // A graceful stop (GOAWAY), then a kill with no goodbye: the same channel carries on.
    s.stop();
    let s = Server::start(&zones, &state, &flags);
    answered(&mut grpc, Duration::from_secs(20), "after a restart");
    s.kill9();
    let s = Server::start(&zones, &state, &flags);
    answered(
        &mut grpc,
        Duration::from_secs(20),
        "after a kill and a start",
    );
    assert_eq!(metric0(&s, "globaldns_grpc_connections"), 1.0);
}

#[test]
fn an_idle_connection_is_closed_and_the_client_reconnects() {
    let (_t, s) = fixture(&["--grpc-listen", "127.0.0.1:0", "--grpc-idle-timeout", "1s"]);
    let mut grpc = GrpcClient::plain(grpc_addr(&s));
    answered(&mut grpc, Duration::from_secs(10), "first call");
    eventually(
        Duration::from_secs(20),
        "the idle connection closed",
        || {
            let idle = metric0(&s, "globaldns_grpc_closed_total{kind=\"idle\"}");
            (idle == 1.0 && metric0(&s, "globaldns_grpc_connections") == 0.0).then_some(())
        },
    );
    answered(&mut grpc, Duration::from_secs(20), "after the idle close");
    assert_eq!(metric0(&s, "globaldns_grpc_connections"), 1.0);
}

#[test]
fn connections_over_the_cap_are_closed_and_the_others_keep_serving() {
    let (_t, s) = fixture(&[
        "--grpc-listen",
        "127.0.0.1:0",
        "--grpc-max-connections",
        "1",
    ]);
    let addr = grpc_addr(&s);
    let mut first = GrpcClient::plain(addr);
    answered(&mut first, Duration::from_secs(10), "first connection");
    let mut second = GrpcClient::plain(addr);
    let refused = second
        .query(&a_query("httpbin.bar.global.", 8))
        .unwrap_err();
    assert_eq!(refused.code, "UNAVAILABLE", "{refused:?}");
    assert!(metric0(&s, "globaldns_grpc_closed_total{kind=\"refused\"}") >= 1.0);
    answered(
        &mut first,
        Duration::from_secs(10),
        "first connection, after the refusal",
    );
    // The slot is free again once the first client goes.
    drop(first);
    answered(
        &mut second,
        Duration::from_secs(20),
        "second connection, after the first left",
    );
}

/// Reads HTTP/2 frames until one of `kind` arrives (Some(flags)) or the server closes (None).
fn next_frame_of(s: &mut std::net::TcpStream, kind: u8) -> Option<u8> {
    use std::io::Read;
    loop {
        let mut header = [0u8; 9];
        s.read_exact(&mut header).ok()?;
        let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).ok()?;
        if header[3] == kind {
            return Some(header[4]);
        }
    }
}

#[test]
fn a_peer_that_stops_answering_pings_is_dropped() {
    use std::io::Write;
    let (_t, s) = fixture(&[
        "--grpc-listen",
        "127.0.0.1:0",
        "--grpc-idle-timeout",
        "0s",
        "--grpc-keepalive",
        "1s",
        "--grpc-keepalive-timeout",
        "1s",
    ]);
    // An HTTP/2 client that says hello and then goes silent: it never ACKs the server's PINGs.
    let mut peer = std::net::TcpStream::connect(grpc_addr(&s)).unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    peer.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    peer.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap(); // SETTINGS, empty
    const PING: u8 = 6;
    let flags = next_frame_of(&mut peer, PING).expect("the server PINGs a quiet connection");
    assert_eq!(flags & 1, 0, "a PING, not an ACK");
    assert_eq!(
        next_frame_of(&mut peer, PING),
        None,
        "closed once the PING went unanswered"
    );
    eventually(Duration::from_secs(10), "the connection let go", || {
        (metric0(&s, "globaldns_grpc_connections") == 0.0).then_some(())
    });
}

//! DNS clients: hickory's client over UDP or TCP, and a plain UDP socket asking as a stub
//! resolver does; what their answers hold.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

pub const BOTH: [Transport; 2] = [Transport::Udp, Transport::Tcp];

/// One query with hickory's client over a fresh connection.
pub fn query(server: SocketAddr, transport: Transport, name: &str, rtype: RecordType) -> Message {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut client = match transport {
            Transport::Udp => {
                let conn = UdpClientStream::builder(server, TokioRuntimeProvider::default())
                    // From the ephemeral range, apart from the servers' ports (free_ports).
                    .with_os_port_selection(true)
                    .build();
                let (client, bg) = Client::<TokioRuntimeProvider>::from_sender(conn);
                tokio::spawn(bg);
                client
            }
            Transport::Tcp => {
                let (fut, sender) =
                    TcpClientStream::new(server, None, None, TokioRuntimeProvider::new());
                let (client, bg) =
                    Client::<TokioRuntimeProvider>::new(fut.await.expect("tcp connect"), sender);
                tokio::spawn(bg);
                client
            }
        };
        let resp = client
            .query(Name::from_str(name).unwrap(), DNSClass::IN, rtype)
            .await
            .unwrap_or_else(|e| panic!("{transport:?} query {name} {rtype}: {e}"));
        resp.into_message()
    })
}

/// A question over a plain UDP socket, as a stub resolver asks it: short timeout, retried; fails
/// the test when no answer comes.
pub fn udp_ask(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut q = Message::query();
    q.add_query(Query::query(Name::from_str(name).unwrap(), rtype));
    let bytes = q.to_vec().unwrap();
    let mut buf = [0u8; 4096];
    for _ in 0..10 {
        sock.send_to(&bytes, server).unwrap();
        while let Ok((n, _)) = sock.recv_from(&mut buf) {
            let Ok(m) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            if m.metadata.id == q.metadata.id {
                return m;
            }
        }
    }
    panic!("no DNS answer from {server} for {name} {rtype}");
}

/// The addresses of the A and AAAA records among `records`, sorted.
pub fn record_addrs<'a>(records: impl IntoIterator<Item = &'a Record>) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = records
        .into_iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

/// The A and AAAA addresses in a response's answer section, sorted.
pub fn answer_addrs(m: &Message) -> Vec<IpAddr> {
    record_addrs(&m.answers)
}

/// The A addresses in a response's answer section, sorted.
pub fn a_addresses(m: &Message) -> Vec<IpAddr> {
    record_addrs(
        m.answers
            .iter()
            .filter(|r| r.record_type() == RecordType::A),
    )
}

/// The addresses of `host` from the response to its A question: None on NXDOMAIN, Some(sorted)
/// on NOERROR; any other rcode fails the test.
pub fn a_answer(m: &Message, host: &str) -> Option<Vec<IpAddr>> {
    match m.metadata.response_code {
        ResponseCode::NXDomain => None,
        ResponseCode::NoError => Some(answer_addrs(m)),
        rc => panic!("{host}: unexpected rcode {rc:?}"),
    }
}

/// One A question for `host` with [`udp_ask`]. See [`a_answer`].
pub fn udp_a(server: SocketAddr, host: &str) -> Option<Vec<IpAddr>> {
    a_answer(&udp_ask(server, &format!("{host}."), RecordType::A), host)
}

/// One A question for `host` with hickory's client over `transport`. See [`a_answer`].
pub fn query_a(server: SocketAddr, transport: Transport, host: &str) -> Option<Vec<IpAddr>> {
    let m = query(server, transport, &format!("{host}."), RecordType::A);
    a_answer(&m, host)
}

/// The one A record of a VIP host over UDP: None on NXDOMAIN; anything but a single IPv4 address
/// fails the test.
pub fn a_of(server: SocketAddr, host: &str) -> Option<Ipv4Addr> {
    let m = udp_ask(server, &format!("{host}."), RecordType::A);
    match m.metadata.response_code {
        ResponseCode::NXDomain => None,
        ResponseCode::NoError => match answer_addrs(&m).as_slice() {
            [IpAddr::V4(ip)] => Some(*ip),
            other => panic!("{host}: expected exactly one A record, got {other:?}: {m:?}"),
        },
        rc => panic!("{host}: unexpected rcode {rc:?}"),
    }
}

/// The first IPv4 address of a list.
pub fn v4_of(ips: &[IpAddr]) -> Option<Ipv4Addr> {
    ips.iter().find_map(|ip| match ip {
        IpAddr::V4(v) => Some(*v),
        _ => None,
    })
}

/// A plain TCP connection to `server` (30 s read timeout); `small`: with a 4 KiB receive buffer,
/// so that a server writing to it waits for the reader as soon as a few messages are unread.
pub fn tcp_stream(server: SocketAddr, small: bool) -> std::net::TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    if small {
        sock.set_recv_buffer_size(4096).unwrap();
    }
    sock.connect(&server.into()).unwrap();
    let tcp: std::net::TcpStream = sock.into();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    tcp
}

/// Sends an AXFR of `global.` with message ID `id`.
pub fn ask_axfr(tcp: &mut std::net::TcpStream, id: u16) {
    let mut q = Message::query();
    q.metadata.id = id;
    q.add_query(Query::query(
        Name::from_ascii("global.").unwrap(),
        RecordType::AXFR,
    ));
    let q = q.to_vec().unwrap();
    tcp.write_all(&(q.len() as u16).to_be_bytes()).unwrap();
    tcp.write_all(&q).unwrap();
}

/// One length-prefixed message of a TCP stream.
pub fn read_message(tcp: &mut std::net::TcpStream) -> Vec<u8> {
    let mut len = [0u8; 2];
    tcp.read_exact(&mut len).unwrap();
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    tcp.read_exact(&mut buf).unwrap();
    buf
}

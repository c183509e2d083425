//! What the answers tests share: assertions on responses, and hand-built packets.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::common::*;

// ---------------------------------------------------------------------------------------------
// Assertions on responses

pub fn name(s: &str) -> Name {
    Name::from_str(s).unwrap()
}

/// What every response must satisfy: QR set, RA clear.
pub fn check_header(m: &Message, what: &str) {
    assert_eq!(
        m.metadata.message_type,
        MessageType::Response,
        "{what}: QR must be set: {m:?}"
    );
    assert!(
        !m.metadata.recursion_available,
        "{what}: RA must be clear (authoritative only): {m:?}"
    );
}

pub fn soa(r: &Record) -> &SOA {
    match &r.data {
        RData::SOA(s) => s,
        other => panic!("expected SOA, got {other:?} in {r:?}"),
    }
}

/// A positive authoritative answer: NOERROR, AA, only records owned by `qname` of `rtype`, all
/// with `ttl`. Returns the answer's addresses (sorted) for A/AAAA.
pub fn positive(m: &Message, qname: &str, rtype: RecordType, ttl: u32, what: &str) -> Vec<IpAddr> {
    check_header(m, what);
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NoError,
        "{what}: rcode: {m:?}"
    );
    assert!(m.metadata.authoritative, "{what}: AA must be set: {m:?}");
    assert!(!m.answers.is_empty(), "{what}: expected answers: {m:?}");
    for r in &m.answers {
        assert_eq!(r.name, name(qname), "{what}: owner name: {r:?}");
        assert_eq!(r.record_type(), rtype, "{what}: type: {r:?}");
        assert_eq!(r.ttl, ttl, "{what}: TTL: {r:?}");
    }
    answer_addrs(m)
}

/// The one SOA in the authority section of a negative answer; checks owner `zone`, TTL and minimum.
pub fn negative_soa<'a>(m: &'a Message, zone: &str, ttl: u32, what: &str) -> &'a SOA {
    let soas: Vec<&Record> = m
        .authorities
        .iter()
        .filter(|r| r.record_type() == RecordType::SOA)
        .collect();
    assert_eq!(soas.len(), 1, "{what}: exactly one SOA in authority: {m:?}");
    assert_eq!(soas[0].name, name(zone), "{what}: SOA owner: {m:?}");
    let s = soa(soas[0]);
    assert_eq!(
        s.minimum, ttl,
        "{what}: SOA minimum (negative TTL) must be --ttl"
    );
    assert!(
        soas[0].ttl <= ttl,
        "{what}: SOA TTL {} must not exceed the negative TTL {ttl}",
        soas[0].ttl
    );
    s
}

pub fn nodata(m: &Message, zone: &str, ttl: u32, what: &str) {
    check_header(m, what);
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NoError,
        "{what}: NODATA is NOERROR: {m:?}"
    );
    assert!(m.metadata.authoritative, "{what}: AA must be set: {m:?}");
    assert!(m.answers.is_empty(), "{what}: empty answer: {m:?}");
    negative_soa(m, zone, ttl, what);
}

pub fn nxdomain(m: &Message, zone: &str, ttl: u32, what: &str) {
    check_header(m, what);
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NXDomain,
        "{what}: rcode: {m:?}"
    );
    assert!(m.metadata.authoritative, "{what}: AA must be set: {m:?}");
    assert!(m.answers.is_empty(), "{what}: empty answer: {m:?}");
    negative_soa(m, zone, ttl, what);
}

pub fn refused(m: &Message, what: &str) {
    check_header(m, what);
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::Refused,
        "{what}: rcode: {m:?}"
    );
    assert!(
        !m.metadata.authoritative,
        "{what}: REFUSED must not be AA: {m:?}"
    );
    assert!(
        m.answers.is_empty() && m.authorities.is_empty(),
        "{what}: no records: {m:?}"
    );
}

pub fn q(s: &Server, t: Transport, qname: &str, rtype: RecordType) -> Message {
    query(s.dns, t, qname, rtype)
}

// ---------------------------------------------------------------------------------------------
// Raw packets

pub fn raw_query(qname: &str, rtype: RecordType, edns: Option<(u16, u8)>) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = false;
    m.add_query(Query::query(Name::from_ascii(qname).unwrap(), rtype));
    if let Some((size, version)) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        e.set_version(version);
        m.set_edns(e);
    }
    m
}

pub fn udp_socket() -> UdpSocket {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    sock
}

/// One datagram out, the first datagram back (None on timeout).
pub fn udp_exchange(addr: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let sock = udp_socket();
    sock.send_to(bytes, addr).unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

pub fn tcp_connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s
}

pub fn tcp_send(s: &mut TcpStream, bytes: &[u8]) {
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(bytes);
    s.write_all(&framed).unwrap();
}

/// The next length-prefixed message (None on EOF or timeout).
pub fn tcp_read(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).ok()?;
    Some(buf)
}

pub fn tcp_exchange(addr: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut s = tcp_connect(addr);
    tcp_send(&mut s, bytes);
    tcp_read(&mut s)
}

pub fn exchange_bytes(addr: SocketAddr, t: Transport, bytes: &[u8]) -> Option<Vec<u8>> {
    match t {
        Transport::Udp => udp_exchange(addr, bytes),
        Transport::Tcp => tcp_exchange(addr, bytes),
    }
}

/// Sends `m` and decodes the answer; panics when there is none.
pub fn exchange(addr: SocketAddr, t: Transport, m: &Message) -> Message {
    let bytes = exchange_bytes(addr, t, &m.to_vec().unwrap())
        .unwrap_or_else(|| panic!("{t:?}: no response to {m:?}"));
    let r = Message::from_vec(&bytes).unwrap_or_else(|e| panic!("{t:?}: undecodable: {e}"));
    assert_eq!(r.metadata.id, m.metadata.id, "{t:?}: response id");
    r
}

/// The reverse-zone name of an address.
pub fn reverse(ip: &str) -> String {
    let mut n = Name::from(ip.parse::<IpAddr>().unwrap());
    n.set_fqdn(true);
    n.to_ascii()
}

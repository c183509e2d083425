//! The client side of one exchange with a primary over TCP: a SOA query, an AXFR or an IXFR,
//! TSIG-signed when a key is set, every response message verified (RFC 8945 §5.3: each message
//! of a transfer chains on the MAC of the one before).
//!
//! Our own few lines rather than hickory's `Client::zone_transfer`: that one puts the IXFR's SOA
//! under the SOA's MNAME instead of the zone (RFC 1995 §3 wants the zone), and its per-request
//! channel drops messages a slow reader has not taken yet, which a large AXFR would hit.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::{Name, RData, Record, RecordType, TSigVerifier, TSigner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::zone_data::Messages;
use crate::zone::digest::{Digest, EDNS_OPTION};

/// Connecting, and each read or write: a primary silent for longer is treated as down.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an exchange failed; `label` is the `result` label of `globaldns_transfers_total`.
#[derive(Debug)]
pub enum WireError {
    /// Could not connect, or the connection broke or went silent.
    Io(String),
    /// The primary answered with an error rcode (REFUSED, NOTAUTH for a bad key, NOTIMP…).
    Rcode(ResponseCode),
    /// The answer is not a valid DNS response to our query, or its TSIG does not verify.
    Invalid(String),
}

impl WireError {
    pub fn label(&self) -> &'static str {
        match self {
            WireError::Io(_) => "unreachable",
            WireError::Rcode(_) => "refused",
            WireError::Invalid(_) => "invalid",
        }
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Io(e) => write!(f, "{e}"),
            WireError::Rcode(r) => write!(f, "answered {r}"),
            WireError::Invalid(e) => write!(f, "invalid answer: {e}"),
        }
    }
}

/// What to ask the primary for.
pub enum Ask<'a> {
    Soa,
    Axfr,
    /// An IXFR from our SOA (the zone's SOA record as we serve it), with the digest of our
    /// content (see `content`) when we have one.
    Ixfr(&'a Record, Option<Digest>),
}

/// The records of an exchange, and the content-digest option of the first response message.
pub struct Exchanged {
    pub records: Messages,
    pub echo: Option<Vec<u8>>,
}

/// The zone's SOA as the primary answers it (a SOA query).
pub async fn soa(
    primary: SocketAddr,
    zone: &Name,
    key: Option<&TSigner>,
) -> Result<Record, WireError> {
    let messages = exchange(primary, zone, Ask::Soa, key).await?.records;
    messages
        .into_iter()
        .flatten()
        .find(|r| r.record_type() == RecordType::SOA && r.name == *zone)
        .ok_or_else(|| WireError::Invalid("no SOA of the zone in the answer".into()))
}

/// Sends one query and returns the answer records of every response message, in order (for
/// a transfer, until the message that ends it), with the content-digest option the primary
/// answered (if any).
pub async fn exchange(
    primary: SocketAddr,
    zone: &Name,
    ask: Ask<'_>,
    key: Option<&TSigner>,
) -> Result<Exchanged, WireError> {
    let qtype = match ask {
        Ask::Soa => RecordType::SOA,
        Ask::Axfr => RecordType::AXFR,
        Ask::Ixfr(..) => RecordType::IXFR,
    };
    let mut msg = Message::query();
    msg.metadata.recursion_desired = false;
    msg.add_query(Query::query(zone.clone(), qtype));
    if let Ask::Ixfr(soa, content) = ask {
        // RFC 1995 §3: the client's SOA in the authority section, owned by the zone.
        let mut soa = soa.clone();
        soa.name = zone.clone();
        msg.add_authority(soa);
        if let Some(d) = content {
            let mut edns = Edns::new();
            edns.set_max_payload(1232);
            edns.options_mut()
                .insert(EdnsOption::Unknown(EDNS_OPTION, d.to_bytes().to_vec()));
            msg.set_edns(edns);
        }
    }
    let id = msg.metadata.id;
    let verifier = match key {
        Some(k) => msg
            .finalize(k, crate::zone::unix_now())
            .map_err(|e| WireError::Invalid(format!("cannot sign the query: {e}")))?,
        None => None,
    };
    let query = msg
        .to_vec()
        .map_err(|e| WireError::Invalid(format!("cannot encode the query: {e}")))?;

    let io = |what: &'static str| move |e: String| WireError::Io(format!("{primary}: {what}: {e}"));
    let mut tcp = timeout(IO_TIMEOUT, TcpStream::connect(primary))
        .await
        .map_err(|_| io("connect")("timed out".into()))?
        .map_err(|e| io("connect")(e.to_string()))?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&(query.len() as u16).to_be_bytes());
    framed.extend_from_slice(&query);
    timeout(IO_TIMEOUT, tcp.write_all(&framed))
        .await
        .map_err(|_| io("write")("timed out".into()))?
        .map_err(|e| io("write")(e.to_string()))?;

    let mut reader = Reader::new(zone, qtype, id, verifier);
    loop {
        let mut len = [0u8; 2];
        timeout(IO_TIMEOUT, tcp.read_exact(&mut len))
            .await
            .map_err(|_| io("read")("timed out".into()))?
            .map_err(|e| io("read")(e.to_string()))?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        timeout(IO_TIMEOUT, tcp.read_exact(&mut buf))
            .await
            .map_err(|_| io("read")("timed out".into()))?
            .map_err(|e| io("read")(e.to_string()))?;
        if reader.message(&buf)? {
            return Ok(Exchanged {
                records: reader.records,
                echo: reader.echo,
            });
        }
    }
}

/// The checks of the response messages of one exchange, without I/O (so that they can be fed
/// any bytes by the fuzz target and property tests): each message must parse, answer our
/// query, carry NOERROR and verify; the records are gathered until the message that ends it.
pub struct Reader<'a> {
    zone: &'a Name,
    qtype: RecordType,
    id: u16,
    verifier: Option<TSigVerifier>,
    end: End,
    pub records: Messages,
    /// The content-digest option of the first message.
    pub echo: Option<Vec<u8>>,
}

impl<'a> Reader<'a> {
    pub fn new(zone: &'a Name, qtype: RecordType, id: u16, verifier: Option<TSigVerifier>) -> Self {
        Reader {
            zone,
            qtype,
            id,
            verifier,
            end: End::default(),
            records: Vec::new(),
            echo: None,
        }
    }

    /// Takes one response message; Ok(true) when it ends the exchange.
    pub fn message(&mut self, buf: &[u8]) -> Result<bool, WireError> {
        let resp = Message::from_vec(buf).map_err(|e| WireError::Invalid(e.to_string()))?;
        if resp.metadata.id != self.id || resp.metadata.message_type != MessageType::Response {
            return Err(WireError::Invalid("not a response to our query".into()));
        }
        // The error first: a primary that does not know our key answers NOTAUTH unsigned.
        if resp.metadata.response_code != ResponseCode::NoError {
            return Err(WireError::Rcode(resp.metadata.response_code));
        }
        if let Some(v) = self.verifier.as_mut() {
            v.verify(buf)
                .map_err(|e| WireError::Invalid(format!("TSIG: {e}")))?;
        }
        let first = self.records.is_empty();
        if first {
            self.echo = resp
                .edns
                .as_ref()
                .and_then(|e| e.option(EdnsCode::Unknown(EDNS_OPTION)))
                .and_then(|o| match o {
                    EdnsOption::Unknown(_, b) => Some(b.clone()),
                    _ => None,
                });
        }
        if first
            && resp
                .queries
                .first()
                .is_some_and(|q| q.name() != self.zone || q.query_type() != self.qtype)
        {
            return Err(WireError::Invalid(
                "the answer is to another question".into(),
            ));
        }
        let done = self.qtype == RecordType::SOA
            || self
                .end
                .feed(&resp.answers, first && self.qtype == RecordType::IXFR);
        self.records.push(resp.answers);
        Ok(done)
    }
}

/// Finds the message that ends a transfer (RFC 5936 §2.2, RFC 1995 §4): the closing SOA is the
/// opening one again, after an even number of SOAs (an IXFR's deltas hold two each, the last
/// of which carries the new serial too).
#[derive(Default)]
struct End {
    serial: Option<u32>,
    soas: usize,
}

impl End {
    /// Whether the transfer ends with these records. An IXFR answer of one SOA alone is the
    /// primary saying we are up to date (RFC 1995 §2).
    fn feed(&mut self, answers: &[Record], first_of_ixfr: bool) -> bool {
        if first_of_ixfr && answers.len() == 1 && answers[0].record_type() == RecordType::SOA {
            return true;
        }
        for r in answers {
            if let RData::SOA(soa) = &r.data {
                self.soas += 1;
                match self.serial {
                    None => self.serial = Some(soa.serial),
                    // Records after it in the same message fail the caller's validation.
                    Some(s) if s == soa.serial && self.soas.is_multiple_of(2) => return true,
                    Some(_) => {}
                }
            }
        }
        false
    }
}

//! TSIG (RFC 8945) on the server side: a signed request is verified with the configured key,
//! and its response signed, every message of a multi-message transfer chained to the one before
//! (§5.3.1). hickory signs and verifies single messages; the chain is built here.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::tsig::{make_tsig_record, TSIG};
use hickory_proto::rr::{Record, TSigResponseContext, TSigner};
use hickory_proto::serialize::binary::BinEncoder;
use hickory_proto::ProtoError;
use hickory_server::server::Request;
use tracing::warn;

/// What the request's signature says.
pub(super) enum TsigCheck {
    /// No signature (a key may still require one: the caller decides).
    Unsigned,
    /// Verified: the response is signed with this.
    Signed(Signing),
    /// A signature that does not verify (unknown key, bad MAC, time outside the fudge).
    Bad,
}

/// How to sign the response to one verified request.
#[derive(Clone)]
pub(super) struct Signing {
    signer: TSigner,
    request_mac: Vec<u8>,
    id: u16,
    time: u64,
}

pub(super) fn verify(key: Option<&TSigner>, request: &Request, now: u64) -> TsigCheck {
    let Some(tsig) = request.signature.as_deref() else {
        return TsigCheck::Unsigned;
    };
    let Some(signer) = key.filter(|k| *k.signer_name() == tsig.name) else {
        warn!(src = %request.src(), key = %tsig.name, "TSIG with an unknown key; refused");
        return TsigCheck::Bad;
    };
    match signer.verify_message_byte(request.as_slice(), None, true) {
        Ok((_, _, window)) if window.contains(&now) => TsigCheck::Signed(Signing {
            signer: signer.clone(),
            request_mac: tsig.data.mac.clone(),
            id: request.metadata.id,
            time: now,
        }),
        Ok(_) => {
            warn!(src = %request.src(), "TSIG time outside the allowed window; refused");
            TsigCheck::Bad
        }
        Err(e) => {
            warn!(src = %request.src(), error = %e, "TSIG signature does not verify; refused");
            TsigCheck::Bad
        }
    }
}

/// The rcode for a request whose signature is bad (RFC 8945 §5.2: NOTAUTH).
pub(super) const BAD: ResponseCode = ResponseCode::NotAuth;

impl Signing {
    /// Signs the messages of one response in turn, each chained to the one before.
    pub fn chain(&self) -> Chain<'_> {
        Chain {
            signing: self,
            previous: None,
        }
    }

    /// A later message: prior MAC, the message, and the timers only (RFC 8945 §5.3.1).
    fn subsequent(&self, previous: &[u8], message: &[u8]) -> Result<Record<TSIG>, ProtoError> {
        let mut tbs = Vec::with_capacity(previous.len() + message.len() + 10);
        let mut e = BinEncoder::new(&mut tbs);
        e.emit_u16(previous.len() as u16)?;
        e.emit_vec(previous)?;
        e.emit_vec(message)?;
        e.emit_u16((self.time >> 32) as u16)?;
        e.emit_u32(self.time as u32)?;
        e.emit_u16(self.signer.fudge())?;
        let mac = self
            .signer
            .sign(&tbs)
            .map_err(|e| ProtoError::from(e.to_string()))?;
        let tsig = TSIG::new(
            self.signer.algorithm().clone(),
            self.time,
            self.signer.fudge(),
            mac,
            self.id,
            None,
            Vec::new(),
        );
        Ok(make_tsig_record(self.signer.signer_name().clone(), tsig))
    }
}

/// The signer of one response's messages (a transfer's are signed as they are sent).
pub(super) struct Chain<'a> {
    signing: &'a Signing,
    /// The MAC of the last message signed.
    previous: Option<Vec<u8>>,
}

impl Chain<'_> {
    /// The TSIG record of the next message, given as it encodes without it: the first signed
    /// over the request's MAC, the others over the one before (RFC 8945 §5.3.1).
    pub fn sign(&mut self, message: &[u8]) -> Result<Record<TSIG>, ProtoError> {
        let s = self.signing;
        let record = match &self.previous {
            None => {
                *(TSigResponseContext::new(
                    s.id,
                    s.time,
                    s.signer.clone(),
                    s.request_mac.clone(),
                    None,
                )
                .sign(message)?)
            }
            Some(previous) => s.subsequent(previous, message)?,
        };
        self.previous = Some(record.data.mac.clone());
        Ok(record)
    }
}

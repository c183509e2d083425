//! The answer engine (README, "Answers"): a question resolves to one named [`Outcome`], and the outcome
//! becomes the message sections in one place ([`Resolution::into_answer`]), the only one that
//! puts the SOA in the authority section.

use std::borrow::Cow;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::NS;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::key;
use super::records::{proto_name, service_name, Rendered};
use super::{Apex, Snapshot};

/// What the zone says about one question (as Knot's `solve_answer` states).
#[derive(Debug)]
pub enum Outcome<'a> {
    /// Records of the type asked (never empty), with their additional data. `wildcard`: they
    /// were synthesised from a wildcard (RFC 4592), owned by the query name all the same.
    Answer {
        records: Vec<Cow<'a, Record>>,
        additional: Vec<Record>,
        wildcard: bool,
    },
    /// The name exists (or is an empty non-terminal) without data of that type.
    NoData,
    /// No such name in the zone.
    NxDomain,
    /// Outside every zone served.
    Refused,
}

impl<'a> Outcome<'a> {
    fn rendered(r: Rendered, wildcard: bool) -> Self {
        if r.records.is_empty() {
            return Outcome::NoData;
        }
        Outcome::Answer {
            records: r.records.into_iter().map(Cow::Owned).collect(),
            additional: r.additional,
            wildcard,
        }
    }

    /// Records of the apex, owned by the query's spelling of it, with their additional data.
    fn at_apex(records: &'a [Record], qname: &Name, additional: Vec<Record>) -> Self {
        let Some(first) = records.first() else {
            return Outcome::NoData;
        };
        let records = if first.name.eq_case(qname) {
            records.iter().map(Cow::Borrowed).collect()
        } else {
            let owned = |r: &Record| {
                let mut r = r.clone();
                r.name = qname.clone();
                Cow::Owned(r)
            };
            records.iter().map(owned).collect()
        };
        Outcome::Answer {
            records,
            additional,
            wildcard: false,
        }
    }
}

/// An outcome and the zone it was found in (None when refused).
#[derive(Debug)]
pub struct Resolution<'a> {
    pub apex: Option<&'a Apex>,
    pub outcome: Outcome<'a>,
}

/// The answer to one question, as message sections, before protocol concerns (EDNS, truncation).
#[derive(Debug)]
pub struct Answer<'a> {
    pub rcode: ResponseCode,
    pub authoritative: bool,
    pub answers: Vec<Cow<'a, Record>>,
    pub authority: Vec<&'a Record>,
    pub additional: Vec<Record>,
}

impl Answer<'_> {
    /// No records: for errors and refusals.
    pub fn empty(rcode: ResponseCode) -> Self {
        Answer {
            rcode,
            authoritative: false,
            answers: vec![],
            authority: vec![],
            additional: vec![],
        }
    }
}

impl<'a> Resolution<'a> {
    /// The sections of the outcome: the one place the SOA goes to the authority section.
    pub fn into_answer(self) -> Answer<'a> {
        let Some(apex) = self.apex else {
            return Answer::empty(ResponseCode::Refused);
        };
        let mut ans = Answer::empty(ResponseCode::NoError);
        ans.authoritative = true;
        match self.outcome {
            Outcome::Answer {
                records,
                additional,
                ..
            } => {
                ans.answers = records;
                ans.additional = additional;
            }
            Outcome::NoData => ans.authority.push(&apex.soa),
            Outcome::NxDomain => {
                ans.rcode = ResponseCode::NXDomain;
                ans.authority.push(&apex.soa);
            }
            Outcome::Refused => return Answer::empty(ResponseCode::Refused),
        }
        ans
    }
}

impl Snapshot {
    /// Answers one question as message sections.
    pub fn lookup<'a>(&'a self, qname: &Name, qtype: RecordType) -> Answer<'a> {
        self.resolve(qname, qtype).into_answer()
    }

    /// Resolves one question. Answers are owned by `qname` as spelled (the query's case, as
    /// Knot and BIND answer), also when synthesised from a wildcard.
    pub fn resolve<'a>(&'a self, qname: &Name, qtype: RecordType) -> Resolution<'a> {
        let Some(apex) = self.zone_of(qname) else {
            return Resolution {
                apex: None,
                outcome: Outcome::Refused,
            };
        };
        Resolution {
            apex: Some(apex),
            outcome: self.solve(apex, qname, qtype),
        }
    }

    fn solve<'a>(&'a self, apex: &'a Apex, qname: &Name, qtype: RecordType) -> Outcome<'a> {
        if apex.name.eq_ignore_root(qname) {
            let (records, additional) = match qtype {
                RecordType::SOA | RecordType::ANY => (std::slice::from_ref(&apex.soa), vec![]),
                RecordType::NS => (&apex.ns[..], self.name_server_addresses(apex)),
                _ => (&[][..], vec![]),
            };
            return Outcome::at_apex(records, qname, additional);
        }
        let mut buf = [0u8; key::MAX];
        let Some(len) = key::encode(qname, &mut buf) else {
            return Outcome::NxDomain;
        };
        let qkey = &buf[..len];
        if let Some(node) = self.node(qkey) {
            return Outcome::rendered(node.answer(qname, self.ttl, qtype), false);
        }
        if let Some(service @ (label, transport, host)) = service_name(qkey) {
            if let Some(node) = self.node(host).filter(|n| n.has_service(label, transport)) {
                return Outcome::rendered(
                    node.answer_service(service, qname, self.ttl, qtype),
                    false,
                );
            }
        }
        // Longest wildcard first: walk up from the closest parent to the apex.
        let mut parent = key::parent(qkey);
        while let Some(p) = parent.filter(|p| p.len() >= apex.key.len()) {
            if let Some(node) = self.shard(p).wildcards.get(p) {
                return Outcome::rendered(node.answer(qname, self.ttl, qtype), true);
            }
            if *p == *apex.key {
                break;
            }
            parent = key::parent(p);
        }
        if self.is_ent(qkey) {
            Outcome::NoData
        } else {
            Outcome::NxDomain
        }
    }

    /// The addresses of the apex's name servers inside its own zone, for the additional section
    /// of its NS answer: the glue a resolver needs to reach them (RFC 1034 §4.3.2 step 6), as
    /// Knot adds it. Name servers in another zone get none, as in Knot, which answers each zone
    /// from its own data.
    fn name_server_addresses(&self, apex: &Apex) -> Vec<Record> {
        let mut out = vec![];
        for ns in &apex.ns {
            let RData::NS(NS(target)) = &ns.data else {
                continue;
            };
            if !self.zone_of(target).is_some_and(|z| std::ptr::eq(z, apex)) {
                continue;
            }
            let k = key::of(target);
            if let Some(node) = k.as_deref().and_then(|k| self.node(k)) {
                out.extend(node.addresses(target, self.ttl));
            }
        }
        out
    }

    /// An empty non-terminal: counted in the shards, or `_<proto>.<host>` of a host with ports.
    fn is_ent(&self, qkey: &[u8]) -> bool {
        self.shard(qkey).ents.contains_key(qkey)
            || proto_name(qkey)
                .and_then(|(transport, host)| Some(self.node(host)?.has_proto(transport)))
                .unwrap_or(false)
    }
}

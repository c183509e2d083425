//! The real `dig`, and its output parsed.

use std::net::SocketAddr;
use std::process::Command;

/// `dig` output, parsed.
#[derive(Debug, Default)]
pub struct Dig {
    pub status: String,
    pub flags: Vec<String>,
    pub question: Vec<String>,
    pub answer: Vec<Vec<String>>,
    pub authority: Vec<Vec<String>>,
    pub additional: Vec<Vec<String>>,
    pub edns_udp: Option<u16>,
    pub raw: String,
}

impl Dig {
    /// RDATA fields (after name, ttl, class, type) of answer records.
    pub fn answer_data(&self) -> Vec<String> {
        self.answer.iter().map(|r| r[4..].join(" ")).collect()
    }
}

/// What `server` answers to each (name, type) question, one comparable line each: the rcode and
/// the answers' data, sorted (the order of an RRset is not part of the answer).
pub fn answers(server: SocketAddr, questions: &[(&str, &str)]) -> Vec<String> {
    questions
        .iter()
        .map(|(name, t)| {
            let d = dig(server, &[name, t]);
            let mut data = d.answer_data();
            data.sort();
            format!("{name} {t}: {} {data:?}", d.status)
        })
        .collect()
}

/// Runs `dig @server -p port ARGS +norec` and parses its sections.
pub fn dig(server: SocketAddr, args: &[&str]) -> Dig {
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args([
            "-p",
            &server.port().to_string(),
            "+norec",
            "+time=3",
            "+tries=1",
        ])
        .args(args)
        .output()
        .expect("dig is installed (the test command installs bind9-dnsutils)");
    parse_dig(&String::from_utf8_lossy(&out.stdout))
}

pub fn parse_dig(raw: &str) -> Dig {
    let mut d = Dig {
        raw: raw.to_string(),
        ..Default::default()
    };
    let mut section = "";
    for line in raw.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            d.status = rest
                .split(',')
                .next()
                .unwrap_or_default()
                .trim()
                .to_string();
        }
        if let Some(rest) = line.strip_prefix(";; flags: ") {
            d.flags = rest
                .split(';')
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .map(String::from)
                .collect();
        }
        if let Some(rest) = line.split("udp: ").nth(1) {
            d.edns_udp = rest.trim().parse().ok();
        }
        match line {
            l if l.starts_with(";; QUESTION SECTION") => section = "q",
            l if l.starts_with(";; ANSWER SECTION") => section = "an",
            l if l.starts_with(";; AUTHORITY SECTION") => section = "au",
            l if l.starts_with(";; ADDITIONAL SECTION") => section = "ad",
            "" => section = "",
            l if l.starts_with(";;") => {}
            l => {
                let fields: Vec<String> = l.split_whitespace().map(String::from).collect();
                match section {
                    "q" => d.question.push(l.trim_start_matches(';').to_string()),
                    "an" => d.answer.push(fields),
                    "au" => d.authority.push(fields),
                    "ad" => d.additional.push(fields),
                    _ => {}
                }
            }
        }
    }
    d
}

/// The answer's RDATA, sorted.
pub fn sorted_data(d: &Dig) -> Vec<String> {
    let mut v = d.answer_data();
    v.sort();
    v
}

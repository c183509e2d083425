//! TSIG keys (RFC 8945) for zone transfers and NOTIFY: `NAME:ALGORITHM:BASE64-SECRET`, as BIND's
//! and Knot's `tsig-keygen`/`keymgr` print them. Signing and verifying are hickory's.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::{Name, TSigner};

/// Allowed clock difference between signer and verifier (RFC 8945 recommends 300 s).
pub const FUDGE: u16 = 300;

#[derive(Clone)]
pub struct TsigKey {
    pub name: Name,
    pub algorithm: TsigAlgorithm,
    secret: Vec<u8>,
}

// Never prints the secret (flags are logged at start).
impl fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TsigKey({} {:?})", self.name, self.algorithm)
    }
}

impl FromStr for TsigKey {
    type Err = String;

    fn from_str(raw: &str) -> Result<TsigKey, String> {
        let raw = raw.trim();
        let mut parts = raw.splitn(3, ':');
        let (Some(name), Some(alg), Some(secret)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err("expected NAME:ALGORITHM:BASE64-SECRET (e.g. xfr:hmac-sha256:…)".into());
        };
        let mut name = Name::from_ascii(name).map_err(|e| format!("key name {name:?}: {e}"))?;
        name.set_fqdn(true);
        let algorithm = match alg.to_ascii_lowercase().as_str() {
            "hmac-sha256" => TsigAlgorithm::HmacSha256,
            "hmac-sha384" => TsigAlgorithm::HmacSha384,
            "hmac-sha512" => TsigAlgorithm::HmacSha512,
            other => {
                return Err(format!(
                    "algorithm {other:?}: use hmac-sha256, hmac-sha384 or hmac-sha512"
                ))
            }
        };
        let secret = base64::engine::general_purpose::STANDARD
            .decode(secret)
            .map_err(|e| format!("secret of key {name}: not base64 ({e})"))?;
        if secret.is_empty() {
            return Err(format!("secret of key {name} is empty"));
        }
        Ok(TsigKey {
            name: name.to_lowercase(),
            algorithm,
            secret,
        })
    }
}

impl TsigKey {
    /// hickory's signer/verifier for this key.
    pub fn signer(&self) -> TSigner {
        TSigner::new(
            self.secret.clone(),
            self.algorithm.clone(),
            self.name.clone(),
            FUDGE,
        )
        .expect("algorithms accepted by the parser are supported")
    }

    /// The key in the form Knot's configuration wants: (name, algorithm, base64 secret).
    pub fn knot_form(&self) -> (String, &'static str, String) {
        let alg = match self.algorithm {
            TsigAlgorithm::HmacSha384 => "hmac-sha384",
            TsigAlgorithm::HmacSha512 => "hmac-sha512",
            _ => "hmac-sha256",
        };
        (
            self.name.to_ascii(),
            alg,
            base64::engine::general_purpose::STANDARD.encode(&self.secret),
        )
    }
}

/// Reads `--tsig-key-file`: one key in the flag's form (surrounding white space ignored).
pub fn read_key_file(path: &std::path::Path) -> anyhow::Result<TsigKey> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read TSIG key file {}: {e}", path.display()))?;
    text.parse()
        .map_err(|e| anyhow::anyhow!("TSIG key file {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_form_and_refuses_bad_ones() {
        let k: TsigKey = "xfr:hmac-sha256:c2VjcmV0LXNlY3JldC1zZWNyZXQ="
            .parse()
            .unwrap();
        assert_eq!(k.name.to_ascii(), "xfr.");
        assert_eq!(k.algorithm, TsigAlgorithm::HmacSha256);
        assert_eq!(k.knot_form().2, "c2VjcmV0LXNlY3JldC1zZWNyZXQ=");
        assert!(!format!("{k:?}").contains("c2Vj"), "Debug hides the secret");
        for bad in [
            "xfr:hmac-sha256",
            "xfr:hmac-md5:c2VjcmV0",
            "xfr:hmac-sha256:not base64!",
            "xfr:hmac-sha256:",
        ] {
            assert!(bad.parse::<TsigKey>().is_err(), "{bad}");
        }
    }
}

//! Names as hash keys: the lower-cased wire-format labels without the root
//! (`\x07httpbin\x03bar\x06global`). A suffix that starts at a label boundary is the key of an
//! ancestor, so walking up towards the apex slices instead of allocating, and a key takes a
//! fraction of the memory of a hickory `Name` (which keeps ~80 bytes inline).

use std::hash::Hasher;
use std::sync::Arc;

use hickory_proto::rr::Name;
use smallvec::SmallVec;

/// A shared key: one allocation per name, also pointed at by the SRV and PTR data that target it.
pub type Key = Arc<[u8]>;

/// The longest key (a name is at most 255 bytes on the wire, root label included).
pub const MAX: usize = 255;

/// Writes the lower-cased labels of `name` into `buf`; None when they do not fit.
pub fn encode(name: &Name, buf: &mut [u8; MAX]) -> Option<usize> {
    let mut len = 0;
    for label in name.iter() {
        let end = len + 1 + label.len();
        if end > MAX {
            return None;
        }
        buf[len] = label.len() as u8;
        for (d, s) in buf[len + 1..end].iter_mut().zip(label) {
            *d = s.to_ascii_lowercase();
        }
        len = end;
    }
    Some(len)
}

pub fn of(name: &Name) -> Option<Key> {
    let mut buf = [0u8; MAX];
    encode(name, &mut buf).map(|n| Arc::from(&buf[..n]))
}

/// The key of a host as the registry holds it (lower-case, dots, no trailing dot); None when it
/// is not a valid name. Cheaper than going through a `Name`, which matters at 100,000 hosts.
pub fn of_host(host: &str) -> Option<Key> {
    if host.is_empty() || host.len() + 1 > MAX {
        return None;
    }
    let mut v = Vec::with_capacity(host.len() + 1);
    for label in host.split('.') {
        if label.is_empty() || label.len() > 63 {
            return None;
        }
        v.push(label.len() as u8);
        v.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
    }
    Some(v.into())
}

/// The key of an address's reverse name (`d.c.b.a.in-addr.arpa`, nibbles for IPv6).
pub fn reverse(ip: std::net::IpAddr) -> Key {
    let mut v = Vec::with_capacity(74);
    let mut label = |s: &[u8]| {
        v.push(s.len() as u8);
        v.extend_from_slice(s);
    };
    match ip {
        std::net::IpAddr::V4(a) => {
            for o in a.octets().iter().rev() {
                let digits = [b'0' + o / 100, b'0' + o / 10 % 10, b'0' + o % 10];
                let skip = if *o >= 100 {
                    0
                } else if *o >= 10 {
                    1
                } else {
                    2
                };
                label(&digits[skip..]);
            }
            label(b"in-addr");
        }
        std::net::IpAddr::V6(a) => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            for o in a.octets().iter().rev() {
                label(&[HEX[usize::from(o & 0xf)]]);
                label(&[HEX[usize::from(o >> 4)]]);
            }
            label(b"ip6");
        }
    }
    label(b"arpa");
    v.into()
}

/// The key of the parent name; None for the root (the empty key).
pub fn parent(key: &[u8]) -> Option<&[u8]> {
    let first = usize::from(*key.first()?);
    key.get(1 + first..)
}

/// Whether `key` is `ancestor` or below it (compared at label boundaries only).
pub fn is_at_or_below(mut key: &[u8], ancestor: &[u8]) -> bool {
    loop {
        if key == ancestor {
            return true;
        }
        if key.len() <= ancestor.len() {
            return false;
        }
        match parent(key) {
            Some(p) => key = p,
            None => return false,
        }
    }
}

/// `label` prepended to `key` (None when too long or the label is not 1..=63 bytes).
pub fn child(label: &[u8], key: &[u8]) -> Option<Key> {
    if label.is_empty() || label.len() > 63 || 1 + label.len() + key.len() > MAX {
        return None;
    }
    let mut v = Vec::with_capacity(1 + label.len() + key.len());
    v.push(label.len() as u8);
    v.extend(label.iter().map(u8::to_ascii_lowercase));
    v.extend_from_slice(key);
    Some(v.into())
}

/// The name a key stands for (fully qualified).
pub fn to_name(key: &[u8]) -> Name {
    let mut labels = Vec::new();
    let mut k = key;
    while let Some(p) = parent(k) {
        labels.push(&k[1..k.len() - p.len()]);
        k = p;
    }
    let mut name = Name::from_labels(labels).unwrap_or_else(|_| Name::root());
    name.set_fqdn(true);
    name
}

/// The host name a key stands for, as the registry writes it (`httpbin.bar.global`).
pub fn to_host(key: &[u8]) -> String {
    let mut out = String::with_capacity(key.len());
    let mut k = key;
    while let Some(p) = parent(k) {
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(&String::from_utf8_lossy(&k[1..k.len() - p.len()]));
        k = p;
    }
    out
}

/// The labels of the name `prefix` (leftmost label first) then `key` spell, rightmost first.
/// Two such lists compare (`Ord` of slices: label bytes, then length; then the label count) in
/// RFC 4034's canonical order, as hickory's `Name` does: a transfer sorts keys with it and
/// never makes the names.
pub fn labels_rev<'a>(prefix: &[&'a [u8]], key: &'a [u8]) -> SmallVec<[&'a [u8]; 12]> {
    let mut labels: SmallVec<[&[u8]; 12]> = prefix.iter().copied().collect();
    let mut k = key;
    while let Some(p) = parent(k) {
        labels.push(&k[1..k.len() - p.len()]);
        k = p;
    }
    labels.reverse();
    labels
}

/// FNV-1a of the key: picks the shard a name lives in.
pub fn hash(key: &[u8]) -> u64 {
    let mut h = fnv::FnvHasher::default();
    h.write(key);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_parent_and_ancestry() {
        let name = Name::from_ascii("HttpBin.bar.global.").unwrap();
        let k = of(&name).unwrap();
        assert_eq!(&k[..], b"\x07httpbin\x03bar\x06global");
        assert_eq!(to_name(&k).to_ascii(), "httpbin.bar.global.");
        assert_eq!(parent(&k), Some(&b"\x03bar\x06global"[..]));
        assert!(is_at_or_below(&k, b"\x06global"));
        assert!(is_at_or_below(&k, &k));
        assert!(!is_at_or_below(b"\x06global", &k));
        // Same bytes, not at a label boundary: not an ancestor.
        assert!(!is_at_or_below(b"\x08x\x06global", b"\x06global"));
        assert_eq!(parent(b""), None);
        assert_eq!(of_host("httpbin.bar.global").unwrap(), k);
        assert_eq!(to_host(&k), "httpbin.bar.global");
        assert_eq!(of_host("bad..name"), None);
        for ip in ["240.10.1.2", "fd00:10::ab:1"] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            let mut rev = Name::from(ip);
            rev.set_fqdn(true);
            assert_eq!(reverse(ip), of(&rev).unwrap(), "{ip}");
        }
        let srv = child(b"_tcp", &k).unwrap();
        assert_eq!(to_name(&srv).to_ascii(), "_tcp.httpbin.bar.global.");
    }

    /// The order of [`labels_rev`] is hickory's `Name` order, on names that differ in the
    /// places canonical order is about: a label that is a prefix of another, `-`, digits and
    /// `_` around letters, `*`, more labels below a name, other parents.
    #[test]
    fn labels_rev_sorts_as_names_do() {
        let names = [
            "global",
            "a.global",
            "a-b.global",
            "a0.global",
            "ab.global",
            "_http._tcp.a.global",
            "0.a.global",
            "z.a.global",
            "*.a.global",
            "b.global",
            "_tcp.b.global",
            "a.b.global",
            "x.y.global",
            "y.global",
            "1.10.in-addr.arpa",
            "10.in-addr.arpa",
            "2.10.in-addr.arpa",
        ];
        let keys: Vec<Key> = names
            .iter()
            .map(|n| of(&Name::from_ascii(n).unwrap()).unwrap())
            .collect();
        for a in &keys {
            for b in &keys {
                let by_name = to_name(a).cmp(&to_name(b));
                assert_eq!(
                    labels_rev(&[], a).cmp(&labels_rev(&[], b)),
                    by_name,
                    "{} vs {}",
                    to_name(a),
                    to_name(b)
                );
                // With a prefix: `_http._tcp.<a>` against `<b>`.
                let prefixed = Name::from_ascii("_http._tcp")
                    .unwrap()
                    .append_domain(&to_name(a))
                    .unwrap();
                assert_eq!(
                    labels_rev(&[b"_http", b"_tcp"], a).cmp(&labels_rev(&[], b)),
                    prefixed.cmp(&to_name(b)),
                    "{prefixed} vs {}",
                    to_name(b)
                );
            }
        }
    }
}

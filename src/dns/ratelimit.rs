//! Response rate limiting (`--rate-limit N`): at most N UDP responses a second to one client
//! prefix (/24 for IPv4, /56 for IPv6), as Knot's and BIND's RRL; past that, every K-th
//! response (`--rate-limit-slip K`) is sent truncated and empty, so that a real client behind a
//! spoofed flood retries over TCP, and the others are dropped. TCP is never limited: a TCP
//! client has shown its address is its own.
//!
//! Memory is fixed: a table of buckets indexed by a keyed hash of the prefix. A prefix that
//! lands on a bucket held by another takes it over with a full allowance, so a collision can
//! only let a client through, never limit an innocent one.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Buckets in the table: a few hundred KiB, enough that distinct busy prefixes rarely share.
const BUCKETS: usize = 1 << 14;

/// What to do with one UDP response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateDecision {
    Send,
    /// Send it truncated (TC, no records): the client retries over TCP.
    Slip,
    Drop,
}

#[derive(Clone, Copy, Default)]
struct Bucket {
    prefix: u128,
    /// Responses allowed now, in thousandths (refilled at `rate` a second, up to `rate`).
    tokens: u64,
    /// Milliseconds since the limiter's start at the last refill.
    at: u64,
    /// Responses limited since the prefix took the bucket: every `slip`-th is slipped.
    limited: u64,
    used: bool,
}

pub struct RateLimiter {
    rate: u64,
    slip: u64,
    start: Instant,
    hasher: RandomState,
    buckets: Box<[Mutex<Bucket>]>,
}

impl RateLimiter {
    /// `rate` responses a second per prefix (at least 1); `slip` 0 drops every limited
    /// response, 1 slips every one, K every K-th.
    pub fn new(rate: u32, slip: u32) -> RateLimiter {
        RateLimiter {
            rate: u64::from(rate.max(1)),
            slip: u64::from(slip),
            start: Instant::now(),
            // Keyed per process: which prefixes share a bucket cannot be chosen from outside.
            hasher: RandomState::new(),
            buckets: (0..BUCKETS).map(|_| Mutex::default()).collect(),
        }
    }

    /// The verdict for one more response to `client`.
    pub fn check(&self, client: IpAddr) -> RateDecision {
        let now = self.start.elapsed().as_millis() as u64;
        self.check_at(client, now)
    }

    fn check_at(&self, client: IpAddr, now_ms: u64) -> RateDecision {
        let prefix = prefix_of(client);
        let index = (self.hasher.hash_one(prefix) as usize) & (BUCKETS - 1);
        let full = self.rate * 1000;
        let mut b = self.buckets[index]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !b.used || b.prefix != prefix {
            *b = Bucket {
                prefix,
                tokens: full,
                at: now_ms,
                limited: 0,
                used: true,
            };
        }
        let elapsed = now_ms.saturating_sub(b.at);
        // rate/s is rate thousandths a millisecond.
        b.tokens = (b.tokens + elapsed * self.rate).min(full);
        b.at = now_ms;
        if b.tokens >= 1000 {
            b.tokens -= 1000;
            return RateDecision::Send;
        }
        b.limited += 1;
        if self.slip > 0 && b.limited.is_multiple_of(self.slip) {
            RateDecision::Slip
        } else {
            RateDecision::Drop
        }
    }
}

/// The client's prefix as one number: the /24 of an IPv4 address (IPv4-mapped IPv6 included),
/// the /56 of an IPv6 one, tagged so that the two families never meet.
fn prefix_of(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => (1 << 64) | u128::from(u32::from(v4) >> 8),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => prefix_of(IpAddr::V4(v4)),
            None => (2 << 64) | (u128::from(v6) >> 72),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_prefix_gets_its_rate_then_every_kth_is_slipped() {
        let l = RateLimiter::new(3, 2);
        let c = ip("10.0.0.1");
        let got: Vec<RateDecision> = (0..9).map(|_| l.check_at(c, 0)).collect();
        use RateDecision::*;
        assert_eq!(got, [Send, Send, Send, Drop, Slip, Drop, Slip, Drop, Slip]);
        // Same /24: same allowance. Another /24: its own.
        assert_eq!(l.check_at(ip("10.0.0.200"), 0), Drop);
        assert_eq!(l.check_at(ip("10.0.1.1"), 0), Send);
        // A second later the allowance is back, never more than one second's worth.
        let later: Vec<RateDecision> = (0..4).map(|_| l.check_at(c, 5000)).collect();
        assert_eq!(later, [Send, Send, Send, Slip]);
        // A third of a second buys one response at 3/s.
        assert_eq!(l.check_at(c, 5334), Send);
        assert_eq!(l.check_at(c, 5334), Drop);
    }

    #[test]
    fn slip_zero_drops_all_and_one_slips_all() {
        let none = RateLimiter::new(1, 0);
        let all = RateLimiter::new(1, 1);
        let c = ip("fd00::1");
        for l in [&none, &all] {
            assert_eq!(l.check_at(c, 0), RateDecision::Send);
        }
        for _ in 0..5 {
            assert_eq!(none.check_at(c, 0), RateDecision::Drop);
            assert_eq!(all.check_at(c, 0), RateDecision::Slip);
        }
    }

    #[test]
    fn prefixes_are_slash_24_and_slash_56() {
        assert_eq!(prefix_of(ip("192.0.2.1")), prefix_of(ip("192.0.2.254")));
        assert_ne!(prefix_of(ip("192.0.2.1")), prefix_of(ip("192.0.3.1")));
        assert_eq!(
            prefix_of(ip("2001:db8:0:ff::1")),
            prefix_of(ip("2001:db8:0:1::2"))
        );
        assert_ne!(
            prefix_of(ip("2001:db8:0:100::1")),
            prefix_of(ip("2001:db8:0:1::2"))
        );
        assert_eq!(
            prefix_of(ip("::ffff:192.0.2.9")),
            prefix_of(ip("192.0.2.1"))
        );
    }
}

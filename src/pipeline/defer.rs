//! Claims deferred to another instance: while a shared store names another instance as the one
//! that claims first, a host that needs a new VIP waits a grace period for that instance's claim
//! to arrive (and be adopted) instead of racing it for the same address. When the grace ends
//! without it (that instance is gone, or does not see the host), this instance claims itself.
//! Time is passed in, so the rules are tested without waiting.

use crate::alloc::Claim;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How a host that waited stopped waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Its VIP came from another instance's claim.
    Adopted,
    /// The grace ran out (or this instance became the claimer): claimed here.
    Claimed,
    /// It no longer needs a VIP.
    Dropped,
}

#[derive(Default)]
pub struct Deferrals {
    /// The store's answer for this pass: None claims at once.
    grace: Option<Duration>,
    /// Hosts waiting for another instance's claim → when their grace ends.
    waiting: HashMap<String, Instant>,
    /// The last time [`Deferrals::due`] handed out the hosts due: those are not due again (a
    /// pass that failed is retried as any failed pass is, not in a loop).
    woken: Option<Instant>,
}

impl Deferrals {
    /// The policy for the pass about to run (the store's `claim_defer`).
    pub fn set_grace(&mut self, grace: Option<Duration>) {
        self.grace = grace;
    }

    /// Whether `host`, which needs a new VIP, may claim one at `now`: always when nothing
    /// defers, else once its grace has run out. A host not yet waiting may not.
    pub fn may_claim(&self, host: &str, now: Instant) -> Claim {
        let now_ok = match (self.grace, self.waiting.get(host)) {
            (None, _) => true,
            (Some(_), Some(due)) => now >= *due,
            (Some(_), None) => false,
        };
        if now_ok {
            Claim::Now
        } else {
            Claim::Defer
        }
    }

    /// `host` needed a VIP and was not allowed to claim one: it waits from `now` (if it was not
    /// waiting already). Returns whether it started waiting just now.
    pub fn start(&mut self, host: &str, now: Instant) -> bool {
        let grace = self.grace.unwrap_or_default();
        if self.waiting.contains_key(host) {
            return false;
        }
        self.waiting.insert(host.to_string(), now + grace);
        true
    }

    /// A host that was looked at and is not deferred (any more): ends its wait, if any, and says
    /// how. `has_vip`: it has a VIP now; `claimed_here`: this instance allocated it.
    pub fn end(&mut self, host: &str, has_vip: bool, claimed_here: bool) -> Option<Ended> {
        self.waiting.remove(host)?;
        Some(match (has_vip, claimed_here) {
            (true, true) => Ended::Claimed,
            (true, false) => Ended::Adopted,
            (false, _) => Ended::Dropped,
        })
    }

    pub fn is_waiting(&self, host: &str) -> bool {
        self.waiting.contains_key(host)
    }

    /// When the next grace runs out (not counting those already handed out by `due`).
    pub fn next_due(&self) -> Option<Instant> {
        self.waiting
            .values()
            .filter(|due| self.woken.is_none_or(|w| **due > w))
            .min()
            .copied()
    }

    /// The waiting hosts whose grace has run out at `now` and that were not handed out before
    /// (they stay waiting until a pass claims for them); with `all`, every waiting host (the
    /// policy changed).
    pub fn due(&mut self, now: Instant, all: bool) -> Vec<String> {
        let woken = self.woken;
        let hosts = self
            .waiting
            .iter()
            .filter(|(_, due)| all || (**due <= now && woken.is_none_or(|w| **due > w)))
            .map(|(h, _)| h.clone())
            .collect();
        if !all {
            self.woken = Some(now);
        }
        hosts
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(2);

    #[test]
    fn nothing_defers_without_a_grace() {
        let mut d = Deferrals::default();
        let t = Instant::now();
        assert_eq!(d.may_claim("a.x.global", t), Claim::Now);
        d.set_grace(Some(GRACE));
        assert_eq!(d.may_claim("a.x.global", t), Claim::Defer);
        // Back to no grace (this instance became the claimer): claims at once, even a waiter.
        d.start("a.x.global", t);
        d.set_grace(None);
        assert_eq!(d.may_claim("a.x.global", t), Claim::Now);
    }

    #[test]
    fn a_waiting_host_claims_once_its_grace_ran_out() {
        let mut d = Deferrals::default();
        d.set_grace(Some(GRACE));
        let t0 = Instant::now();
        assert!(d.start("a.x.global", t0));
        // Seen again later: the wait still counts from the first time.
        assert!(!d.start("a.x.global", t0 + Duration::from_secs(1)));
        assert_eq!(d.next_due(), Some(t0 + GRACE));
        assert_eq!(
            d.may_claim("a.x.global", t0 + Duration::from_millis(1999)),
            Claim::Defer
        );
        assert!(d.due(t0 + Duration::from_millis(1999), false).is_empty());
        assert_eq!(d.may_claim("a.x.global", t0 + GRACE), Claim::Now);
        assert_eq!(d.due(t0 + GRACE, false), vec!["a.x.global".to_string()]);
        // Handed out once: a pass that fails does not make it due again at once.
        assert_eq!(d.next_due(), None);
        assert!(d.due(t0 + GRACE * 2, false).is_empty());
        assert_eq!(d.end("a.x.global", true, true), Some(Ended::Claimed));
        assert!(d.is_empty());
        assert_eq!(d.next_due(), None);
    }

    #[test]
    fn waits_end_by_adoption_or_drop_and_only_once() {
        let mut d = Deferrals::default();
        d.set_grace(Some(GRACE));
        let t0 = Instant::now();
        d.start("a.x.global", t0);
        d.start("b.x.global", t0 + Duration::from_secs(1));
        assert_eq!(d.next_due(), Some(t0 + GRACE));
        assert_eq!(
            d.due(t0, true).len(),
            2,
            "every waiter when the policy changes"
        );
        assert_eq!(d.end("a.x.global", true, false), Some(Ended::Adopted));
        assert_eq!(d.end("a.x.global", true, false), None);
        assert_eq!(d.next_due(), Some(t0 + Duration::from_secs(3)));
        assert_eq!(d.end("b.x.global", false, false), Some(Ended::Dropped));
        // A host that never waited ends nothing.
        assert_eq!(d.end("c.x.global", true, true), None);
        assert!(d.is_empty());
    }
}

//! Which list a ServiceEntry watch starts from (`--kube-list`), and a log line saying which one
//! it was and how long it took.
//!
//! A paged list (pages of 500, what kube-runtime asks for by default) is a quorum read from etcd:
//! 200 requests in a row for 100,000 objects, each waiting for etcd. The apiserver keeps every
//! object in its watch cache anyway and serves the whole list from there when asked for
//! `resourceVersion=0` without a limit: many times faster, and it spares etcd on every re-list
//! (after a watch expired with 410 Gone, after a failure). kube-runtime drops
//! `resourceVersion=0` from a list that has a limit (`ListParams::populate_qp`), so the cache list
//! must ask for no page size at all.
//!
//! The cache list can fail where pages do not: a loaded apiserver may not finish one response
//! of every object within its request timeout (HTTP 504 after a minute). After a cache list fails,
//! the following lists are paged until one of them succeeds; the list after that asks the cache
//! again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::ValueEnum;
use kube::runtime::watcher::{self, Event};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::source::metrics::{ClusterLabels, ListLabels};

/// `--kube-list`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ListFrom {
    /// The whole list from the apiserver's watch cache; paged after a failure.
    Cache,
    /// Always pages of 500 from etcd (consistent reads).
    Paged,
}

impl ListFrom {
    fn name(self) -> &'static str {
        match self {
            ListFrom::Cache => "cache",
            ListFrom::Paged => "paged",
        }
    }

    /// The watcher's configuration for a list of this kind (its watch is the same).
    fn config(self, watch_timeout_secs: u32) -> watcher::Config {
        let cfg = watcher::Config::default().timeout(watch_timeout_secs);
        match self {
            ListFrom::Cache => watcher::Config {
                page_size: None,
                ..cfg
            }
            .any_semantic(),
            ListFrom::Paged => cfg,
        }
    }
}

/// The list choice of one cluster's watch, across its attempts.
pub struct Lists {
    mode: ListFrom,
    /// Set when a cache list failed; cleared when a paged list then succeeded.
    cache_failed: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

impl Lists {
    pub fn new(mode: ListFrom, metrics: Arc<Metrics>) -> Lists {
        Lists {
            mode,
            cache_failed: Arc::default(),
            metrics,
        }
    }

    /// The list of the next attempt, its watcher configuration, and what watches it.
    pub fn next(&self, cluster: &str, watch_timeout_secs: u32) -> (watcher::Config, Listing) {
        let from = match self.mode {
            ListFrom::Cache if self.cache_failed.load(Ordering::Relaxed) => ListFrom::Paged,
            mode => mode,
        };
        let listing = Listing {
            cluster: cluster.to_string(),
            from,
            started: Instant::now(),
            objects: 0,
            done: false,
            cache_failed: self.cache_failed.clone(),
            metrics: self.metrics.clone(),
        };
        (from.config(watch_timeout_secs), listing)
    }
}

/// Follows one attempt's events until its list is complete: logs it, and records a failed cache
/// list (an error, or an attempt dropped before the list was complete) for the next attempt.
pub struct Listing {
    cluster: String,
    from: ListFrom,
    started: Instant,
    objects: usize,
    done: bool,
    cache_failed: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

impl Listing {
    fn count(&self, result: &'static str) {
        let labels = ListLabels {
            cluster: self.cluster.clone(),
            list: self.from.name(),
            result,
        };
        self.metrics.source.lists.get_or_create(&labels).inc();
    }

    pub fn see<K, E: std::fmt::Display>(&mut self, ev: &Result<Event<K>, E>) {
        if self.done {
            return;
        }
        match ev {
            Ok(Event::InitApply(_)) => self.objects += 1,
            Ok(Event::InitDone) => {
                self.done = true;
                if self.from == ListFrom::Paged {
                    self.cache_failed.store(false, Ordering::Relaxed);
                }
                self.count("ok");
                let cluster = ClusterLabels {
                    cluster: self.cluster.clone(),
                };
                let took = self.started.elapsed().as_secs_f64();
                self.metrics
                    .source
                    .list_seconds
                    .get_or_create(&cluster)
                    .set(took);
                info!(
                    cluster = %self.cluster,
                    list = %self.from.name(),
                    objects = self.objects,
                    seconds = %format_args!("{:.2}", self.started.elapsed().as_secs_f64()),
                    "listed ServiceEntries"
                );
            }
            Ok(_) => {}
            Err(e) => {
                self.done = true;
                self.failed(&e.to_string());
            }
        }
    }

    fn failed(&self, why: &str) {
        self.count("failed");
        if self.from != ListFrom::Cache {
            return;
        }
        self.cache_failed.store(true, Ordering::Relaxed);
        warn!(
            cluster = %self.cluster,
            seconds = %format_args!("{:.2}", self.started.elapsed().as_secs_f64()),
            reason = %why,
            "the list from the apiserver's watch cache failed; listing in pages from etcd until one succeeds"
        );
    }
}

impl Drop for Listing {
    fn drop(&mut self) {
        // An attempt ended before its list was complete without an error of its own (the
        // apiserver stopped answering: the version probe ended it).
        if !self.done {
            self.failed("the attempt ended before the list was complete");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(l: &mut Listing, objects: usize, ok: bool) {
        l.see::<(), &str>(&Ok(Event::Init));
        for _ in 0..objects {
            l.see::<(), &str>(&Ok(Event::InitApply(())));
        }
        if ok {
            l.see::<(), &str>(&Ok(Event::InitDone));
        } else {
            l.see::<(), &str>(&Err("HTTP 504"));
        }
    }

    fn from(cfg: &watcher::Config) -> ListFrom {
        if cfg.list_semantic == watcher::ListSemantic::Any && cfg.page_size.is_none() {
            ListFrom::Cache
        } else {
            assert_eq!(cfg.list_semantic, watcher::ListSemantic::MostRecent);
            assert_eq!(cfg.page_size, Some(500));
            ListFrom::Paged
        }
    }

    /// How many lists of cluster c1 the metric counted, by where from and result.
    fn counted(m: &Metrics, list: &'static str, result: &'static str) -> u64 {
        let labels = ListLabels {
            cluster: "c1".into(),
            list,
            result,
        };
        m.source.lists.get_or_create(&labels).get()
    }

    #[test]
    fn after_a_failed_cache_list_lists_are_paged_until_one_succeeds() {
        let metrics = Arc::new(Metrics::new());
        let lists = Lists::new(ListFrom::Cache, metrics.clone());
        let (cfg, mut l) = lists.next("c1", 60);
        assert_eq!(from(&cfg), ListFrom::Cache);
        assert_eq!(cfg.timeout, Some(60));
        list(&mut l, 3, false);
        drop(l);
        // Failed paged lists keep the next one paged.
        for _ in 0..2 {
            let (cfg, mut l) = lists.next("c1", 60);
            assert_eq!(from(&cfg), ListFrom::Paged);
            list(&mut l, 0, false);
        }
        let (cfg, mut l) = lists.next("c1", 60);
        assert_eq!(from(&cfg), ListFrom::Paged);
        list(&mut l, 5, true);
        // Errors of the watch after a complete list change nothing.
        l.see::<(), &str>(&Err("410 Gone"));
        drop(l);
        let (cfg, _) = lists.next("c1", 60);
        assert_eq!(from(&cfg), ListFrom::Cache);
        // Counted as they went: one cache list failed, two paged failed, one paged served (the
        // last cache attempt, dropped unused above, failed too).
        assert_eq!(counted(&metrics, "cache", "failed"), 2);
        assert_eq!(counted(&metrics, "paged", "failed"), 2);
        assert_eq!(counted(&metrics, "paged", "ok"), 1);
        assert_eq!(counted(&metrics, "cache", "ok"), 0);
        let took = metrics.source.list_seconds.get_or_create(&ClusterLabels {
            cluster: "c1".into(),
        });
        assert!(took.get() >= 0.0);
    }

    #[test]
    fn a_cache_list_dropped_before_it_is_complete_counts_as_failed() {
        let metrics = Arc::new(Metrics::new());
        let lists = Lists::new(ListFrom::Cache, metrics.clone());
        let (_, mut l) = lists.next("c1", 60);
        l.see::<(), &str>(&Ok(Event::Init));
        drop(l);
        assert_eq!(from(&lists.next("c1", 60).0), ListFrom::Paged);
        // A complete cache list is not a failure when its attempt ends later.
        let lists = Lists::new(ListFrom::Cache, metrics.clone());
        let (_, mut l) = lists.next("c1", 60);
        list(&mut l, 1, true);
        drop(l);
        // The dropped cache list, and the paged attempt made above and dropped unused.
        assert_eq!(counted(&metrics, "cache", "ok"), 1);
        assert_eq!(counted(&metrics, "cache", "failed"), 1);
        assert_eq!(counted(&metrics, "paged", "failed"), 1);
        assert_eq!(from(&lists.next("c1", 60).0), ListFrom::Cache);
    }

    #[test]
    fn paged_mode_never_asks_the_cache() {
        let metrics = Arc::new(Metrics::new());
        let lists = Lists::new(ListFrom::Paged, metrics.clone());
        for ok in [false, true, false] {
            let (cfg, mut l) = lists.next("c1", 60);
            assert_eq!(from(&cfg), ListFrom::Paged);
            list(&mut l, 1, ok);
        }
    }
}

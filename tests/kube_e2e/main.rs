//! End-to-end tests of the Kubernetes part against REAL kube-apiservers (v1.20.2 + etcd, on
//! 127.0.0.1 only), brought up by the harness in tests/support/kube_cluster.rs. The real
//! `globaldns` binary runs against them; answers are checked over DNS.
//!
//! The tests take one lock (`kube_cluster::serial`) and run one after the other: each brings its
//! own clusters up (about 5 s each) and down, and timing assertions (propagation within a second)
//! need a quiet machine. One module per concern.

#[path = "../common/mod.rs"]
mod common;
#[path = "../support/istio_model.rs"]
mod istio_model;
#[path = "../support/kube_cluster.rs"]
mod kube_cluster;
#[path = "../support/store_battery.rs"]
mod store_battery;

mod claimer;
mod lists;
mod propagation;
mod proxies;
mod sources;
mod spec_write_back;
mod store;
mod write_back;

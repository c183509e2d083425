//! globaldns: authoritative DNS for `<service>.<namespace>.global` names of Istio multi-cluster
//! meshes. Data flows one way: sources → registry → allocator → zone snapshot → DNS answers.

pub mod admin;
pub mod alloc;
pub mod background;
pub mod config;
pub mod dns;
pub mod engine;
pub mod fastpath;
pub mod grpc;
pub mod health;
pub mod host_view;
pub mod input;
pub mod kube;
pub mod memory;
pub mod metrics;
pub mod notify;
pub mod pipeline;
pub mod published;
pub mod registry;
pub mod report;
pub mod reports;
pub mod routing;
pub mod secondary;
pub mod serial_floor;
pub mod serviceentry;
pub mod source;
pub mod tsig;
pub mod zone;

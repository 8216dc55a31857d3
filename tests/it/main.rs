//! The integration tests: one binary, so the crate links once.
//!
//! Tests here run against real servers on loopback started by
//! `scripts/stack/up` (read through [`support::stack`]) and against the built
//! `deploy-action` binary run the way the runner runs it.

mod support;

mod act;
mod after_switch;
mod analysis;
mod binary;
mod deploy;
mod docs;
mod fleet;
mod front_doors;
mod github;
mod host_prep;
mod hosts;
mod iam;
mod image;
mod instance_connect;
mod kubernetes;
mod latency;
mod leak;
mod notify;
mod recorded;
mod safety;
mod ssm;

//! deploy-action: a GitHub container action that ships a container image to
//! production safely.
//!
//! # Layout
//!
//! - [`inputs`] — the runner's environment (`INPUT_*`, `GITHUB_*`) read with
//!   envy and validated into typed values; no network. `inputs/validate/`
//!   is split by area (hosts, kubernetes, material, rules), each with its
//!   unit tests built on `inputs::given::Given`.
//! - [`runner`] — the runner protocol: log groups, annotations, masks, step
//!   outputs, job summary, relayed remote output. [`redact`] sits under it.
//! - [`secrets`] — AWS SSM Parameter Store, masked on arrival.
//! - [`github`] — GitHub Deployments and statuses.
//! - [`notify`] — Slack and generic webhooks told of start, success,
//!   failure and rollback; retried, bounded, redacted, never fatal.
//! - [`plan`] — pure: inputs → what will be done (printed by `mode: plan`).
//! - [`pipeline`] — stages, deadlines, the fleet, rollback, cancellation,
//!   the final status (`Ended::status`, one mapping for every target).
//!   `pipeline/deploy/` is a run's stages: `connect`, `material`, `record`
//!   (the GitHub record begun and finished), `units` (the hosts' discover,
//!   connect, lock and fleet, or the cluster), `finish`,
//!   each taking the run's context (`deploy::Ctx`: inputs, runner,
//!   cancellation, signal, GitHub record, timeline) once;
//!   `pipeline/fleet/` runs the strategy's phases over the hosts.
//! - [`strategy`] — the order of steps for blue-green, rolling and canary:
//!   one list of phases per strategy. The hosts' fleet runs it over the
//!   hosts; a cluster's blue-green runs the same list over the one unit a
//!   cluster is (`targets/kubernetes/bluegreen/run.rs` does each step), and
//!   `mode: plan` prints it. A cluster's rolling update and canary keep
//!   their own order for now (see [`strategy`]).
//! - [`health`] — health-check loops over [`targets::Target::probe`], and
//!   the hosts' sources of the observe window (the front door, nginx's log).
//! - [`analysis`] — what users see during the observe window: CloudWatch
//!   alarms and a Prometheus query, read at most once per interval for
//!   every caller, every reading kept for the summary.
//! - [`smoke`] — the `smoke-tests`, before and after the switch.
//! - [`probe`] — what a check sends and gets back (`Probe`, `Via`, a smoke
//!   `Request`): the leaf that targets, health and smoke share.
//! - [`targets`] — the mechanics: `hosts` (SSH, Docker, nginx), `ec2`
//!   (discovery, then hosts), `kubernetes` (server-side apply, kubectl's
//!   rollout verdict by watch, `rollout undo`; it takes the whole deploy,
//!   a file or folder per strategy: `rolling.rs`, `bluegreen/`, `canary/`,
//!   each flow taking `kubernetes::Cluster` (client, spec, runner,
//!   cancellation) once; a canary's traffic back ends one file each under
//!   `traffic/` behind `traffic::Router`; its Deployments' availability as
//!   the observe window's source). `targets::unit` is how every unit ends
//!   (`Unit`, `Outcome`), for both targets.
//!   `targets::observe::window` is the one observe window of every target:
//!   its sources and the analysis read each round, the first failure ends
//!   it. `targets::wayback` is the way
//!   back every target shares: one budget after a signal, one drain before
//!   what traffic left is removed (`wayback::drain`), and one
//!   migration-rollback policy. Their errors (`TargetError`, `HostError`,
//!   `KubeError`) are wrapped by [`Error`], never the other way round.
//!
//! Imports go one way: `pipeline` → `health`/`smoke` → `targets` →
//! `strategy`/`probe`/`inputs`/`analysis`/`secrets` → `redact`; `error` sits above
//! the targets. `scripts/lint-cycles` (in `scripts/lint`) fails on a cycle
//! between sibling modules at any level; `scripts/lint-size` fails on a
//! file over 600 lines or a function over 80 that does not say why
//! (`// long:`).

pub mod analysis;
pub mod error;
pub mod github;
pub mod health;
pub mod inputs;
pub mod notify;
pub mod pipeline;
pub mod plan;
pub mod probe;
pub mod redact;
pub mod runner;
pub mod secrets;
pub mod smoke;
pub mod strategy;
pub mod targets;

pub use error::{Error, Result};

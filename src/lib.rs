//! evrelay forwards Kubernetes events to Datadog and never loses one it has seen.
//!
//! # Layout
//!
//! The data path runs one way: **watch → journal → ship**.
//!
//! - [`watch`]: reads core/v1 Events from the API server (resume, bookmarks, relist)
//!   and writes them, with the resume token, into the journal.
//! - [`journal`]: the sled store; its module doc is the on-disk format and its
//!   invariants; `journal/record.rs` is the record format.
//! - [`ship`]: reads pending records, sends them to the intake, retries, and moves
//!   the shipped-through cursor on 2xx.
//! - [`leader`]: the Lease that elects the one replica that watches and ships, and
//!   the ConfigMap that mirrors its token and epoch for the next one.
//! - [`delivery`]: the delivery rules (what is a new occurrence, how each intake
//!   answer is handled, where a new leader resumes), in one file.
//! - [`datadog`]: every Kubernetes → Datadog field mapping (`transform.rs`), the
//!   filters, and the payload formats (events, logs, service checks).
//! - [`controlplane`]: the leader's `kube_apiserver_controlplane.up` service check.
//! - [`event`]: a borrowed view of an event's JSON, shared by the stages.
//! - [`config`]: the YAML file and its environment overrides; [`cli`]: the commands.
//! - [`runtime`]: builds and runs the tasks; [`shutdown`]: signals.
//! - [`dump`]: `evrelay dump`.
//! - [`metrics`]: every exported metric; [`admin`]: `/metrics`, `/healthz`, `/readyz`.

pub mod admin;
pub mod cli;
pub mod config;
pub mod controlplane;
pub mod datadog;
pub mod delivery;
pub mod dump;
pub mod event;
pub mod journal;
pub mod leader;
pub mod metrics;
pub mod runtime;
pub mod ship;
pub mod shutdown;
pub mod watch;

//! evrelay forwards Kubernetes events to Datadog and never loses one it has seen.
//!
//! # Layout
//!
//! The data path runs one way: **watch → journal → ship → sink**.
//!
//! - [`watch`]: reads core/v1 Events from the API server (resume, bookmarks, relist)
//!   and writes them, with the resume token, into the journal. A state machine over
//!   a small API trait.
//! - [`journal`]: the durable store of events, tokens and cursors: policies over a
//!   [`Store`](journal::store::Store) trait, sled in one file behind it.
//! - [`record`]: the journal's on-disk format (records, tokens, terms, dedup index).
//! - [`ship`]: reads pending records, hands them to a [`Sink`](ship::Sink), retries,
//!   splits, dead-letters, and moves the sink's cursor on 2xx.
//! - [`sinks`]: the destinations; [`sinks::datadog`] holds every Kubernetes →
//!   Datadog field mapping, the filters, the payload formats and the intake.
//! - [`leader`]: the Lease that elects the one replica that leads, the ConfigMap
//!   that mirrors its token and epoch, and the terms of leadership.
//! - [`delivery`]: the delivery rules (new occurrence?, what an intake answer means,
//!   where a new leader resumes), in one file.
//! - [`controlplane`]: the leader's `kube_apiserver_controlplane.up` service check.
//! - [`quotas`]: the leader's OpenShift cluster quota gauges.
//! - [`event`]: a borrowed view of an event's JSON, shared by the stages.
//! - [`config`]: the YAML file and the environment, checked into typed settings.
//! - [`cli`] and [`cmd`]: the command line and one file per command; [`runtime`]:
//!   the composition root of `evrelay run`; [`shutdown`]: signals.
//! - [`dump`]: `evrelay dump`; [`admin`]: `/metrics`, `/healthz`, `/readyz`;
//!   [`metrics`]: every exported metric.
//! - [`backoff`]: the one retry policy and the one deadline helper; [`apiserver`]:
//!   the client for the API server (connect timeout, TCP keepalive).

pub mod admin;
pub mod apiserver;
pub mod backoff;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod controlplane;
pub mod delivery;
pub mod dump;
pub mod event;
pub mod journal;
pub mod leader;
pub mod metrics;
pub mod quotas;
pub mod record;
pub mod runtime;
pub mod ship;
pub mod shutdown;
pub mod sinks;
pub mod watch;

//! The destinations the shipper delivers to, each a [`Sink`](crate::ship::Sink):
//! Datadog's events intake and its logs intake (`datadog/`). A new destination is
//! a new folder here; the shipper does not change.

pub mod datadog;

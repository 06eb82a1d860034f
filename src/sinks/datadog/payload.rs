//! The request bodies, as the Datadog Agent sends them, and their caps.
//!
//! - `/intake/` (events): `{"apiKey":"","events":{"<source_type_name>":[...]},
//!   "internalHostname":"..."}`, zstd (default) or deflate (zlib, as the Agent's
//!   `deflate`); at most 2.5 MiB compressed and 4 MiB raw.
//! - `/api/v2/logs`: a JSON array of log entries, gzip; at most 1000 entries and
//!   5 MB raw.
//! - `/api/v1/check_run`: a JSON array of service checks, gzip.
//! - `/api/v2/series`: gauges as the Agent sends series, a protobuf
//!   `MetricPayload` (Datadog's `agent-payload`, `proto/metrics/agent_payload.proto`),
//!   zstd.
//!
//! Every body says its `Content-Encoding` and whether it passes its endpoint's caps;
//! the shipper splits what does not.

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;

use super::logs::LogEntry;
use super::transform::DdEvent;

/// zstd level: 1 is the fastest and what the Datadog Agent uses by default.
const ZSTD_LEVEL: i32 = 1;

/// Where a body goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Events,
    Logs,
    CheckRun,
    Series,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Events => "/intake/",
            Endpoint::Logs => "/api/v2/logs",
            Endpoint::CheckRun => "/api/v1/check_run",
            Endpoint::Series => "/api/v2/series",
        }
    }

    /// The body's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Endpoint::Series => "application/x-protobuf",
            _ => "application/json",
        }
    }

    /// (items, raw bytes, compressed bytes) a request may carry at the most.
    pub fn caps(self) -> (usize, usize, usize) {
        match self {
            Endpoint::Events | Endpoint::CheckRun | Endpoint::Series => {
                (usize::MAX, 4 << 20, 5 << 19)
            }
            Endpoint::Logs => (1000, 5_000_000, 5_000_000),
        }
    }
}

/// How event payloads are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zstd,
    /// zlib-wrapped deflate, which is what HTTP's `deflate` means.
    Deflate,
    Gzip,
}

impl Compression {
    fn encoding(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::Deflate => "deflate",
            Compression::Gzip => "gzip",
        }
    }

    fn compress(self, raw: &[u8]) -> Vec<u8> {
        let level = flate2::Compression::fast();
        let out = Vec::with_capacity(raw.len() / 4);
        match self {
            Compression::Zstd => {
                zstd::bulk::compress(raw, ZSTD_LEVEL).expect("in-memory zstd cannot fail")
            }
            Compression::Deflate => {
                let mut z = flate2::write::ZlibEncoder::new(out, level);
                z.write_all(raw).expect("in-memory deflate cannot fail");
                z.finish().expect("in-memory deflate cannot fail")
            }
            Compression::Gzip => {
                let mut z = flate2::write::GzEncoder::new(out, level);
                z.write_all(raw).expect("in-memory gzip cannot fail");
                z.finish().expect("in-memory gzip cannot fail")
            }
        }
    }
}

/// A compressed request body and its `Content-Encoding`.
#[derive(Debug, Clone)]
pub struct Body {
    pub endpoint: Endpoint,
    pub bytes: Vec<u8>,
    pub encoding: &'static str,
    /// Size before compression.
    pub raw_len: usize,
    /// Events, logs or checks in it.
    pub items: usize,
}

impl Body {
    fn new(endpoint: Endpoint, json: Vec<u8>, items: usize, compression: Compression) -> Body {
        Body {
            endpoint,
            bytes: compression.compress(&json),
            encoding: compression.encoding(),
            raw_len: json.len(),
            items,
        }
    }

    /// Whether the body passes one of its endpoint's caps.
    pub fn too_big(&self) -> bool {
        let (items, raw, compressed) = self.endpoint.caps();
        self.items > items || self.raw_len > raw || self.bytes.len() > compressed
    }
}

#[derive(Serialize)]
struct Payload<'a> {
    /// Always empty: the key travels in the `DD-API-KEY` header only.
    #[serde(rename = "apiKey")]
    api_key: &'static str,
    events: BTreeMap<&'a str, Vec<&'a DdEvent>>,
    #[serde(rename = "internalHostname")]
    internal_hostname: &'a str,
}

/// One `/intake/` body.
pub fn encode(events: &[&DdEvent], internal_hostname: &str, compression: Compression) -> Body {
    let mut grouped: BTreeMap<&str, Vec<&DdEvent>> = BTreeMap::new();
    for e in events {
        grouped.entry(e.source_type_name).or_default().push(e);
    }
    let json = serde_json::to_vec(&Payload {
        api_key: "",
        events: grouped,
        internal_hostname,
    })
    .expect("payloads always serialize");
    Body::new(Endpoint::Events, json, events.len(), compression)
}

/// One `/api/v2/logs` body.
pub fn encode_logs(entries: &[LogEntry<'_>]) -> Body {
    let json = serde_json::to_vec(entries).expect("logs always serialize");
    Body::new(Endpoint::Logs, json, entries.len(), Compression::Gzip)
}

/// A service check as `/api/v1/check_run` takes it. Status: 0 OK, 1 WARNING,
/// 2 CRITICAL, 3 UNKNOWN.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceCheck {
    pub check: &'static str,
    pub host_name: String,
    pub timestamp: i64,
    pub status: u8,
    pub message: String,
    pub tags: Vec<String>,
}

/// One `/api/v1/check_run` body.
pub fn encode_check_run(checks: &[ServiceCheck]) -> Body {
    let json = serde_json::to_vec(checks).expect("checks always serialize");
    Body::new(Endpoint::CheckRun, json, checks.len(), Compression::Gzip)
}

/// One gauge sample, as the Agent's sender takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Gauge {
    pub metric: String,
    pub value: f64,
    pub tags: Vec<String>,
    pub host: String,
    pub timestamp: i64,
}

/// One `/api/v2/series` body: a `MetricPayload` of one series per gauge.
pub fn encode_series(gauges: &[Gauge]) -> Body {
    let mut payload = Vec::new();
    for g in gauges {
        let mut series = Vec::new();
        if !g.host.is_empty() {
            let mut resource = Vec::new();
            proto::string(&mut resource, 1, "host");
            proto::string(&mut resource, 2, &g.host);
            proto::message(&mut series, 1, &resource);
        }
        proto::string(&mut series, 2, &g.metric);
        for tag in &g.tags {
            proto::string(&mut series, 3, tag);
        }
        let mut point = Vec::new();
        proto::double(&mut point, 1, g.value);
        proto::varint_field(&mut point, 2, g.timestamp as u64);
        proto::message(&mut series, 4, &point);
        proto::varint_field(&mut series, 5, proto::GAUGE);
        proto::message(&mut payload, 1, &series);
    }
    Body::new(Endpoint::Series, payload, gauges.len(), Compression::Zstd)
}

/// The little of protobuf's wire format a `MetricPayload` needs.
mod proto {
    /// `MetricPayload.MetricType.GAUGE`.
    pub const GAUGE: u64 = 3;

    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
        varint(out, (u64::from(field) << 3) | u64::from(wire));
    }

    pub fn varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
        key(out, field, 0);
        varint(out, v);
    }

    pub fn double(out: &mut Vec<u8>, field: u32, v: f64) {
        key(out, field, 1);
        out.extend_from_slice(&v.to_le_bytes());
    }

    pub fn message(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
        key(out, field, 2);
        varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }

    pub fn string(out: &mut Vec<u8>, field: u32, s: &str) {
        message(out, field, s.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn event() -> DdEvent {
        DdEvent {
            msg_title: "Pod default/p: Started".into(),
            msg_text: "ok".into(),
            timestamp: 1,
            priority: "normal",
            host: String::new(),
            tags: vec!["a:b".into()],
            alert_type: "info",
            aggregation_key: "kubernetes_apiserver:x".into(),
            source_type_name: "kubernetes",
            event_type: "kubernetes_apiserver",
        }
    }

    #[test]
    fn shape_and_zstd() {
        let e = event();
        let body = encode(&[&e, &e], "evrelay-0", Compression::Zstd);
        assert_eq!(body.encoding, "zstd");
        assert_eq!(body.endpoint.path(), "/intake/");
        let json: serde_json::Value =
            serde_json::from_slice(&zstd::decode_all(&body.bytes[..]).unwrap()).unwrap();
        assert_eq!(json["apiKey"], "");
        assert_eq!(json["internalHostname"], "evrelay-0");
        assert_eq!(json["events"]["kubernetes"].as_array().unwrap().len(), 2);
        assert_eq!(
            json["events"]["kubernetes"][0]["msg_title"],
            "Pod default/p: Started"
        );
        // Empty fields are omitted, as the Cluster Agent omits them.
        assert!(json["events"]["kubernetes"][0].get("host").is_none());
        assert!(!body.too_big());
    }

    #[test]
    fn deflate_is_zlib() {
        let e = event();
        let body = encode(&[&e], "h", Compression::Deflate);
        assert_eq!(body.encoding, "deflate");
        let mut raw = String::new();
        flate2::read::ZlibDecoder::new(&body.bytes[..])
            .read_to_string(&mut raw)
            .unwrap();
        assert!(raw.starts_with(r#"{"apiKey":"","events":{"kubernetes":["#));
        assert_eq!(raw.len(), body.raw_len);
    }

    #[test]
    fn caps() {
        let body = |endpoint, items, raw_len| Body {
            endpoint,
            bytes: Vec::new(),
            encoding: "gzip",
            raw_len,
            items,
        };
        assert!(body(Endpoint::Logs, 1001, 10).too_big());
        assert!(!body(Endpoint::Logs, 1000, 10).too_big());
        assert!(body(Endpoint::Logs, 1, 5_000_001).too_big());
        assert!(body(Endpoint::Events, 1, (4 << 20) + 1).too_big());
        assert!(!body(Endpoint::Events, 5000, 4 << 20).too_big());
    }
}

//! The `/intake/` request body, as the Cluster Agent sends it:
//! `{"apiKey":"","events":{"<source_type_name>":[...]},"internalHostname":"..."}`,
//! compressed with zstd and labelled with `Content-Encoding`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::transform::DdEvent;

/// zstd level: 1 is the fastest and what the Datadog Agent uses by default.
const ZSTD_LEVEL: i32 = 1;

/// A compressed request body and its `Content-Encoding`.
#[derive(Debug, Clone)]
pub struct Body {
    pub bytes: Vec<u8>,
    pub encoding: &'static str,
    /// Size before compression, for the intake's 4 MiB cap.
    pub raw_len: usize,
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

/// Encodes and compresses one request body.
pub fn encode(events: &[DdEvent], internal_hostname: &str) -> Body {
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
    let bytes = zstd::bulk::compress(&json, ZSTD_LEVEL).expect("in-memory zstd cannot fail");
    Body {
        raw_len: json.len(),
        bytes,
        encoding: "zstd",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_and_compression() {
        let e = DdEvent {
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
        };
        let body = encode(&[e.clone(), e], "evrelay-0");
        assert_eq!(body.encoding, "zstd");
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
    }
}

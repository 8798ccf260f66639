//! docs/PROTOCOL.md stays true: every `json client` / `json server` example parses as the
//! frame type it shows and survives a round trip, and every frame type has an example.

use std::collections::BTreeSet;

use roomz::protocol::{ClientFrame, ServerFrame};
use serde::de::DeserializeOwned;

fn examples(direction: &str) -> Vec<String> {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md")).unwrap();
    let fence = format!("```json {direction}\n");
    doc.split(fence.as_str())
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap().to_owned())
        .collect()
}

/// Every `type` tag the enum accepts, read from serde's own "expected one of" message.
fn all_tags<T: DeserializeOwned>() -> BTreeSet<String> {
    let error = serde_json::from_str::<T>(r#"{"type":"-"}"#).err().unwrap().to_string();
    let list = error.split("expected one of ").nth(1).unwrap();
    list.split(", ").map(|t| t.split('`').nth(1).unwrap().to_owned()).collect()
}

fn check<T>(direction: &str) -> BTreeSet<String>
where
    T: DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
{
    let mut seen = BTreeSet::new();
    for example in examples(direction) {
        let frame: T = serde_json::from_str(&example).unwrap_or_else(|e| panic!("{example}: {e}"));
        let again: T = serde_json::from_str(&serde_json::to_string(&frame).unwrap()).unwrap();
        assert_eq!(frame, again, "{example}");
        let value: serde_json::Value = serde_json::from_str(&example).unwrap();
        seen.insert(value["type"].as_str().unwrap().to_owned());
    }
    seen
}

#[test]
fn every_example_parses_and_every_frame_has_one() {
    let client = check::<ClientFrame>("client");
    assert_eq!(client, all_tags::<ClientFrame>(), "client frames without an example");
    let server = check::<ServerFrame>("server");
    assert_eq!(server, all_tags::<ServerFrame>(), "server frames without an example");
}

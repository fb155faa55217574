//! The bodies of Muster's fuzz targets: one `pub fn <target>(data: &[u8])` per
//! target, each feeding the bytes to the production parser of one kind of untrusted
//! input and asserting what must hold of every answer (no panic, round trips equal,
//! a value that passed a check passes it again after a round trip…).
//!
//! cargo-fuzz's targets in `fuzz/fuzz_targets/` are one line each and call these,
//! so the same bodies run on stable too: `tests/corpus.rs` replays every committed
//! corpus and regression input through [`TARGETS`] in the ordinary test suite.
//! The parsers themselves are never copied here; where one is private to its crate
//! it is reached through a `#[doc(hidden)]` entry point (the hub's `fuzzing`
//! module).

// A harness reports a broken invariant by panicking: that is what the fuzzer
// catches and saves as a crash.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod agent;
mod ca;
mod hub;
mod release;
mod wire;

pub use agent::{agent_config, env_file, fact_files, sys_net};
pub use ca::{cert_proof, csr};
pub use hub::{credentials, forwarded, globs_cidrs};
pub use release::release_manifest;
pub use wire::{agent_message, api_bodies, enroll_request, hub_message};

/// A target's body.
pub type Target = fn(&[u8]);

/// Every target by name: the names of `fuzz/fuzz_targets/*.rs` and of the corpus
/// and regression dirs.
pub const TARGETS: &[(&str, Target)] = &[
    ("enroll_request", enroll_request),
    ("api_bodies", api_bodies),
    ("agent_message", agent_message),
    ("hub_message", hub_message),
    ("csr", csr),
    ("cert_proof", cert_proof),
    ("credentials", credentials),
    ("globs_cidrs", globs_cidrs),
    ("forwarded", forwarded),
    ("env_file", env_file),
    ("fact_files", fact_files),
    ("sys_net", sys_net),
    ("agent_config", agent_config),
    ("release_manifest", release_manifest),
];

/// Parse, serialize, parse again: the second value must serialize to the same
/// JSON as the first. Returns the parsed value, `None` when `json` is not a `T`.
pub(crate) fn round_trip<T>(json: &[u8]) -> Option<T>
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let value: T = serde_json::from_slice(json).ok()?;
    let text = serde_json::to_string(&value).expect("a parsed value serializes");
    let again: T = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("our own serialization does not parse back: {e}: {text}"));
    let text_again = serde_json::to_string(&again).expect("a parsed value serializes");
    assert_eq!(text, text_again, "JSON round trip changed the value");
    Some(value)
}

/// Split `data` into fields at 0xFF bytes (never in UTF-8), each read as lossy UTF-8:
/// how a target that needs several strings takes them from one input.
pub(crate) fn fields(data: &[u8]) -> Vec<String> {
    data.split(|&b| b == 0xFF)
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect()
}

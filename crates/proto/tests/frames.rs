//! `AgentMessage::from_json` answers exactly as serde's full parse does, fast path
//! or not.

#![allow(clippy::unwrap_used, clippy::panic)]

use muster_proto::AgentMessage;

#[test]
fn the_heartbeat_fast_path_parses_as_the_enum_does() {
    let frames = [
        r#"{"type":"heartbeat","status":"ok"}"#,
        r#"{"type":"heartbeat","status":"degraded","problems":["disk full"]}"#,
        r#"{"status":"ok","type":"heartbeat","problems":[]}"#,
        r#"{"type":"heartbeat","status":"ok","extra":1}"#,
        r#"{"type":"heartbeat","status":"sideways"}"#,
        r#"{"type":"heartbeat"}"#,
        r#"{"type":"update_status","phase":"started","version":"1.2.3","message":""}"#,
        r#"{"type":"hello","protocol_version":1,"agent_version":"0.1.0","packs":[]}"#,
        r#"{"type":"nonsense"}"#,
        r#"not json"#,
    ];
    for f in frames {
        let fast = AgentMessage::from_json(f);
        let full = serde_json::from_str::<AgentMessage>(f);
        match (&fast, &full) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{f}"),
            (Err(_), Err(_)) => {}
            _ => panic!("{f}: fast {fast:?}, full {full:?}"),
        }
    }
}

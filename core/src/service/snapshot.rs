//! The engine's snapshot: its state in postcard, behind a tag that names the format.

use super::*;

/// Engine snapshots are postcard (compact and fast: the town's engine state is about 2 MB this way against
/// 7 MB of JSON) behind this tag; an untagged snapshot is the JSON older stores hold. Format 2 keys the
/// absence deadlines by rule and person (format 1 by person alone, under the first absence rule); format 3
/// adds, last, the homes' signs of life for the fused absence rule; format 4 adds after it the flats' drops
/// flagged as wrongly sorted.
pub const SNAPSHOT_TAG: &[u8] = b"towntwin-engine-postcard-4\n";
/// Format 3 is format 4 without its last field, and format 2 format 3 without its last: read with empty
/// ones (postcard writes an empty list as one zero byte).
const SNAPSHOT_TAG_3: &[u8] = b"towntwin-engine-postcard-3\n";
const SNAPSHOT_TAG_2: &[u8] = b"towntwin-engine-postcard-2\n";
/// The tag of snapshots whose absence timers name no rule; they cannot be read into format 2.
const SNAPSHOT_TAG_1: &[u8] = b"towntwin-engine-postcard-1\n";

/// The engine state as the store keeps it.
pub fn encode_snapshot(state: &crate::rules::State) -> Result<Vec<u8>, CoreError> {
    let mut out = SNAPSHOT_TAG.to_vec();
    out.extend(postcard::to_stdvec(state).map_err(|e| CoreError::Snapshot(e.to_string()))?);
    Ok(out)
}

/// An engine state from the store (postcard, or the JSON of older stores).
pub fn decode_snapshot(bytes: &[u8]) -> Result<crate::rules::State, CoreError> {
    if bytes.starts_with(SNAPSHOT_TAG_1) {
        return Err(CoreError::Snapshot(
            "written by an older towntwin (engine format 1, absence timers without their rule); start this version from an empty store".into(),
        ));
    }
    for (tag, missing, n) in [(SNAPSHOT_TAG_2, 2, 2), (SNAPSHOT_TAG_3, 1, 3)] {
        if let Some(body) = bytes.strip_prefix(tag) {
            let mut body = body.to_vec();
            body.extend(std::iter::repeat_n(0, missing));
            return postcard::from_bytes(&body).map_err(|e| CoreError::Snapshot(format!("engine format {n}: {e}")));
        }
    }
    match bytes.strip_prefix(SNAPSHOT_TAG) {
        Some(body) => postcard::from_bytes(body).map_err(|e| CoreError::Snapshot(e.to_string())),
        None => serde_json::from_slice(bytes).map_err(|e| CoreError::Snapshot(e.to_string())),
    }
}

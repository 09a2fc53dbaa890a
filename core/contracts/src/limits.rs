//! Size limits, agreed with each other in one place: what a device may send, what the broker carries, what
//! the core's MQTT client accepts, what the HTTP API takes. Each layer's limit leaves room for the one
//! inside it, so an oversized message is refused once, at the first layer it exceeds, and never makes a
//! client drop its connection and have the broker redeliver it forever.

/// The largest event payload the core decodes (the twin's are well under 1 KiB); larger ones are
/// rejected as `oversized` and dead-lettered as a stub (topic, size), not as themselves.
pub const MAX_EVENT_BYTES: usize = 16 * 1024;

/// The largest payload the broker accepts from a publisher: the embedded rumqttd's `max_payload_size`, and
/// the `message_size_limit` the book gives for mosquitto (docs/src/qa/mosquitto.md).
pub const BROKER_MAX_PAYLOAD: usize = 1 << 20;

/// The largest MQTT packet the core's client (and the harness's clients) accept: the broker's payload
/// limit plus room for the topic and header, so that whatever the broker delivers is read, not refused
/// with a disconnect.
pub const CLIENT_MAX_PACKET: usize = BROKER_MAX_PAYLOAD + 64 * 1024;

/// The largest HTTP request body the API reads (413 beyond it).
pub const API_MAX_BODY: usize = 16 * 1024;

/// The longest `reason` an action may carry, in characters (400 beyond it): it goes into every notice.
pub const MAX_REASON_CHARS: usize = 1_000;

// The layers nest: a reason fits a body, an event fits the broker, the broker's payload fits the client.
const _: () = assert!(MAX_REASON_CHARS * 4 < API_MAX_BODY && MAX_EVENT_BYTES < BROKER_MAX_PAYLOAD && BROKER_MAX_PAYLOAD < CLIENT_MAX_PACKET);

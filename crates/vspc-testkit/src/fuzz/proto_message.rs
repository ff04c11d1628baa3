//! Invariants of the option-232 message layer on arbitrary payloads, shared by the fuzz target
//! `proto_message` and the corpus replay test of vspc-proto.
//!
//! No panic; whatever parses re-encodes to a payload that parses to the same message, and is
//! byte-identical unless the command takes no payload (trailing bytes are ignored); the wire
//! form decodes through the telnet layer to the same payload; UUID text forms round-trip.

use vspc_proto::vspc_telnet::{Decoder, Event};
use vspc_proto::{Message, Uuid, VmUuid, VmotionKey};

/// Checks every invariant on one payload; panics on a violation.
pub fn check(payload: &[u8]) {
    if let Ok(message) = Message::parse(payload) {
        let encoded = message.to_vec();
        assert_eq!(encoded.len(), message.encoded_len());
        assert_eq!(Message::parse(&encoded).as_ref(), Ok(&message));
        if encoded != payload {
            assert_eq!(encoded.len(), 1, "only payload-less commands are lenient");
            assert_eq!(encoded[0], payload[0]);
        }
        let wire = message.to_wire();
        let mut decoder = Decoder::new();
        let mut seen = Vec::new();
        decoder.decode(&wire, |event| match event {
            Event::Subnegotiation {
                option: 232,
                payload,
            } => seen.push(payload.to_vec()),
            other => panic!("unexpected {other:?}"),
        });
        assert_eq!(seen, vec![encoded]);
    }
    // Identity and key helpers never panic either.
    let id = VmUuid::new(payload);
    if let Some(uuid) = id.uuid() {
        assert_eq!(uuid.to_vmx().parse::<Uuid>(), Ok(uuid));
        assert_eq!(uuid.to_canonical().parse::<Uuid>(), Ok(uuid));
        assert_eq!(uuid.to_compact().parse::<Uuid>(), Ok(uuid));
    }
    let _ = id.to_string();
    let split = usize::from(payload.first().copied().unwrap_or(0)) % (payload.len() + 1);
    let key = VmotionKey::new(&payload[..split], &payload[split..]);
    assert_eq!(key.as_bytes(), payload);
    assert_eq!(key.split_after(&payload[..split]), Some(&payload[split..]));
}

//! Shared helpers: owned events with adjacent data merged, chunked decoding.
#![allow(dead_code, unreachable_pub)]

use vspc_telnet::{Command, DecodeError, Decoder, Event, Side, Telnet, TelnetEvent, Verb};

/// An event that owns its bytes, so sequences can be compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owned {
    Data(Vec<u8>),
    Command(Command),
    Negotiation(Verb, u8),
    Subnegotiation(u8, Vec<u8>),
    OptionChanged(Side, u8, bool),
    Error(DecodeError),
}

/// Appends an event, merging data into a preceding data event.
pub fn push(events: &mut Vec<Owned>, event: Owned) {
    if let (Some(Owned::Data(last)), Owned::Data(more)) = (events.last_mut(), &event) {
        last.extend_from_slice(more);
        return;
    }
    events.push(event);
}

pub fn own(event: Event<'_>) -> Owned {
    match event {
        Event::Data(data) => Owned::Data(data.to_vec()),
        Event::Command(command) => Owned::Command(command),
        Event::Negotiation { verb, option } => Owned::Negotiation(verb, option),
        Event::Subnegotiation { option, payload } => {
            Owned::Subnegotiation(option, payload.to_vec())
        }
        Event::Error(error) => Owned::Error(error),
    }
}

pub fn own_telnet(event: TelnetEvent<'_>) -> Owned {
    match event {
        TelnetEvent::Data(data) => Owned::Data(data.to_vec()),
        TelnetEvent::Command(command) => Owned::Command(command),
        TelnetEvent::Subnegotiation { option, payload } => {
            Owned::Subnegotiation(option, payload.to_vec())
        }
        TelnetEvent::OptionChanged {
            side,
            option,
            enabled,
        } => Owned::OptionChanged(side, option, enabled),
        TelnetEvent::Error(error) => Owned::Error(error),
    }
}

/// Decodes `chunks` in order with one decoder, merging adjacent data.
pub fn decode_chunks<'a>(
    decoder: &mut Decoder,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<Owned> {
    let mut events = Vec::new();
    for chunk in chunks {
        decoder.decode(chunk, |event| push(&mut events, own(event)));
    }
    events
}

/// Decodes `input` in one go with a fresh decoder in the given mode.
pub fn decode_whole(input: &[u8], binary: bool) -> Vec<Owned> {
    let mut decoder = Decoder::new();
    decoder.set_binary(binary);
    decode_chunks(&mut decoder, [input])
}

/// Splits `input` at the sorted, deduplicated `cuts` (positions beyond the end are ignored).
pub fn split_at<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|&cut| cut.min(input.len())).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut chunks = Vec::new();
    let mut start = 0;
    for cut in cuts {
        chunks.push(&input[start..cut]);
        start = cut;
    }
    chunks.push(&input[start..]);
    chunks
}

/// Feeds `input` to a `Telnet` endpoint, collecting events with data merged.
pub fn feed(telnet: &mut Telnet, input: &[u8], events: &mut Vec<Owned>) {
    telnet.decode(input, |event| push(events, own_telnet(event)));
}

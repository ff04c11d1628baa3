//! Invariants of the telnet decoder and endpoint on arbitrary bytes in arbitrary chunks,
//! shared by the fuzz target `telnet_decode` and the corpus replay test of vspc-telnet.
//!
//! No panic; chunked decoding gives exactly the events of one-shot decoding (data merged); no
//! subnegotiation payload exceeds the cap; the endpoint's replies are bounded by the
//! negotiation it received (it never answers an answer).
use vspc_telnet::{Decoder, Event, Policy, Telnet, TelnetConfig, TelnetEvent};

#[derive(Debug, PartialEq)]
enum Owned {
    Data(Vec<u8>),
    Other(String),
}

fn decode(decoder: &mut Decoder, chunks: &[&[u8]], limit: usize) -> Vec<Owned> {
    let mut events: Vec<Owned> = Vec::new();
    for chunk in chunks {
        decoder.decode(chunk, |event| {
            if let Event::Subnegotiation { payload, .. } = event {
                assert!(payload.len() <= limit, "payload over the cap");
            }
            match (event, events.last_mut()) {
                (Event::Data(data), Some(Owned::Data(last))) => last.extend_from_slice(data),
                (Event::Data(data), _) => events.push(Owned::Data(data.to_vec())),
                (other, _) => events.push(Owned::Other(format!("{other:?}"))),
            }
        });
    }
    events
}

/// Checks every invariant on one input; panics on a violation.
pub fn check(input: &[u8]) {
    let Some((&config, input)) = input.split_first() else {
        return;
    };
    let binary = config & 1 != 0;
    let limit = [0usize, 1, 7, 64, 16 * 1024][usize::from(config >> 1) % 5];
    let stride = usize::from(config >> 4) + 1;

    let mut whole = Decoder::with_max_subnegotiation(limit);
    whole.set_binary(binary);
    let expected = decode(&mut whole, &[input], limit);

    let chunks: Vec<&[u8]> = input.chunks(stride).collect();
    let mut chunked = Decoder::with_max_subnegotiation(limit);
    chunked.set_binary(binary);
    assert_eq!(decode(&mut chunked, &chunks, limit), expected);

    // The endpoint with a policy that accepts the low options: bounded replies, no panic.
    let policy = (0..8u8).fold(Policy::new(), |p, option| {
        if config & (1 << option) != 0 {
            p.accept_both(option)
        } else {
            p
        }
    });
    let mut telnet = Telnet::new(TelnetConfig {
        policy,
        max_subnegotiation: limit,
    });
    // Every verb shows as IAC followed by WILL..DONT somewhere in the input (escaped IACs may
    // add false ones, which only loosens the bound).
    let negotiations = input
        .windows(2)
        .filter(|w| w[0] == 0xff && (251..=254).contains(&w[1]))
        .count();
    for chunk in &chunks {
        let mut rest: &[u8] = chunk;
        while let Some(event) = telnet.next_event(&mut rest) {
            if let TelnetEvent::Subnegotiation { payload, .. } = event {
                assert!(payload.len() <= limit);
            }
        }
    }
    let sent = telnet.pending_transmit_len();
    assert!(
        sent <= 3 * (negotiations + 1),
        "{sent} bytes of replies to {negotiations} verbs"
    );
}

//! Decodes a recorded VM session (ESXi's side of blocks A and B in docs/esxi-wire.md) the way a
//! concentrator's first layer sees it, and prints every event and every reply.
//!
//! `cargo run --example decode_session` (optionally `-- --split N` to feed N-byte reads).

use vspc::proto::Message;
use vspc::telnet::{option, Policy, Telnet, TelnetConfig, TelnetEvent};

/// The VM-to-proxy segments of a source connection: handshake, identification, COM-PORT
/// offer, a serial byte, then a vMotion BEGIN.
const SESSION: &[&str] = &[
    "fffb25",
    "fffd00",
    "fffd03fffd01fffb00",
    "fffb03",
    "fffbe8",
    "fffae8000001020328292b2c2d2e304647495051545556575253fff0fffae84653765350432e7079fff0",
    "fffae85030312032332034352036372038392061622063642065662d6665206463206261203938203030203030203030203030fff0",
    "fffae852766d2d3030303030fff0",
    "fffb2c",
    "20",
    "fffae82844da87f1fff0",
];

fn hex(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .filter_map(|i| text.get(2 * i..2 * i + 2))
        .filter_map(|pair| u8::from_str_radix(pair, 16).ok())
        .collect()
}

fn main() {
    let split = std::env::args()
        .skip_while(|arg| arg != "--split")
        .nth(1)
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&n| n > 0);
    // What a concentrator accepts (docs/protocol.md, "Telnet options on a VM connection"):
    // BINARY and SGA both ways, ECHO from us, option 232 from the VM; AUTHENTICATION and
    // COM-PORT refused.
    let policy = Policy::new()
        .accept_both(option::BINARY)
        .accept_both(option::SGA)
        .accept_local(option::ECHO)
        .accept_remote(option::VMWARE_EXT);
    let mut telnet = Telnet::new(TelnetConfig {
        policy,
        ..TelnetConfig::default()
    });
    let wire: Vec<u8> = SESSION.iter().flat_map(|segment| hex(segment)).collect();
    let reads: Vec<&[u8]> = match split {
        Some(n) => wire.chunks(n).collect(),
        None => vec![&wire[..]],
    };
    println!("{} bytes from the VM in {} reads", wire.len(), reads.len());
    for read in reads {
        let mut input = read;
        while let Some(event) = telnet.next_event(&mut input) {
            match event {
                TelnetEvent::Subnegotiation {
                    option: option::VMWARE_EXT,
                    payload,
                } => match Message::parse(payload) {
                    Ok(message) => println!("vm   {message:?}"),
                    Err(error) => println!("vm   malformed option-232 message: {error}"),
                },
                other => println!("vm   {other:?}"),
            }
        }
        while let Some(reply) = telnet.poll_transmit() {
            println!(
                "  px {}",
                reply.iter().map(|b| format!("{b:02x}")).collect::<String>()
            );
        }
    }
}

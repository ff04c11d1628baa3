//! Decodes a recorded VM session (ESXi's side of blocks A and B in docs/esxi-wire.md) the way a
//! concentrator's first layer sees it, and prints every event and every reply.
//!
//! `cargo run --example decode_session` (optionally `-- --split N` to feed N-byte reads).
//! The captures come from the workspace's test kit, so this example is not in the package.

use vspc::proto::Message;
use vspc::telnet::{option, Policy, Telnet, TelnetConfig, TelnetEvent};
use vspc_testkit::esxi::{stream, BLOCK_A, BLOCK_B};

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
    // The VM-to-proxy bytes of a source connection: handshake, identification, COM-PORT
    // offer, a serial byte (block A), then a vMotion BEGIN (block B).
    let wire = [stream(BLOCK_A, true), stream(BLOCK_B, true)].concat();
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

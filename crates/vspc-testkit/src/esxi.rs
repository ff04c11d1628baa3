//! ESXi's wire captures: the five blocks of `docs/esxi-wire.md` (an ESXi-side emulator
//! published by VMware talking to a vSPC.py-derived proxy), as timed segments.
//!
//! Each [`Line`] is one TCP segment: milliseconds from the block's first packet, `true` for
//! the VM (ESXi) to the proxy, and the bytes in hex as on the wire (empty for a FIN).

use bytes::Bytes;
use vspc_proto::{Direction, ProxyConfig, Uuid, VmConfig, VmRole};

use crate::hex;

/// One segment of a capture: milliseconds, `true` for vm>px, bytes in hex (empty for FIN).
pub type Line = (f64, bool, &'static str);

/// The VC UUID the captured VM reports, as its `.vmx` writes it.
pub const UUID_VMX: &str = "01 23 45 67 89 ab cd ef-fe dc ba 98 00 00 00 00";

/// The name the captured VM reports.
pub const VM_NAME: &str = "vm-00000";

/// The service URI of the captured VM's `DO-PROXY`.
pub const SERVICE_URI: &str = "vSPC.py";

/// Block A: a source connection's handshake, identification, COM-PORT offer and first
/// serial byte (`DO-PROXY server vSPC.py`, VC UUID, name `vm-00000`).
pub const BLOCK_A: &[Line] = &[
    (0.000, true, "fffb25"),
    (1.074, false, "fffb00"),
    (1.216, false, "fffb03"),
    (1.437, false, "fffb01"),
    (1.507, true, "fffd00"),
    (1.520, false, "fffd00"),
    (1.772, false, "fffd03"),
    (1.914, true, "fffd03fffd01fffb00"),
    (2.039, false, "fffde8"),
    (2.207, true, "fffb03"),
    (2.692, false, "fffe25"),
    (2.847, true, "fffbe8"),
    (3.446, false, "fffae8010001020328292b2c2d2e3046474950515253fff0"),
    (3.588, true, "fffae8000001020328292b2c2d2e304647495051545556575253fff0fffae84653765350432e7079fff0"),
    (3.735, false, "fffae851fff0fffae853fff0"),
    (3.935, true, "fffae85030312032332034352036372038392061622063642065662d6665206463206261203938203030203030203030203030fff0"),
    (4.229, false, "fffae847fff0"),
    (4.316, true, "fffae852766d2d3030303030fff0"),
    (48.079, true, "fffb2c"),
    (48.665, false, "fffe2c"),
    (549.514, true, "20"),
];

/// Block B: a successful vMotion, source side (block A's connection later): BEGIN answered
/// GOAHEAD, then both FINs.
pub const BLOCK_B: &[Line] = &[
    (0.531, true, "fffae82844da87f1fff0"),
    (1.140, false, "fffae82944da87f13ce64dabfff0"),
    (1017.783, true, ""),
    (1018.570, false, ""),
];

/// Block C: the same vMotion, destination side (on block B's clock): the handshake, PEER
/// with block B's sequence and secret, COMPLETE.
pub const BLOCK_C: &[Line] = &[
    (1013.117, true, "fffb25"),
    (1014.104, false, "fffb00"),
    (1014.243, false, "fffb03fffb01"),
    (1014.301, true, "fffd00"),
    (1014.404, false, "fffd00"),
    (1014.602, true, "fffd03fffd01"),
    (1014.605, false, "fffd03"),
    (1014.836, false, "fffde8"),
    (1015.006, true, "fffb00fffb03"),
    (1015.525, false, "fffe25"),
    (1015.671, true, "fffbe8"),
    (1016.287, false, "fffae8010001020328292b2c2d2e3046474950515253fff0"),
    (1016.458, true, "fffae8000001020328292b2c2d2e304647495051545556575253fff0fffae82c44da87f13ce64dabfff0fffb2c"),
    (1016.475, false, "fffae851fff0fffae853fff0"),
    (1016.662, true, "fffae85030312032332034352036372038392061622063642065662d6665206463206261203938203030203030203030203030fff0"),
    (1017.252, false, "fffae82d44da87f1fff0"),
    (1017.480, true, "fffae852766d2d3030303030fff0"),
    (1017.638, false, "fffe2c"),
    (1017.784, true, "fffae82e44da87f1fff0"),
    (1218.096, true, "39"),
];

/// Block D: a refused vMotion: BEGIN answered NOTNOW; the source carries on sending data.
pub const BLOCK_D: &[Line] = &[
    (11.528, true, "fffae828cd526755fff0"),
    (12.049, false, "fffae82bcd526755fff0"),
    (212.749, true, "66"),
    (713.344, true, "67"),
];

/// Block E: GOAHEAD, the destination never accepted, ABORT; the source resumes its data.
pub const BLOCK_E: &[Line] = &[
    (21.073, true, "fffae82861ed26a2fff0"),
    (21.549, false, "fffae82961ed26a2aeec483ffff0"),
    (1033.605, true, "fffae830fff0"),
    (1133.775, true, "7c"),
    (1434.158, true, "7d"),
    (1534.297, true, "7e"),
    (1834.689, true, "20"),
];

/// The concatenated bytes of one direction of a block (`true`: what the VM sent).
pub fn stream(block: &[Line], vm_to_proxy: bool) -> Vec<u8> {
    segments(block, vm_to_proxy).concat()
}

/// The segments of one direction of a block, in capture order (FINs left out).
pub fn segments(block: &[Line], vm_to_proxy: bool) -> Vec<Vec<u8>> {
    block
        .iter()
        .filter(|line| line.1 == vm_to_proxy && !line.2.is_empty())
        .map(|line| hex(line.2))
        .collect()
}

/// The captured VM's VC UUID.
pub fn capture_uuid() -> Uuid {
    UUID_VMX.parse().unwrap()
}

/// The captured VM as a [`VmSession`](vspc_proto::VmSession) configuration: the source of
/// a connection, `DO-PROXY server vSPC.py`, its VC UUID and name.
pub fn source_vm_config() -> VmConfig {
    VmConfig::new(
        capture_uuid(),
        VM_NAME,
        VmRole::Source {
            direction: Direction::Server,
            service_uri: Bytes::from_static(SERVICE_URI.as_bytes()),
        },
    )
}

/// The proxy configuration that asks exactly what the captured proxy asked (no BIOS or
/// location UUID).
pub fn capture_proxy_config() -> ProxyConfig {
    ProxyConfig {
        query_bios_uuid: false,
        query_location_uuid: false,
        ..ProxyConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_segment_is_hex_and_times_increase() {
        for block in [BLOCK_A, BLOCK_B, BLOCK_C, BLOCK_D, BLOCK_E] {
            assert!(block.windows(2).all(|w| w[0].0 <= w[1].0));
            for line in block {
                let _ = hex(line.2);
            }
        }
        assert_eq!(&stream(BLOCK_A, true)[..3], [0xff, 0xfb, 0x25]);
        assert_eq!(segments(BLOCK_B, false).len(), 1);
    }
}

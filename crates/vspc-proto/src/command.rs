//! The command codes of the VMware telnet extension (option 232).

use core::fmt;

/// The first byte of every option-232 subnegotiation payload.
///
/// All 22 codes known to VMware's guide, ESXi and the public implementations are named;
/// every other byte is [`Command::Unknown`]. The conversion is total and lossless:
/// `Command::from(b).code() == b` for every byte `b`.
///
/// ```
/// use vspc_proto::Command;
///
/// assert_eq!(Command::from(0x28), Command::VmotionBegin);
/// assert_eq!(Command::VmotionBegin.code(), 40);
/// assert_eq!(Command::from(0x99), Command::Unknown(0x99));
/// assert_eq!(Command::ALL.len(), 22);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Command {
    /// KNOWN-SUBOPTIONS-1 (0, VM): the codes the VM knows.
    KnownSuboptions1,
    /// KNOWN-SUBOPTIONS-2 (1, proxy): the codes the proxy knows.
    KnownSuboptions2,
    /// UNKNOWN-SUBOPTION-RCVD-1 (2, VM): the VM did not know a code.
    UnknownSuboptionRcvd1,
    /// UNKNOWN-SUBOPTION-RCVD-2 (3, proxy): the proxy did not know a code.
    UnknownSuboptionRcvd2,
    /// VMOTION-BEGIN (40, source host): sequence.
    VmotionBegin,
    /// VMOTION-GOAHEAD (41, proxy): sequence, then secret.
    VmotionGoahead,
    /// VMOTION-NOTNOW (43, proxy): sequence.
    VmotionNotNow,
    /// VMOTION-PEER (44, destination host): sequence, then secret.
    VmotionPeer,
    /// VMOTION-PEER-OK (45, proxy): sequence.
    VmotionPeerOk,
    /// VMOTION-COMPLETE (46, destination host): sequence.
    VmotionComplete,
    /// VMOTION-ABORT (48, source host): empty.
    VmotionAbort,
    /// DO-PROXY (70, VM): direction and service URI.
    DoProxy,
    /// WILL-PROXY (71, proxy): empty.
    WillProxy,
    /// WONT-PROXY (73, proxy): empty.
    WontProxy,
    /// VM-VC-UUID (80, VM): the vCenter UUID in vmx form.
    VmVcUuid,
    /// GET-VM-VC-UUID (81, proxy): empty.
    GetVmVcUuid,
    /// VM-NAME (82, VM): the display name.
    VmName,
    /// GET-VM-NAME (83, proxy): empty.
    GetVmName,
    /// VM-BIOS-UUID (84, VM): the BIOS UUID.
    VmBiosUuid,
    /// GET-VM-BIOS-UUID (85, proxy): empty.
    GetVmBiosUuid,
    /// VM-LOCATION-UUID (86, VM): the location UUID.
    VmLocationUuid,
    /// GET-VM-LOCATION-UUID (87, proxy): empty.
    GetVmLocationUuid,
    /// Any unassigned code.
    Unknown(u8),
}

impl Command {
    /// Every named command, in ascending code order.
    pub const ALL: [Command; 22] = [
        Command::KnownSuboptions1,
        Command::KnownSuboptions2,
        Command::UnknownSuboptionRcvd1,
        Command::UnknownSuboptionRcvd2,
        Command::VmotionBegin,
        Command::VmotionGoahead,
        Command::VmotionNotNow,
        Command::VmotionPeer,
        Command::VmotionPeerOk,
        Command::VmotionComplete,
        Command::VmotionAbort,
        Command::DoProxy,
        Command::WillProxy,
        Command::WontProxy,
        Command::VmVcUuid,
        Command::GetVmVcUuid,
        Command::VmName,
        Command::GetVmName,
        Command::VmBiosUuid,
        Command::GetVmBiosUuid,
        Command::VmLocationUuid,
        Command::GetVmLocationUuid,
    ];

    /// The command for a code byte (total: unassigned codes are [`Command::Unknown`]).
    pub const fn from_code(code: u8) -> Command {
        match code {
            0 => Command::KnownSuboptions1,
            1 => Command::KnownSuboptions2,
            2 => Command::UnknownSuboptionRcvd1,
            3 => Command::UnknownSuboptionRcvd2,
            40 => Command::VmotionBegin,
            41 => Command::VmotionGoahead,
            43 => Command::VmotionNotNow,
            44 => Command::VmotionPeer,
            45 => Command::VmotionPeerOk,
            46 => Command::VmotionComplete,
            48 => Command::VmotionAbort,
            70 => Command::DoProxy,
            71 => Command::WillProxy,
            73 => Command::WontProxy,
            80 => Command::VmVcUuid,
            81 => Command::GetVmVcUuid,
            82 => Command::VmName,
            83 => Command::GetVmName,
            84 => Command::VmBiosUuid,
            85 => Command::GetVmBiosUuid,
            86 => Command::VmLocationUuid,
            87 => Command::GetVmLocationUuid,
            other => Command::Unknown(other),
        }
    }

    /// The code byte.
    pub const fn code(self) -> u8 {
        match self {
            Command::KnownSuboptions1 => 0,
            Command::KnownSuboptions2 => 1,
            Command::UnknownSuboptionRcvd1 => 2,
            Command::UnknownSuboptionRcvd2 => 3,
            Command::VmotionBegin => 40,
            Command::VmotionGoahead => 41,
            Command::VmotionNotNow => 43,
            Command::VmotionPeer => 44,
            Command::VmotionPeerOk => 45,
            Command::VmotionComplete => 46,
            Command::VmotionAbort => 48,
            Command::DoProxy => 70,
            Command::WillProxy => 71,
            Command::WontProxy => 73,
            Command::VmVcUuid => 80,
            Command::GetVmVcUuid => 81,
            Command::VmName => 82,
            Command::GetVmName => 83,
            Command::VmBiosUuid => 84,
            Command::GetVmBiosUuid => 85,
            Command::VmLocationUuid => 86,
            Command::GetVmLocationUuid => 87,
            Command::Unknown(code) => code,
        }
    }

    /// Whether this is one of the 22 named commands. `Unknown(40)` is not canonical (it
    /// would decode as [`Command::VmotionBegin`]); [`Command::from_code`] never produces it.
    pub const fn is_known(self) -> bool {
        !matches!(Command::from_code(self.code()), Command::Unknown(_))
    }

    /// The name used by VMware's guide, e.g. `"VMOTION-BEGIN"`; `None` for unknown codes.
    pub const fn name(self) -> Option<&'static str> {
        Some(match Command::from_code(self.code()) {
            Command::KnownSuboptions1 => "KNOWN-SUBOPTIONS-1",
            Command::KnownSuboptions2 => "KNOWN-SUBOPTIONS-2",
            Command::UnknownSuboptionRcvd1 => "UNKNOWN-SUBOPTION-RCVD-1",
            Command::UnknownSuboptionRcvd2 => "UNKNOWN-SUBOPTION-RCVD-2",
            Command::VmotionBegin => "VMOTION-BEGIN",
            Command::VmotionGoahead => "VMOTION-GOAHEAD",
            Command::VmotionNotNow => "VMOTION-NOTNOW",
            Command::VmotionPeer => "VMOTION-PEER",
            Command::VmotionPeerOk => "VMOTION-PEER-OK",
            Command::VmotionComplete => "VMOTION-COMPLETE",
            Command::VmotionAbort => "VMOTION-ABORT",
            Command::DoProxy => "DO-PROXY",
            Command::WillProxy => "WILL-PROXY",
            Command::WontProxy => "WONT-PROXY",
            Command::VmVcUuid => "VM-VC-UUID",
            Command::GetVmVcUuid => "GET-VM-VC-UUID",
            Command::VmName => "VM-NAME",
            Command::GetVmName => "GET-VM-NAME",
            Command::VmBiosUuid => "VM-BIOS-UUID",
            Command::GetVmBiosUuid => "GET-VM-BIOS-UUID",
            Command::VmLocationUuid => "VM-LOCATION-UUID",
            Command::GetVmLocationUuid => "GET-VM-LOCATION-UUID",
            Command::Unknown(_) => return None,
        })
    }
}

impl From<u8> for Command {
    fn from(code: u8) -> Self {
        Command::from_code(code)
    }
}

impl From<Command> for u8 {
    fn from(command: Command) -> Self {
        command.code()
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "UNKNOWN({})", self.code()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_is_total_and_lossless() {
        let mut named = 0;
        for code in 0..=255u8 {
            let command = Command::from(code);
            assert_eq!(command.code(), code);
            assert_eq!(command.is_known(), command.name().is_some());
            if command.is_known() {
                named += 1;
                assert!(Command::ALL.contains(&command));
            }
        }
        assert_eq!(named, 22);
        let codes: Vec<u8> = Command::ALL.iter().map(|c| c.code()).collect();
        let mut sorted = codes.clone();
        sorted.sort_unstable();
        assert_eq!(codes, sorted);
    }

    #[test]
    fn display() {
        assert_eq!(Command::VmotionPeerOk.to_string(), "VMOTION-PEER-OK");
        assert_eq!(Command::Unknown(42).to_string(), "UNKNOWN(42)");
        assert_eq!(Command::Unknown(40).to_string(), "VMOTION-BEGIN");
    }
}

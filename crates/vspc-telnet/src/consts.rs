//! Telnet protocol bytes (RFC 854) and well-known option codes.

/// Interpret As Command: starts every telnet command; doubled to send a literal 0xFF.
pub const IAC: u8 = 255;
/// Refuse, or demand that the peer stop, performing an option.
pub const DONT: u8 = 254;
/// Request, or confirm, that the peer perform an option.
pub const DO: u8 = 253;
/// Refuse, or announce stopping, to perform an option ourselves.
pub const WONT: u8 = 252;
/// Offer, or confirm, to perform an option ourselves.
pub const WILL: u8 = 251;
/// Start of subnegotiation.
pub const SB: u8 = 250;
/// Go ahead.
pub const GA: u8 = 249;
/// Erase line.
pub const EL: u8 = 248;
/// Erase character.
pub const EC: u8 = 247;
/// Are you there.
pub const AYT: u8 = 246;
/// Abort output.
pub const AO: u8 = 245;
/// Interrupt process.
pub const IP: u8 = 244;
/// Break.
pub const BRK: u8 = 243;
/// Data mark (the data-stream part of a Synch).
pub const DM: u8 = 242;
/// No operation.
pub const NOP: u8 = 241;
/// End of subnegotiation.
pub const SE: u8 = 240;
/// End of record (RFC 885).
pub const EOR: u8 = 239;

/// Carriage return, subject to the NVT rules when BINARY is off.
pub const CR: u8 = b'\r';
/// Line feed.
pub const LF: u8 = b'\n';
/// NUL, which follows a bare CR on an NVT.
pub const NUL: u8 = 0;

/// Option codes seen on VM serial connections (and a few more that are common).
pub mod option {
    /// RFC 856 binary transmission.
    pub const BINARY: u8 = 0;
    /// RFC 857 echo.
    pub const ECHO: u8 = 1;
    /// RFC 858 suppress go-ahead.
    pub const SGA: u8 = 3;
    /// RFC 859 status.
    pub const STATUS: u8 = 5;
    /// RFC 860 timing mark.
    pub const TIMING_MARK: u8 = 6;
    /// RFC 1091 terminal type.
    pub const TERMINAL_TYPE: u8 = 24;
    /// RFC 885 end of record.
    pub const EOR: u8 = 25;
    /// RFC 1073 window size.
    pub const NAWS: u8 = 31;
    /// RFC 1079 terminal speed.
    pub const TERMINAL_SPEED: u8 = 32;
    /// RFC 1372 remote flow control.
    pub const LFLOW: u8 = 33;
    /// RFC 1184 linemode.
    pub const LINEMODE: u8 = 34;
    /// RFC 1572 new environment.
    pub const NEW_ENVIRON: u8 = 39;
    /// RFC 2941 authentication; ESXi offers it first thing on every connection.
    pub const AUTHENTICATION: u8 = 37;
    /// RFC 2217 COM port control; ESXi offers it after identification.
    pub const COM_PORT: u8 = 44;
    /// VMware's telnet extension, the carrier of every vSPC message.
    pub const VMWARE_EXT: u8 = 232;
    /// RFC 861 extended options list.
    pub const EXOPL: u8 = 255;
}

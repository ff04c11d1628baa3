//! Telnet commands and negotiation verbs as types.

use crate::consts::{AO, AYT, BRK, DM, DO, DONT, EC, EL, EOR, GA, IAC, IP, NOP, SB, WILL, WONT};

/// A two-byte telnet command (`IAC <code>`) that is neither negotiation nor subnegotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// `IAC NOP` (241).
    Nop,
    /// `IAC DM` (242), the data mark of a Synch.
    DataMark,
    /// `IAC BRK` (243).
    Break,
    /// `IAC IP` (244).
    InterruptProcess,
    /// `IAC AO` (245).
    AbortOutput,
    /// `IAC AYT` (246).
    AreYouThere,
    /// `IAC EC` (247).
    EraseCharacter,
    /// `IAC EL` (248).
    EraseLine,
    /// `IAC GA` (249).
    GoAhead,
    /// `IAC EOR` (239, RFC 885).
    EndOfRecord,
    /// Any other code, including a stray `IAC SE` outside a subnegotiation.
    Unknown(UnknownCommand),
}

/// The code of a command this crate does not name.
///
/// It can only hold bytes that encode as a two-byte command, so that encoding any [`Command`]
/// decodes back to the same command: never `IAC`, `SB`, `WILL`, `WONT`, `DO` or `DONT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UnknownCommand(u8);

impl UnknownCommand {
    /// The command byte.
    pub fn code(self) -> u8 {
        self.0
    }
}

impl Command {
    /// The command for a byte that followed `IAC`, or `None` when the byte starts something
    /// else (`IAC`, `SB`, `WILL`, `WONT`, `DO`, `DONT`).
    pub fn from_code(code: u8) -> Option<Command> {
        Some(match code {
            NOP => Command::Nop,
            DM => Command::DataMark,
            BRK => Command::Break,
            IP => Command::InterruptProcess,
            AO => Command::AbortOutput,
            AYT => Command::AreYouThere,
            EC => Command::EraseCharacter,
            EL => Command::EraseLine,
            GA => Command::GoAhead,
            EOR => Command::EndOfRecord,
            IAC | SB | WILL | WONT | DO | DONT => return None,
            other => Command::Unknown(UnknownCommand(other)),
        })
    }

    /// The byte that follows `IAC` on the wire.
    pub fn code(self) -> u8 {
        match self {
            Command::Nop => NOP,
            Command::DataMark => DM,
            Command::Break => BRK,
            Command::InterruptProcess => IP,
            Command::AbortOutput => AO,
            Command::AreYouThere => AYT,
            Command::EraseCharacter => EC,
            Command::EraseLine => EL,
            Command::GoAhead => GA,
            Command::EndOfRecord => EOR,
            Command::Unknown(unknown) => unknown.0,
        }
    }
}

/// An option negotiation verb (RFC 854).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// The sender offers or confirms to perform the option.
    Will,
    /// The sender refuses or stops performing the option.
    Wont,
    /// The sender asks or confirms that the receiver perform the option.
    Do,
    /// The sender asks that the receiver not perform the option.
    Dont,
}

impl Verb {
    /// The verb for a byte that followed `IAC`, if it is one.
    pub fn from_code(code: u8) -> Option<Verb> {
        match code {
            WILL => Some(Verb::Will),
            WONT => Some(Verb::Wont),
            DO => Some(Verb::Do),
            DONT => Some(Verb::Dont),
            _ => None,
        }
    }

    /// The byte that follows `IAC` on the wire.
    pub fn code(self) -> u8 {
        match self {
            Verb::Will => WILL,
            Verb::Wont => WONT,
            Verb::Do => DO,
            Verb::Dont => DONT,
        }
    }
}

/// Which end of the connection performs an option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// We perform it: we send `WILL`/`WONT`, the peer sends `DO`/`DONT`.
    Local,
    /// The peer performs it: we send `DO`/`DONT`, the peer sends `WILL`/`WONT`.
    Remote,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_a_command_or_a_structural_byte_and_round_trips() {
        for code in 0..=255u8 {
            match Command::from_code(code) {
                Some(command) => assert_eq!(command.code(), code),
                None => assert!(matches!(code, IAC | SB | WILL | WONT | DO | DONT)),
            }
        }
    }

    #[test]
    fn verbs_round_trip() {
        for verb in [Verb::Will, Verb::Wont, Verb::Do, Verb::Dont] {
            assert_eq!(Verb::from_code(verb.code()), Some(verb));
        }
        assert_eq!(Verb::from_code(SB), None);
    }
}

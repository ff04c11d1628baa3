//! RFC 2217 COM-PORT-OPTION (telnet option 44) messages.
//!
//! ESXi offers `WILL COM-PORT` on every VM connection after identification; a concentrator
//! that accepts it receives the guest UART's settings as these messages. Parsing and encoding
//! work on the unescaped subnegotiation payload (the bytes between `IAC SB 44` and `IAC SE`).
//!
//! ```
//! use vspc_telnet::comport::{ComPortCommand, ComPortMessage, Origin};
//!
//! let message = ComPortMessage::parse(&[1, 0, 0, 0x25, 0x80])?;
//! assert_eq!(message, ComPortMessage { origin: Origin::Client, command: ComPortCommand::SetBaudRate(9600) });
//! let mut payload = Vec::new();
//! message.encode(&mut payload);
//! assert_eq!(payload, [1, 0, 0, 0x25, 0x80]);
//! # Ok::<(), vspc_telnet::comport::ComPortError>(())
//! ```

/// Offset between a client command code and the server's answer to it.
pub const SERVER_OFFSET: u8 = 100;

/// Who sent a message: the client (which asks for settings) or the access server (which
/// reports them). Codes 0-12 are the client's, 100-112 the server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// Codes 0 to 12.
    Client,
    /// Codes 100 to 112.
    Server,
}

/// One RFC 2217 message: who sent it and what it says.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ComPortMessage {
    /// Client or server code range.
    pub origin: Origin,
    /// The command and its value.
    pub command: ComPortCommand,
}

/// The commands of RFC 2217, with typed values.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ComPortCommand {
    /// SIGNATURE: free text identifying the sender; empty asks for the peer's.
    Signature(Vec<u8>),
    /// SET-BAUDRATE in bits per second; 0 asks for the current rate.
    SetBaudRate(u32),
    /// SET-DATASIZE: 5 to 8 bits; 0 asks for the current size.
    SetDataSize(u8),
    /// SET-PARITY.
    SetParity(Parity),
    /// SET-STOPSIZE.
    SetStopSize(StopSize),
    /// SET-CONTROL: flow control, BREAK, DTR and RTS.
    SetControl(Control),
    /// NOTIFY-LINESTATE.
    NotifyLineState(LineState),
    /// NOTIFY-MODEMSTATE.
    NotifyModemState(ModemState),
    /// FLOWCONTROL-SUSPEND: the sender cannot take more data.
    FlowControlSuspend,
    /// FLOWCONTROL-RESUME.
    FlowControlResume,
    /// SET-LINESTATE-MASK: which line-state bits to report.
    SetLineStateMask(LineState),
    /// SET-MODEMSTATE-MASK: which modem-state bits to report.
    SetModemStateMask(ModemState),
    /// PURGE-DATA.
    PurgeData(Purge),
}

/// Why a COM-PORT payload could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ComPortError {
    /// The payload was empty: no command code.
    #[error("COM-PORT subnegotiation without a command code")]
    Empty,
    /// The code is neither 0-12 nor 100-112.
    #[error("unknown COM-PORT command code {0}")]
    UnknownCommand(u8),
    /// The value has the wrong length for the command.
    #[error("COM-PORT command {code}: value of {len} bytes, expected {expected}")]
    BadLength {
        /// The command code.
        code: u8,
        /// The length received.
        len: usize,
        /// The length the command takes.
        expected: usize,
    },
}

macro_rules! byte_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $value:expr,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
            /// A value RFC 2217 does not define, kept as received.
            Other(u8),
        }

        impl $name {
            /// The value for a byte.
            pub fn from_byte(byte: u8) -> Self {
                match byte {
                    $($value => $name::$variant,)*
                    other => $name::Other(other),
                }
            }

            /// The byte on the wire.
            pub fn to_byte(self) -> u8 {
                match self {
                    $($name::$variant => $value,)*
                    $name::Other(other) => other,
                }
            }
        }
    };
}

byte_enum!(
    /// SET-PARITY values.
    Parity {
        /// Ask for the current setting.
        Request = 0,
        /// No parity.
        None = 1,
        /// Odd parity.
        Odd = 2,
        /// Even parity.
        Even = 3,
        /// Mark parity.
        Mark = 4,
        /// Space parity.
        Space = 5,
    }
);

byte_enum!(
    /// SET-STOPSIZE values.
    StopSize {
        /// Ask for the current setting.
        Request = 0,
        /// One stop bit.
        One = 1,
        /// Two stop bits.
        Two = 2,
        /// One and a half stop bits.
        OneAndHalf = 3,
    }
);

byte_enum!(
    /// PURGE-DATA values.
    Purge {
        /// Purge the access server's receive buffer.
        Receive = 1,
        /// Purge the access server's transmit buffer.
        Transmit = 2,
        /// Purge both.
        Both = 3,
    }
);

byte_enum!(
    /// SET-CONTROL values.
    Control {
        /// Ask for the outbound flow control setting.
        RequestFlowControl = 0,
        /// No outbound flow control.
        NoFlowControl = 1,
        /// XON/XOFF outbound flow control.
        XonXoffFlowControl = 2,
        /// Hardware outbound flow control.
        HardwareFlowControl = 3,
        /// Ask for the BREAK state.
        RequestBreak = 4,
        /// BREAK on.
        BreakOn = 5,
        /// BREAK off.
        BreakOff = 6,
        /// Ask for the DTR state.
        RequestDtr = 7,
        /// DTR on.
        DtrOn = 8,
        /// DTR off.
        DtrOff = 9,
        /// Ask for the RTS state.
        RequestRts = 10,
        /// RTS on.
        RtsOn = 11,
        /// RTS off.
        RtsOff = 12,
        /// Ask for the inbound flow control setting.
        RequestInboundFlowControl = 13,
        /// No inbound flow control.
        NoInboundFlowControl = 14,
        /// XON/XOFF inbound flow control.
        XonXoffInboundFlowControl = 15,
        /// Hardware inbound flow control.
        HardwareInboundFlowControl = 16,
        /// DCD flow control.
        DcdFlowControl = 17,
        /// DTR flow control.
        DtrFlowControl = 18,
        /// DSR flow control.
        DsrFlowControl = 19,
    }
);

/// NOTIFY-LINESTATE / SET-LINESTATE-MASK bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct LineState(pub u8);

impl LineState {
    /// Time-out error.
    pub const TIMEOUT_ERROR: u8 = 128;
    /// Transfer shift register empty.
    pub const SHIFT_REGISTER_EMPTY: u8 = 64;
    /// Transfer holding register empty.
    pub const HOLDING_REGISTER_EMPTY: u8 = 32;
    /// Break detected.
    pub const BREAK_DETECT: u8 = 16;
    /// Framing error.
    pub const FRAMING_ERROR: u8 = 8;
    /// Parity error.
    pub const PARITY_ERROR: u8 = 4;
    /// Overrun error.
    pub const OVERRUN_ERROR: u8 = 2;
    /// Data ready.
    pub const DATA_READY: u8 = 1;

    /// Whether every bit of `mask` is set.
    pub fn contains(self, mask: u8) -> bool {
        self.0 & mask == mask
    }
}

/// NOTIFY-MODEMSTATE / SET-MODEMSTATE-MASK bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ModemState(pub u8);

impl ModemState {
    /// Receive line signal detect (carrier detect).
    pub const CARRIER_DETECT: u8 = 128;
    /// Ring indicator.
    pub const RING_INDICATOR: u8 = 64;
    /// Data set ready.
    pub const DSR: u8 = 32;
    /// Clear to send.
    pub const CTS: u8 = 16;
    /// Delta carrier detect.
    pub const DELTA_CARRIER_DETECT: u8 = 8;
    /// Trailing edge ring detector.
    pub const TRAILING_EDGE_RING: u8 = 4;
    /// Delta data set ready.
    pub const DELTA_DSR: u8 = 2;
    /// Delta clear to send.
    pub const DELTA_CTS: u8 = 1;

    /// Whether every bit of `mask` is set.
    pub fn contains(self, mask: u8) -> bool {
        self.0 & mask == mask
    }
}

impl ComPortCommand {
    /// The client's code for this command (0-12); the server's is this plus [`SERVER_OFFSET`].
    pub fn client_code(&self) -> u8 {
        match self {
            ComPortCommand::Signature(_) => 0,
            ComPortCommand::SetBaudRate(_) => 1,
            ComPortCommand::SetDataSize(_) => 2,
            ComPortCommand::SetParity(_) => 3,
            ComPortCommand::SetStopSize(_) => 4,
            ComPortCommand::SetControl(_) => 5,
            ComPortCommand::NotifyLineState(_) => 6,
            ComPortCommand::NotifyModemState(_) => 7,
            ComPortCommand::FlowControlSuspend => 8,
            ComPortCommand::FlowControlResume => 9,
            ComPortCommand::SetLineStateMask(_) => 10,
            ComPortCommand::SetModemStateMask(_) => 11,
            ComPortCommand::PurgeData(_) => 12,
        }
    }
}

impl ComPortMessage {
    /// Parses an unescaped COM-PORT subnegotiation payload.
    pub fn parse(payload: &[u8]) -> Result<ComPortMessage, ComPortError> {
        let (&code, value) = payload.split_first().ok_or(ComPortError::Empty)?;
        let (origin, base) = match code {
            0..=12 => (Origin::Client, code),
            100..=112 => (Origin::Server, code - SERVER_OFFSET),
            _ => return Err(ComPortError::UnknownCommand(code)),
        };
        let byte = || match value {
            [byte] => Ok(*byte),
            _ => Err(ComPortError::BadLength {
                code,
                len: value.len(),
                expected: 1,
            }),
        };
        let command = match base {
            0 => ComPortCommand::Signature(value.to_vec()),
            1 => match value {
                [a, b, c, d] => ComPortCommand::SetBaudRate(u32::from_be_bytes([*a, *b, *c, *d])),
                _ => {
                    return Err(ComPortError::BadLength {
                        code,
                        len: value.len(),
                        expected: 4,
                    })
                }
            },
            2 => ComPortCommand::SetDataSize(byte()?),
            3 => ComPortCommand::SetParity(Parity::from_byte(byte()?)),
            4 => ComPortCommand::SetStopSize(StopSize::from_byte(byte()?)),
            5 => ComPortCommand::SetControl(Control::from_byte(byte()?)),
            6 => ComPortCommand::NotifyLineState(LineState(byte()?)),
            7 => ComPortCommand::NotifyModemState(ModemState(byte()?)),
            8 | 9 if !value.is_empty() => {
                return Err(ComPortError::BadLength {
                    code,
                    len: value.len(),
                    expected: 0,
                })
            }
            8 => ComPortCommand::FlowControlSuspend,
            9 => ComPortCommand::FlowControlResume,
            10 => ComPortCommand::SetLineStateMask(LineState(byte()?)),
            11 => ComPortCommand::SetModemStateMask(ModemState(byte()?)),
            _ => ComPortCommand::PurgeData(Purge::from_byte(byte()?)),
        };
        Ok(ComPortMessage { origin, command })
    }

    /// Appends the unescaped payload (code and value) to `out`; the telnet encoder escapes it.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let code = match self.origin {
            Origin::Client => self.command.client_code(),
            Origin::Server => self.command.client_code() + SERVER_OFFSET,
        };
        out.push(code);
        match &self.command {
            ComPortCommand::Signature(text) => out.extend_from_slice(text),
            ComPortCommand::SetBaudRate(rate) => out.extend_from_slice(&rate.to_be_bytes()),
            ComPortCommand::SetDataSize(size) => out.push(*size),
            ComPortCommand::SetParity(parity) => out.push(parity.to_byte()),
            ComPortCommand::SetStopSize(stop) => out.push(stop.to_byte()),
            ComPortCommand::SetControl(control) => out.push(control.to_byte()),
            ComPortCommand::NotifyLineState(state) | ComPortCommand::SetLineStateMask(state) => {
                out.push(state.0)
            }
            ComPortCommand::NotifyModemState(state) | ComPortCommand::SetModemStateMask(state) => {
                out.push(state.0)
            }
            ComPortCommand::FlowControlSuspend | ComPortCommand::FlowControlResume => {}
            ComPortCommand::PurgeData(purge) => out.push(purge.to_byte()),
        }
    }

    /// The server's answer to a client's setting: the same command and value from the server,
    /// as an access server that applies the setting sends it back.
    pub fn acknowledgement(&self) -> Option<ComPortMessage> {
        (self.origin == Origin::Client).then(|| ComPortMessage {
            origin: Origin::Server,
            command: self.command.clone(),
        })
    }
}

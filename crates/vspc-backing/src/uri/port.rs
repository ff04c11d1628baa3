//! The port of a URI.

use nom::branch::alt;
use nom::character::complete::u16 as decimal;
use nom::combinator::{eof, map, value};

use super::error::UriErrorKind;
use super::parse::complete;

/// Reads `port = *DIGIT`, a decimal number from 0 to 65535 (leading zeros allowed); `None`
/// when the text is empty (`host:` has no port).
pub(super) fn parse_port(text: &str) -> Result<Option<u16>, UriErrorKind> {
    let port = alt((value(None, eof), map(decimal, Some)));
    complete(port, text, || UriErrorKind::InvalidPort {
        port: text.to_owned(),
    })
}

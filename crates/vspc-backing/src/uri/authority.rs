//! What every URI form shares once the scheme is off:
//! `[userinfo "@"] host [":" port] ["#" auth-params]`.

use nom::branch::alt;
use nom::character::complete::{char, one_of};
use nom::combinator::{eof, fail, map, not, opt, peek, recognize, rest, value};
use nom::multi::many0_count;
use nom::sequence::{preceded, terminated};
use nom::Parser;

use super::error::UriErrorKind;
use super::host::{parse_host, Host, UNBRACKETED};
use super::parse::{complete, expect, invalid, till, PResult};
use super::port::parse_port;

/// The parts of `[userinfo "@"] host [":" port] ["#" auth-params]`.
pub(super) struct Authority<'a> {
    /// Whether user info was written (never allowed; reported after the host and port).
    pub(super) user_info: bool,
    pub(super) host: Host,
    pub(super) port: Option<u16>,
    /// The text after `#`: whether it is allowed depends on the scheme.
    pub(super) auth: Option<&'a str>,
}

/// Reads what follows `scheme://` (or the whole text when there is no scheme). The first
/// fault in this order is reported: a path or query, the split of host and port, the host,
/// the port.
pub(super) fn parse_authority(input: &str) -> Result<Authority<'_>, UriErrorKind> {
    // Every branch ends in a match or a typed failure, so `mismatch` is never asked.
    complete(authority, input, || UriErrorKind::UnexpectedText {
        text: input.to_owned(),
    })
}

fn authority(input: &str) -> PResult<'_, Authority<'_>, UriErrorKind> {
    let (input, (address, _, auth)) = (
        till(b"#/?"),
        no_path_or_query,
        opt(preceded(char('#'), rest)),
    )
        .parse(input)?;
    let (_, (user_info, (host, port))) = (user_info, host_port).parse(address)?;
    let host = parse_host(host).map_err(invalid)?;
    let port = parse_port(port.unwrap_or_default()).map_err(invalid)?;
    let authority = Authority {
        user_info,
        host,
        port,
        auth,
    };
    Ok((input, authority))
}

/// Nothing but `#` may follow the host and port: a path or a query is reported, from its
/// start to the `#`, before anything else is read.
fn no_path_or_query(input: &str) -> PResult<'_, (), UriErrorKind> {
    let path_or_query = |text: &str| UriErrorKind::UnexpectedText {
        text: text.split('#').next().unwrap_or_default().to_owned(),
    };
    expect(not(one_of("/?")), path_or_query)(input)
}

/// `[userinfo "@"]`, up to the last `@`: whether there is one.
fn user_info(input: &str) -> PResult<'_, bool, UriErrorKind> {
    map(many0_count(terminated(till(b"@"), char('@'))), |n| n > 0).parse(input)
}

/// The host and port texts, split where the port begins.
fn host_port(input: &str) -> PResult<'_, (&str, Option<&str>), UriErrorKind> {
    alt((bracketed, plain)).parse(input)
}

/// `"[" literal "]" [":" port]`; without a `]` the whole text is the host, which the host
/// grammar reports as an unclosed bracket.
fn bracketed(input: &str) -> PResult<'_, (&str, Option<&str>), UriErrorKind> {
    let closed = (
        recognize((char('['), till(b"]"), char(']'))),
        alt((
            value(None, eof),
            map(preceded(char(':'), rest), Some),
            expect(fail(), |text: &str| UriErrorKind::UnexpectedText {
                text: text.to_owned(),
            }),
        )),
    );
    preceded(
        peek(char('[')),
        alt((closed, map(rest, |host| (host, None)))),
    )
    .parse(input)
}

/// `host [":" port]`, where a second colon makes the whole an IPv6 literal without brackets.
fn plain(input: &str) -> PResult<'_, (&str, Option<&str>), UriErrorKind> {
    let unbracketed = |_| UriErrorKind::InvalidHost {
        host: input.to_owned(),
        reason: UNBRACKETED,
    };
    let port = terminated(till(b":"), expect(eof, unbracketed));
    (till(b":"), opt(preceded(char(':'), port))).parse(input)
}

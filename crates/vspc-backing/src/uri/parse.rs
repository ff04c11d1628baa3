//! What the nom parsers of the grammar share: their error type, which is either a mismatch
//! nom may backtrack from or a typed reason that ends the parse, and the combinator that turns
//! the one into the other.

use nom::combinator::eof;
use nom::error::{ErrorKind, ParseError};
use nom::sequence::terminated;
use nom::{IResult, Parser};

/// The error of a grammar parser: `R` is the typed reason (a [`super::UriErrorKind`], or a
/// host's reason).
#[derive(Debug)]
pub(super) enum Fail<R> {
    /// The text does not match here; an enclosing `alt` or `opt` may try something else.
    Mismatch,
    /// The text is invalid for this reason (always raised as `nom::Err::Failure`).
    Invalid(R),
}

impl<I, R> ParseError<I> for Fail<R> {
    fn from_error_kind(_: I, _: ErrorKind) -> Self {
        Fail::Mismatch
    }

    fn append(_: I, _: ErrorKind, other: Self) -> Self {
        other
    }
}

/// The result of a grammar parser.
pub(super) type PResult<'a, T, R> = IResult<&'a str, T, Fail<R>>;

/// Ends the parse with `reason`.
pub(super) fn invalid<R>(reason: R) -> nom::Err<Fail<R>> {
    nom::Err::Failure(Fail::Invalid(reason))
}

/// Runs `parser`; where it does not match, the parse ends with the reason `why` gives for the
/// text at that point. Typed failures from inside `parser` pass through unchanged.
pub(super) fn expect<'a, O, R, P, F>(
    mut parser: P,
    mut why: F,
) -> impl FnMut(&'a str) -> PResult<'a, O, R>
where
    P: Parser<&'a str, Output = O, Error = Fail<R>>,
    F: FnMut(&'a str) -> R,
{
    move |input| {
        parser.parse(input).map_err(|e| match e {
            nom::Err::Failure(Fail::Invalid(reason)) => invalid(reason),
            _ => invalid(why(input)),
        })
    }
}

/// Runs `parser` over the whole of `input`: its value, or the reason the text is invalid.
/// `mismatch` gives the reason when `parser` does not match at all (the grammars that end
/// every branch in a typed failure never leave it to `mismatch`).
pub(super) fn complete<'a, O, R, P>(
    parser: P,
    input: &'a str,
    mismatch: impl FnOnce() -> R,
) -> Result<O, R>
where
    P: Parser<&'a str, Output = O, Error = Fail<R>>,
{
    match terminated(parser, eof).parse(input) {
        Ok((_, value)) => Ok(value),
        Err(nom::Err::Failure(Fail::Invalid(reason)) | nom::Err::Error(Fail::Invalid(reason))) => {
            Err(reason)
        }
        Err(_) => Err(mismatch()),
    }
}

/// nom's `take_till` for ASCII delimiters, scanning bytes: the text up to the first
/// delimiter (or all of it). nom's own scans over `&str` decode every `char`, which made this
/// grammar slower than the hand-written one it replaced; `memchr` pays off on long texts
/// only (most parts of a URI are a few bytes).
pub(super) fn till<'a, R>(
    delimiters: &'static [u8],
) -> impl Fn(&'a str) -> PResult<'a, &'a str, R> + Copy {
    move |input: &'a str| {
        let bytes = input.as_bytes();
        let long = bytes.len() >= LONG;
        let end = match *delimiters {
            [a] if long => memchr::memchr(a, bytes),
            [a] => bytes.iter().position(|&x| x == a),
            [a, b] if long => memchr::memchr2(a, b, bytes),
            [a, b] => bytes.iter().position(|&x| x == a || x == b),
            [a, b, c] if long => memchr::memchr3(a, b, c, bytes),
            [a, b, c] => bytes.iter().position(|&x| x == a || x == b || x == c),
            _ => bytes.iter().position(|b| delimiters.contains(b)),
        };
        split_at(input, end.unwrap_or(input.len()))
    }
}

/// From this length on, `till` scans with `memchr`.
const LONG: usize = 64;

/// nom's `take_while1` on the bytes: at least one byte that `accept`s, up to the first that
/// it does not (a `char` boundary: `accept` takes no non-ASCII byte, or stops at an ASCII one).
pub(super) fn while1<'a, R>(
    accept: impl Fn(u8) -> bool + Copy,
) -> impl Fn(&'a str) -> PResult<'a, &'a str, R> + Copy {
    move |input: &'a str| {
        let end = input
            .bytes()
            .position(|b| !accept(b))
            .unwrap_or(input.len());
        if end == 0 {
            return Err(nom::Err::Error(Fail::Mismatch));
        }
        split_at(input, end)
    }
}

/// `(rest, head)` split at a byte offset, which a non-ASCII byte would not be a boundary of
/// (a mismatch then, where the scanners above only stop at ASCII bytes).
fn split_at<R>(input: &str, at: usize) -> PResult<'_, &str, R> {
    match input.split_at_checked(at) {
        Some((head, rest)) => Ok((rest, head)),
        None => Err(nom::Err::Error(Fail::Mismatch)),
    }
}

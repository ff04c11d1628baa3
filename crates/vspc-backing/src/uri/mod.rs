//! Typed parsers for the URIs of a network serial port: service URIs, proxy URIs and
//! authentication parameters (docs/uri-backing.md, "The URI grammar").
//!
//! The `url` crate follows the WHATWG rules, which reject `telnet://:12345` and read
//! `host:port` as scheme `host`; these parsers implement the grammar ESXi actually reads.
//! Every type here round-trips exactly through [`FromStr`](std::str::FromStr) and
//! [`Display`](std::fmt::Display), with two normalisations only: the scheme is written
//! lower-case, and leading zeros of the port are dropped (`h:023` is written `h:23`).
//!
//! The grammar is written with `nom` combinators, one module per concern. The modules depend
//! on each other in one direction only: the schemes and the authentication keys, then the
//! errors that name them, then the host, port and authentication-parameter grammars, then
//! the authority that combines them, then the two URI forms and their `url` conversions.

mod auth;
mod auth_key;
mod authority;
mod error;
mod host;
mod parse;
mod port;
mod proxy;
mod scheme;
mod service;
mod url;

pub use auth::{AuthParam, AuthParams};
pub use auth_key::AuthKey;
pub use error::{UriError, UriErrorKind, UriRole};
pub use host::Host;
pub use proxy::ProxyUri;
pub use scheme::{AddressFamily, ProxyScheme, Scheme, Transport};
pub use service::ServiceUri;
pub use url::UrlConversionError;

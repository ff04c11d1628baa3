//! Who may speak as a VM: the VM listener's source allowlist (`[vm] allow`).
//!
//! ESXi sends no secret when a reconfigured port reconnects, so any connection that presents
//! a VM's UUID is re-attached to that VM's entry and receives its clients' input. The
//! listener therefore admits only the networks ESXi hosts connect from (their management
//! networks); the check happens before the handshake.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IP network in CIDR notation (`10.0.0.0/8`, `fd00::/8`, or a single address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

/// Why a network did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid network {0:?}: expected ADDRESS or ADDRESS/PREFIX")]
pub struct IpNetError(String);

impl FromStr for IpNet {
    type Err = IpNetError;

    fn from_str(text: &str) -> Result<IpNet, IpNetError> {
        let error = || IpNetError(text.to_owned());
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| error())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().map_err(|_| error())?,
            None => max,
        };
        if prefix > max {
            return Err(error());
        }
        Ok(IpNet { addr, prefix })
    }
}

impl TryFrom<String> for IpNet {
    type Error = IpNetError;

    fn try_from(text: String) -> Result<IpNet, IpNetError> {
        text.parse()
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl IpNet {
    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Whether a VM connection from `ip` is admitted: everything when the list is empty.
pub(crate) fn admitted(allow: &[IpNet], ip: IpAddr) -> bool {
    allow.is_empty() || allow.iter().any(|net| net.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    #[test]
    fn networks_contain_their_addresses_only() {
        let lan = net("10.20.0.0/16");
        assert!(lan.contains("10.20.3.4".parse().unwrap()));
        assert!(!lan.contains("10.21.0.1".parse().unwrap()));
        assert!(lan.contains("::ffff:10.20.0.9".parse().unwrap()));
        assert!(!lan.contains("fd00::1".parse().unwrap()));
        assert!(net("0.0.0.0/0").contains("192.0.2.1".parse().unwrap()));
        assert!(net("192.0.2.7").contains("192.0.2.7".parse().unwrap()));
        assert!(!net("192.0.2.7").contains("192.0.2.8".parse().unwrap()));
        assert!(net("fd00::/8").contains("fd12::1".parse().unwrap()));
        assert!(net("::/0").contains("2001:db8::1".parse().unwrap()));
        assert_eq!(net("10.0.0.0/8").to_string(), "10.0.0.0/8");
    }

    #[test]
    fn malformed_networks_are_errors() {
        for bad in [
            "",
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0/8",
            "host/8",
            "10.0.0.0/x",
        ] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn an_empty_list_admits_everything() {
        assert!(admitted(&[], "203.0.113.5".parse().unwrap()));
        assert!(!admitted(
            &[net("10.0.0.0/8")],
            "203.0.113.5".parse().unwrap()
        ));
    }
}

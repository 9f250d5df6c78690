//! IPv4/IPv6 networks, as much of them as routes and node IPAM need.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// A network: address with host bits cleared, and prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR {input:?}: {reason}")]
pub struct CidrError {
    pub input: String,
    pub reason: &'static str,
}

impl IpNet {
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        let bits = bits_of(&addr);
        if prefix > bits {
            return None;
        }
        let network = from_u128(to_u128(&addr) & mask(bits, prefix), addr.is_ipv4());
        Some(Self {
            addr: network,
            prefix,
        })
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// 32 or 128.
    pub fn bits(&self) -> u8 {
        bits_of(&self.addr)
    }

    pub fn first(&self) -> IpAddr {
        self.addr
    }

    pub fn last(&self) -> IpAddr {
        let host = !mask(self.bits(), self.prefix) & full(self.bits());
        from_u128(to_u128(&self.addr) | host, self.is_ipv4())
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        ip.is_ipv4() == self.is_ipv4()
            && to_u128(ip) & mask(self.bits(), self.prefix) == to_u128(&self.addr)
    }

    pub fn overlaps(&self, other: &IpNet) -> bool {
        self.contains(&other.first()) || other.contains(&self.first())
    }

    /// How many /`mask` subnets this network holds (None if `mask` is shorter
    /// than the prefix or longer than the address).
    pub fn subnet_count(&self, mask: u8) -> Option<u128> {
        if mask < self.prefix || mask > self.bits() {
            return None;
        }
        1u128.checked_shl(u32::from(mask - self.prefix))
    }

    /// The `index`th /`mask` subnet.
    pub fn subnet(&self, mask: u8, index: u128) -> Option<IpNet> {
        if index >= self.subnet_count(mask)? {
            return None;
        }
        let shift = u32::from(self.bits() - mask);
        let offset = index.checked_shl(shift)?;
        IpNet::new(
            from_u128(to_u128(&self.addr) | offset, self.is_ipv4()),
            mask,
        )
    }

    /// The index of `subnet` among this network's /`subnet.prefix` subnets.
    pub fn index_of(&self, subnet: &IpNet) -> Option<u128> {
        if !self.contains(&subnet.addr) || subnet.prefix < self.prefix {
            return None;
        }
        let shift = u32::from(self.bits() - subnet.prefix);
        Some((to_u128(&subnet.addr) - to_u128(&self.addr)) >> shift)
    }
}

impl FromStr for IpNet {
    type Err = CidrError;

    /// Like Go's `net.ParseCIDR`: host bits are allowed and cleared.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| CidrError {
            input: s.to_string(),
            reason,
        };
        let (addr, prefix) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| err("missing /prefix"))?;
        let addr: IpAddr = addr.parse().map_err(|_| err("not an IP address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| err("prefix is not a number"))?;
        IpNet::new(addr, prefix).ok_or_else(|| err("prefix too long for the address family"))
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Parses a comma-separated list such as `--cluster-cidr`.
pub fn parse_list(s: &str) -> Result<Vec<IpNet>, CidrError> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(str::parse)
        .collect()
}

fn bits_of(addr: &IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

fn full(bits: u8) -> u128 {
    if bits == 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    }
}

fn mask(bits: u8, prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        (full(bits) >> (bits - prefix) << (bits - prefix)) & full(bits)
    }
}

fn to_u128(addr: &IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(*a)),
        IpAddr::V6(a) => u128::from(*a),
    }
}

fn from_u128(v: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(v as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn parsing_clears_host_bits_and_rejects_garbage() {
        assert_eq!(net("10.244.3.7/16").to_string(), "10.244.0.0/16");
        assert_eq!(net("fd00::1/64").to_string(), "fd00::/64");
        assert_eq!(net("0.0.0.0/0").last().to_string(), "255.255.255.255");
        assert!("10.0.0.0".parse::<IpNet>().is_err());
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("nope/8".parse::<IpNet>().is_err());
        assert_eq!(
            "10.0.0.0/x".parse::<IpNet>().unwrap_err().to_string(),
            "invalid CIDR \"10.0.0.0/x\": prefix is not a number"
        );
    }

    #[test]
    fn first_last_contains() {
        let n = net("10.244.0.0/16");
        assert_eq!(n.first().to_string(), "10.244.0.0");
        assert_eq!(n.last().to_string(), "10.244.255.255");
        assert!(n.contains(&"10.244.9.9".parse().unwrap()));
        assert!(!n.contains(&"10.245.0.0".parse().unwrap()));
        assert!(!n.contains(&"::1".parse().unwrap()));
        assert_eq!(net("fd00::/120").last().to_string(), "fd00::ff");
    }

    #[test]
    fn subnets_and_their_indexes() {
        let n = net("10.244.0.0/16");
        assert_eq!(n.subnet_count(24), Some(256));
        assert_eq!(n.subnet(24, 0).unwrap().to_string(), "10.244.0.0/24");
        assert_eq!(n.subnet(24, 255).unwrap().to_string(), "10.244.255.0/24");
        assert_eq!(n.subnet(24, 256), None);
        assert_eq!(n.index_of(&net("10.244.7.0/24")), Some(7));
        assert_eq!(n.subnet_count(8), None);
        let v6 = net("fd00:10::/56");
        assert_eq!(v6.subnet(64, 3).unwrap().to_string(), "fd00:10:0:3::/64");
        assert_eq!(v6.index_of(&net("fd00:10:0:3::/64")), Some(3));
    }

    #[test]
    fn overlaps() {
        assert!(net("10.0.0.0/8").overlaps(&net("10.96.0.0/12")));
        assert!(net("10.96.0.0/12").overlaps(&net("10.0.0.0/8")));
        assert!(!net("10.0.0.0/16").overlaps(&net("10.1.0.0/16")));
    }

    #[test]
    fn lists() {
        let l = parse_list("10.244.0.0/16, fd00::/48").unwrap();
        assert_eq!(l.len(), 2);
        assert!(parse_list("").unwrap().is_empty());
    }
}

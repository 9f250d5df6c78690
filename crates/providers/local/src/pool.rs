//! Address pools: named sets of addresses, written as CIDRs
//! ("192.168.50.0/28"), ranges ("192.168.50.100-192.168.50.120") or single
//! addresses, IPv4 and IPv6.

use std::net::IpAddr;

/// One contiguous run of addresses, both ends included, of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressRange {
    first: IpAddr,
    last: IpAddr,
}

impl AddressRange {
    /// Parses a CIDR, a "first-last" range or a single address. With
    /// `avoid_buggy_ips`, addresses ending in .0 or .255 are left out, as
    /// MetalLB's option of that name does (some old devices drop them).
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some((addr, bits)) = s.split_once('/') {
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| format!("{s:?}: {addr:?} is not an IP address"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let bits: u32 = bits
                .parse()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?;
            let host_bits = max - bits;
            let mask = if host_bits >= 128 {
                0
            } else {
                u128::MAX << host_bits
            };
            let value = to_u128(addr);
            let first = value & mask & family_max(addr);
            if first != value {
                return Err(format!(
                    "{s:?}: host bits are set; the network is {}/{bits}",
                    from_u128(first, addr.is_ipv6())
                ));
            }
            let last = first | (!mask & family_max(addr));
            return Ok(Self {
                first: from_u128(first, addr.is_ipv6()),
                last: from_u128(last, addr.is_ipv6()),
            });
        }
        if let Some((a, b)) = s.split_once('-') {
            let first: IpAddr = a
                .trim()
                .parse()
                .map_err(|_| format!("{s:?}: {:?} is not an IP address", a.trim()))?;
            let last: IpAddr = b
                .trim()
                .parse()
                .map_err(|_| format!("{s:?}: {:?} is not an IP address", b.trim()))?;
            if first.is_ipv4() != last.is_ipv4() {
                return Err(format!("{s:?}: both ends must be of one IP family"));
            }
            if to_u128(first) > to_u128(last) {
                return Err(format!("{s:?}: the first address is above the last"));
            }
            return Ok(Self { first, last });
        }
        let addr: IpAddr = s
            .parse()
            .map_err(|_| format!("{s:?} is not a CIDR, a first-last range or an IP address"))?;
        Ok(Self {
            first: addr,
            last: addr,
        })
    }

    pub fn is_ipv4(&self) -> bool {
        self.first.is_ipv4()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.is_ipv4()
            && (to_u128(self.first)..=to_u128(self.last)).contains(&to_u128(ip))
    }

    pub fn overlaps(&self, other: &AddressRange) -> bool {
        self.is_ipv4() == other.is_ipv4()
            && to_u128(self.first) <= to_u128(other.last)
            && to_u128(other.first) <= to_u128(self.last)
    }

    /// The addresses in order (lazily: an IPv6 /64 is fine).
    pub fn iter(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let v6 = self.first.is_ipv6();
        (to_u128(self.first)..=to_u128(self.last)).map(move |v| from_u128(v, v6))
    }

    /// How many IPv4 addresses of the range end in `octet`.
    fn count_last_octet(&self, octet: u8) -> u128 {
        let (first, last) = (to_u128(self.first) as i128, to_u128(self.last) as i128);
        let below = |n: i128| (n - i128::from(octet)).div_euclid(256);
        (below(last) - below(first - 1)) as u128
    }

    /// How many addresses, saturating (for messages).
    pub fn len(&self) -> u128 {
        (to_u128(self.last) - to_u128(self.first)).saturating_add(1)
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

impl std::fmt::Display for AddressRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// A named pool, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    pub ranges: Vec<AddressRange>,
    /// Empty: every namespace may use the pool.
    pub namespaces: Vec<String>,
    pub avoid_buggy_ips: bool,
    /// `false`: addresses only for Services that name this pool or one of
    /// its addresses (MetalLB's `autoAssign`).
    pub auto_assign: bool,
}

impl Pool {
    pub fn allows_namespace(&self, namespace: &str) -> bool {
        self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|r| r.contains(ip)) && !(self.avoid_buggy_ips && is_buggy(ip))
    }

    pub fn has_family(&self, v4: bool) -> bool {
        self.ranges.iter().any(|r| r.is_ipv4() == v4)
    }

    /// How many addresses the pool hands out (MetalLB's
    /// `metallb_allocator_addresses_total`); a float, as an IPv6 range can
    /// hold more than any integer gauge.
    pub fn size(&self) -> f64 {
        self.ranges
            .iter()
            .map(|r| {
                let all = r.len() as f64;
                if self.avoid_buggy_ips && r.is_ipv4() {
                    all - (r.count_last_octet(0) + r.count_last_octet(255)) as f64
                } else {
                    all
                }
            })
            .sum()
    }

    /// The pool's addresses of one family, in the order written.
    pub fn addresses(&self, v4: bool) -> impl Iterator<Item = IpAddr> + '_ {
        self.ranges
            .iter()
            .filter(move |r| r.is_ipv4() == v4)
            .flat_map(AddressRange::iter)
            .filter(move |ip| !(self.avoid_buggy_ips && is_buggy(*ip)))
    }
}

fn is_buggy(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => matches!(v4.octets()[3], 0 | 255),
        IpAddr::V6(_) => false,
    }
}

fn family_max(ip: IpAddr) -> u128 {
    if ip.is_ipv4() {
        u128::from(u32::MAX)
    } else {
        u128::MAX
    }
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_u128(v: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(v.into())
    } else {
        IpAddr::V4((v as u32).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(r: &AddressRange) -> Vec<String> {
        r.iter().map(|ip| ip.to_string()).collect()
    }

    #[test]
    fn a_cidr_covers_every_address_of_the_network() {
        let r = AddressRange::parse("192.168.50.0/30").unwrap();
        assert_eq!(
            ips(&r),
            [
                "192.168.50.0",
                "192.168.50.1",
                "192.168.50.2",
                "192.168.50.3"
            ]
        );
        let r = AddressRange::parse("fd00::/126").unwrap();
        assert_eq!(ips(&r), ["fd00::", "fd00::1", "fd00::2", "fd00::3"]);
        assert_eq!(AddressRange::parse("fd00::/64").unwrap().len(), 1 << 64);
    }

    #[test]
    fn ranges_and_single_addresses() {
        let r = AddressRange::parse("192.168.50.100-192.168.50.102").unwrap();
        assert_eq!(
            ips(&r),
            ["192.168.50.100", "192.168.50.101", "192.168.50.102"]
        );
        assert_eq!(ips(&AddressRange::parse("10.1.2.3").unwrap()), ["10.1.2.3"]);
        assert!(r.contains("192.168.50.101".parse().unwrap()));
        assert!(!r.contains("192.168.50.103".parse().unwrap()));
    }

    #[test]
    fn bad_ranges_say_what_is_wrong() {
        let cases = [
            (
                "192.168.50.1/28",
                "host bits are set; the network is 192.168.50.0/28",
            ),
            ("192.168.50.0/33", "the prefix length must be 0 to 32"),
            ("10.0.0.9-10.0.0.1", "the first address is above the last"),
            ("10.0.0.1-fd00::1", "both ends must be of one IP family"),
            (
                "poolA",
                "is not a CIDR, a first-last range or an IP address",
            ),
        ];
        for (input, want) in cases {
            let err = AddressRange::parse(input).unwrap_err();
            assert!(err.contains(want), "{input}: {err}");
        }
    }

    #[test]
    fn avoid_buggy_ips_skips_dot_zero_and_dot_255() {
        let pool = Pool {
            name: "p".into(),
            ranges: vec![AddressRange::parse("10.0.0.254-10.0.1.1").unwrap()],
            namespaces: vec![],
            auto_assign: true,
            avoid_buggy_ips: true,
        };
        let got: Vec<String> = pool.addresses(true).map(|ip| ip.to_string()).collect();
        assert_eq!(got, ["10.0.0.254", "10.0.1.1"]);
        assert!(!pool.contains("10.0.1.0".parse().unwrap()));
    }

    #[test]
    fn a_pool_counts_what_it_hands_out() {
        let pool = |ranges: &[&str], avoid: bool| Pool {
            name: "p".into(),
            ranges: ranges
                .iter()
                .map(|r| AddressRange::parse(r).unwrap())
                .collect(),
            namespaces: Vec::new(),
            avoid_buggy_ips: avoid,
            auto_assign: true,
        };
        assert_eq!(pool(&["10.0.0.0/24", "10.0.1.7"], false).size(), 257.0);
        // .0 and .255 of 10.0.0.0/23, and 10.0.1.255 of the range.
        assert_eq!(pool(&["10.0.0.0/23"], true).size(), 508.0);
        assert_eq!(pool(&["10.0.1.250-10.0.2.3"], true).size(), 8.0);
        assert_eq!(pool(&["fd00::/120"], true).size(), 256.0);
    }
}

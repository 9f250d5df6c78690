//! The range allocator's bookkeeping: one bitmap of node-sized subnets per
//! cluster CIDR (upstream's `cidrset`), so no subnet is ever handed out twice.

use crate::cidr::IpNet;

/// Upstream's limit: a cluster CIDR may hold at most 2^16 node subnets.
pub const MAX_SUBNET_BITS: u8 = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("node CIDR mask /{mask} does not fit cluster CIDR {cluster}")]
    MaskOutOfRange { cluster: IpNet, mask: u8 },
    #[error(
        "node CIDR mask /{mask} is too big compared to cluster CIDR {cluster} (at most {MAX_SUBNET_BITS} bits more)"
    )]
    MaskTooBig { cluster: IpNet, mask: u8 },
    #[error("no remaining /{mask} CIDRs in cluster CIDR {cluster}")]
    Exhausted { cluster: IpNet, mask: u8 },
}

#[derive(Debug, Clone)]
pub struct CidrSet {
    cluster: IpNet,
    mask: u8,
    used: Vec<bool>,
    in_use: usize,
    /// Where the next search starts, so released subnets are not reused at once.
    next: usize,
}

impl CidrSet {
    pub fn new(cluster: IpNet, mask: u8) -> Result<Self, AllocError> {
        if mask < cluster.prefix() || mask > cluster.bits() {
            return Err(AllocError::MaskOutOfRange { cluster, mask });
        }
        if mask - cluster.prefix() > MAX_SUBNET_BITS {
            return Err(AllocError::MaskTooBig { cluster, mask });
        }
        let count = cluster.subnet_count(mask).expect("mask checked") as usize;
        Ok(Self {
            cluster,
            mask,
            used: vec![false; count],
            in_use: 0,
            next: 0,
        })
    }

    pub fn cluster(&self) -> IpNet {
        self.cluster
    }

    pub fn in_use(&self) -> usize {
        self.in_use
    }

    pub fn allocate(&mut self) -> Result<IpNet, AllocError> {
        let n = self.used.len();
        for step in 0..n {
            let i = (self.next + step) % n;
            if !self.used[i] {
                self.used[i] = true;
                self.in_use += 1;
                self.next = (i + 1) % n;
                return Ok(self
                    .cluster
                    .subnet(self.mask, i as u128)
                    .expect("index in range"));
            }
        }
        Err(AllocError::Exhausted {
            cluster: self.cluster,
            mask: self.mask,
        })
    }

    /// The range of subnet indexes `net` covers here, if it overlaps at all.
    fn indexes(&self, net: &IpNet) -> Option<std::ops::RangeInclusive<usize>> {
        if net.is_ipv4() != self.cluster.is_ipv4() || !net.overlaps(&self.cluster) {
            return None;
        }
        let clamp = |ip| {
            if self.cluster.contains(&ip) {
                ip
            } else if ip < self.cluster.first() {
                self.cluster.first()
            } else {
                self.cluster.last()
            }
        };
        let first = IpNet::new(clamp(net.first()), self.mask)?;
        let last = IpNet::new(clamp(net.last()), self.mask)?;
        let a = self.cluster.index_of(&first)? as usize;
        let b = self.cluster.index_of(&last)? as usize;
        Some(a..=b)
    }

    /// Marks every subnet that `net` overlaps as used (existing Node CIDRs,
    /// service ranges). Returns whether `net` overlapped this set at all.
    pub fn occupy(&mut self, net: &IpNet) -> bool {
        let Some(range) = self.indexes(net) else {
            return false;
        };
        for i in range {
            if !self.used[i] {
                self.used[i] = true;
                self.in_use += 1;
            }
        }
        true
    }

    pub fn release(&mut self, net: &IpNet) {
        if let Some(range) = self.indexes(net) {
            for i in range {
                if self.used[i] {
                    self.used[i] = false;
                    self.in_use -= 1;
                }
            }
        }
    }
}

/// One [`CidrSet`] per cluster CIDR; a Node gets one subnet from each.
#[derive(Debug, Clone)]
pub struct Allocator {
    sets: Vec<CidrSet>,
}

impl Allocator {
    pub fn new(cluster_cidrs: &[(IpNet, u8)]) -> Result<Self, AllocError> {
        Ok(Self {
            sets: cluster_cidrs
                .iter()
                .map(|(c, m)| CidrSet::new(*c, *m))
                .collect::<Result<_, _>>()?,
        })
    }

    /// One subnet per cluster CIDR, or none at all.
    pub fn allocate(&mut self) -> Result<Vec<IpNet>, AllocError> {
        let mut got = Vec::with_capacity(self.sets.len());
        for i in 0..self.sets.len() {
            match self.sets[i].allocate() {
                Ok(net) => got.push(net),
                Err(e) => {
                    self.release(&got);
                    return Err(e);
                }
            }
        }
        Ok(got)
    }

    /// Returns false when `net` lies outside every cluster CIDR.
    pub fn occupy(&mut self, net: &IpNet) -> bool {
        let mut inside = false;
        for set in &mut self.sets {
            inside |= set.occupy(net);
        }
        inside
    }

    pub fn release(&mut self, nets: &[IpNet]) {
        for net in nets {
            for set in &mut self.sets {
                set.release(net);
            }
        }
    }

    pub fn in_use(&self) -> Vec<usize> {
        self.sets.iter().map(CidrSet::in_use).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn allocates_every_subnet_once_then_is_exhausted() {
        let mut set = CidrSet::new(net("10.244.0.0/22"), 24).unwrap();
        let got: Vec<String> = (0..4)
            .map(|_| set.allocate().unwrap().to_string())
            .collect();
        assert_eq!(
            got,
            [
                "10.244.0.0/24",
                "10.244.1.0/24",
                "10.244.2.0/24",
                "10.244.3.0/24"
            ]
        );
        assert_eq!(
            set.allocate().unwrap_err().to_string(),
            "no remaining /24 CIDRs in cluster CIDR 10.244.0.0/22"
        );
        set.release(&net("10.244.2.0/24"));
        assert_eq!(set.allocate().unwrap().to_string(), "10.244.2.0/24");
    }

    #[test]
    fn occupied_subnets_are_skipped() {
        let mut set = CidrSet::new(net("10.244.0.0/22"), 24).unwrap();
        assert!(set.occupy(&net("10.244.0.0/24")));
        // A service range covering two node subnets.
        assert!(set.occupy(&net("10.244.2.0/23")));
        assert!(!set.occupy(&net("192.168.0.0/24")));
        assert_eq!(set.in_use(), 3);
        assert_eq!(set.allocate().unwrap().to_string(), "10.244.1.0/24");
        assert!(set.allocate().is_err());
    }

    #[test]
    fn a_larger_range_overlapping_the_cluster_occupies_only_the_overlap() {
        let mut set = CidrSet::new(net("10.244.0.0/22"), 24).unwrap();
        assert!(set.occupy(&net("10.0.0.0/8")));
        assert_eq!(set.in_use(), 4);
    }

    #[test]
    fn mask_limits() {
        assert!(matches!(
            CidrSet::new(net("10.244.0.0/16"), 8),
            Err(AllocError::MaskOutOfRange { .. })
        ));
        assert!(matches!(
            CidrSet::new(net("10.0.0.0/8"), 28),
            Err(AllocError::MaskTooBig { .. })
        ));
        assert!(CidrSet::new(net("fd00::/48"), 64).is_ok());
    }

    #[test]
    fn dual_stack_allocation_is_all_or_nothing() {
        let mut a = Allocator::new(&[(net("10.244.0.0/24"), 24), (net("fd00::/63"), 64)]).unwrap();
        let first = a.allocate().unwrap();
        assert_eq!(first.len(), 2);
        assert!(first[1].to_string().starts_with("fd00::"));
        // IPv4 is now exhausted: nothing is taken from IPv6 either.
        assert!(a.allocate().is_err());
        assert_eq!(a.in_use(), vec![1, 1]);
        a.release(&first);
        assert_eq!(a.in_use(), vec![0, 0]);
    }
}

//! VIP allocation from address pools: one address per Service and IP family,
//! explicit addresses honoured, a pool chosen by name or by namespace, and
//! addresses shared between Services that carry the same sharing key and do
//! not clash on a port (MetalLB's rule). Pure: no I/O, no clock.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use crate::pool::Pool;

/// (protocol, port) of a Service port.
pub type PortKey = (String, i32);

/// What a Service asks for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Request {
    /// namespace/name.
    pub service: String,
    pub namespace: String,
    /// The Service's IP families in order, `true` for IPv4.
    pub families: Vec<bool>,
    /// RequireDualStack: every family must get an address.
    pub require_all_families: bool,
    /// Explicit addresses (annotation or spec.loadBalancerIP).
    pub explicit: Vec<IpAddr>,
    /// A pool chosen by annotation.
    pub pool: Option<String>,
    pub sharing_key: Option<String>,
    pub ports: Vec<PortKey>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("address pool {0:?} does not exist")]
    UnknownPool(String),
    #[error("address pool {pool:?} does not allow namespace {namespace:?}")]
    Forbidden { pool: String, namespace: String },
    #[error("no address pool allows namespace {namespace:?} for an {family} address")]
    NoPool { namespace: String, family: Family },
    #[error(
        "address pool(s) {pools} give {family} addresses only on request (autoAssign: false): name the pool with local.overcast.dev/address-pool or an address with local.overcast.dev/load-balancer-ips"
    )]
    OnlyOnRequest { pools: String, family: Family },
    #[error("address pool {pool:?} has no {family} addresses")]
    NoFamily { pool: String, family: Family },
    #[error("no free {family} address in address pool(s) {pools}")]
    Exhausted { pools: String, family: Family },
    #[error("{ip} is not in any address pool")]
    NotInPool { ip: IpAddr },
    #[error("{ip} is in address pool {actual:?}, not in {wanted:?}")]
    NotInNamedPool {
        ip: IpAddr,
        actual: String,
        wanted: String,
    },
    #[error("{ip} is in use by {holder}{why}")]
    InUse {
        ip: IpAddr,
        holder: String,
        why: String,
    },
    #[error("{ip} is {family}, but the Service's IP families are {families}")]
    WrongFamily {
        ip: IpAddr,
        family: Family,
        families: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Family(pub bool);

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0 { "IPv4" } else { "IPv6" })
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Holder {
    sharing_key: Option<String>,
    ports: Vec<PortKey>,
}

#[derive(Clone, Debug, Default)]
pub struct Allocator {
    /// address → the Services holding it.
    addresses: BTreeMap<IpAddr, BTreeMap<String, Holder>>,
    /// Service → its addresses, in family order.
    services: HashMap<String, Vec<IpAddr>>,
}

impl Allocator {
    /// The Service's addresses, if it holds any.
    pub fn addresses_of(&self, service: &str) -> Option<&[IpAddr]> {
        self.services.get(service).map(Vec::as_slice)
    }

    /// Every address some Service holds.
    pub fn in_use(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.addresses.keys().copied()
    }

    /// How many Services hold `ip`.
    pub fn holders(&self, ip: IpAddr) -> usize {
        self.addresses.get(&ip).map_or(0, BTreeMap::len)
    }

    /// Records addresses a Service already has (from its status after a
    /// restart), whatever the pools now say: an address in use is never
    /// handed to another Service.
    pub fn restore(&mut self, req: &Request, addresses: &[IpAddr]) {
        self.release(&req.service);
        if addresses.is_empty() {
            return;
        }
        for ip in addresses {
            self.addresses.entry(*ip).or_default().insert(
                req.service.clone(),
                Holder {
                    sharing_key: req.sharing_key.clone(),
                    ports: req.ports.clone(),
                },
            );
        }
        self.services
            .insert(req.service.clone(), addresses.to_vec());
    }

    /// Frees the Service's addresses (those shared stay with the others).
    pub fn release(&mut self, service: &str) -> Vec<IpAddr> {
        let held = self.services.remove(service).unwrap_or_default();
        for ip in &held {
            if let Some(holders) = self.addresses.get_mut(ip) {
                holders.remove(service);
                if holders.is_empty() {
                    self.addresses.remove(ip);
                }
            }
        }
        held
    }

    /// Gives the Service its addresses: the ones it holds when they still fit
    /// the request, else new ones. Nothing changes on an error.
    pub fn assign(&mut self, pools: &[Pool], req: &Request) -> Result<Vec<IpAddr>, AllocError> {
        let wanted = if req.explicit.is_empty() {
            let current = self.services.get(&req.service).cloned().unwrap_or_default();
            let mut wanted = Vec::new();
            for (i, v4) in req.families.iter().copied().enumerate() {
                let keep = current.iter().copied().find(|ip| {
                    ip.is_ipv4() == v4
                        && self.permitted(pools, *ip, req).is_ok()
                        && self.available(*ip, req).is_ok()
                });
                if let Some(ip) = keep {
                    wanted.push(ip);
                    continue;
                }
                match self.pick(pools, req, v4) {
                    Ok(ip) => wanted.push(ip),
                    // PreferDualStack: the secondary family is best effort.
                    Err(_) if i > 0 && !req.require_all_families => {}
                    Err(e) => return Err(e),
                }
            }
            wanted
        } else {
            for ip in &req.explicit {
                if !req.families.contains(&ip.is_ipv4()) {
                    return Err(AllocError::WrongFamily {
                        ip: *ip,
                        family: Family(ip.is_ipv4()),
                        families: req
                            .families
                            .iter()
                            .map(|v4| Family(*v4).to_string())
                            .collect::<Vec<_>>()
                            .join(","),
                    });
                }
                self.permitted(pools, *ip, req)?;
                self.available(*ip, req)?;
            }
            req.explicit.clone()
        };
        self.restore(req, &wanted);
        Ok(wanted)
    }

    /// Whether the pools let this Service have `ip`.
    fn permitted(&self, pools: &[Pool], ip: IpAddr, req: &Request) -> Result<(), AllocError> {
        let pool = pools
            .iter()
            .find(|p| p.contains(ip))
            .ok_or(AllocError::NotInPool { ip })?;
        if let Some(wanted) = &req.pool
            && *wanted != pool.name
        {
            return Err(AllocError::NotInNamedPool {
                ip,
                actual: pool.name.clone(),
                wanted: wanted.clone(),
            });
        }
        if !pool.allows_namespace(&req.namespace) {
            return Err(AllocError::Forbidden {
                pool: pool.name.clone(),
                namespace: req.namespace.clone(),
            });
        }
        Ok(())
    }

    /// Whether `ip` is free for this Service: unused, used only by it, or
    /// shared under the same key without a port clash.
    fn available(&self, ip: IpAddr, req: &Request) -> Result<(), AllocError> {
        let Some(holders) = self.addresses.get(&ip) else {
            return Ok(());
        };
        for (service, holder) in holders {
            if *service == req.service {
                continue;
            }
            let in_use = |why: String| AllocError::InUse {
                ip,
                holder: service.clone(),
                why,
            };
            match (&req.sharing_key, &holder.sharing_key) {
                (Some(a), Some(b)) if a == b => {}
                (Some(_), Some(_)) => {
                    return Err(in_use(" under another sharing key".into()));
                }
                _ => return Err(in_use(String::new())),
            }
            if let Some((proto, port)) = req.ports.iter().find(|p| holder.ports.contains(p)) {
                return Err(in_use(format!(" on port {port}/{proto}")));
            }
        }
        Ok(())
    }

    fn pick(&self, pools: &[Pool], req: &Request, v4: bool) -> Result<IpAddr, AllocError> {
        let family = Family(v4);
        let candidates: Vec<&Pool> = match &req.pool {
            Some(name) => {
                let pool = pools
                    .iter()
                    .find(|p| p.name == *name)
                    .ok_or_else(|| AllocError::UnknownPool(name.clone()))?;
                if !pool.allows_namespace(&req.namespace) {
                    return Err(AllocError::Forbidden {
                        pool: name.clone(),
                        namespace: req.namespace.clone(),
                    });
                }
                if !pool.has_family(v4) {
                    return Err(AllocError::NoFamily {
                        pool: name.clone(),
                        family,
                    });
                }
                vec![pool]
            }
            None => {
                let usable: Vec<&Pool> = pools
                    .iter()
                    .filter(|p| p.allows_namespace(&req.namespace) && p.has_family(v4))
                    .collect();
                let automatic: Vec<&Pool> =
                    usable.iter().copied().filter(|p| p.auto_assign).collect();
                if automatic.is_empty() && !usable.is_empty() {
                    return Err(AllocError::OnlyOnRequest {
                        pools: quoted(&usable),
                        family,
                    });
                }
                automatic
            }
        };
        if candidates.is_empty() {
            return Err(AllocError::NoPool {
                namespace: req.namespace.clone(),
                family,
            });
        }
        // A shared address first, so Services with one key end up together.
        if req.sharing_key.is_some() {
            for (ip, holders) in &self.addresses {
                let shares = holders.values().all(|h| h.sharing_key == req.sharing_key);
                if ip.is_ipv4() == v4
                    && shares
                    && candidates.iter().any(|p| p.contains(*ip))
                    && self.available(*ip, req).is_ok()
                {
                    return Ok(*ip);
                }
            }
        }
        for pool in &candidates {
            if let Some(ip) = pool
                .addresses(v4)
                .find(|ip| !self.addresses.contains_key(ip))
            {
                return Ok(ip);
            }
        }
        Err(AllocError::Exhausted {
            pools: quoted(&candidates),
            family,
        })
    }
}

/// Pool names for a message: `"a", "b"`.
fn quoted(pools: &[&Pool]) -> String {
    pools
        .iter()
        .map(|p| format!("{:?}", p.name))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::AddressRange;

    fn pool(name: &str, ranges: &[&str], namespaces: &[&str]) -> Pool {
        Pool {
            name: name.into(),
            ranges: ranges
                .iter()
                .map(|r| AddressRange::parse(r).unwrap())
                .collect(),
            namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
            avoid_buggy_ips: false,
            auto_assign: true,
        }
    }

    #[test]
    fn a_pool_without_auto_assign_serves_only_requests_for_it() {
        let reserved = Pool {
            auto_assign: false,
            ..pool("reserved", &["10.0.1.0/30"], &[])
        };
        let pools = vec![reserved.clone(), pool("general", &["10.0.0.0/30"], &[])];
        let mut a = Allocator::default();
        assert_eq!(a.assign(&pools, &req("ns/any")).unwrap(), [ip("10.0.0.0")]);
        let named = Request {
            pool: Some("reserved".into()),
            ..req("ns/named")
        };
        assert_eq!(a.assign(&pools, &named).unwrap(), [ip("10.0.1.0")]);
        let explicit = Request {
            explicit: vec![ip("10.0.1.2")],
            ..req("ns/explicit")
        };
        assert_eq!(a.assign(&pools, &explicit).unwrap(), [ip("10.0.1.2")]);
        let only_reserved = vec![reserved];
        let e = a.assign(&only_reserved, &req("ns/other")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "address pool(s) \"reserved\" give IPv4 addresses only on request (autoAssign: false): name the pool with local.overcast.dev/address-pool or an address with local.overcast.dev/load-balancer-ips"
        );
    }

    fn req(service: &str) -> Request {
        let namespace = service.split('/').next().unwrap().to_string();
        Request {
            service: service.into(),
            namespace,
            families: vec![true],
            ports: vec![("TCP".into(), 80)],
            ..Default::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn each_service_gets_its_own_address_until_the_pool_runs_out() {
        let pools = [pool("default", &["10.0.0.0/31"], &[])];
        let mut a = Allocator::default();
        assert_eq!(a.assign(&pools, &req("ns/a")).unwrap(), [ip("10.0.0.0")]);
        assert_eq!(a.assign(&pools, &req("ns/b")).unwrap(), [ip("10.0.0.1")]);
        // Asking again keeps the address.
        assert_eq!(a.assign(&pools, &req("ns/a")).unwrap(), [ip("10.0.0.0")]);
        let err = a.assign(&pools, &req("ns/c")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no free IPv4 address in address pool(s) \"default\""
        );
        a.release("ns/a");
        assert_eq!(a.assign(&pools, &req("ns/c")).unwrap(), [ip("10.0.0.0")]);
    }

    #[test]
    fn namespaces_pick_the_first_pool_that_allows_them() {
        let pools = [
            pool("team-a", &["10.0.1.0/30"], &["a"]),
            pool("shared", &["10.0.2.0/30"], &[]),
        ];
        let mut a = Allocator::default();
        assert_eq!(a.assign(&pools, &req("a/x")).unwrap(), [ip("10.0.1.0")]);
        assert_eq!(a.assign(&pools, &req("b/x")).unwrap(), [ip("10.0.2.0")]);
        let mut r = req("b/y");
        r.pool = Some("team-a".into());
        assert_eq!(
            a.assign(&pools, &r).unwrap_err().to_string(),
            "address pool \"team-a\" does not allow namespace \"b\""
        );
        let only_a = [pool("team-a", &["10.0.1.0/30"], &["a"])];
        assert_eq!(
            a.assign(&only_a, &req("b/z")).unwrap_err().to_string(),
            "no address pool allows namespace \"b\" for an IPv4 address"
        );
        r.pool = Some("nope".into());
        assert_eq!(
            a.assign(&pools, &r).unwrap_err(),
            AllocError::UnknownPool("nope".into())
        );
    }

    #[test]
    fn explicit_addresses_must_be_in_an_allowed_pool_and_free() {
        let pools = [
            pool("default", &["10.0.0.0/28"], &[]),
            pool("private", &["10.0.1.0/28"], &["a"]),
        ];
        let mut a = Allocator::default();
        let mut r = req("ns/a");
        r.explicit = vec![ip("10.0.0.7")];
        assert_eq!(a.assign(&pools, &r).unwrap(), [ip("10.0.0.7")]);
        let mut r2 = req("ns/b");
        r2.explicit = vec![ip("10.0.0.7")];
        assert_eq!(
            a.assign(&pools, &r2).unwrap_err().to_string(),
            "10.0.0.7 is in use by ns/a"
        );
        r2.explicit = vec![ip("192.0.2.1")];
        assert!(matches!(
            a.assign(&pools, &r2),
            Err(AllocError::NotInPool { .. })
        ));
        r2.explicit = vec![ip("10.0.1.1")];
        assert!(matches!(
            a.assign(&pools, &r2),
            Err(AllocError::Forbidden { .. })
        ));
        r2.explicit = vec![ip("fd00::1")];
        assert_eq!(
            a.assign(&pools, &r2).unwrap_err().to_string(),
            "fd00::1 is IPv6, but the Service's IP families are IPv4"
        );
        // The failed attempts changed nothing; automatic allocation skips .7.
        assert_eq!(a.addresses_of("ns/b"), None);
        let got: Vec<IpAddr> = (0..8)
            .map(|i| a.assign(&pools, &req(&format!("ns/s{i}"))).unwrap()[0])
            .collect();
        assert!(!got.contains(&ip("10.0.0.7")), "{got:?}");
    }

    #[test]
    fn sharing_needs_the_same_key_and_distinct_ports() {
        let pools = [pool("default", &["10.0.0.0/30"], &[])];
        let mut a = Allocator::default();
        let shared = |svc: &str, port: i32| {
            let mut r = req(svc);
            r.sharing_key = Some("web".into());
            r.ports = vec![("TCP".into(), port)];
            r
        };
        let first = a.assign(&pools, &shared("ns/http", 80)).unwrap();
        assert_eq!(a.assign(&pools, &shared("ns/https", 443)).unwrap(), first);
        assert_eq!(a.holders(first[0]), 2);
        // Same port: a new address.
        let other = a.assign(&pools, &shared("ns/http2", 80)).unwrap();
        assert_ne!(other, first);
        // An explicit request for a shared address with a clashing port fails.
        let mut r = shared("ns/clash", 443);
        r.explicit = first.clone();
        assert_eq!(
            a.assign(&pools, &r).unwrap_err().to_string(),
            "10.0.0.0 is in use by ns/https on port 443/TCP"
        );
        // Without the key, a shared address is taken.
        let mut r = req("ns/plain");
        r.explicit = first.clone();
        assert!(matches!(
            a.assign(&pools, &r),
            Err(AllocError::InUse { .. })
        ));
        // Releasing one sharer keeps the address for the other.
        a.release("ns/http");
        assert_eq!(a.holders(first[0]), 1);
        assert_eq!(a.addresses_of("ns/https"), Some(first.as_slice()));
    }

    #[test]
    fn dual_stack_gets_one_address_per_family() {
        let pools = [pool("default", &["10.0.0.0/30", "fd00::/126"], &[])];
        let mut a = Allocator::default();
        let mut r = req("ns/a");
        r.families = vec![false, true];
        assert_eq!(
            a.assign(&pools, &r).unwrap(),
            [ip("fd00::"), ip("10.0.0.0")]
        );
        let v4_only = [pool("default", &["10.0.0.0/30"], &[])];
        let mut prefer = req("ns/b");
        prefer.families = vec![true, false];
        assert_eq!(a.assign(&v4_only, &prefer).unwrap(), [ip("10.0.0.1")]);
        prefer.require_all_families = true;
        prefer.service = "ns/c".into();
        assert!(matches!(
            a.assign(&v4_only, &prefer),
            Err(AllocError::NoPool {
                family: Family(false),
                ..
            })
        ));
    }

    #[test]
    fn restored_addresses_are_never_handed_out_again() {
        let pools = [pool("default", &["10.0.0.0/31"], &[])];
        let mut a = Allocator::default();
        a.restore(&req("ns/old"), &[ip("10.0.0.0")]);
        assert_eq!(a.assign(&pools, &req("ns/new")).unwrap(), [ip("10.0.0.1")]);
        // The restored Service keeps its address on its first sync.
        assert_eq!(a.assign(&pools, &req("ns/old")).unwrap(), [ip("10.0.0.0")]);
        // An address outside today's pools is still held, but a sync moves
        // the Service into a pool.
        a.restore(&req("ns/moved"), &[ip("192.0.2.9")]);
        assert_eq!(a.holders(ip("192.0.2.9")), 1);
        assert!(matches!(
            a.assign(&pools, &req("ns/moved")),
            Err(AllocError::Exhausted { .. })
        ));
        assert_eq!(
            a.addresses_of("ns/moved"),
            Some([ip("192.0.2.9")].as_slice())
        );
    }
}

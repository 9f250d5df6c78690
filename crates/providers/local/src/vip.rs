//! VIPs on a network interface: added (with iproute2's `ip`, so the host
//! answers ARP / neighbour solicitations for them) while a listener uses
//! them, announced with gratuitous ARP (IPv4) or an unsolicited neighbour
//! advertisement (IPv6) so switches and neighbours learn where they are now,
//! and removed when the last listener goes or this process stops leading.
//!
//! Without an interface nothing is added: the listeners bind addresses the
//! host already has (loopback ranges, or addresses managed elsewhere).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum VipError {
    #[error("adding {ip} to interface {interface}: {message}")]
    Add {
        ip: IpAddr,
        interface: String,
        message: String,
    },
}

#[derive(Debug, Default)]
struct Held {
    users: usize,
    /// Whether this process added it (and so removes it).
    added: bool,
}

#[derive(Debug, Default)]
struct State {
    interface: String,
    held: HashMap<IpAddr, Held>,
}

#[derive(Debug)]
pub struct Vips {
    state: tokio::sync::Mutex<State>,
    managed: AtomicBool,
}

impl Vips {
    pub fn new(interface: &str) -> Self {
        Self {
            state: tokio::sync::Mutex::new(State {
                interface: interface.to_string(),
                held: HashMap::new(),
            }),
            managed: AtomicBool::new(!interface.is_empty()),
        }
    }

    /// Whether VIPs are added to an interface (listeners may then bind
    /// before the address is there).
    pub fn managed(&self) -> bool {
        self.managed.load(Ordering::Relaxed)
    }

    pub async fn acquire(&self, ip: IpAddr) -> Result<(), VipError> {
        let mut state = self.state.lock().await;
        let interface = state.interface.clone();
        let held = state.held.entry(ip).or_default();
        held.users += 1;
        if held.users == 1 && !interface.is_empty() {
            match add_address(&interface, ip).await {
                Ok(added) => held.added = added,
                Err(e) => {
                    held.users -= 1;
                    if held.users == 0 {
                        state.held.remove(&ip);
                    }
                    return Err(e);
                }
            }
            announce(interface, ip);
        }
        Ok(())
    }

    pub async fn release(&self, ip: IpAddr) {
        let mut state = self.state.lock().await;
        let interface = state.interface.clone();
        let Some(held) = state.held.get_mut(&ip) else {
            return;
        };
        held.users = held.users.saturating_sub(1);
        if held.users == 0 {
            if held.added {
                remove_address(&interface, ip).await;
            }
            state.held.remove(&ip);
        }
    }

    /// Removes every address this process added.
    pub async fn release_all(&self) {
        let mut state = self.state.lock().await;
        let interface = state.interface.clone();
        for (ip, held) in state.held.drain() {
            if held.added {
                remove_address(&interface, ip).await;
            }
        }
    }

    /// Moves every held VIP to `interface` ("" stops managing them).
    pub async fn set_interface(&self, interface: &str) -> Result<(), VipError> {
        let mut state = self.state.lock().await;
        if state.interface == interface {
            return Ok(());
        }
        let old = std::mem::replace(&mut state.interface, interface.to_string());
        self.managed.store(!interface.is_empty(), Ordering::Relaxed);
        for (ip, held) in state.held.iter_mut() {
            if held.added {
                remove_address(&old, *ip).await;
                held.added = false;
            }
            if !interface.is_empty() {
                held.added = add_address(interface, *ip).await?;
                announce(interface.to_string(), *ip);
            }
        }
        tracing::info!(from = %old, to = %interface, "VIPs moved to another interface");
        Ok(())
    }
}

/// `Ok(false)` when the address was already there (someone else's).
async fn add_address(interface: &str, ip: IpAddr) -> Result<bool, VipError> {
    let prefix = if ip.is_ipv4() { "32" } else { "128" };
    let mut args = vec![
        "addr".to_string(),
        "add".into(),
        format!("{ip}/{prefix}"),
        "dev".into(),
        interface.into(),
    ];
    if ip.is_ipv6() {
        // Usable at once: a VIP moving here must not wait for DAD.
        args.push("nodad".into());
    }
    let err = |message: String| VipError::Add {
        ip,
        interface: interface.to_string(),
        message,
    };
    let out = tokio::process::Command::new("ip")
        .args(&args)
        .output()
        .await
        .map_err(|e| {
            err(format!(
                "running `ip` (iproute2 is needed with loadBalancer.interface): {e}"
            ))
        })?;
    if out.status.success() {
        tracing::info!(%ip, interface, "VIP added");
        return Ok(true);
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if stderr.contains("File exists") {
        tracing::info!(%ip, interface, "VIP already on the interface; leaving it there on release");
        return Ok(false);
    }
    Err(err(stderr))
}

async fn remove_address(interface: &str, ip: IpAddr) {
    let prefix = if ip.is_ipv4() { "32" } else { "128" };
    match tokio::process::Command::new("ip")
        .args(["addr", "del", &format!("{ip}/{prefix}"), "dev", interface])
        .output()
        .await
    {
        Ok(out) if out.status.success() => tracing::info!(%ip, interface, "VIP removed"),
        Ok(out) => {
            tracing::warn!(%ip, interface, "removing the VIP failed: {}", String::from_utf8_lossy(&out.stderr).trim())
        }
        Err(e) => tracing::warn!(%ip, interface, "removing the VIP failed: {e}"),
    }
}

/// Announces three times, half a second apart (a single frame may be lost).
fn announce(interface: String, ip: IpAddr) {
    tokio::task::spawn_blocking(move || {
        for i in 0..3 {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(500));
            }
            let sent = interface_identity(&interface).and_then(|(index, mac)| match ip {
                IpAddr::V4(v4) => raw::send_frame(index, &gratuitous_arp(mac, v4)),
                IpAddr::V6(v6) => send_unsolicited_na(index, mac, v6),
            });
            if let Err(e) = sent {
                tracing::warn!(%ip, interface, "announcing the VIP failed: {e}");
                return;
            }
        }
        tracing::debug!(%ip, interface, "VIP announced");
    });
}

/// The interface's index and MAC address, from sysfs.
fn interface_identity(interface: &str) -> std::io::Result<(u32, [u8; 6])> {
    let base = std::path::Path::new("/sys/class/net").join(interface);
    let index: u32 = std::fs::read_to_string(base.join("ifindex"))?
        .trim()
        .parse()
        .map_err(|_| std::io::Error::other("unreadable ifindex"))?;
    let text = std::fs::read_to_string(base.join("address"))?;
    let mac = parse_mac(text.trim())
        .ok_or_else(|| std::io::Error::other(format!("{interface} has no MAC address")))?;
    Ok((index, mac))
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// A broadcast ARP request for `ip` from `ip` (RFC 5227's ARP announcement).
pub fn gratuitous_arp(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]); // destination: broadcast
    f.extend_from_slice(&mac);
    f.extend_from_slice(&0x0806u16.to_be_bytes()); // ARP
    f.extend_from_slice(&1u16.to_be_bytes()); // Ethernet
    f.extend_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f.extend_from_slice(&[6, 4]);
    f.extend_from_slice(&1u16.to_be_bytes()); // request
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&ip.octets());
    f
}

/// An unsolicited neighbour advertisement (RFC 4861 7.2.6) to all nodes,
/// with the override flag, from the VIP itself.
fn send_unsolicited_na(index: u32, mac: [u8; 6], ip: Ipv6Addr) -> std::io::Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    socket.set_multicast_hops_v6(255)?;
    socket.set_multicast_if_v6(index)?;
    socket.bind(&SocketAddr::V6(SocketAddrV6::new(ip, 0, 0, 0)).into())?;
    let mut msg = vec![136u8, 0, 0, 0, 0x20, 0, 0, 0];
    msg.extend_from_slice(&ip.octets());
    msg.extend_from_slice(&[2, 1]);
    msg.extend_from_slice(&mac);
    // The kernel fills in the ICMPv6 checksum on raw ICMPv6 sockets.
    let all_nodes = SocketAddrV6::new(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1), 0, 0, index);
    socket.send_to(&msg, &SocketAddr::V6(all_nodes).into())?;
    Ok(())
}

/// The one place with `unsafe`: a raw Ethernet frame through an AF_PACKET
/// socket, which neither std nor socket2 can address.
#[allow(unsafe_code)]
mod raw {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    pub fn send_frame(index: u32, frame: &[u8]) -> std::io::Result<()> {
        let protocol = (libc::ETH_P_ARP as u16).to_be();
        // SAFETY: plain socket(2); the descriptor is owned at once.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(protocol)) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = protocol;
        addr.sll_ifindex = index as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: the buffer and the address are valid for the lengths given.
        let sent = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gratuitous_arp_frame_layout() {
        let mac = [0x02, 0, 0, 0, 0, 0x01];
        let f = gratuitous_arp(mac, Ipv4Addr::new(192, 168, 50, 7));
        assert_eq!(f.len(), 42);
        assert_eq!(&f[..6], [0xff; 6]);
        assert_eq!(&f[6..12], mac);
        assert_eq!(&f[12..14], [0x08, 0x06]);
        assert_eq!(&f[20..22], [0, 1]); // request
        assert_eq!(&f[22..28], mac);
        assert_eq!(&f[28..32], [192, 168, 50, 7]);
        assert_eq!(&f[38..42], [192, 168, 50, 7]);
    }

    #[test]
    fn mac_addresses_from_sysfs() {
        assert_eq!(
            parse_mac("02:42:ac:11:00:02"),
            Some([2, 0x42, 0xac, 0x11, 0, 2])
        );
        assert_eq!(parse_mac("02:42"), None);
    }
}

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
use std::sync::{Arc, Weak};
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

/// The label suffix of the IPv4 addresses this provider adds (`eth0:ovc`).
pub const LABEL_SUFFIX: &str = ":ovc";

/// The default lifetime of an added VIP; see [`Vips::new`]. The shortest an
/// address can have: a SIGKILLed leader's leftover is gone (the kernel
/// deletes it on its next whole second, so within 2 s) about when a standby
/// with the chart's 1 s lease for `local` takes over, and no later than any
/// longer lease. The cost: one `ip -batch` every third of a second.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct Held {
    users: usize,
    /// Whether this process owns it (added or adopted it, renews and
    /// removes it).
    added: bool,
}

#[derive(Debug)]
struct State {
    interface: String,
    lifetime: Duration,
    garp_interval: Duration,
    held: HashMap<IpAddr, Held>,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

/// The VIPs this process serves. Every address it adds is marked as its own
/// (a finite lifetime it keeps renewing, `noprefixroute`, and for IPv4 the
/// label `<interface>:ovc`), so after a crash the address is recognised:
/// a restarted process adopts it, and if none comes back it expires by
/// itself within the lifetime, so a standby that takes over later never
/// shares the VIP with a dead leader's leftover. An address without the mark
/// is someone else's: used, never removed.
#[derive(Debug)]
pub struct Vips {
    state: Arc<tokio::sync::Mutex<State>>,
    managed: AtomicBool,
}

impl Vips {
    /// `lifetime`: how long an added VIP outlives this process if it is
    /// killed; renewed every third of it.
    /// `garp_interval`: how often they are announced again (zero: only
    /// when added).
    pub fn new(interface: &str, lifetime: Duration, garp_interval: Duration) -> Self {
        Self {
            state: Arc::new(tokio::sync::Mutex::new(State {
                interface: interface.to_string(),
                lifetime,
                garp_interval,
                held: HashMap::new(),
                renewer: None,
            })),
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
        let (interface, lifetime) = (state.interface.clone(), state.lifetime);
        let held = state.held.entry(ip).or_default();
        held.users += 1;
        if held.users == 1 && !interface.is_empty() {
            match add_address(&interface, ip, lifetime).await {
                Ok(owned) => held.added = owned,
                Err(e) => {
                    held.users -= 1;
                    if held.users == 0 {
                        state.held.remove(&ip);
                    }
                    return Err(e);
                }
            }
            announce(interface, ip);
            self.ensure_renewer(&mut state);
        }
        Ok(())
    }

    /// Starts renewing the owned addresses' lifetimes, once.
    fn ensure_renewer(&self, state: &mut State) {
        if state.renewer.as_ref().is_some_and(|r| !r.is_finished()) {
            return;
        }
        let weak = Arc::downgrade(&self.state);
        state.renewer = Some(tokio::spawn(renew(weak, state.lifetime)));
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

    /// Removes every address this process owns and stops renewing.
    pub async fn release_all(&self) {
        let mut state = self.state.lock().await;
        let interface = state.interface.clone();
        if let Some(renewer) = state.renewer.take() {
            renewer.abort();
        }
        for (ip, held) in state.held.drain() {
            if held.added {
                remove_address(&interface, ip).await;
            }
        }
    }

    /// Moves every held VIP to `interface` ("" stops managing them) and
    /// applies a new lifetime.
    pub async fn reconfigure(
        &self,
        interface: &str,
        lifetime: Duration,
        garp_interval: Duration,
    ) -> Result<(), VipError> {
        let mut state = self.state.lock().await;
        state.lifetime = lifetime;
        state.garp_interval = garp_interval;
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
                held.added = add_address(interface, *ip, lifetime).await?;
                announce(interface.to_string(), *ip);
            }
        }
        if !interface.is_empty() && !state.held.is_empty() {
            self.ensure_renewer(&mut state);
        }
        tracing::info!(from = %old, to = %interface, "VIPs moved to another interface");
        Ok(())
    }
}

impl Drop for Vips {
    fn drop(&mut self) {
        if let Ok(mut state) = self.state.try_lock()
            && let Some(renewer) = state.renewer.take()
        {
            renewer.abort();
        }
    }
}

/// Renews every owned address's lifetime each third of it, in one `ip
/// -batch`; ends when the [`Vips`] is gone.
async fn renew(state: Weak<tokio::sync::Mutex<State>>, lifetime: Duration) {
    let mut period = lifetime / 3;
    let mut announced = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(period).await;
        let Some(state) = state.upgrade() else { return };
        let state = state.lock().await;
        period = state.lifetime / 3;
        if state.interface.is_empty() {
            continue;
        }
        // Announced again now and then (gratuitous ARP / unsolicited NA),
        // for a switch or host that forgot where the VIP lives.
        if !state.garp_interval.is_zero() && announced.elapsed() >= state.garp_interval {
            announced = tokio::time::Instant::now();
            for (ip, _) in state.held.iter().filter(|(_, h)| h.added) {
                announce_once(state.interface.clone(), *ip);
            }
        }
        let lines: String = state
            .held
            .iter()
            .filter(|(_, h)| h.added)
            .map(|(ip, _)| {
                let args = owned_address_args(&state.interface, *ip, state.lifetime);
                format!("addr {}\n", args.join(" "))
            })
            .collect();
        if lines.is_empty() {
            continue;
        }
        if let Err(e) = ip_batch(&lines).await {
            tracing::warn!(interface = %state.interface, "renewing the VIPs' lifetimes failed: {e}");
        }
    }
}

/// An address as `ip -j addr show` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ListedAddress {
    pub local: IpAddr,
    #[serde(rename = "prefixlen")]
    pub prefix_len: u8,
    #[serde(default)]
    pub dynamic: bool,
    #[serde(default)]
    pub noprefixroute: bool,
    #[serde(default)]
    pub label: Option<String>,
}

/// Who has `ip` on the interface, decided from its addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Absent,
    /// Carries this provider's mark: added by this process or a killed
    /// predecessor on this node.
    Ours,
    /// Put there by someone else: used, left alone.
    Foreign,
}

pub fn presence(interface: &str, ip: IpAddr, listed: &[ListedAddress]) -> Presence {
    let Some(address) = listed.iter().find(|a| a.local == ip) else {
        return Presence::Absent;
    };
    let full_length = address.prefix_len == if ip.is_ipv4() { 32 } else { 128 };
    let label_matches = match (ip, label_for(interface)) {
        (IpAddr::V4(_), Some(label)) => address.label.as_deref() == Some(label.as_str()),
        _ => true,
    };
    if full_length && address.dynamic && address.noprefixroute && label_matches {
        Presence::Ours
    } else {
        Presence::Foreign
    }
}

/// The IPv4 label marking our addresses, when it fits IFNAMSIZ (labels must
/// start with the interface's name).
pub fn label_for(interface: &str) -> Option<String> {
    let label = format!("{interface}{LABEL_SUFFIX}");
    (label.len() <= 15).then_some(label)
}

/// `ip addr` arguments that add or renew an owned address.
fn owned_address_args(interface: &str, ip: IpAddr, lifetime: Duration) -> Vec<String> {
    let prefix = if ip.is_ipv4() { "32" } else { "128" };
    // Lifetimes are whole seconds; never below one.
    let seconds = lifetime.as_secs().max(1).to_string();
    let mut args = vec![
        "replace".to_string(),
        format!("{ip}/{prefix}"),
        "dev".into(),
        interface.into(),
    ];
    if let (IpAddr::V4(_), Some(label)) = (ip, label_for(interface)) {
        args.extend(["label".into(), label]);
    }
    args.extend([
        "noprefixroute".into(),
        "valid_lft".into(),
        seconds.clone(),
        "preferred_lft".into(),
        seconds,
    ]);
    if ip.is_ipv6() {
        // Usable at once: a VIP moving here must not wait for DAD.
        args.push("nodad".into());
    }
    args
}

/// The interface's addresses.
async fn listed_addresses(interface: &str) -> Result<Vec<ListedAddress>, String> {
    #[derive(serde::Deserialize)]
    struct Link {
        #[serde(default)]
        addr_info: Vec<serde_json::Value>,
    }
    let out = run_ip(&["-j", "addr", "show", "dev", interface]).await?;
    let links: Vec<Link> = serde_json::from_slice(&out)
        .map_err(|e| format!("reading `ip -j addr show dev {interface}`: {e}"))?;
    // Entries of other shapes (no `local`) are not VIPs: skipped.
    Ok(links
        .into_iter()
        .flat_map(|l| l.addr_info)
        .filter_map(|a| serde_json::from_value(a).ok())
        .collect())
}

async fn run_ip(args: &[&str]) -> Result<Vec<u8>, String> {
    let out = tokio::process::Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(|e| {
            format!("running `ip` (iproute2 is needed with loadBalancer.interface): {e}")
        })?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

async fn ip_batch(lines: &str) -> Result<(), String> {
    use tokio::io::AsyncWriteExt as _;
    let mut child = tokio::process::Command::new("ip")
        .args(["-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("running `ip`: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(lines.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().await.map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Adds `ip` (or adopts our own leftover); `Ok(false)` when it is someone
/// else's, which is used but never touched.
async fn add_address(interface: &str, ip: IpAddr, lifetime: Duration) -> Result<bool, VipError> {
    let err = |message: String| VipError::Add {
        ip,
        interface: interface.to_string(),
        message,
    };
    let listed = listed_addresses(interface).await.map_err(err)?;
    let presence = presence(interface, ip, &listed);
    if presence == Presence::Foreign {
        tracing::info!(%ip, interface, "VIP already on the interface, put there by someone else; leaving it there on release");
        return Ok(false);
    }
    let mut args = vec!["addr".to_string()];
    args.extend(owned_address_args(interface, ip, lifetime));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_ip(&args).await.map_err(err)?;
    if presence == Presence::Ours {
        tracing::info!(%ip, interface, "VIP left by an earlier run adopted");
    } else {
        tracing::info!(%ip, interface, "VIP added");
    }
    Ok(true)
}

async fn remove_address(interface: &str, ip: IpAddr) {
    let prefix = if ip.is_ipv4() { "32" } else { "128" };
    match run_ip(&["addr", "del", &format!("{ip}/{prefix}"), "dev", interface]).await {
        Ok(_) => tracing::info!(%ip, interface, "VIP removed"),
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
            if !send_announcement(&interface, ip) {
                return;
            }
        }
        tracing::debug!(%ip, interface, "VIP announced");
    });
}

/// One announcement, as the periodic ones are.
fn announce_once(interface: String, ip: IpAddr) {
    tokio::task::spawn_blocking(move || send_announcement(&interface, ip));
}

/// Sends one gratuitous ARP or unsolicited NA; false (logged) on failure.
fn send_announcement(interface: &str, ip: IpAddr) -> bool {
    let sent = interface_identity(interface).and_then(|(index, mac)| match ip {
        IpAddr::V4(v4) => raw::send_frame(index, &gratuitous_arp(mac, v4)),
        IpAddr::V6(v6) => send_unsolicited_na(index, mac, v6),
    });
    if let Err(e) = &sent {
        tracing::warn!(%ip, interface, "announcing the VIP failed: {e}");
    }
    sent.is_ok()
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

    fn listed(json: &str) -> Vec<ListedAddress> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn only_addresses_with_our_mark_are_ours() {
        let ip: IpAddr = "10.9.9.9".parse().unwrap();
        // As `ip -j addr show` lists them (iproute2 6.1).
        let ours = r#"[{"family":"inet","local":"10.9.9.9","prefixlen":32,"scope":"global","dynamic":true,"noprefixroute":true,"label":"eth0:ovc","valid_life_time":5,"preferred_life_time":5}]"#;
        assert_eq!(presence("eth0", ip, &listed(ours)), Presence::Ours);
        assert_eq!(presence("eth0", ip, &[]), Presence::Absent);
        let other: IpAddr = "10.9.9.10".parse().unwrap();
        assert_eq!(presence("eth0", other, &listed(ours)), Presence::Absent);
        // A static address, or one labelled otherwise, or a subnet address,
        // is someone else's.
        for foreign in [
            r#"[{"local":"10.9.9.9","prefixlen":32,"label":"eth0","valid_life_time":4294967295}]"#,
            r#"[{"local":"10.9.9.9","prefixlen":32,"dynamic":true,"noprefixroute":true,"label":"eth0"}]"#,
            r#"[{"local":"10.9.9.9","prefixlen":24,"dynamic":true,"noprefixroute":true,"label":"eth0:ovc"}]"#,
            r#"[{"local":"10.9.9.9","prefixlen":32,"dynamic":true,"label":"eth0:ovc"}]"#,
        ] {
            assert_eq!(
                presence("eth0", ip, &listed(foreign)),
                Presence::Foreign,
                "{foreign}"
            );
        }
        // IPv6 has no labels; an interface name too long for one neither.
        let v6: IpAddr = "fd00::9".parse().unwrap();
        let ours6 = r#"[{"local":"fd00::9","prefixlen":128,"dynamic":true,"noprefixroute":true,"nodad":true}]"#;
        assert_eq!(presence("eth0", v6, &listed(ours6)), Presence::Ours);
        let long = r#"[{"local":"10.9.9.9","prefixlen":32,"dynamic":true,"noprefixroute":true,"label":"enp0s31f6long"}]"#;
        assert_eq!(presence("enp0s31f6long", ip, &listed(long)), Presence::Ours);
    }

    #[test]
    fn owned_addresses_carry_the_mark_and_the_lifetime() {
        let args = owned_address_args(
            "eth0",
            "10.9.9.9".parse().unwrap(),
            Duration::from_millis(10_500),
        );
        assert_eq!(
            args.join(" "),
            "replace 10.9.9.9/32 dev eth0 label eth0:ovc noprefixroute valid_lft 10 preferred_lft 10"
        );
        let args = owned_address_args(
            "eth0",
            "fd00::9".parse().unwrap(),
            Duration::from_millis(300),
        );
        assert_eq!(
            args.join(" "),
            "replace fd00::9/128 dev eth0 noprefixroute valid_lft 1 preferred_lft 1 nodad"
        );
        assert_eq!(label_for("enp0s31f6long"), None, "15 characters at most");
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

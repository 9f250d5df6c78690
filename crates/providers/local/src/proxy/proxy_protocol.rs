//! The PROXY protocol v2 header (haproxy.org/download/2.6/doc/proxy-protocol.txt,
//! section 2.2) that tells a backend the client's address.

use std::net::{IpAddr, SocketAddr};

const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Version 2, command PROXY.
const V2_PROXY: u8 = 0x21;
const TCP_OVER_IPV4: u8 = 0x11;
const TCP_OVER_IPV6: u8 = 0x21;

/// The header for a TCP connection from `client` to `frontend`. Mixed
/// families are written as IPv6 (IPv4-mapped), as the spec allows.
pub fn header_v2(client: SocketAddr, frontend: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(52);
    out.extend_from_slice(&SIGNATURE);
    out.push(V2_PROXY);
    match (client.ip(), frontend.ip()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            out.push(TCP_OVER_IPV4);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&src.octets());
            out.extend_from_slice(&dst.octets());
        }
        (src, dst) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.push(TCP_OVER_IPV6);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(src).octets());
            out.extend_from_slice(&v6(dst).octets());
        }
    }
    out.extend_from_slice(&client.port().to_be_bytes());
    out.extend_from_slice(&frontend.port().to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_layout() {
        let h = header_v2(
            "192.0.2.1:51000".parse().unwrap(),
            "198.51.100.7:443".parse().unwrap(),
        );
        assert_eq!(h.len(), 16 + 12);
        assert_eq!(
            &h[..12],
            b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"
        );
        assert_eq!(&h[12..16], [0x21, 0x11, 0, 12]);
        assert_eq!(&h[16..20], [192, 0, 2, 1]);
        assert_eq!(&h[20..24], [198, 51, 100, 7]);
        assert_eq!(&h[24..26], 51000u16.to_be_bytes());
        assert_eq!(&h[26..28], 443u16.to_be_bytes());
    }

    #[test]
    fn mixed_families_are_written_as_ipv6() {
        let h = header_v2(
            "192.0.2.1:1".parse().unwrap(),
            "[fd00::7]:80".parse().unwrap(),
        );
        assert_eq!(h.len(), 16 + 36);
        assert_eq!(&h[12..16], [0x21, 0x21, 0, 36]);
        assert_eq!(
            &h[16..32],
            "::ffff:192.0.2.1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
    }
}

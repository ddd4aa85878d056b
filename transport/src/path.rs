//! The network path to a peer, and the QUIC transport settings it allows.
//!
//! quinn starts every connection at 1,200-byte datagrams and discovers larger ones up to
//! 1,452 bytes; each datagram then costs a few microseconds of CPU on each side (its header,
//! its encryption call, its system call share), which is what limited a pull over loopback to
//! ~0.7 GB/s on two cores. The route to a peer tells what the first hop carries (Linux:
//! `IP_MTU` on a connected socket): the loopback device 65,536 bytes, a jumbo-frame network
//! 9,000, ordinary Ethernet 1,500. A connection starts at what the route allows (within what
//! quinn's handshake can carry) and discovers up to it. Only when the peer is an address of
//! this host, so that the route is the whole path, is that size also the floor that loss may
//! not push it under; elsewhere a router further on may carry less, and quinn's black-hole
//! detection falls back to 1,200 bytes as before.
//!
//! Discovery itself is not free: quinn fills a probe with padding frames and its receiver
//! parses them one byte-long frame at a time. A binary search from 16,000 to 65,527 bytes
//! sends a dozen probes on every connection each way; when a driver joined 80 node daemons
//! sharing two cores, `perf` found nearly half of the machine's CPU parsing them, and the join
//! took 1.6-2.0 s (0.29 s without discovery). On this host the route's size is certain, so a
//! local connection probes it once, straight away (the join: 0.43-0.48 s).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;

/// The largest UDP payload QUIC allows (RFC 9000 §18.2).
pub(crate) const MAX_UDP_PAYLOAD: u16 = 65_527;

/// The largest datagram a connection starts with: quinn writes a handshake packet's length in a
/// two-byte field (under 16,384) and pads handshake datagrams to the starting size.
const MAX_START: u16 = 16_000;

/// The largest datagram sent with segmentation offload: quinn hands the kernel up to 10
/// datagrams in one send, and Linux takes at most 64 KiB in one (larger sends fail, and every
/// datagram in them is lost).
const MAX_OFFLOADED: u16 = 6_553;

/// What the default settings assume a path carries (quinn's discovery bound).
const ORDINARY: u16 = 1_452;

/// The initial congestion window's floor (RFC 9002 §7.2).
const MIN_INITIAL_WINDOW: u64 = 14_720;

/// The path to a peer, as far as this host can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Path {
    /// The largest UDP payload the route's first hop carries (`None`: not known).
    pub(crate) payload: Option<u16>,
    /// The peer is an address of this host: the route is the whole path.
    pub(crate) local: bool,
}

impl Path {
    /// The path to `peer`: its route's MTU and whether it is on this host.
    pub(crate) fn to(peer: SocketAddr) -> Path {
        // An IPv4 peer seen through a dual-stack socket is an IPv4 path.
        let ip = peer.ip().to_canonical();
        let peer = SocketAddr::new(ip, peer.port());
        let local = ip.is_loopback() || UdpSocket::bind((ip, 0)).is_ok();
        let headers = match ip {
            IpAddr::V4(_) => 20 + 8,
            IpAddr::V6(_) => 40 + 8,
        };
        let payload = route_mtu(peer).map(|mtu| {
            let payload = mtu.saturating_sub(headers).min(u32::from(MAX_UDP_PAYLOAD));
            payload as u16
        });
        Path { payload, local }
    }

    /// The datagram sizes a connection on this path uses (`None` on an ordinary path: quinn's
    /// defaults).
    fn sizes(&self) -> Option<Sizes> {
        let payload = self.payload.filter(|&p| p > ORDINARY)?;
        let start = payload.min(MAX_START);
        Some(Sizes {
            start,
            floor: self.local.then_some(start),
            upper: payload,
            // The whole span in one step (never less than quinn's own 20 bytes): the search's
            // only probe is the route's size.
            step: self.local.then_some((payload - start).max(20)),
        })
    }

    /// Applies what the path allows to `config` (nothing on an ordinary path).
    pub(crate) fn configure(&self, config: &mut quinn::TransportConfig) {
        let Some(sizes) = self.sizes() else {
            return;
        };
        config.initial_mtu(sizes.start);
        if let Some(floor) = sizes.floor {
            config.min_mtu(floor);
        }
        let mut discovery = quinn::MtuDiscoveryConfig::default();
        discovery.upper_bound(sizes.upper);
        if let Some(step) = sizes.step {
            discovery.minimum_change(step);
        }
        config.mtu_discovery_config(Some(discovery));
        if sizes.upper > MAX_OFFLOADED {
            config.enable_segmentation_offload(false);
        }
        // quinn's default window (14,720 bytes) holds no datagram of 16,000: the handshake
        // would wait forever. On this host there is no network to be careful with.
        let datagram = u64::from(sizes.start);
        let window = if self.local {
            10 * datagram
        } else {
            (10 * datagram).min(MIN_INITIAL_WINDOW.max(2 * datagram))
        };
        let mut congestion = quinn::congestion::CubicConfig::default();
        congestion.initial_window(window);
        config.congestion_controller_factory(Arc::new(congestion));
    }
}

/// The datagram sizes of a connection on a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sizes {
    /// The size it starts at (handshake datagrams are padded to it).
    start: u16,
    /// The size loss may not push it under (`None`: quinn's, 1,200 bytes).
    floor: Option<u16>,
    /// The largest size discovery tries.
    upper: u16,
    /// The smallest change that continues discovery's binary search (`None`: quinn's, 20
    /// bytes).
    step: Option<u16>,
}

/// The MTU of the route to `peer` (Linux: the kernel's path MTU cache, which starts at the
/// outgoing device's MTU); `None` elsewhere or when the kernel cannot tell.
#[cfg(target_os = "linux")]
fn route_mtu(peer: SocketAddr) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let unspecified: IpAddr = match peer {
        SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind((unspecified, 0)).ok()?;
    socket.connect(peer).ok()?;
    let (level, name) = match peer {
        SocketAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_MTU),
        SocketAddr::V6(_) => (libc::IPPROTO_IPV6, libc::IPV6_MTU),
    };
    let mut mtu: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the descriptor is the open socket above, alive for this call; `mtu` and `len`
    // are a writable c_int and its size, as getsockopt(2) requires for IP_MTU / IPV6_MTU.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&mut mtu as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (rc == 0 && mtu > 0).then_some(mtu as u32)
}

#[cfg(not(target_os = "linux"))]
fn route_mtu(_peer: SocketAddr) -> Option<u32> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_local_and_carries_large_datagrams() {
        let path = Path::to("127.0.0.2:9".parse().unwrap());
        assert!(path.local);
        if cfg!(target_os = "linux") {
            let payload = path
                .payload
                .expect("the kernel knows the loopback route's MTU");
            assert!(payload > ORDINARY, "loopback carries {payload} bytes");
        }
    }

    #[test]
    fn an_ipv4_peer_through_a_dual_stack_socket_is_an_ipv4_path() {
        let mapped = Path::to("[::ffff:127.0.0.2]:9".parse().unwrap());
        assert_eq!(mapped, Path::to("127.0.0.2:9".parse().unwrap()));
    }

    #[test]
    fn on_this_host_discovery_probes_the_routes_size_once() {
        let loopback = Path {
            payload: Some(65_508),
            local: true,
        };
        let sizes = loopback.sizes().expect("loopback carries large datagrams");
        assert_eq!(
            (sizes.start, sizes.floor, sizes.upper),
            (16_000, Some(16_000), 65_508)
        );
        // quinn's search probes the midpoint unless it is less than a step away, and then the
        // upper bound if that is a step away or more.
        let span = sizes.upper - sizes.start;
        let step = sizes.step.expect("a step of its own");
        assert!(span / 2 < step && span >= step, "{sizes:?}");
    }

    #[test]
    fn elsewhere_discovery_searches_and_loss_may_fall_back() {
        let jumbo_route = Path {
            payload: Some(65_508),
            local: false,
        };
        let sizes = jumbo_route
            .sizes()
            .expect("the route carries large datagrams");
        assert_eq!((sizes.floor, sizes.step), (None, None));
        let ordinary = Path {
            payload: Some(ORDINARY),
            local: false,
        };
        assert_eq!(ordinary.sizes(), None);
    }

    #[test]
    fn a_host_elsewhere_is_not_local() {
        // TEST-NET-1 (RFC 5737): never an address of this host.
        let path = Path::to("192.0.2.1:9".parse().unwrap());
        assert!(!path.local);
    }
}

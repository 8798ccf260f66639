//! Who a request comes from, and how many connections each may hold: the client's address
//! (the socket's, or, from a trusted reverse proxy, the one it passes on), the network that
//! address counts in, and the open WebSocket connections per user and per network, each
//! counted from the upgrade until the connection ends.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;

/// The client's address: the socket's peer, unless that peer is a trusted proxy; then the
/// nearest address in `X-Forwarded-For` (all its lines, read from the right, as each proxy
/// appends the address it got the request from) that is not itself a trusted proxy. What a
/// client wrote into the header itself is further left, and never reached.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    let peer_ip = canonical(peer.ip());
    if !trusted.contains(&peer_ip) {
        if !trusted.is_empty() || !headers.contains_key("x-forwarded-for") {
            return peer_ip;
        }
        warn_once_untrusted_forwarding(peer_ip);
        return peer_ip;
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    for entry in entries.iter().rev() {
        let Ok(ip) = entry.trim().parse::<IpAddr>() else {
            // An address a proxy did not write: stop at what can be believed.
            return peer_ip;
        };
        let ip = canonical(ip);
        if !trusted.contains(&ip) {
            return ip;
        }
    }
    peer_ip
}

/// Says once that requests carry X-Forwarded-For while no proxy is trusted: behind a
/// reverse proxy, every client then counts as the proxy in the per-network limits.
fn warn_once_untrusted_forwarding(peer: IpAddr) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            %peer,
            "requests carry X-Forwarded-For but ROOMZ_TRUSTED_PROXIES is not set: behind a \
             reverse proxy, list its address there, or every client counts as the proxy"
        );
    }
}

/// An IPv4 address seen through IPv6 counts as the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The key of per-network limits: an IPv4 address, or the /64 an IPv6 address is in (one
/// host usually holds a whole /64).
pub fn network_of(ip: IpAddr) -> String {
    match canonical(ip) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// Which limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    User(usize),
    Network(usize),
}

/// Open connections per user and per network, within their limits.
#[derive(Debug)]
pub struct Connections {
    per_user: usize,
    per_network: usize,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    users: HashMap<Arc<str>, usize>,
    networks: HashMap<String, usize>,
}

impl Connections {
    pub fn new(per_user: usize, per_network: usize) -> Arc<Self> {
        Arc::new(Self { per_user, per_network, counts: Mutex::default() })
    }

    /// Counts one more connection of `user` from `network`, unless either is at its limit.
    /// The connection stays counted until the returned guard is dropped.
    pub fn admit(self: &Arc<Self>, user: Arc<str>, network: String) -> Result<Admitted, Full> {
        let mut counts = self.counts.lock().expect("connection counts lock");
        let of_user = counts.users.get(&user).copied().unwrap_or(0);
        if of_user >= self.per_user {
            return Err(Full::User(self.per_user));
        }
        let of_network = counts.networks.get(&network).copied().unwrap_or(0);
        if of_network >= self.per_network {
            return Err(Full::Network(self.per_network));
        }
        counts.users.insert(user.clone(), of_user + 1);
        counts.networks.insert(network.clone(), of_network + 1);
        Ok(Admitted { connections: self.clone(), user, network })
    }
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Admitted {
    connections: Arc<Connections>,
    user: Arc<str>,
    network: String,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut counts = self.connections.counts.lock().expect("connection counts lock");
        release(&mut counts.users, &self.user);
        release(&mut counts.networks, &self.network);
    }
}

fn release<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(count) = map.get_mut(key) {
        *count -= 1;
        if *count == 0 {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxy_is_believed_only_when_trusted() {
        let proxy: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "10.9.9.9, 203.0.113.7".parse().unwrap());
        assert_eq!(client_ip(proxy, &headers, &[]), proxy.ip(), "not trusted: the socket's");
        let trusted: [IpAddr; 2] = ["127.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()];
        assert_eq!(client_ip(proxy, &headers, &trusted).to_string(), "203.0.113.7");
        // A client's own header is further left than what the proxies added.
        headers.insert("x-real-ip", "198.51.100.4".parse().unwrap());
        headers.append("x-forwarded-for", "10.0.0.2".parse().unwrap());
        assert_eq!(client_ip(proxy, &headers, &trusted).to_string(), "203.0.113.7");
        headers.insert("x-forwarded-for", "1.2.3.4, not-an-address".parse().unwrap());
        assert_eq!(client_ip(proxy, &headers, &trusted), proxy.ip(), "nothing believable");
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:1".parse().unwrap();
        assert_eq!(client_ip(mapped, &HeaderMap::new(), &[]).to_string(), "127.0.0.1");
        assert_eq!(network_of("2001:db8:1:2:3:4:5:6".parse().unwrap()), "2001:db8:1:2::/64");
    }

    #[test]
    fn connections_are_counted_until_they_end() {
        let connections = Connections::new(2, 3);
        let a = connections.admit("a".into(), "n1".into()).unwrap();
        let _b = connections.admit("a".into(), "n1".into()).unwrap();
        assert_eq!(connections.admit("a".into(), "n2".into()).unwrap_err(), Full::User(2));
        let _c = connections.admit("c".into(), "n1".into()).unwrap();
        assert_eq!(connections.admit("d".into(), "n1".into()).unwrap_err(), Full::Network(3));
        drop(a);
        assert!(connections.admit("a".into(), "n2".into()).is_ok());
    }
}

//! Loopback ports for tests that start nodes on addresses chosen before
//! the nodes bind them.

use std::{
    net::TcpListener,
    sync::atomic::{AtomicU16, Ordering},
};

/// A free loopback port below the ephemeral range.
///
/// A port the kernel picked for `bind(0)` and that was released again can
/// be taken by any outgoing connection (of the test's own nodes, or of a
/// test running beside it) before the node binds it. Ports below the
/// ephemeral range are never handed to outgoing connections. Each test
/// process starts at its own offset and hands out each port once, so tests
/// running in parallel do not pick the same one.
///
/// # Panics
///
/// When no port below the ephemeral range can be bound.
pub fn free_port() -> u16 {
    static HANDED_OUT: AtomicU16 = AtomicU16::new(0);
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let first = 10_000 + (std::process::id() % 50) as u16 * 100;
    let span = ephemeral_start.saturating_sub(first).max(1);
    for _ in 0..span {
        let port = first + HANDED_OUT.fetch_add(1, Ordering::Relaxed) % span;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {first} and {ephemeral_start}");
}

/// `127.0.0.1:` and a [`free_port`].
pub fn free_address() -> String {
    format!("127.0.0.1:{}", free_port())
}

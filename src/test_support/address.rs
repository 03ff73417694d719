//! Socket addresses on the loopback interface.

use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address::PortSpecifier, Address, SocketAddress,
};

/// The loopback address every generated listener and endpoint uses.
pub const LOCALHOST: &str = "127.0.0.1";

/// A TCP socket address `host:port`.
pub fn socket_address(host: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: host.to_string(),
            port_specifier: Some(PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_tcp_socket_address() {
        let Some(address::Address::SocketAddress(sa)) = socket_address(LOCALHOST, 8080).address
        else {
            panic!("not a socket address");
        };
        assert_eq!(sa.address, "127.0.0.1");
        assert_eq!(sa.port_specifier, Some(PortSpecifier::PortValue(8080)));
        assert_eq!(sa.protocol, 0, "TCP is the default protocol");
    }
}

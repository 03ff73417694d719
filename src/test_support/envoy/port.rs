//! Picking free TCP ports on the loopback interface.

use std::net::{Ipv4Addr, TcpListener};

use super::error::{HarnessError, Result};

/// Returns a TCP port on 127.0.0.1 that was free a moment ago (the OS picks
/// it; the probe socket is closed before returning).
///
/// Another process may take the port before it is used; for Envoy's admin
/// interface the harness avoids that race by letting Envoy pick its own port.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| HarnessError::io("binding 127.0.0.1:0 to find a free port", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| HarnessError::io("reading the probe socket's address", e))?
        .port();
    Ok(port)
}

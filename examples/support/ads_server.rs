//! Serving a control plane over ADS on 127.0.0.1, for the examples and for
//! the tests that run their pieces against a real Envoy (included with
//! `#[path]`).
#![allow(dead_code)]

use std::error::Error;
use std::net::{Ipv4Addr, SocketAddr};

use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::server::Router;
use xds_control_plane::Server;

/// Serves `server`'s ADS service on 127.0.0.1:`port` (0: any free port) in
/// a background task, and returns the address it listens on and a sender
/// that stops it when dropped (or sent to).
pub async fn start_ads(
    server: &Server,
    port: u16,
) -> Result<(SocketAddr, oneshot::Sender<()>), Box<dyn Error>> {
    start(
        tonic::transport::Server::builder().add_service(server.ads_service()),
        port,
    )
    .await
}

/// Serves `router` on 127.0.0.1:`port` (0: any free port) in a background
/// task, as [`start_ads`] does.
///
/// Binding before returning means the port is known, and connectable,
/// before any Envoy is pointed at it.
pub async fn start(
    router: Router,
    port: u16,
) -> Result<(SocketAddr, oneshot::Sender<()>), Box<dyn Error>> {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .await
        .map_err(|e| format!("cannot listen on 127.0.0.1:{port}: {e}"))?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let incoming = TcpListenerStream::new(listener);
        // `stopped` resolves (with an error) when `stop` is dropped.
        if let Err(e) = router
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await
        {
            eprintln!("xDS server failed: {e}");
        }
    });
    Ok((addr, stop))
}

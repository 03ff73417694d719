//! What a test should observe through each generated listener.

/// How a generated listener handles traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenerKind {
    /// HTTP connection manager with routes by RDS.
    Http,
    /// HTTP connection manager with scoped routes by SRDS (and RDS).
    ScopedHttp,
    /// TCP proxy; send plain HTTP through it to reach the upstream.
    Tcp,
}

/// One generated listener and the response an HTTP request through it
/// should get once Envoy has applied the resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerExpectation {
    /// Listener name.
    pub name: String,
    /// Port on 127.0.0.1.
    pub port: u16,
    /// What the listener does.
    pub kind: ListenerKind,
    /// Whether the listener terminates TLS (certificate delivered by SDS).
    pub tls: bool,
    /// Headers the request must carry (e.g. the scope key).
    pub request_headers: Vec<(String, String)>,
    /// Name of the upstream server that should answer.
    pub expected_upstream: String,
    /// Headers the response must carry (e.g. one set by an ECDS filter).
    pub expected_response_headers: Vec<(String, String)>,
}

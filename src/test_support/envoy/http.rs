//! A tiny HTTP/1.1 client (plain and TLS) for talking to Envoy's listeners
//! and admin interface in tests: one request per connection
//! (`Connection: close`), every step bounded by a timeout.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

use super::error::{HarnessError, Result};

/// How long a whole request (connect, send, receive) may take by default.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// An HTTP response, body fully read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header fields in the order received (names as sent).
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body).map_err(|source| HarnessError::Json {
            context: "HTTP response body".into(),
            source,
        })
    }
}

/// `GET http://127.0.0.1:{port}{path}` with extra `headers` (a `Host`
/// header among them replaces the default `127.0.0.1:{port}`), within
/// [`DEFAULT_HTTP_TIMEOUT`].
pub async fn http_get(port: u16, path: &str, headers: &[(&str, &str)]) -> Result<HttpResponse> {
    http_request(port, "GET", path, headers, DEFAULT_HTTP_TIMEOUT).await
}

/// `GET` on Envoy's admin interface (e.g. `/ready`, `/config_dump`).
pub async fn admin_get(port: u16, path: &str) -> Result<HttpResponse> {
    http_request(port, "GET", path, &[], DEFAULT_HTTP_TIMEOUT).await
}

/// `POST` on Envoy's admin interface with an empty body (e.g.
/// `/runtime_modify?key=value`, `/healthcheck/fail`).
pub async fn admin_post(port: u16, path: &str) -> Result<HttpResponse> {
    http_request(port, "POST", path, &[], DEFAULT_HTTP_TIMEOUT).await
}

/// Any bodiless request over plain TCP to 127.0.0.1, bounded by `timeout`.
pub async fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<HttpResponse> {
    let err = |reason: String| HarnessError::Http {
        method: method.to_owned(),
        port,
        path: path.to_owned(),
        reason,
    };
    let exchange = async {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| err(format!("connect: {e}")))?;
        exchange(stream, port, method, path, headers)
            .await
            .map_err(err)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| err(format!("no complete response within {timeout:?}")))?
}

/// `GET https://127.0.0.1:{port}{path}` trusting only the CA certificates in
/// `ca_pem` and verifying the server's certificate for `sni` (which is also
/// sent as SNI and, unless `headers` has one, as the `Host` header), within
/// [`DEFAULT_HTTP_TIMEOUT`].
pub async fn https_get(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    ca_pem: &str,
    sni: &str,
) -> Result<HttpResponse> {
    let err = |reason: String| HarnessError::Http {
        method: "GET".into(),
        port,
        path: path.to_owned(),
        reason,
    };
    let connector = tls_connector(ca_pem)?;
    let server_name = ServerName::try_from(sni.to_owned())
        .map_err(|e| HarnessError::Tls(format!("invalid SNI {sni:?}: {e}")))?;
    let mut all_headers: Vec<(&str, &str)> = headers.to_vec();
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        all_headers.push(("Host", sni));
    }
    let exchange = async {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| err(format!("connect: {e}")))?;
        let tls = connector
            .connect(server_name, tcp)
            .await
            .map_err(|e| err(format!("TLS handshake: {e}")))?;
        exchange(tls, port, "GET", path, &all_headers)
            .await
            .map_err(err)
    };
    tokio::time::timeout(DEFAULT_HTTP_TIMEOUT, exchange)
        .await
        .map_err(|_| {
            err(format!(
                "no complete response within {DEFAULT_HTTP_TIMEOUT:?}"
            ))
        })?
}

/// A TLS connector (ring provider) trusting only the certificates in `ca_pem`.
fn tls_connector(ca_pem: &str) -> Result<tokio_rustls::TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| HarnessError::Tls(format!("reading CA PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| HarnessError::Tls(format!("adding CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(HarnessError::Tls("no certificate in the CA PEM".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HarnessError::Tls(format!("protocol versions: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Sends one request on `stream` and reads the response to its end.
async fn exchange<S>(
    mut stream: S,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::result::Result<HttpResponse, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut request = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Connection: close\r\n");
    if method != "GET" && method != "HEAD" {
        request.push_str("Content-Length: 0\r\n");
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    stream.flush().await.map_err(|e| format!("send: {e}"))?;

    let mut raw = Vec::new();
    // A TLS peer may close without close_notify; keep what was read.
    if let Err(e) = stream.read_to_end(&mut raw).await {
        if raw.is_empty() || e.kind() != std::io::ErrorKind::UnexpectedEof {
            return Err(format!("receive: {e}"));
        }
    }
    parse_response(&raw, method == "HEAD")
}

/// Parses a complete HTTP/1.x response (status line, headers, body framed
/// by `Content-Length`, chunked encoding, or the end of the stream).
pub(crate) fn parse_response(raw: &[u8], head: bool) -> std::result::Result<HttpResponse, String> {
    let end = find(raw, b"\r\n\r\n").ok_or_else(|| {
        format!(
            "no complete header block in {} bytes: {:?}",
            raw.len(),
            String::from_utf8_lossy(&raw[..raw.len().min(200)])
        )
    })?;
    let head_text = std::str::from_utf8(&raw[..end]).map_err(|_| "header block is not UTF-8")?;
    let mut lines = head_text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let rest = &raw[end + 4..];
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let body = if head || status == 204 || status == 304 || (100..200).contains(&status) {
        Vec::new()
    } else if header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        dechunk(rest)?
    } else if let Some(len) = header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| format!("bad Content-Length {len:?}"))?;
        if rest.len() < len {
            return Err(format!("body truncated: {} of {len} bytes", rest.len()));
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// Decodes a chunked body (trailers ignored).
fn dechunk(mut data: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = find(data, b"\r\n").ok_or("chunk size line missing")?;
        let size_text = std::str::from_utf8(&data[..line_end]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if data.len() < size + 2 {
            return Err("chunk truncated".into());
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length() {
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX: y\r\n\r\nhi",
            false,
        )
        .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x"), Some("y"));
        assert_eq!(r.text(), "hi");
    }

    #[test]
    fn parses_chunked() {
        let raw = b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n";
        let r = parse_response(raw, false).unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(r.text(), "abcde");
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_response(b"nonsense", false).is_err());
    }
}

//! A trivial HTTP/1.1 upstream for Envoy to route to: it answers every
//! request with `200` and its own name as the body, so a test can tell
//! which upstream served a request.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use super::error::{HarnessError, Result};
use super::http::find;

/// Largest request header block the upstream accepts.
const MAX_HEAD: usize = 64 * 1024;

/// An HTTP/1.1 server on 127.0.0.1 (a port of its own) answering every
/// request with `200 OK`, body = its name, and an `x-upstream: <name>`
/// header. Keeps connections alive unless asked not to. Stops (closing
/// every connection) when dropped.
#[derive(Debug)]
pub struct Upstream {
    name: String,
    port: u16,
    requests: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Upstream {
    /// Binds 127.0.0.1 on a port the OS picks and starts serving.
    /// Must be called inside a tokio runtime.
    pub async fn start(name: impl Into<String>) -> Result<Upstream> {
        let name = name.into();
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| HarnessError::io(format!("binding upstream {name:?}"), e))?;
        let port = listener
            .local_addr()
            .map_err(|e| HarnessError::io("reading the upstream's address", e))?
            .port();
        let requests = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(serve(listener, name.clone(), requests.clone()));
        Ok(Upstream {
            name,
            port,
            requests,
            task,
        })
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its name (the body of every response).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many requests it has answered.
    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every
        // connection task.
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, name: String, requests: Arc<AtomicU64>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    connections.spawn(connection(stream, name.clone(), requests.clone()));
                }
            }
            // Reap finished connection tasks so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Serves requests on one connection until the peer closes it, asks for
/// `Connection: close`, or sends something unparsable.
async fn connection(mut stream: TcpStream, name: String, requests: Arc<AtomicU64>) {
    let mut buf = Vec::new();
    loop {
        let Some(head_end) = read_until_head_end(&mut stream, &mut buf).await else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let header = |name: &str| {
            head.split("\r\n")
                .filter_map(|l| l.split_once(':'))
                .find(|(n, _)| n.trim() == name)
                .map(|(_, v)| v.trim().to_owned())
        };
        let close = header("connection").is_some_and(|v| v.contains("close"))
            || head
                .split("\r\n")
                .next()
                .is_some_and(|l| l.ends_with("http/1.0"));
        let mut rest = buf.split_off(head_end + 4);
        buf.clear();
        if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            if !skip_chunked(&mut stream, &mut rest).await {
                return;
            }
        } else if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
            while rest.len() < len {
                if !read_more(&mut stream, &mut rest).await {
                    return;
                }
            }
            rest.drain(..len);
        }
        buf = rest; // pipelined bytes of the next request, if any
        requests.fetch_add(1, Ordering::SeqCst);
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nx-upstream: {}\r\n{}\r\n{}",
            name.len(),
            name,
            if close { "connection: close\r\n" } else { "" },
            name
        );
        if stream.write_all(response.as_bytes()).await.is_err() || close {
            return;
        }
    }
}

/// Reads into `buf` until it holds a full header block; returns where the
/// block's final CRLFCRLF starts, or `None` on EOF, error or overflow.
async fn read_until_head_end(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            return Some(end);
        }
        if buf.len() > MAX_HEAD || !read_more(stream, buf).await {
            return None;
        }
    }
}

/// Consumes a chunked request body from `data` (reading more as needed),
/// leaving any bytes after it in `data`.
async fn skip_chunked(stream: &mut TcpStream, data: &mut Vec<u8>) -> bool {
    loop {
        let line_end = loop {
            if let Some(i) = find(data, b"\r\n") {
                break i;
            }
            if !read_more(stream, data).await {
                return false;
            }
        };
        let size_text = String::from_utf8_lossy(&data[..line_end]).into_owned();
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            return false;
        };
        data.drain(..line_end + 2);
        if size == 0 {
            // Trailers end with an empty line.
            loop {
                if let Some(i) = find(data, b"\r\n") {
                    let empty = i == 0;
                    data.drain(..i + 2);
                    if empty {
                        return true;
                    }
                } else if !read_more(stream, data).await {
                    return false;
                }
            }
        }
        while data.len() < size + 2 {
            if !read_more(stream, data).await {
                return false;
            }
        }
        data.drain(..size + 2);
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 8192];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

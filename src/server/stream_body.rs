//! The response body of an xDS stream, which also runs the stream.
//!
//! hyper polls a response body whenever the stream may send, and wakes it
//! through whatever the body registered with. So the body itself reads the
//! client's requests, takes the cache's answers and turns them into data
//! frames: no task or channel per stream besides hyper's own, and no hop
//! between tasks per message. When the client goes away hyper drops the
//! body, which cancels every watch; a client that stops reading stops being
//! polled, so it is not read from either until it reads again. Such a
//! stream is still closed by [`OpenStreams::close_all`] when the server
//! shuts down.

use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use http_body::Frame;
use parking_lot::Mutex;
use tonic::Status;

use super::callbacks::StreamId;
use super::client_status::StreamStatus;
use super::frames::Frames;
use super::request_stream::RequestStream;
use super::shutdown::ShutdownSignal;
use super::stream::Protocol;
use super::Shared;
use crate::cache::ResponseQueue;
use crate::metrics::{self, StreamObserver};

/// Requests handled in one poll before the body lets other tasks run.
const REQUESTS_PER_POLL: usize = 32;

/// A stream's response body: its messages as data frames, then trailers
/// with `grpc-status` (and `grpc-message`, percent-encoded): the status
/// the stream ended with, or OK when the client closed its side.
pub(crate) struct StreamBody<P: Protocol> {
    run: Run<P>,
    id: StreamId,
    shared: Arc<Shared>,
    observer: StreamObserver,
}

/// The stream's state, apart from what observes it.
struct Run<P: Protocol> {
    /// Shared with [`OpenStreams`] only, to close it on shutdown.
    protocol: Arc<Mutex<Guarded<P>>>,
    requests: RequestStream<P::Request>,
    queue: Arc<ResponseQueue<P::Answer>>,
    frames: Frames,
    /// How the stream ended, once it has; sent after the queued frames.
    end: Option<Status>,
    /// The trailers went out: nothing more to send.
    done: bool,
}

impl<P: Protocol + Unpin> StreamBody<P> {
    pub(crate) fn new(
        id: StreamId,
        protocol: P,
        requests: RequestStream<P::Request>,
        shared: Arc<Shared>,
        observer: StreamObserver,
    ) -> Self {
        let queue = protocol.queue();
        let protocol = Arc::new(Mutex::new(Guarded {
            protocol,
            closed: false,
        }));
        let open: Weak<Mutex<Guarded<P>>> = Arc::downgrade(&protocol);
        shared.open_streams.add(id, open);
        let run = Run {
            protocol,
            queue,
            requests,
            frames: Frames::default(),
            end: None,
            done: false,
        };
        StreamBody {
            run,
            id,
            shared,
            observer,
        }
    }
}

impl<P: Protocol + Unpin> Run<P> {
    /// Runs the stream until it has a frame to send or must wait.
    fn poll_next_frame(
        &mut self,
        cx: &mut Context<'_>,
        shutdown: &ShutdownSignal,
    ) -> Poll<Option<Frame<Bytes>>> {
        let Run {
            protocol,
            queue,
            requests,
            frames,
            end,
            done,
        } = self;
        let mut protocol = protocol.lock();
        let mut handled = 0;
        loop {
            if let Some(data) = frames.pop() {
                return Poll::Ready(Some(Frame::data(data)));
            }
            if *done {
                return Poll::Ready(None);
            }
            if let Some(status) = end.take() {
                protocol.close();
                *done = true;
                return Poll::Ready(Some(trailers(&status)));
            }
            if protocol.closed || shutdown.is_triggered() {
                *end = Some(Status::unavailable("xDS server is shutting down"));
                continue;
            }
            if let Poll::Ready((pending, since)) = queue.poll_take(cx) {
                match protocol
                    .protocol
                    .write_answers(pending, requests.spares(), frames)
                {
                    Ok(sent) => metrics::pushed(P::KIND, since, sent),
                    Err(status) => *end = Some(status),
                }
                continue;
            }
            if handled == REQUESTS_PER_POLL {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            match Pin::new(&mut *requests).poll_next(cx) {
                Poll::Ready(Some(Ok(request))) => {
                    handled += 1;
                    if let Err(status) = protocol.protocol.handle_request(request) {
                        *end = Some(status);
                    }
                }
                // Tell the client why (e.g. a message over the size limit);
                // if it is gone, the status goes nowhere.
                Poll::Ready(Some(Err(status))) => {
                    tracing::debug!(%status, "stream receive failed");
                    *end = Some(status);
                }
                Poll::Ready(None) => *end = Some(Status::ok("")),
                // Shutdown sets its flag, then wakes what streams registered:
                // checked again now that this one has registered.
                Poll::Pending if shutdown.is_triggered() => {}
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// A stream's protocol, and whether it was closed (its watches cancelled).
struct Guarded<P> {
    protocol: P,
    closed: bool,
}

impl<P: Protocol> Guarded<P> {
    fn close(&mut self) {
        if !self.closed {
            self.closed = true;
            self.protocol.close();
        }
    }
}

/// A stream as the server reaches it from outside its body: to close it,
/// and to read its status.
trait OpenStream: Send + Sync {
    fn close(&self);
    fn status(&self) -> Option<StreamStatus>;
}

impl<P: Protocol> OpenStream for Mutex<Guarded<P>> {
    fn close(&self) {
        // Held only while the body runs a step, which then sees the
        // shutdown itself; bounded, so that `shutdown` called from a
        // callback of this very stream cannot deadlock.
        if let Some(mut guarded) = self.try_lock_for(PATIENCE) {
            guarded.close();
            // Polled again, the body sends its final status.
            guarded.protocol.core().queue.wake();
        }
    }

    /// `None` for a closed stream, or one that stayed busy.
    fn status(&self) -> Option<StreamStatus> {
        let guarded = self.try_lock_for(PATIENCE)?;
        (!guarded.closed).then(|| guarded.protocol.status())
    }
}

std::thread_local! {
    /// The stream whose body runs on this thread, if any: its callbacks
    /// run there, under its lock.
    static RUNNING: std::cell::Cell<Option<StreamId>> = const { std::cell::Cell::new(None) };
}

/// Marks a stream as running on this thread until dropped.
struct Running(Option<StreamId>);

impl Running {
    fn enter(id: StreamId) -> Self {
        Running(RUNNING.replace(Some(id)))
    }

    /// Whether `id` runs on this thread, i.e. the caller is one of its
    /// callbacks and its lock is held further up the stack.
    fn is(id: StreamId) -> bool {
        RUNNING.get() == Some(id)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.set(self.0);
    }
}

/// How long the server waits for a stream busy in its body.
const PATIENCE: std::time::Duration = std::time::Duration::from_millis(50);

/// The streams open on a server, so that shutting down can close those
/// hyper no longer polls because their clients stopped reading.
#[derive(Default)]
pub(crate) struct OpenStreams(Mutex<HashMap<StreamId, Weak<dyn OpenStream>, ahash::RandomState>>);

impl OpenStreams {
    fn add(&self, id: StreamId, stream: Weak<dyn OpenStream>) {
        self.0.lock().insert(id, stream);
    }

    fn remove(&self, id: StreamId) {
        self.0.lock().remove(&id);
    }

    /// Closes every open stream: its watches are cancelled and the close
    /// callback runs now, whether or not its client still reads.
    pub(crate) fn close_all(&self) {
        // The stream whose callback shuts down closes once the callback
        // returns and it sees the shutdown itself.
        for stream in self.others() {
            stream.close();
        }
    }

    /// Every open stream's status, by stream id; without the stream whose
    /// callback asks, if one does (its state is in use right then).
    pub(crate) fn status_all(&self) -> Vec<StreamStatus> {
        let mut all: Vec<StreamStatus> = self
            .others()
            .iter()
            .filter_map(|stream| stream.status())
            .collect();
        all.sort_by_key(|status| status.stream);
        all
    }

    /// Every open stream but the one whose body runs on this thread (its
    /// callback is the caller, its lock held up the stack): strong handles,
    /// taken under the lock and used after it, as a stream closing
    /// meanwhile removes itself from the map.
    fn others(&self) -> Vec<Arc<dyn OpenStream>> {
        let open = self.0.lock();
        open.iter()
            .filter(|(id, _)| !Running::is(**id))
            .filter_map(|(_, stream)| stream.upgrade())
            .collect()
    }
}

impl fmt::Debug for OpenStreams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenStreams")
            .field("open", &self.0.lock().len())
            .finish()
    }
}

/// The trailers carrying a stream's final status.
fn trailers(status: &Status) -> Frame<Bytes> {
    let mut trailers = http::HeaderMap::with_capacity(2);
    if let Err(unencodable) = status.add_header(&mut trailers) {
        trailers.clear();
        tracing::warn!(%unencodable, "stream status not encodable as trailers");
        Status::internal("stream failed")
            .add_header(&mut trailers)
            .expect("a static status encodes");
    }
    Frame::trailers(trailers)
}

impl<P: Protocol + Unpin> http_body::Body for StreamBody<P> {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        let _entered = this.observer.span().enter();
        let _running = Running::enter(this.id);
        this.run
            .poll_next_frame(cx, &this.shared.shutdown)
            .map(|frame| frame.map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.run.done
    }
}

impl<P: Protocol> Drop for StreamBody<P> {
    /// The client went away (or the stream ended): let go of every watch.
    fn drop(&mut self) {
        self.shared.open_streams.remove(self.id);
        let _entered = self.observer.span().enter();
        let _running = Running::enter(self.id);
        self.run.protocol.lock().close();
    }
}

impl<P: Protocol> fmt::Debug for StreamBody<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamBody")
            .field("done", &self.run.done)
            .finish_non_exhaustive()
    }
}

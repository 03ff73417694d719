//! The server's shutdown signal, cheap to check on every poll.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;

/// Set once, when the server shuts down.
///
/// xDS stream bodies check the flag on every poll: one load of a line every
/// core keeps shared. They are woken by [`super::stream_body::OpenStreams`],
/// not through a waiter list every poll would lock (as a
/// [`CancellationToken`]'s is). The token is for the few tasks that wait
/// for shutdown in a `select!`, such as CSDS streams.
#[derive(Debug, Default)]
pub(crate) struct ShutdownSignal {
    flag: AtomicBool,
    token: CancellationToken,
}

impl ShutdownSignal {
    /// Sets the signal. Set before stream bodies are woken, so that a body
    /// that checks after registering its waker cannot miss it.
    pub(crate) fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.token.cancel();
    }

    pub(crate) fn is_triggered(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// A token cancelled when the signal is set, to wait on.
    pub(crate) fn token(&self) -> CancellationToken {
        self.token.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn triggering_sets_the_flag_and_cancels_the_token() {
        let signal = ShutdownSignal::default();
        let token = signal.token();
        assert!(!signal.is_triggered() && !token.is_cancelled());
        signal.trigger();
        assert!(signal.is_triggered());
        token.cancelled().await;
    }
}

//! Socket writes coalesced across the answers that become ready together.
//!
//! A swipe batch's callers are answered at once (after its fsync): each answer's task hands its
//! frames to the connection's HTTP/2 task, which — woken by the first and run straight after it —
//! would write that one answer to the socket, then the next, one `writev` each (≈ 1.7 a swipe was
//! measured; h2 itself writes before queuing a frame behind a DATA frame of more than 256 bytes).
//! On loopback and on a busy host a socket write is one of the dearest steps of an answer: the
//! kernel delivers it and wakes the reader.
//!
//! [`Coalesced`] takes what HTTP/2 writes into a buffer of its own and, at the flush that follows,
//! lets every other task already queued on the thread run first (it yields once, as
//! `tokio::task::yield_now`), then writes everything buffered meanwhile in one call. Nothing waits
//! on a timer: an answer leaves as soon as the thread has run what was already runnable.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Buffered beyond this, writes go to the socket without waiting for the flush.
const HIGH_WATER: usize = 256 * 1024;
/// A buffer grown beyond this (a large answer or stream) is given back once written, so that an
/// idle connection keeps no more than this.
const KEEP: usize = 64 * 1024;

/// A connection whose writes are buffered and written once a flush has yielded to the other
/// ready tasks of its thread (see the module's documentation).
pub struct Coalesced<T> {
    io: T,
    buf: Vec<u8>,
    /// How much of `buf` the socket has taken.
    written: usize,
    /// The flush's turn given to the thread's other ready tasks, under way.
    pause: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl<T> Coalesced<T> {
    pub fn new(io: T) -> Coalesced<T> {
        Coalesced {
            io,
            buf: Vec::new(),
            written: 0,
            pause: None,
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.io
    }
}

impl<T: AsyncWrite + Unpin> Coalesced<T> {
    /// Writes what is buffered until all of it is taken (or the socket is full: Pending).
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let rest = self.buf.get(self.written..).unwrap_or_default();
            let n = std::task::ready!(Pin::new(&mut self.io).poll_write(cx, rest))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.buf.clear();
        self.buf.shrink_to(KEEP);
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesced<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesced<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(data)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.buf.len() >= HIGH_WATER {
            std::task::ready!(self.poll_drain(cx))?;
        }
        let mut n = 0;
        for b in bufs {
            self.buf.extend_from_slice(b);
            n += b.len();
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.buf.is_empty() {
            return Pin::new(&mut self.io).poll_flush(cx);
        }
        // The thread's other ready tasks first (tokio defers a yielding task until it has nothing
        // else to run, and wakes no other thread for it): the answers they finish join this write.
        let pause = self
            .pause
            .get_or_insert_with(|| Box::pin(tokio::task::yield_now()));
        std::task::ready!(pause.as_mut().poll(cx));
        self.pause = None;
        std::task::ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Coalesced<tokio::net::TcpStream> {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncWriteExt;

    /// A sink counting the writes it is given.
    #[derive(Default)]
    struct Counting {
        bytes: Vec<u8>,
        writes: Arc<AtomicUsize>,
    }

    impl AsyncWrite for Counting {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes.fetch_add(1, Ordering::Relaxed);
            self.bytes.extend_from_slice(data);
            Poll::Ready(Ok(data.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A coalesced counting sink and its count of writes.
    fn counted() -> (Coalesced<Counting>, Arc<AtomicUsize>) {
        let writes = Arc::new(AtomicUsize::new(0));
        let c = Coalesced::new(Counting {
            writes: writes.clone(),
            ..Counting::default()
        });
        (c, writes)
    }

    #[tokio::test]
    async fn writes_before_a_flush_reach_the_socket_in_one_write() -> io::Result<()> {
        let (mut c, writes) = counted();
        c.write_all(b"HEADERS").await?;
        c.write_all(b"DATA").await?;
        assert_eq!(
            writes.load(Ordering::Relaxed),
            0,
            "nothing written before a flush"
        );
        c.flush().await?;
        c.write_all(b"TRAILERS").await?;
        c.flush().await?;
        assert_eq!(writes.load(Ordering::Relaxed), 2);
        assert_eq!(c.get_ref().bytes, b"HEADERSDATATRAILERS");
        Ok(())
    }

    #[tokio::test]
    async fn a_flush_yields_once_to_the_tasks_already_ready() -> io::Result<()> {
        // On a current-thread runtime: the other task was spawned before the flush, so it runs
        // while the flush yields, and what it does is seen before the write.
        let (mut c, writes) = counted();
        let ran = Arc::new(AtomicUsize::new(0));
        let seen_at_write = {
            let other = ran.clone();
            tokio::spawn(async move {
                other.store(1, Ordering::Relaxed);
            });
            c.write_all(b"answer").await?;
            c.flush().await?;
            ran.load(Ordering::Relaxed)
        };
        assert_eq!(seen_at_write, 1, "the ready task ran before the write");
        assert_eq!(writes.load(Ordering::Relaxed), 1);
        Ok(())
    }

    #[tokio::test]
    async fn a_large_buffer_is_given_back_once_written() -> io::Result<()> {
        let mut c = Coalesced::new(Counting::default());
        let large = vec![7u8; HIGH_WATER + 1];
        c.write_all(&large).await?;
        c.flush().await?;
        assert_eq!(c.get_ref().bytes.len(), HIGH_WATER + 1);
        assert!(c.buf.capacity() <= KEEP, "{} bytes kept", c.buf.capacity());
        Ok(())
    }

    #[tokio::test]
    async fn shutdown_writes_what_is_buffered() -> io::Result<()> {
        let mut c = Coalesced::new(Counting::default());
        c.write_all(b"GOAWAY").await?;
        c.shutdown().await?;
        assert_eq!(c.get_ref().bytes, b"GOAWAY");
        Ok(())
    }
}

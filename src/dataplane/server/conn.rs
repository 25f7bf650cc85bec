//! A TCP listener whose connections a handler can cut without answering.
//!
//! The drop fault must look like a network failure to the client: no status line,
//! no body, the socket reset. A handler cannot reach the socket through axum, so each
//! accepted stream carries a shared switch; the handler flips it (through
//! [`ConnectInfo<Conn>`](axum::extract::ConnectInfo)) and the stream then refuses
//! to write the response, which makes hyper abandon the connection.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// What a handler knows about its connection.
#[derive(Clone, Debug)]
pub(crate) struct Conn {
    pub remote: SocketAddr,
    cut: Arc<AtomicBool>,
}

impl Conn {
    /// A request with no socket behind it (served in process): cutting it does nothing.
    pub(crate) fn detached() -> Self {
        Self {
            remote: SocketAddr::from(([127, 0, 0, 1], 0)),
            cut: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Marks the connection to be closed (reset) instead of answered.
    pub(crate) fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }
}

impl Connected<IncomingStream<'_, CuttableListener>> for Conn {
    fn connect_info(stream: IncomingStream<'_, CuttableListener>) -> Self {
        stream.remote_addr().clone()
    }
}

pub(crate) struct CuttableListener {
    inner: TcpListener,
}

impl CuttableListener {
    pub(crate) fn new(inner: TcpListener) -> Self {
        Self { inner }
    }
}

impl Listener for CuttableListener {
    type Io = CuttableStream;
    type Addr = Conn;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // axum's own impl retries and logs accept errors.
        let (tcp, remote) = Listener::accept(&mut self.inner).await;
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%remote, "cannot set TCP_NODELAY: {err}");
        }
        let cut = Arc::new(AtomicBool::new(false));
        (
            CuttableStream {
                tcp,
                cut: cut.clone(),
            },
            Conn { remote, cut },
        )
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(Conn {
            remote: self.inner.local_addr()?,
            cut: Arc::new(AtomicBool::new(false)),
        })
    }
}

pub(crate) struct CuttableStream {
    tcp: TcpStream,
    cut: Arc<AtomicBool>,
}

impl CuttableStream {
    fn refuse_write(&self) -> Option<io::Error> {
        if !self.cut.load(Ordering::SeqCst) {
            return None;
        }
        // A reset rather than an orderly close: the client sees a failed connection.
        if let Err(err) = self.tcp.set_zero_linger() {
            tracing::debug!("cannot set SO_LINGER: {err}");
        }
        Some(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "connection dropped by fault injection",
        ))
    }
}

impl AsyncRead for CuttableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.cut.load(Ordering::SeqCst) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for CuttableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(err) = self.refuse_write() {
            return Poll::Ready(Err(err));
        }
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(err) = self.refuse_write() {
            return Poll::Ready(Err(err));
        }
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(err) = self.refuse_write() {
            return Poll::Ready(Err(err));
        }
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.refuse_write().is_some() {
            // No FIN: the socket is reset when it is dropped.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

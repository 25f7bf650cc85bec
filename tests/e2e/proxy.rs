//! A TCP proxy between the operator and kube-apiserver, for the faults the real
//! components do not make on demand: every open connection cut at once (what a load
//! balancer or a network blip does to long-running watches), new connections refused
//! for a while, and a delay on every connection.
//!
//! It forwards bytes and never looks into them: TLS runs end to end between the operator
//! and the apiserver, whose certificate names 127.0.0.1, so the operator's kubeconfig
//! only changes the port.
//!
//! It runs on a thread and runtime of its own, so that a test blocked in a synchronous
//! call (kubectl, a process wait) never stalls the operator's traffic.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

#[derive(Default)]
struct Shared {
    open: Mutex<Vec<AbortHandle>>,
    refusing: AtomicBool,
    delay_millis: AtomicU64,
    cuts: AtomicU64,
    accepted: AtomicU64,
}

/// A running proxy; it stops when dropped.
pub struct Proxy {
    /// `https://127.0.0.1:PORT`: where clients connect instead of the apiserver.
    pub url: String,
    shared: Arc<Shared>,
    accept: AbortHandle,
    _runtime: Option<tokio::runtime::Runtime>,
}

impl Proxy {
    /// Starts forwarding a new loopback port to `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> Proxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("apiserver-proxy")
            .enable_all()
            .build()
            .expect("the proxy's runtime");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy port");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(Shared::default());
        let accept = {
            let shared = shared.clone();
            runtime
                .spawn(async move {
                    let listener = TcpListener::from_std(listener).expect("the proxy's listener");
                    loop {
                        let Ok((client, _)) = listener.accept().await else {
                            continue;
                        };
                        if shared.refusing.load(Ordering::SeqCst) {
                            drop(client);
                            continue;
                        }
                        shared.accepted.fetch_add(1, Ordering::SeqCst);
                        let delay =
                            Duration::from_millis(shared.delay_millis.load(Ordering::SeqCst));
                        let task = tokio::spawn(forward(client, upstream, delay));
                        let mut open = shared.open.lock().expect("proxy lock");
                        open.retain(|h| !h.is_finished());
                        open.push(task.abort_handle());
                    }
                })
                .abort_handle()
        };
        Proxy {
            url: format!("https://127.0.0.1:{port}"),
            shared,
            accept,
            _runtime: Some(runtime),
        }
    }

    /// Cuts every open connection (watches included); returns how many it cut.
    pub fn cut(&self) -> usize {
        let open: Vec<AbortHandle> = std::mem::take(&mut *self.shared.open.lock().expect("lock"));
        let live = open.iter().filter(|h| !h.is_finished()).count();
        for handle in open {
            handle.abort();
        }
        self.shared.cuts.fetch_add(1, Ordering::SeqCst);
        live
    }

    /// While `true`, new connections are closed at once (and open ones are cut).
    pub fn refuse(&self, refusing: bool) {
        self.shared.refusing.store(refusing, Ordering::SeqCst);
        if refusing {
            self.cut();
        }
    }

    /// Delays the start of every new connection by `delay` (a slow apiserver).
    pub fn delay(&self, delay: Duration) {
        self.shared
            .delay_millis
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
        // A runtime must not be dropped inside another one's async context.
        if let Some(runtime) = self._runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn forward(mut client: TcpStream, upstream: u16, delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}

//! TLS in the binary, for those without a reverse proxy: the certificate chain and key from
//! PEM files (`ROOMZ_TLS_CERT`, `ROOMZ_TLS_KEY`), read at start and again on SIGHUP (a
//! renewed certificate needs no restart), and a listener that does each handshake in a task
//! of its own, so a slow or silent client never holds up the others.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client has to finish the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Handshakes under way at once; more wait to be accepted.
const HANDSHAKES_AT_ONCE: usize = 1024;
/// Handshakes under way at once from one address: one host opening silent connections
/// cannot take every place.
const HANDSHAKES_PER_ADDRESS: usize = 16;

/// Where the certificate and its key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct TlsError {
    path: String,
    reason: String,
}

impl TlsError {
    fn new(path: &Path, reason: impl ToString) -> Self {
        Self { path: path.display().to_string(), reason: reason.to_string() }
    }
}

/// Reads the files into a server configuration (HTTP/1.1 only: WebSockets upgrade it).
pub fn load(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| TlsError::new(&files.cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::new(&files.cert, e))?;
    if certs.is_empty() {
        return Err(TlsError::new(&files.cert, "no certificate in the file (PEM expected)"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        TlsError::new(&files.key, format!("no usable private key (PEM expected): {e}"))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::new(&files.cert, e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::new(&files.key, format!("does not match the certificate: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The configuration new handshakes use; replaced on reload.
pub type CurrentConfig = Arc<ArcSwap<ServerConfig>>;

/// Accepts TCP connections and hands out those whose TLS handshake succeeded.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: JoinHandle<()>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: CurrentConfig) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (sender, ready) = mpsc::channel(HANDSHAKES_AT_ONCE);
        let accepting = tokio::spawn(accept_loop(tcp, config, sender));
        Ok(Self { ready, local, accepting })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

async fn accept_loop(
    tcp: TcpListener,
    config: CurrentConfig,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let handshakes = Arc::new(Semaphore::new(HANDSHAKES_AT_ONCE));
    let per_address: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    loop {
        let Ok(permit) = handshakes.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match tcp.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of files, say: wait a moment rather than spin.
                tracing::warn!(%error, "tls: accepting failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(place) = AddressPlace::take(&per_address, peer.ip()) else {
            tracing::debug!(%peer, "tls: too many handshakes from one address; refused");
            continue;
        };
        // Chat frames are small: send each at once instead of waiting to fill a packet.
        let _ = stream.set_nodelay(true);
        let acceptor = TlsAcceptor::from(config.load_full());
        let ready = ready.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _place = place;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = ready.send((tls, peer)).await;
                }
                Ok(Err(error)) => tracing::debug!(%peer, %error, "tls: handshake failed"),
                Err(_) => tracing::debug!(%peer, "tls: handshake timed out"),
            }
        });
    }
}

/// One address's place among the handshakes under way; freed when dropped.
struct AddressPlace {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl AddressPlace {
    fn take(counts: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr) -> Option<Self> {
        let mut map = counts.lock().expect("handshake counts lock");
        let count = map.entry(ip).or_default();
        if *count >= HANDSHAKES_PER_ADDRESS {
            return None;
        }
        *count += 1;
        Some(Self { counts: counts.clone(), ip })
    }
}

impl Drop for AddressPlace {
    fn drop(&mut self) {
        let mut map = self.counts.lock().expect("handshake counts lock");
        if let Some(count) = map.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accepting task is gone (only when the listener is dropped): no more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

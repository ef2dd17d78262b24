//! NBD server (stub until the nbd branch lands).
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use crate::device::ExportGate;
pub struct ServerOptions { pub max_clients: usize }
pub struct Listener;
impl Listener { pub fn local_addr_string(&self) -> String { String::new() } }
pub async fn bind(_addr: &crate::config::ListenAddr) -> std::io::Result<Listener> { Ok(Listener) }
pub async fn serve<G: ExportGate>(_l: Listener, _g: Arc<G>, _o: ServerOptions, s: CancellationToken) -> std::io::Result<()> { s.cancelled().await; Ok(()) }

//! One live peer link as the write path sees it: send a request, await its
//! acknowledgement. The frames themselves are written by the session's
//! writer task ([`super::peer`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::repl::Message;

/// The peer did not acknowledge: the link went down first, or the peer
/// answered with an errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkError {
    /// The link was lost before the acknowledgement.
    Lost,
    /// The peer failed the request with this errno.
    Peer(i32),
}

/// A reply that carries data.
#[derive(Debug)]
pub enum Reply {
    Digest([u8; 32]),
    Data(Result<bytes::Bytes, i32>),
}

/// Sending side of a connected peer link.
pub struct PeerLink {
    tx: mpsc::Sender<Message>,
    pending: Mutex<HashMap<u64, oneshot::Sender<i32>>>,
    replies: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    next_id: AtomicU64,
    /// Cancelled when the link is lost or closed.
    pub closed: CancellationToken,
    /// The link ended cleanly: the peer made its data durable and said goodbye.
    clean: std::sync::atomic::AtomicBool,
}

impl PeerLink {
    pub fn new(tx: mpsc::Sender<Message>) -> Self {
        PeerLink { tx, pending: Mutex::new(HashMap::new()), replies: Mutex::new(HashMap::new()), next_id: AtomicU64::new(1), closed: CancellationToken::new(), clean: Default::default() }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<i32>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends the message built from a fresh id and waits for its Ack.
    pub async fn request(&self, make: impl FnOnce(u64) -> Message) -> Result<(), LinkError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if self.closed.is_cancelled() {
            return Err(LinkError::Lost);
        }
        self.pending().insert(id, tx);
        if self.tx.send(make(id)).await.is_err() {
            self.pending().remove(&id);
            return Err(LinkError::Lost);
        }
        tokio::select! {
            r = rx => match r {
                Ok(0) => Ok(()),
                Ok(errno) => Err(LinkError::Peer(errno)),
                Err(_) => Err(LinkError::Lost),
            },
            _ = self.closed.cancelled() => {
                self.pending().remove(&id);
                Err(LinkError::Lost)
            }
        }
    }

    /// Sends a request built from a fresh id and waits for its data reply
    /// (a verify digest, or read data).
    pub async fn request_reply(&self, make: impl FnOnce(u64) -> Message) -> Result<Reply, LinkError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if self.closed.is_cancelled() {
            return Err(LinkError::Lost);
        }
        self.replies.lock().unwrap_or_else(|p| p.into_inner()).insert(id, tx);
        if self.tx.send(make(id)).await.is_err() {
            return Err(LinkError::Lost);
        }
        tokio::select! {
            r = rx => r.map_err(|_| LinkError::Lost),
            _ = self.closed.cancelled() => Err(LinkError::Lost),
        }
    }

    /// Delivers a data reply from the peer. Unknown ids are ignored.
    pub fn complete_reply(&self, id: u64, reply: Reply) {
        if let Some(tx) = self.replies.lock().unwrap_or_else(|p| p.into_inner()).remove(&id) {
            let _ = tx.send(reply);
        }
    }

    /// Queues a message now, in call order; gives it back if the queue is full.
    pub fn try_send(&self, msg: Message) -> Result<(), Message> {
        match self.tx.try_send(msg) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(m)) => Err(m),
            Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
        }
    }

    /// Sends a message that needs no acknowledgement.
    pub async fn send(&self, msg: Message) -> Result<(), LinkError> {
        self.tx.send(msg).await.map_err(|_| LinkError::Lost)
    }

    /// Delivers an acknowledgement from the peer. Unknown ids are ignored.
    pub fn complete(&self, id: u64, errno: i32) {
        if let Some(tx) = self.pending().remove(&id) {
            let _ = tx.send(errno);
        }
    }

    /// Marks the link lost: every waiter gets [`LinkError::Lost`].
    pub fn close(&self) {
        self.closed.cancel();
        self.pending().clear();
        self.replies.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Records that the link ends cleanly (see [`PeerLink::clean`]).
    pub fn set_clean(&self) {
        self.clean.store(true, Ordering::SeqCst);
    }

    pub fn is_clean(&self) -> bool {
        self.clean.load(Ordering::SeqCst)
    }

    /// Requests waiting for an acknowledgement.
    pub fn in_flight(&self) -> usize {
        self.pending().len()
    }
}

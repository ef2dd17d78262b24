//! One live peer link as the write path sees it: send a request, await its
//! acknowledgement. The frames themselves are written by the session's
//! writer task ([`super::peer`]).
//!
//! Every request waiting for its answer is kept with the time it was
//! issued, so the session can tell a peer that stopped answering (its disk
//! stalled) from one that is only busy: see [`PeerLink::stalled`]. No call
//! here waits on a closed link: every wait ends when the link closes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// The peer's sizes (online resize).
    Resize(super::resize_state::PeerSizes),
}

/// A request queued by [`PeerLink::submit`]: its id, its Ack's errno, its `Received`.
pub type Submitted = (u64, oneshot::Receiver<i32>, Option<oneshot::Receiver<()>>);

/// A request awaiting its answer: when it was issued, and who waits.
type Waiting<T> = BTreeMap<u64, (Instant, oneshot::Sender<T>)>;

/// A peer that answers nothing for `timeout_ms` is dropped; one that keeps
/// answering others but leaves one request unanswered for this many times
/// `timeout_ms` is dropped too (DRBD's ko-count).
pub const KO_COUNT: u32 = 6;

/// Sending side of a connected peer link.
pub struct PeerLink {
    tx: mpsc::Sender<Message>,
    pending: Mutex<Waiting<i32>>,
    replies: Mutex<Waiting<Reply>>,
    /// Protocol B: requests waiting for the peer's `Received` ([`PeerLink::submit`]).
    receipts: Mutex<BTreeMap<u64, oneshot::Sender<()>>>,
    next_id: AtomicU64,
    /// When the link was made; the clock of `last_answer_ms`.
    born: Instant,
    /// Milliseconds after `born` of the last answer to a request.
    last_answer_ms: AtomicU64,
    /// Cancelled when the link is lost or closed.
    pub closed: CancellationToken,
    /// The link ended cleanly: the peer made its data durable and said goodbye.
    clean: AtomicBool,
    /// The machine's name for this link once installed (0: not yet).
    id: AtomicU64,
    /// Mirrored `Write`s sent and not yet answered: their data's bytes
    /// (protocol A's congestion, [`PeerLink::in_flight_bytes`]).
    sizes: Mutex<BTreeMap<u64, u64>>,
    in_flight_bytes: AtomicU64,
    /// The feature bits the handshake agreed on (`repl::FEATURE_*`).
    features: AtomicU64,
    /// The peer at the other end (its node id; set by the session).
    peer: std::sync::atomic::AtomicU8,
}

/// Milliseconds from `from` to `to` (0 if `to` is earlier).
fn ms_between(from: Instant, to: Instant) -> u64 {
    u64::try_from(to.saturating_duration_since(from).as_millis()).unwrap_or(u64::MAX)
}

impl PeerLink {
    pub fn new(tx: mpsc::Sender<Message>) -> Self {
        PeerLink {
            tx,
            pending: Mutex::new(BTreeMap::new()),
            replies: Mutex::new(BTreeMap::new()),
            receipts: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
            born: Instant::now(),
            last_answer_ms: AtomicU64::new(0),
            closed: CancellationToken::new(),
            clean: AtomicBool::new(false),
            id: AtomicU64::new(0),
            sizes: Mutex::new(BTreeMap::new()),
            in_flight_bytes: AtomicU64::new(0),
            features: AtomicU64::new(0),
            peer: std::sync::atomic::AtomicU8::new(0),
        }
    }

    /// The peer at the other end, as the machine names it.
    pub fn peer(&self) -> super::machine::PeerId {
        super::machine::PeerId(self.peer.load(Ordering::SeqCst))
    }

    pub fn set_peer(&self, p: super::machine::PeerId) {
        self.peer.store(p.0, Ordering::SeqCst);
    }

    /// The feature bits both nodes offered in this link's handshake.
    pub fn features(&self) -> u64 {
        self.features.load(Ordering::SeqCst)
    }

    pub fn set_features(&self, f: u64) {
        self.features.store(f, Ordering::SeqCst);
    }

    fn sizes(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, u64>> {
        self.sizes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a mirrored write's data as in flight until it is answered.
    fn count_sent(&self, id: u64, msg: &Message) {
        if let Message::Write { data, .. } = msg {
            let n = data.len() as u64;
            self.sizes().insert(id, n);
            self.in_flight_bytes.fetch_add(n, Ordering::SeqCst);
        }
    }

    /// Request `id` was answered or forgotten: its bytes are no longer in flight.
    fn count_done(&self, id: u64) {
        if let Some(n) = self.sizes().remove(&id) {
            self.in_flight_bytes.fetch_sub(n, Ordering::SeqCst);
        }
    }

    /// Bytes of mirrored writes sent and not yet answered by the peer
    /// (DRBD's `ap_in_flight`): what `[net] congestion_fill` is compared with.
    pub fn in_flight_bytes(&self) -> u64 {
        self.in_flight_bytes.load(Ordering::SeqCst)
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Waiting<i32>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn replies(&self) -> std::sync::MutexGuard<'_, Waiting<Reply>> {
        self.replies.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn receipts(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, oneshot::Sender<()>>> {
        self.receipts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Protocols A and B: queues the request built from a fresh id and
    /// returns once it is queued: its id, where its Ack's errno comes and,
    /// with `want_received`, where the peer's `Received` comes (see
    /// `protocols::InFlight`). Closing the link drops both senders.
    pub async fn submit(&self, make: impl FnOnce(u64) -> Message, want_received: bool) -> Result<Submitted, LinkError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if self.closed.is_cancelled() {
            return Err(LinkError::Lost);
        }
        let received = want_received.then(|| {
            let (t, r) = oneshot::channel();
            self.receipts().insert(id, t);
            r
        });
        self.pending().insert(id, (Instant::now(), tx));
        let msg = make(id);
        self.count_sent(id, &msg);
        if self.queue(msg).await.is_err() {
            self.forget(id);
            return Err(LinkError::Lost);
        }
        Ok((id, rx, received))
    }

    /// Drops what waits for request `id`.
    pub fn forget(&self, id: u64) {
        self.pending().remove(&id);
        self.receipts().remove(&id);
        self.count_done(id);
    }

    /// Delivers the peer's `Received` (protocol B). Unknown ids are ignored.
    pub fn note_received(&self, id: u64) {
        let tx = self.receipts().remove(&id);
        if let Some(tx) = tx {
            self.answered();
            let _ = tx.send(());
        }
    }

    fn answered(&self) {
        self.last_answer_ms.fetch_max(ms_between(self.born, Instant::now()), Ordering::Relaxed);
    }

    /// Queues `msg`, waiting for room, unless the link closes first.
    async fn queue(&self, msg: Message) -> Result<(), LinkError> {
        tokio::select! {
            r = self.tx.send(msg) => r.map_err(|_| LinkError::Lost),
            _ = self.closed.cancelled() => Err(LinkError::Lost),
        }
    }

    /// Sends the message built from a fresh id and waits for its Ack.
    pub async fn request(&self, make: impl FnOnce(u64) -> Message) -> Result<(), LinkError> {
        // The clock runs from the submission: waiting for room in the queue counts.
        let (id, rx, _) = self.submit(make, false).await?;
        tokio::select! {
            r = rx => match r {
                Ok(0) => Ok(()),
                Ok(errno) => Err(LinkError::Peer(errno)),
                Err(_) => Err(LinkError::Lost),
            },
            _ = self.closed.cancelled() => {
                self.forget(id);
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
        self.replies().insert(id, (Instant::now(), tx));
        if self.queue(make(id)).await.is_err() {
            self.replies().remove(&id);
            return Err(LinkError::Lost);
        }
        tokio::select! {
            r = rx => r.map_err(|_| LinkError::Lost),
            _ = self.closed.cancelled() => {
                self.replies().remove(&id);
                Err(LinkError::Lost)
            }
        }
    }

    /// Delivers a data reply from the peer. Unknown ids are ignored.
    pub fn complete_reply(&self, id: u64, reply: Reply) {
        if let Some((_, tx)) = self.replies().remove(&id) {
            self.answered();
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

    /// Sends a message that needs no acknowledgement (waits for room in
    /// the queue, unless the link closes first).
    pub async fn send(&self, msg: Message) -> Result<(), LinkError> {
        self.queue(msg).await
    }

    /// Queues a reply without waiting: at once if there is room, else from
    /// a task (the session's reader must never wait on the queue: the peer
    /// may be waiting on ours, and the reader is what notices a dead peer).
    pub fn send_soon(self: &Arc<Self>, msg: Message) {
        if let Err(m) = self.try_send(msg) {
            let link = self.clone();
            tokio::spawn(async move {
                let _ = link.send(m).await;
            });
        }
    }

    /// Delivers an acknowledgement from the peer. Unknown ids are ignored.
    pub fn complete(&self, id: u64, errno: i32) {
        self.receipts().remove(&id);
        self.count_done(id);
        if let Some((_, tx)) = self.pending().remove(&id) {
            self.answered();
            let _ = tx.send(errno);
        }
    }

    /// Whether the peer stopped answering: requests wait and none was
    /// answered for `timeout` (counted from the later of the last answer
    /// and the oldest request), or one has waited [`KO_COUNT`] times
    /// `timeout` while others were answered. Returns how long the oldest
    /// request has waited.
    pub fn stalled(&self, timeout: Duration) -> Option<Duration> {
        let oldest = [self.pending().first_key_value().map(|(_, (t, _))| *t), self.replies().first_key_value().map(|(_, (t, _))| *t)]
            .into_iter()
            .flatten()
            .min()?;
        let now = Instant::now();
        let waited = now.saturating_duration_since(oldest);
        let last_answer = self.born + Duration::from_millis(self.last_answer_ms.load(Ordering::Relaxed));
        let silent = now.saturating_duration_since(last_answer.max(oldest));
        (silent > timeout || waited > timeout.saturating_mul(KO_COUNT)).then_some(waited)
    }

    /// Marks the link lost: every waiter gets [`LinkError::Lost`].
    pub fn close(&self) {
        self.closed.cancel();
        self.pending().clear();
        self.replies().clear();
        self.receipts().clear();
        self.sizes().clear();
        self.in_flight_bytes.store(0, Ordering::SeqCst);
    }

    /// The machine's name for this link ([`LinkId`]`(0)` before it is installed).
    pub fn id(&self) -> super::machine::LinkId {
        super::machine::LinkId(self.id.load(Ordering::SeqCst))
    }

    /// Named by the machine when installed.
    pub(super) fn set_id(&self, id: super::machine::LinkId) {
        self.id.store(id.0, Ordering::SeqCst);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A request nobody answers makes the link stalled once `timeout`
    /// passed; an answer ends it.
    #[tokio::test]
    async fn an_unanswered_request_stalls_the_link_and_an_answer_ends_it() {
        let (tx, mut rx) = mpsc::channel(4);
        let link = Arc::new(PeerLink::new(tx));
        assert!(link.stalled(Duration::from_millis(1)).is_none(), "nothing waits");
        let l = link.clone();
        let req = tokio::spawn(async move { l.request(|id| Message::Flush { id }).await });
        let Some(Message::Flush { id }) = rx.recv().await else { panic!("no request queued") };
        assert!(link.stalled(Duration::from_secs(60)).is_none(), "stalled at once");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(link.stalled(Duration::from_millis(50)).is_some_and(|w| w >= Duration::from_millis(60)));
        link.complete(id, 0);
        assert_eq!(req.await.unwrap(), Ok(()));
        assert!(link.stalled(Duration::from_millis(1)).is_none(), "answered");
    }

    /// A full queue does not hold a request (or a send) once the link closes.
    #[tokio::test]
    async fn a_closed_link_ends_waits_for_room_in_the_queue() {
        let (tx, _rx) = mpsc::channel(1);
        let link = Arc::new(PeerLink::new(tx));
        link.send(Message::PingAck { nonce: 1 }).await.unwrap();
        let (l1, l2) = (link.clone(), link.clone());
        let send = tokio::spawn(async move { l1.send(Message::PingAck { nonce: 2 }).await });
        let req = tokio::spawn(async move { l2.request(|id| Message::Flush { id }).await });
        tokio::task::yield_now().await;
        link.close();
        let both = async { (send.await.unwrap(), req.await.unwrap()) };
        let (s, r) = tokio::time::timeout(Duration::from_secs(30), both).await.expect("a wait outlived the link");
        assert_eq!((s, r), (Err(LinkError::Lost), Err(LinkError::Lost)));
    }
}

//! The witness link's state beside the node (the link task is
//! [`super::witness_link`]): the send queue while the link is up, the
//! requests awaiting their `Ack`, the last state reported.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use tokio::sync::{mpsc, oneshot};

use crate::repl::types::{STATE_PEER_CONNECTED, STATE_PROMOTING};
use crate::repl::Message;

use super::state::{Disk, Role};
use super::wire::{to_wire_disk, to_wire_role};

/// The witness link's state on the node.
#[derive(Default)]
pub struct WitnessLink {
    tx: Mutex<Option<mpsc::UnboundedSender<Message>>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<i32>>>,
    next_id: AtomicU64,
    /// What was last reported (a report goes out only when it changes).
    last: Mutex<Option<(Role, Disk, u64)>>,
    promoting: AtomicBool,
}

impl WitnessLink {
    fn sender(&self) -> Option<mpsc::UnboundedSender<Message>> {
        self.tx.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Sends a request and waits for its `Ack`: the errno, or None if the
    /// link is down or ended first.
    pub async fn request(&self, make: impl FnOnce(u64) -> Message) -> Option<i32> {
        let tx = self.sender()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (done, wait) = oneshot::channel();
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).insert(id, done);
        if tx.send(make(id)).is_err() {
            self.pending.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
            return None;
        }
        wait.await.ok()
    }

    /// Reports this node's state if it changed (or `force`).
    pub fn report(&self, role: Role, disk: Disk, peer_connected: bool, force: bool) {
        let mut flags = if peer_connected { STATE_PEER_CONNECTED } else { 0 };
        if self.promoting.load(Ordering::SeqCst) {
            flags |= STATE_PROMOTING;
        }
        let now = (role, disk, flags);
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if !force && *last == Some(now) {
            return;
        }
        if let Some(tx) = self.sender() {
            if tx.send(Message::StateUpdate { role: to_wire_role(role), disk: to_wire_disk(disk), flags }).is_ok() {
                *last = Some(now);
            }
        }
    }

    /// Reports a machine's state (under its lock: from the executor).
    pub(super) fn report_machine(&self, m: &super::machine::Machine) {
        let st = m.state();
        self.report(st.role, st.disk, st.connection == super::state::Connection::Connected, false);
    }

    /// A promotion runs (the witness keeps its grant until a report without it).
    pub fn set_promoting(&self, on: bool) {
        self.promoting.store(on, Ordering::SeqCst);
    }

    pub(super) fn answered(&self, id: u64, errno: i32) {
        if let Some(done) = self.pending.lock().unwrap_or_else(PoisonError::into_inner).remove(&id) {
            let _ = done.send(errno);
        }
    }

    pub(super) fn up(&self, tx: mpsc::UnboundedSender<Message>) {
        *self.tx.lock().unwrap_or_else(PoisonError::into_inner) = Some(tx);
    }

    pub(super) fn down(&self) {
        *self.tx.lock().unwrap_or_else(PoisonError::into_inner) = None;
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = None;
        // Dropping the senders ends every wait with None.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }
}


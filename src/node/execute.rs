//! Carrying out the machine's effects: the one place where what
//! [`super::machine`] decided becomes file writes, frames and tasks.
//!
//! [`execute`] runs under the machine's lock (the runtime's rule: no await
//! while it is held; every effect here is either a short blocking write of
//! the metadata or a non-blocking hand-off). The order is the machine's:
//!
//! 1. Effects run in the order the step emitted them. The machine emits a
//!    durable change before what depends on it: the header (`Persist`) and
//!    the bitmap before a link is installed, a resync started, a peer told
//!    (`Announce`), or a write acknowledged (the write path acks only after
//!    its step returned).
//! 2. A failed durable write (header or bitmap) does not stop the rest
//!    (a link still closes, waiters still wake); the machine is told
//!    ([`Event::PersistFailed`]: the divergence is made again next time)
//!    and the first error is returned to the caller, who fails what
//!    depended on it (a write gets EIO, a command is refused, a session ends).
//! 3. `Changed` runs the state-change handlers; a fence-peer started by
//!    them is fed back ([`Event::FenceStarted`]) before the step returns.
//!
//! The runtime's [`Io`] is [`super::runtime::Exec`]; the simulation has its own.

use super::machine::{BitmapOp, Durable, Effect, Event, LinkId, Machine, PeerId, ResyncStart};
use crate::repl::Message;

/// A durable write failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot write metadata: {0}")]
pub struct PersistError(pub String);

/// What carries the effects out.
pub trait Io {
    fn persist(&mut self, d: &Durable) -> Result<(), PersistError>;
    fn bitmap(&mut self, op: &BitmapOp) -> Result<(), PersistError>;
    /// The session's prepared link becomes the live one.
    fn install(&mut self, link: LinkId);
    /// Close `link`; `forgotten`: the machine no longer has it installed.
    fn close(&mut self, link: LinkId, forgotten: bool);
    fn announce(&mut self, link: LinkId, msg: Message);
    fn start_resync(&mut self, r: ResyncStart);
    /// Three nodes: send `CurrentId` on `link` (in order with the writes).
    fn current_id(&mut self, link: LinkId, current: u64, not_sent_to: &[PeerId]);
    /// Three nodes: send `Outdate` on `link` about `about` (see
    /// [`Effect::Outdate`]); an answer to this node's own request comes
    /// back as `Event::OutdateAnswered`.
    fn outdate(&mut self, link: LinkId, about: PeerId);
    /// Run fence-peer (its exit comes back as `Event::FenceResult`).
    fn fence(&mut self, m: &Machine);
    fn thaw(&mut self);
    fn drop_clients(&mut self);
    /// State changed; true if a fence-peer handler was started.
    fn changed(&mut self, m: &Machine) -> bool;
}

/// Carries out `effects` (from `m.step`) in order; see the module doc.
pub fn execute(io: &mut impl Io, m: &mut Machine, effects: Vec<Effect>) -> Result<(), PersistError> {
    let mut first_error = None;
    let mut changed = false;
    for e in effects {
        let r = match &e {
            Effect::Persist(d) => io.persist(d),
            Effect::Bitmap(op) => io.bitmap(op),
            Effect::Install(l) => {
                io.install(*l);
                Ok(())
            }
            Effect::Close(l) => {
                io.close(*l, !m.has_link(*l));
                Ok(())
            }
            Effect::Announce(l, msg) => {
                io.announce(*l, msg.clone());
                Ok(())
            }
            Effect::StartResync(r) => {
                io.start_resync(*r);
                Ok(())
            }
            Effect::CurrentId { link, current, not_sent_to } => {
                io.current_id(*link, *current, not_sent_to);
                Ok(())
            }
            Effect::Outdate { link, about } => {
                io.outdate(*link, *about);
                Ok(())
            }
            Effect::Fence => {
                io.fence(m);
                Ok(())
            }
            Effect::Thaw => {
                io.thaw();
                Ok(())
            }
            Effect::DropClients => {
                io.drop_clients();
                Ok(())
            }
            Effect::Changed => {
                changed = true;
                Ok(())
            }
        };
        if let Err(err) = r {
            tracing::error!("{err}");
            let _ = m.step(Event::PersistFailed);
            first_error.get_or_insert(err);
        }
    }
    // Handlers see the state after the whole step (one observation).
    if changed && io.changed(m) {
        let _ = m.step(Event::FenceStarted);
    }
    first_error.map_or(Ok(()), Err)
}

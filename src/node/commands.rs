//! Control commands: each is a step of the machine ([`super::machine`]);
//! what needs waiting (the peer's answer to a promotion, the writes a
//! demotion drains, a disconnection's goodbye) is awaited here, between
//! steps, never under the machine's lock.

use std::sync::Arc;

use crate::control::{self, Request, Response};
use crate::repl::Message;

use super::execute::PersistError;
use super::link::LinkError;
use super::machine::{Answer, Event, PeerAnswer};
use super::runtime::Node;

/// A step's answer as the command's response.
fn respond(r: Result<Answer, PersistError>) -> Response {
    match r {
        Ok(Answer::Ok(m)) => Response::ok(m),
        Ok(Answer::Refused(m)) => Response::refused(m),
        Ok(other) => Response::refused(format!("internal: unexpected answer {other:?}")),
        Err(e) => Response::refused(e.to_string()),
    }
}

impl Node {
    /// `repctl primary [--force]`: asks the peer while connected (again if
    /// the link changed meanwhile), then commits.
    pub(super) async fn promote(self: &Arc<Self>, force: bool) -> Response {
        if let Some(why) = self.delay_refuses_promotion() {
            return Response::refused(why);
        }
        // What the runtime knows of each peer (its slot's out-of-sync
        // bytes, when it was last heard from): a protocol-A-only node's
        // answer says it.
        let heard = self.heard().into_iter().map(|(peer, out_of_sync, ago)| super::machine::Heard { peer, out_of_sync, ago }).collect();
        let r = self.step(Event::Promote { force, heard });
        let r = if matches!(r, Ok(Answer::AskWitness)) {
            self.witness.set_promoting(true);
            self.report_to_witness(true);
            let errno = self.witness.request(|id| Message::RoleRequest { id }).await;
            let r = self.ask_peer(force, self.step(Event::WitnessAnswered { force, errno })).await;
            self.witness.set_promoting(false);
            self.report_to_witness(true);
            r
        } else {
            self.ask_peer(force, r).await
        };
        respond(r)
    }

    /// A promotion's role requests to the peers, as the machine asks them
    /// (one answer each; the last step's answer is the promotion's).
    async fn ask_peer(self: &Arc<Self>, force: bool, mut r: Result<Answer, super::execute::PersistError>) -> Result<Answer, super::execute::PersistError> {
        while let Ok(Answer::AskPeers(ids)) = r {
            r = Ok(Answer::None);
            for id in ids {
                let answer = match self.link_by_id(id) {
                    None => PeerAnswer::Lost,
                    Some(link) => match link.request(|id| Message::RoleRequest { id }).await {
                        Ok(()) => PeerAnswer::Granted,
                        Err(LinkError::Peer(_)) => PeerAnswer::Refused,
                        Err(LinkError::Lost) => PeerAnswer::Lost,
                    },
                };
                r = self.step(Event::PromoteAnswered { force, asked: Some(id), answer });
            }
        }
        r
    }

    /// `repctl secondary [--force]`: I/O stops at once; the writes in
    /// flight finish under their range locks, the store is flushed, then
    /// the header says Secondary.
    pub(super) async fn demote(self: &Arc<Self>, force: bool) -> Response {
        let r = self.step(Event::Demote { force, clients: self.clients.count() });
        if !matches!(r, Ok(Answer::Drain)) {
            return respond(r);
        }
        while self.ranges.held() > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let s = self.store.clone();
        let error = crate::device::blocking(move || s.sync()).await.err().map(|e| e.to_string());
        respond(self.step(Event::DemoteFlushed { error }))
    }

    pub(super) async fn disconnect(self: &Arc<Self>) -> Response {
        *self.standalone_why.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        match self.step(Event::Disconnect) {
            Ok(Answer::Goodbye(ids)) => {
                let why = format!("node {} was disconnected by the operator", self.me.name);
                for l in ids.iter().filter_map(|&id| self.link_by_id(id)) {
                    self.goodbye(&l, &why).await;
                }
                self.changed();
                Response::ok("standalone")
            }
            r => respond(r),
        }
    }

    /// `repctl verify`: a task compares both disks region by region.
    pub(super) fn verify(self: &Arc<Self>) -> Response {
        if let Some(why) = self.delay_refuses_verify() {
            return Response::refused(why);
        }
        match self.step(Event::VerifyAsked { peer: None }) {
            Ok(Answer::Verify(id)) => match self.link_by_id(id) {
                Some(link) => self.start_verify(link),
                None => Response::refused("not connected to the peer"),
            },
            r => respond(r),
        }
    }
}

/// The control-socket face of a node.
pub struct NodeControl(pub Arc<Node>);

impl control::Handler for NodeControl {
    async fn handle(&self, req: Request) -> Response {
        let node = &self.0;
        match req {
            Request::Status => Response::Status { ok: true, status: Box::new(node.status()) },
            Request::Primary { force } => node.promote(force).await,
            Request::Secondary { force } => node.demote(force).await,
            Request::Disconnect => node.disconnect().await,
            Request::Connect { discard_my_data } => {
                *node.standalone_why.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                respond(node.step(Event::Connect { discard_my_data }))
            }
            Request::Invalidate => respond(node.step(Event::Invalidate)),
            Request::Adjust => match node.adjust() {
                Ok(m) => Response::ok(m.summary()),
                Err(e) => Response::refused(e),
            },
            Request::Verify => node.verify(),
            Request::Resize { size, assume_clean } => node.resize(size, assume_clean).await,
            Request::Events => Response::refused("events are streamed by the server"),
            Request::ResumeIo => respond(node.step(Event::ResumeIo)),
            Request::DelayPause | Request::DelayResume => {
                let pause = req == Request::DelayPause;
                match &node.delay {
                    None => Response::refused(format!("node {} is not a delayed replica (no apply_delay)", node.me.name)),
                    Some(d) => {
                        let was = match d.set_paused(pause) {
                            Ok(w) => w,
                            Err(e) => return Response::refused(e),
                        };
                        let (from, to) = if pause { ("applying", "paused") } else { ("paused", "applying") };
                        if was != pause {
                            tracing::warn!("delayed replica: {to} (by the operator)");
                            node.delay_event(from, to);
                        }
                        Response::ok(to)
                    }
                }
            }
            Request::DelayPromote { to_ms, before_secs, latest, force } => {
                let to = match (to_ms, before_secs, latest) {
                    (Some(t), None, false) => super::delay::PromoteTo::Time(t),
                    (None, Some(s), false) => super::delay::PromoteTo::SecondsAgo(s),
                    (None, None, true) => super::delay::PromoteTo::Latest,
                    _ => return Response::refused("give exactly one of --to, --before, --latest"),
                };
                node.delay_promote(to, force).await
            }
            Request::Failpoint { name, errno } => match crate::failpoint::set(&name, errno) {
                Ok(()) => Response::ok(format!("fail point {name}: {errno:?}")),
                Err(e) => Response::refused(e),
            },
        }
    }

    fn subscribe(&self) -> Option<(String, tokio::sync::broadcast::Receiver<String>)> {
        let rx = self.0.events.subscribe();
        let mut v = serde_json::to_value(self.0.status()).ok()?;
        if let Some(o) = v.as_object_mut() {
            o.insert("event".into(), "status".into());
        }
        Some((v.to_string(), rx))
    }
}

//! A small message link kept alive by pings: the witness link, on the data
//! node ([`crate::node::witness_link`]) and on the witness
//! ([`crate::witness::server`]).
//!
//! [`run`] sends what is queued on `rx`, answers `Ping`, ignores `PingAck`,
//! pings every `ping_every` and ends the link when nothing was heard for
//! `silent_for`; a `Goodbye` ends it with its (escaped) reason; every other
//! message goes to the caller's handler, which may answer it at once
//! (before anything queued meanwhile) or end the link.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::handshake::Untrusted;
use super::{Codec, Message};

/// What the handler makes of a message.
pub enum Then {
    Go,
    Reply(Message),
    End(String),
}

/// The keepalive's two periods.
#[derive(Clone, Copy, Debug)]
pub struct Pings {
    pub every: Duration,
    pub silent_for: Duration,
}

/// Runs the link until it ends; returns why.
pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    link: Framed<S, Codec>,
    mut rx: mpsc::UnboundedReceiver<Message>,
    pings: Pings,
    stop: &CancellationToken,
    mut on: impl FnMut(Message) -> Then,
) -> String {
    let (mut sink, mut stream) = link.split();
    let mut last_heard = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(pings.every);
    let mut nonce = 0u64;
    loop {
        let out = tokio::select! {
            m = rx.recv() => match m {
                Some(m) => m,
                None => return "closed here".into(),
            },
            f = stream.next() => {
                last_heard = tokio::time::Instant::now();
                match f {
                    None => return "closed by the other end".into(),
                    Some(Err(e)) => return e.to_string(),
                    Some(Ok(Message::Ping { nonce })) => Message::PingAck { nonce },
                    Some(Ok(Message::PingAck { .. })) => continue,
                    Some(Ok(Message::Goodbye { reason })) => return format!("goodbye: {}", Untrusted(&reason)),
                    Some(Ok(m)) => match on(m) {
                        Then::Go => continue,
                        Then::Reply(r) => r,
                        Then::End(why) => return why,
                    },
                }
            }
            _ = tick.tick() => {
                if last_heard.elapsed() > pings.silent_for {
                    return format!("silent for {} ms", pings.silent_for.as_millis());
                }
                nonce += 1;
                Message::Ping { nonce }
            }
            _ = stop.cancelled() => return "stopping".into(),
        };
        if let Err(e) = sink.send(out).await {
            return format!("send: {e}");
        }
    }
}

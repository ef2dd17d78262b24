//! Why a session with the peer ended: one error type for the session, its
//! bitmap exchange and the frames it applies (logged once, by the session).

use crate::repl::FrameError;

use super::execute::PersistError;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("no frame from the peer for {0} ms")]
    Silent(u128),
    #[error("the peer read nothing for {0} ms")]
    NotReading(u128),
    #[error("the peer closed the link")]
    Closed,
    #[error("the peer said goodbye: {0}")]
    Goodbye(String),
    #[error("bad frame: {0}")]
    BadFrame(FrameError),
    #[error("sending failed: {0}")]
    Send(FrameError),
    #[error("sending failed: {0}")]
    SendIo(std::io::Error),
    /// The peer broke the protocol (an unexpected message, a bad count).
    #[error("{0}")]
    Protocol(String),
    #[error("the peer sent a request past the end of the device (offset {offset}, length {len})")]
    OutOfRange { offset: u64, len: u64 },
    /// The machine refused what the peer asked (a sync into a Primary).
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Persist(#[from] PersistError),
    #[error("{what} failed: errno {errno}")]
    Disk { what: &'static str, errno: i32 },
    #[error("node {0} is shutting down")]
    ShuttingDown(String),
}

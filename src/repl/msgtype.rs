//! The `type` field of a frame header: every message type this protocol
//! version knows, its code and its name (`proto/replication.md`).

use std::fmt;

macro_rules! msg_types {
    ($($(#[$doc:meta])* $name:ident = $val:expr,)*) => {
        /// The `type` field of a frame header.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u16)]
        pub enum MsgType { $($(#[$doc])* $name = $val,)* }

        impl TryFrom<u16> for MsgType {
            type Error = u16;
            fn try_from(v: u16) -> Result<Self, u16> {
                match v { $($val => Ok(MsgType::$name),)* other => Err(other) }
            }
        }

        impl MsgType {
            /// Every type this version knows, in code order.
            pub const ALL: &'static [MsgType] = &[$(MsgType::$name,)*];
            /// The message name, as in the spec.
            pub fn name(self) -> &'static str {
                match self { $(MsgType::$name => stringify!($name),)* }
            }
        }
    };
}

msg_types! {
    /// Handshake: who I am.
    Hello = 0x0001,
    /// Handshake: prove you know the secret.
    AuthChallenge = 0x0002,
    /// Handshake: the proof.
    AuthResponse = 0x0003,
    /// Handshake: I accept this connection.
    Accept = 0x0004,
    /// Refusal or clean disconnect, with a reason.
    Goodbye = 0x0005,
    /// Full node state, once per connection.
    State = 0x0010,
    /// Role or disk changed.
    StateUpdate = 0x0011,
    /// End of the dirty bitmap.
    BitmapDone = 0x0013,
    /// Ask the peer's consent to become Primary.
    RoleRequest = 0x0014,
    /// Part of the dirty bitmap: runs of set bits.
    BitmapRuns = 0x0015,
    /// Mirrored application write.
    Write = 0x0020,
    /// Mirrored trim (discard).
    Trim = 0x0021,
    /// Mirrored write-zeroes.
    Zero = 0x0022,
    /// Mirrored flush.
    Flush = 0x0023,
    /// Completion of Write/Trim/Zero/Flush.
    Ack = 0x0024,
    /// Read from the peer's disk (this node's disk has failed).
    ReadRequest = 0x0025,
    /// The data of a ReadRequest.
    ReadReply = 0x0026,
    /// Protocol B: the Write/Trim/Zero arrived (not yet written); its Ack follows.
    Received = 0x0027,
    /// Keepalive.
    Ping = 0x0030,
    /// Keepalive answer.
    PingAck = 0x0031,
    /// Resync begins; the receiver is the sync target.
    SyncStart = 0x0040,
    /// Resync data block.
    SyncData = 0x0041,
    /// Resync region that is all zeroes.
    SyncHole = 0x0042,
    /// Completion of SyncData/SyncHole.
    SyncAck = 0x0043,
    /// Resync finished.
    SyncDone = 0x0044,
    /// Online verify: digest this region.
    VerifyRequest = 0x0050,
    /// Online verify: the digest.
    VerifyDigest = 0x0051,
    /// Online resize: what are your sizes?
    ResizeQuery = 0x0060,
    /// Online resize: the answer to a ResizeQuery.
    ResizeInfo = 0x0061,
    /// Online resize: grow to this size (answered by Ack).
    ResizeCommit = 0x0062,
    /// Witness link: what the witness sees of the other data node.
    QuorumView = 0x0070,
    /// Witness link: outdate my peer / you are outdated.
    Outdate = 0x0071,
    /// Three-node links: the current id writes are made under from here on,
    /// and the nodes they are not sent to.
    CurrentId = 0x0072,
}

impl fmt::Display for MsgType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

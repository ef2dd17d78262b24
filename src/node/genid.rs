//! Generation ids and the sync decision: they live in [`crate::vocab::genid`]
//! (the metadata stores them, the peer link carries them); re-exported here
//! so `node::genid::…` paths keep working.

pub use crate::vocab::genid::{decide, DecideInput, Decision, Fixup, GenIds, SyncDecision, SyncStart, JUST_CREATED, NEW_BM_OFFSET};

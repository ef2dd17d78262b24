//! node (under construction)
pub mod genid;

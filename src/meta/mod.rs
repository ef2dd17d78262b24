//! meta (under construction)

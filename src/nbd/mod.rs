//! nbd (under construction)

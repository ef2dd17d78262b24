//! control (under construction)

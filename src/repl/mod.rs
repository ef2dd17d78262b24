//! repl (under construction)

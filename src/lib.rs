//! repd: a DRBD-like replicated block device in user space.
//!
//! Two nodes each keep a local backing file. The Primary exports it over NBD;
//! every write is mirrored to the peer, by default with protocol-C semantics
//! (the client hears "done" only when both disks have it; protocols A and B
//! answer earlier, see `node::protocols`). Out-of-sync regions are
//! tracked in a dirty bitmap and an activity log so a resync copies only what
//! changed.
//!
//! # Layout
//!
//! Decisions are kept apart from I/O: the pure modules take events and return
//! what to do; thin async shells do the sockets and files. `docs/design.md`
//! says what moved where when the node's heart became one state machine.
//!
//! | module | holds |
//! |---|---|
//! | [`vocab`] | the words every layer shares: role, disk and connection states, generation ids and the sync decision (pure; imports nothing of the crate) |
//! | [`addr`] | addresses as the resource file writes them: `HOST:PORT`, the NBD listen address |
//! | [`config`] | the TOML resource file into validated types; errors name file, key, reason; [`config_witness`]: its `[witness]` table |
//! | [`store`] | the backing file: pread/pwrite, fdatasync, punch-hole, zero ranges, SEEK_DATA maps |
//! | [`inline_io`] | when a small buffered write may run on the async worker (timed, backs off when slow) |
//! | [`device`] | the [`device::BlockDevice`] trait the NBD server serves, the local device, the export gate |
//! | [`nbd`] | the NBD server: handshake (option haggling) and transmission (pipelined requests) |
//! | [`repl`] | the peer link: framed wire protocol, authenticated handshake, keepalive |
//! | [`meta`] | the metadata file: generation ids, dirty bitmap, activity log |
//! | [`node`] | the resource: its heart, one pure state machine (`node::machine`, `step(event) -> effects`), the one executor of its effects, and the runtime shell (sockets, files, tasks) that feeds it events; `node::delay`: the delayed replica (journal format, replay, point-in-time choice) |
//! | [`witness`] | the tie-breaker (quorum): its pure arbiter, its durable record, the witness daemon |
//! | [`control`] | the control socket: messages between `repctl` and the daemon |
//! | [`cli`] | the `repd` and `repctl` command lines (the binaries are thin wrappers) |
//! | [`metrics`] | Prometheus `/metrics`: the page from the status, the write-latency histogram, a tiny HTTP responder |
//! | [`tls`] | rustls configurations for the peer link, the witness link and NBD |
//! | [`failpoint`] | fault injection behind the `failpoints` feature |
//! | [`ratelimit`] | log lines that could repeat fast go out once a second per kind, the rest counted |
//! | [`logging`] | log lines: resource/node on each, journald priorities, EPIPE-proof stderr, live level |
//! | [`sd_notify`] | systemd readiness, watchdog and stopping notices (`$NOTIFY_SOCKET`) |
//! | [`bufpool`] | receive buffers for large payloads (NBD WRITEs, mirrored writes), reused instead of faulted in afresh |
//! | [`backoff`] | accept loops that back off on EMFILE/ENFILE and log at most once a second |

pub mod addr;
pub mod backoff;
pub mod bufpool;
pub mod cli;
pub mod config;
pub mod config_witness;
pub mod control;
pub mod device;
pub mod failpoint;
pub mod inline_io;
pub mod logging;
pub mod meta;
pub mod metrics;
pub mod nbd;
pub mod node;
pub mod ratelimit;
pub mod repl;
pub mod sd_notify;
pub mod store;
pub mod tls;
pub mod vocab;
pub mod witness;

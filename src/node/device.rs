//! The replicated block device the NBD server serves on a Primary.
//!
//! # The write path (protocol C)
//!
//! 1. The NBD layer decoded and bounds-checked the request.
//! 2. The node must be Primary; otherwise ESHUTDOWN.
//! 3. The write takes the range lock of its bytes ([`super::ranges`]), so
//!    overlapping writes reach both disks in the same order.
//! 4. The local pwrite and the send to the peer run concurrently.
//! 5. The reply waits for both: the local write completed and the peer
//!    acknowledged it (the peer acks after its own pwrite; with FUA or on a
//!    FLUSH, after its fdatasync).
//! 6. If there is no peer, or it is lost before acking, the range is marked
//!    out-of-sync and the write completes on the local disk alone.

use std::io;
use std::sync::Arc;

use bytes::Bytes;

use crate::device::{blocking, read_store, Attachment, BlockDevice, Capabilities, ExportGate, Refusal, ZeroFlags};
use crate::repl::Message;
use crate::store::Extent;

use super::counters::AtomicCounters;
use super::runtime::Node;

/// The node's data as a block device.
pub struct NodeDevice {
    node: Arc<Node>,
}

fn not_primary() -> io::Error {
    io::Error::from_raw_os_error(libc::ESHUTDOWN)
}

/// A local mutation of the backing file.
enum Op {
    Write(Bytes),
    Trim,
    Zero(bool),
}

impl NodeDevice {
    pub fn new(node: Arc<Node>) -> Self {
        NodeDevice { node }
    }

    fn check_primary(&self) -> io::Result<()> {
        if self.node.state().serves_io() {
            Ok(())
        } else {
            Err(not_primary())
        }
    }

    async fn mutate(&self, offset: u64, len: u64, op: Op, fua: bool) -> io::Result<()> {
        self.check_primary()?;
        let end = offset.checked_add(len).filter(|&e| e <= self.node.store.size()).ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        // Step 3: order against overlapping writes and resync copies.
        let _guard = self.node.ranges.lock(offset, end).await;
        let link = self.node.link();
        let remote_msg = link.as_ref().map(|_| match &op {
            Op::Write(data) => RemoteOp::Write(data.clone()),
            Op::Trim => RemoteOp::Trim,
            Op::Zero(may_trim) => RemoteOp::Zero(*may_trim),
        });
        let store = self.node.store.clone();
        // Step 4: local write and peer send, concurrently.
        let local = blocking(move || {
            match op {
                Op::Write(data) => store.write_at(&data, offset)?,
                Op::Trim => store.trim(offset, len)?,
                Op::Zero(may_trim) => store.zero(offset, len, may_trim)?,
            }
            if fua {
                store.sync()?;
            }
            Ok(())
        });
        let remote = async {
            match (link, remote_msg) {
                (Some(link), Some(m)) => link
                    .request(|id| match m {
                        RemoteOp::Write(data) => Message::Write { id, offset, fua, data },
                        RemoteOp::Trim => Message::Trim { id, offset, len, fua },
                        RemoteOp::Zero(may_trim) => Message::Zero { id, offset, len, may_trim, fua },
                    })
                    .await
                    .is_ok(),
                _ => false,
            }
        };
        // Step 5: the reply waits for both.
        let (local, mirrored) = tokio::join!(local, remote);
        local?;
        if mirrored {
            AtomicCounters::add(&self.node.counters.replicated_bytes, len);
        } else {
            // Step 6: the peer does not have it.
            self.node.mark_out_of_sync(offset, len);
        }
        AtomicCounters::add(&self.node.counters.app_write_bytes, len);
        Ok(())
    }
}

/// What is sent to the peer for an [`Op`].
enum RemoteOp {
    Write(Bytes),
    Trim,
    Zero(bool),
}

impl BlockDevice for NodeDevice {
    fn size(&self) -> u64 {
        self.node.store.size()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            read_only: false,
            trim: true,
            write_zeroes: true,
            fast_zero: self.node.store.can_zero_fast(),
            block_status: true,
            multi_conn: true,
        }
    }

    async fn read(&self, offset: u64, len: u32) -> io::Result<Bytes> {
        self.check_primary()?;
        let b = read_store(&self.node.store, offset, len).await?;
        AtomicCounters::add(&self.node.counters.app_read_bytes, u64::from(len));
        Ok(b)
    }

    async fn write(&self, offset: u64, data: Bytes, fua: bool) -> io::Result<()> {
        let len = data.len() as u64;
        self.mutate(offset, len, Op::Write(data), fua).await
    }

    async fn flush(&self) -> io::Result<()> {
        self.check_primary()?;
        let s = self.node.store.clone();
        let link = self.node.link();
        let remote = async {
            if let Some(link) = link {
                // A peer that cannot flush is treated like a lost one: the
                // session ends and the regions resync later.
                if let Err(e) = link.request(|id| Message::Flush { id }).await {
                    tracing::warn!("peer flush failed: {e:?}");
                    link.close();
                }
            }
        };
        let (local, ()) = tokio::join!(blocking(move || s.sync()), remote);
        local
    }

    async fn trim(&self, offset: u64, len: u64, fua: bool) -> io::Result<()> {
        self.mutate(offset, len, Op::Trim, fua).await
    }

    async fn write_zeroes(&self, offset: u64, len: u64, flags: ZeroFlags, fua: bool) -> io::Result<()> {
        if flags.fast_only && !self.node.store.can_zero_fast() {
            return Err(io::Error::from_raw_os_error(libc::ENOTSUP));
        }
        self.mutate(offset, len, Op::Zero(flags.may_trim), fua).await
    }

    async fn cache(&self, offset: u64, len: u64) -> io::Result<()> {
        self.check_primary()?;
        let s = self.node.store.clone();
        blocking(move || s.cache(offset, len)).await
    }

    async fn extents(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        self.check_primary()?;
        let s = self.node.store.clone();
        blocking(move || s.extents(offset, len)).await
    }
}

/// Lets the NBD server attach clients only while the node is Primary.
pub struct NodeGate {
    device: Arc<NodeDevice>,
}

impl NodeGate {
    pub fn new(device: Arc<NodeDevice>) -> Self {
        NodeGate { device }
    }

    fn available(&self) -> Result<(), Refusal> {
        let st = self.device.node.state();
        if st.serves_io() {
            Ok(())
        } else {
            Err(Refusal::Unavailable(format!(
                "node {} is {} (disk {}); only the Primary serves I/O",
                self.device.node.me.name, st.role, st.disk
            )))
        }
    }
}

impl ExportGate for NodeGate {
    type Device = NodeDevice;

    fn name(&self) -> &str {
        &self.device.node.cfg.resource.name
    }

    fn description(&self) -> String {
        let n = &self.device.node;
        format!("repd resource {} on node {}", n.cfg.resource.name, n.me.name)
    }

    fn probe(&self) -> Result<(u64, Capabilities), Refusal> {
        self.available()?;
        Ok((self.device.size(), self.device.capabilities()))
    }

    fn attach(&self) -> Result<Attachment<NodeDevice>, Refusal> {
        self.available()?;
        Ok(self.device.node.clients.attach(self.device.clone()))
    }
}

#[cfg(test)]
mod tests {
    //! The write path's order, without sockets: the peer is an mpsc channel.
    use super::*;
    use crate::node::link::PeerLink;
    use crate::node::state::{Disk, Role};
    use std::time::Duration;
    use tokio::sync::mpsc;

    fn node(dir: &std::path::Path) -> Arc<Node> {
        let text = format!(
            "[resource]\nname = \"r0\"\nsize = \"1MiB\"\n[nodes.a]\nbacking = \"{d}/a.img\"\nmeta = \"{d}/a.meta\"\nnbd = \"127.0.0.1:1\"\nreplication = \"127.0.0.1:2\"\ncontrol = \"{d}/a.sock\"\n[nodes.b]\nbacking = \"{d}/b.img\"\nmeta = \"{d}/b.meta\"\nnbd = \"127.0.0.1:3\"\nreplication = \"127.0.0.1:4\"\ncontrol = \"{d}/b.sock\"\n",
            d = dir.display()
        );
        let cfg = crate::config::Config::parse(&dir.join("r0.toml"), &text).unwrap();
        let me = cfg.nodes[0].clone();
        let n = Node::open(cfg, me).unwrap();
        {
            let mut st = n.state();
            st.role = Role::Primary;
            st.disk = Disk::UpToDate;
        }
        n
    }

    /// Steps 4-5: the local write completes, but the reply waits for the peer's ack.
    #[tokio::test]
    async fn reply_never_overtakes_the_peer_ack() {
        let dir = tempfile::tempdir().unwrap();
        let n = node(dir.path());
        let (tx, mut rx) = mpsc::channel(16);
        let link = Arc::new(PeerLink::new(tx));
        n.set_link(Some(link.clone()));
        let dev = Arc::new(NodeDevice::new(n.clone()));
        let d2 = dev.clone();
        let write = tokio::spawn(async move { d2.write(4096, Bytes::from(vec![7u8; 4096]), false).await });
        let Some(Message::Write { id, offset, data, .. }) = rx.recv().await else { panic!("no Write sent to the peer") };
        assert_eq!((offset, data.len()), (4096, 4096));
        // Give the local pwrite ample time to finish: the reply must still wait.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut b = [0u8; 4096];
        n.store.read_at(&mut b, 4096).unwrap();
        assert_eq!(b, [7u8; 4096], "the local write ran concurrently with the send");
        assert!(!write.is_finished(), "the client was answered before the peer acknowledged");
        link.complete(id, 0);
        tokio::time::timeout(Duration::from_secs(5), write).await.unwrap().unwrap().unwrap();
        assert_eq!(n.dirty().count(), 0, "an acknowledged write is in sync");
    }

    /// Step 6: a peer lost before acking: the write completes locally and is out-of-sync.
    #[tokio::test]
    async fn lost_peer_completes_locally_and_marks_out_of_sync() {
        let dir = tempfile::tempdir().unwrap();
        let n = node(dir.path());
        let (tx, mut rx) = mpsc::channel(16);
        let link = Arc::new(PeerLink::new(tx));
        n.set_link(Some(link.clone()));
        let dev = Arc::new(NodeDevice::new(n.clone()));
        let d2 = dev.clone();
        let write = tokio::spawn(async move { d2.write(8192, Bytes::from(vec![1u8; 4096]), true).await });
        assert!(matches!(rx.recv().await, Some(Message::Write { fua: true, .. })));
        link.close();
        tokio::time::timeout(Duration::from_secs(5), write).await.unwrap().unwrap().unwrap();
        assert_eq!(n.dirty().dirty_bytes(), 4096);
        assert!(n.dirty().test(2));
    }

    /// Step 3: an overlapping write is not sent until the first is acknowledged.
    #[tokio::test]
    async fn overlapping_writes_are_sent_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let n = node(dir.path());
        let (tx, mut rx) = mpsc::channel(16);
        let link = Arc::new(PeerLink::new(tx));
        n.set_link(Some(link.clone()));
        let dev = Arc::new(NodeDevice::new(n.clone()));
        let (d1, d2) = (dev.clone(), dev.clone());
        let w1 = tokio::spawn(async move { d1.write(0, Bytes::from(vec![1u8; 8192]), false).await });
        let Some(Message::Write { id: id1, .. }) = rx.recv().await else { panic!() };
        let w2 = tokio::spawn(async move { d2.write(4096, Bytes::from(vec![2u8; 4096]), false).await });
        assert!(tokio::time::timeout(Duration::from_millis(200), rx.recv()).await.is_err(), "overlapping write sent before the first was acked");
        link.complete(id1, 0);
        w1.await.unwrap().unwrap();
        let Some(Message::Write { id: id2, .. }) = rx.recv().await else { panic!() };
        link.complete(id2, 0);
        w2.await.unwrap().unwrap();
    }
}

//! The thread a node's network IO runs on: the listener, the tasks reading
//! peers' connections and the links writing to them.
//!
//! It is neither the Raft thread nor the runtime that started the node. On
//! the Raft thread, a Ready's fsync would hold up bytes already queued for
//! a peer; on the broker's async workers, a busy or stalled worker would
//! hold up a peer's messages and this node's answers, and a leader that
//! hears nothing from its followers for an election timeout steps down.
//! Here, what the quorum says to itself waits only for this node's own
//! Raft thread.
//!
//! Invariant: every task on this thread ends when the node does; dropping
//! [`NetworkThread`] (when the node stops) drops the runtime and with it
//! the listener, the readers and the links.

use tokio::{runtime, sync::oneshot};

pub(crate) struct NetworkThread {
    handle: runtime::Handle,
    /// Dropped or sent when the node stops: the thread then ends.
    _stop: oneshot::Sender<()>,
}

impl NetworkThread {
    /// Starts the thread, named `keel-raft-net`, with a single-threaded
    /// runtime that runs until the returned value is dropped. The runtime
    /// is built and dropped on that thread, never in the caller's async
    /// context.
    pub(crate) async fn start() -> std::io::Result<Self> {
        let (started, handle) = oneshot::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("keel-raft-net".into())
            .spawn(move || {
                let runtime = match runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = started.send(Err(e));
                        return;
                    }
                };
                let _ = started.send(Ok(runtime.handle().clone()));
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        let handle = handle
            .await
            .map_err(|_| std::io::Error::other("the network thread ended at its start"))??;
        Ok(Self {
            handle,
            _stop: stop,
        })
    }

    /// Where the node's network tasks are spawned.
    pub(crate) fn handle(&self) -> runtime::Handle {
        self.handle.clone()
    }
}

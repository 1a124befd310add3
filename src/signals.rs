//! Ctrl-C and SIGTERM, counted: the first asks for a clean stop, the second aborts the work.

use tokio::{
    signal::unix::{SignalKind, signal},
    sync::watch,
};

/// Counts the interrupt signals (SIGINT, SIGTERM) received since it was installed.
#[derive(Clone)]
pub struct Interrupts {
    count: watch::Receiver<u32>,
}

impl Interrupts {
    /// Starts listening. Must be called inside the runtime.
    pub fn install() -> std::io::Result<Self> {
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        let (sender, count) = watch::channel(0);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some(()) = sigint.recv() => {}
                    Some(()) = sigterm.recv() => {}
                    else => break,
                }
                sender.send_modify(|count| *count += 1);
            }
        });
        Ok(Interrupts { count })
    }

    pub fn received(&self) -> u32 {
        *self.count.borrow()
    }

    /// Resolves once at least `n` signals have arrived.
    pub async fn wait_for(&mut self, n: u32) {
        if self.count.wait_for(|count| *count >= n).await.is_err() {
            // The listener is gone (runtime shutting down): no signal will ever come.
            std::future::pending::<()>().await;
        }
    }
}

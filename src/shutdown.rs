//! Shutdown as a value: the first SIGTERM (what Kubernetes sends) or SIGINT
//! cancels a token that every task watches; a second one makes
//! [`Shutdown::abortable`] give up waiting with [`Aborted`], which `main` maps to
//! exit code 130. Nothing here exits the process.

use std::future::Future;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// A second signal came before a graceful end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a second signal: stopped without finishing")]
pub struct Aborted;

/// The process's shutdown: a token cancelled by the first signal, and the news of
/// a second.
pub struct Shutdown {
    token: CancellationToken,
    second: oneshot::Receiver<()>,
}

impl Shutdown {
    /// Installs the SIGTERM and SIGINT handlers.
    pub fn on_signals() -> std::io::Result<Self> {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let (shutdown, second) = Shutdown::new();
        let cancel = shutdown.token.clone();
        tokio::spawn(async move {
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            tracing::info!("shutdown requested; finishing the batch in flight");
            cancel.cancel();
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            tracing::warn!("second signal: stopping now");
            let _ = second.send(());
        });
        Ok(shutdown)
    }

    /// A shutdown driven by hand (tests): cancel the token for the first signal,
    /// send on the sender for the second.
    pub fn new() -> (Self, oneshot::Sender<()>) {
        let (tx, rx) = oneshot::channel();
        let shutdown = Shutdown {
            token: CancellationToken::new(),
            second: rx,
        };
        (shutdown, tx)
    }

    /// Cancelled by the first signal.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Runs `work` to its end, unless a second signal comes first.
    pub async fn abortable<T>(self, work: impl Future<Output = T>) -> Result<T, Aborted> {
        let mut second = self.second;
        tokio::select! {
            done = work => Ok(done),
            // A dropped sender (no handler any more) is not a signal.
            Ok(()) = &mut second => Err(Aborted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_signal_aborts_what_the_first_started() {
        let (shutdown, second) = Shutdown::new();
        let token = shutdown.token();
        token.cancel();
        second.send(()).unwrap();
        let stuck = shutdown.abortable(std::future::pending::<()>()).await;
        assert_eq!(stuck, Err(Aborted));

        let (shutdown, _second) = Shutdown::new();
        assert_eq!(shutdown.abortable(async { 7 }).await, Ok(7));
    }
}

//! Graceful shutdown: one signal (Ctrl-C, SIGTERM, or a programmatic
//! trigger) that every task can wait on.

use tokio::sync::watch;

/// A cloneable shutdown signal.
#[derive(Clone)]
pub struct Shutdown {
    tx: watch::Sender<bool>,
    rx: watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        let (tx, rx) = watch::channel(false);
        Self { tx, rx }
    }
}

impl Shutdown {
    /// Asks every task to stop.
    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }

    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once shutdown has been asked for.
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// An owned future that resolves on shutdown, for servers that take one.
    pub fn signalled(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let this = self.clone();
        async move { this.wait().await }
    }

    /// Triggers on Ctrl-C or SIGTERM.
    pub fn on_signals(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            let ctrl_c = tokio::signal::ctrl_c();
            #[cfg(unix)]
            {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler can be installed");
                tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
            }
            #[cfg(not(unix))]
            let _ = ctrl_c.await;
            tracing::info!("shutdown requested");
            this.trigger();
        });
    }
}

/// Runs a server until shutdown; if it fails, logs why and stops everything.
pub fn supervise<E: std::fmt::Display>(
    name: &'static str,
    shutdown: &Shutdown,
    server: impl std::future::Future<Output = Result<(), E>> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "{name} server failed");
            shutdown.trigger();
        }
    })
}

//! Shutdown is a value: a token cancelled on SIGINT or SIGTERM, passed to every role, which stops
//! accepting work, drains what is in flight and returns.

use tokio_util::sync::CancellationToken;

/// A token cancelled when the process receives SIGINT or SIGTERM.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = ctrl_c => tracing::info!("SIGINT received, shutting down"),
                        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        "cannot listen for SIGTERM ({e}); only SIGINT stops the process"
                    );
                    let _ = ctrl_c.await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        trigger.cancel();
    });
    token
}

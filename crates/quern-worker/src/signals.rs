//! Turning SIGTERM and ctrl-c into a cancelled token: the first starts a graceful drain, the second exits at once.

use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGTERM or SIGINT; exits the process with status 130 on the second
/// (unacknowledged jobs go back to the queue when the connection drops).
pub async fn cancel_on_signals(token: CancellationToken) {
    wait_for_signal().await;
    tracing::info!("signal received: draining (send it again to exit at once)");
    token.cancel();
    wait_for_signal().await;
    tracing::warn!("second signal: exiting without draining");
    std::process::exit(130);
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

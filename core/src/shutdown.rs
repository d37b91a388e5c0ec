//! When a process should stop: on SIGINT (Ctrl-C) or SIGTERM (what `docker stop`, systemd and
//! Kubernetes send). A binary ties its [`CancellationToken`] to these signals with
//! [`cancel_on_signal`]; everything it started watches that token and ends cleanly.

use std::future::Future;

use tokio_util::sync::CancellationToken;

/// Resolves on the first SIGINT or SIGTERM received after this call (the handlers are
/// installed at once, not when the future is first polled). Must be called inside a Tokio
/// runtime. A signal whose handler cannot be installed is not watched; if neither can be,
/// the future never resolves.
pub fn signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                }
                (Ok(mut only), Err(_)) | (Err(_), Ok(mut only)) => {
                    only.recv().await;
                }
                (Err(_), Err(_)) => std::future::pending().await,
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Cancels `shutdown` on the first SIGINT or SIGTERM. The watch runs in a task of the
/// current Tokio runtime and ends as well when `shutdown` is cancelled another way.
pub fn cancel_on_signal(shutdown: &CancellationToken) {
    let signal = signal();
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = signal => shutdown.cancel(),
            () = shutdown.cancelled() => {}
        }
    });
}

/// Sleeps for `delay` unless `shutdown` is cancelled first: true when the full delay
/// passed, false on cancellation (the caller's loop then ends).
pub async fn sleep_or_cancel(delay: std::time::Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn sigterm_cancels_the_token() {
        let shutdown = CancellationToken::new();
        cancel_on_signal(&shutdown);
        assert!(!shutdown.is_cancelled());
        let status = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(5), shutdown.cancelled())
            .await
            .expect("SIGTERM did not cancel the token");
    }
}

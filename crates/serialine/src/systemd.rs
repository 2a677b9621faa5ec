//! sd_notify(3): READY once the ledgers are open and devices connected,
//! STATUS= with the line state, WATCHDOG=1 only while the lines are alive
//! (see `serialine_line::health`), STOPPING on shutdown. Outside systemd
//! (`NOTIFY_SOCKET` unset) every call is a no-op.

use sd_notify::NotifyState;
use serialine_line::health::{all_alive, Heartbeat};
use std::time::Duration;

pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn status(status: &str) {
    notify(&[NotifyState::Status(status)]);
}

pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("sd_notify failed: {e}");
    }
}

/// The watchdog interval systemd asked for (`WatchdogSec=`), if any.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

/// Pings the watchdog at half its interval while every heartbeat is fresh.
/// A line whose loop stops turning stops the pings: systemd then restarts
/// the service, and the ledger's recovery voids what was in flight.
pub async fn watchdog(beats: Vec<Heartbeat>) {
    let Some(interval) = watchdog_interval() else {
        return;
    };
    let mut tick = tokio::time::interval(interval / 2);
    let mut stalled = false;
    loop {
        tick.tick().await;
        if all_alive(&beats, interval / 2) {
            stalled = false;
            notify(&[NotifyState::Watchdog]);
        } else if !stalled {
            stalled = true;
            tracing::error!("a line pipeline has stopped turning; withholding the watchdog ping");
        }
    }
}

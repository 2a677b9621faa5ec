//! The one connection loop every driver runs: connect, run a session, report
//! the outage, back off, reconnect, until the pipeline is done.
//!
//! A driver implements [`Device`]: how to connect, and how to run one
//! session on a connection until the link is lost or the pipeline is done.
//! [`supervise`] owns what is the same for the label printer, the laser, the
//! framed printer and the camera:
//!
//! - a failed connect is reported as a `Fault` (no units) once per outage,
//!   not on every attempt;
//! - a session that ends on a lost link is reported as a `Fault` naming the
//!   units whose fate it left unknown;
//! - between attempts it waits the [`Reconnect`] delay and stops early when
//!   the pipeline drops its end;
//! - a link that cannot be reopened (a pre-opened stream) ends the driver
//!   after its first session.
//!
//! What differs stays with the device: whether it is `Ready` as soon as it
//! is connected ([`Device::READY_ON_CONNECT`]) or only once it reports it
//! can work (the label printer and the laser ask for their status first);
//! when the device has answered, the one moment the link counts as healthy
//! and the backoff restarts ([`Reconnect::healthy`]): the first bytes back
//! for the stream devices, the first `~HS` status reply for the label
//! printer, the first successful Modbus read for the laser; and what it does
//! while waiting (the framed printer refuses the requests that arrive).
//!
//! Never on connect alone: a device, or a port forwarder in front of it,
//! that accepts TCP and then drops the connection or never answers would
//! otherwise be reconnected at the initial delay forever, flooding the logs,
//! the alarms and the device. Each such connection counts as a failure, so
//! the delay grows to its cap.

use std::fmt::{Debug, Display};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::sleep;

use crate::api::{CameraEvent, PrinterEvent, UnitId};
use crate::transport::{Attempt, Backoff};

/// The pipeline is done with the driver (it dropped the event receiver or
/// closed the request channel): stop, nobody listens.
pub(crate) struct Done;

/// Why a session ended.
pub(crate) enum End {
    /// The pipeline is done: stop for good.
    Stopped,
    /// The link failed: report it, then reconnect. `unknown` lists units
    /// sent whose fate the session could not confirm.
    Lost {
        reason: String,
        unknown: Vec<UnitId>,
    },
}

impl End {
    pub(crate) fn lost(err: impl Display, unknown: Vec<UnitId>) -> End {
        End::Lost {
            reason: err.to_string(),
            unknown,
        }
    }
}

impl From<Done> for End {
    fn from(_: Done) -> End {
        End::Stopped
    }
}

/// The events the supervisor itself emits, spelled by each event type.
pub(crate) trait LinkEvents {
    fn ready() -> Self;
    fn fault(reason: String, unknown: Vec<UnitId>) -> Self;
}

impl LinkEvents for PrinterEvent {
    fn ready() -> Self {
        PrinterEvent::Ready
    }
    fn fault(reason: String, unknown: Vec<UnitId>) -> Self {
        PrinterEvent::Fault { reason, unknown }
    }
}

impl LinkEvents for CameraEvent {
    fn ready() -> Self {
        CameraEvent::Ready
    }
    /// A camera is sent no units, so it never has any of unknown fate.
    fn fault(reason: String, unknown: Vec<UnitId>) -> Self {
        debug_assert!(unknown.is_empty(), "a camera holds no units");
        CameraEvent::Fault { reason }
    }
}

/// Whether and how soon to reconnect; owned by the supervisor, told by the
/// session when the link proved healthy.
pub(crate) struct Reconnect(Option<Backoff>);

impl Reconnect {
    /// Reconnect after every failure, `backoff` apart.
    pub(crate) fn with(backoff: Backoff) -> Self {
        Reconnect(Some(backoff))
    }

    /// One connection only: the driver ends after its session.
    pub(crate) fn never() -> Self {
        Reconnect(None)
    }

    /// The link works, the device answered on it (a connect alone proves
    /// nothing): the next outage backs off from the beginning.
    pub(crate) fn healthy(&mut self) {
        if let Some(b) = &mut self.0 {
            b.reset();
        }
    }

    /// The delay before the next attempt, `None` if there is none.
    fn next(&mut self) -> Option<Duration> {
        self.0.as_mut().map(Backoff::next_delay)
    }
}

/// The device-specific part of a driver.
pub(crate) trait Device: Send {
    type Conn: Send;
    type ConnectError: Display + Send;
    type Event: LinkEvents + Debug + Send;

    /// The device kind, for logs ("laser", "label printer", ...).
    const KIND: &'static str;
    /// Say `Ready` as soon as connected. False: the session says it once
    /// the device reports it can work.
    const READY_ON_CONNECT: bool;
    /// The `Fault` of a lost link also reports the outage, so a failed
    /// reconnect right after it is not reported again (label printer,
    /// laser). False: that first failed reconnect is reported too (framed
    /// printer, camera).
    const LOSS_REPORTS_OUTAGE: bool;

    fn name(&self) -> &str;
    fn events(&self) -> &mpsc::Sender<Self::Event>;

    /// One connection attempt.
    async fn connect(&mut self) -> Attempt<Self::Conn, Self::ConnectError>;

    /// Runs one connection until the link is lost or the pipeline is done,
    /// telling `reconnect` the link is healthy once the device answered.
    /// The connection is dropped when it returns, before the `Fault` goes
    /// out: a late answer on it could otherwise be paired with a new request.
    async fn session(&mut self, conn: Self::Conn, reconnect: &mut Reconnect) -> End;

    /// Called after a lost link's `Fault` went out.
    async fn after_fault(&mut self) -> Result<(), Done> {
        Ok(())
    }

    /// Waits `delay` before the next attempt; `Err` when the pipeline is done.
    async fn pause(&mut self, delay: Duration) -> Result<(), Done> {
        tokio::select! {
            () = sleep(delay) => Ok(()),
            () = self.events().closed() => Err(Done),
        }
    }
}

/// Runs `device` until the pipeline is done, or until its one connection
/// ended if it cannot reconnect.
pub(crate) async fn supervise<D: Device>(mut device: D, mut reconnect: Reconnect) {
    let _ = run(&mut device, &mut reconnect).await;
    tracing::debug!(device = device.name(), kind = D::KIND, "driver stopped");
}

async fn run<D: Device>(d: &mut D, reconnect: &mut Reconnect) -> Result<(), Done> {
    // Report an outage once, not on every failed reconnect attempt.
    let mut outage_reported = false;
    loop {
        let delay = match d.connect().await {
            Attempt::Connected(conn) => {
                tracing::info!(device = d.name(), kind = D::KIND, "connected");
                if D::READY_ON_CONNECT {
                    emit(d.events(), D::Event::ready()).await?;
                }
                let (reason, unknown) = match d.session(conn, reconnect).await {
                    End::Stopped => return Ok(()),
                    End::Lost { reason, unknown } => (reason, unknown),
                };
                tracing::warn!(device = d.name(), kind = D::KIND, %reason, ?unknown, "link lost");
                emit(d.events(), D::Event::fault(reason, unknown)).await?;
                // A new outage starts here, whether or not this Fault
                // counts as its report.
                outage_reported = D::LOSS_REPORTS_OUTAGE;
                d.after_fault().await?;
                match reconnect.next() {
                    Some(delay) => delay,
                    None => return Ok(()),
                }
            }
            Attempt::Failed(error) => {
                // A one-shot link cannot fail to connect; were it to, it
                // would retry at once, as it always did.
                let retry_in = reconnect.next().unwrap_or(Duration::ZERO);
                tracing::warn!(device = d.name(), kind = D::KIND, %error, ?retry_in, "connect failed");
                if !outage_reported {
                    outage_reported = true;
                    emit(d.events(), D::Event::fault(error.to_string(), Vec::new())).await?;
                }
                retry_in
            }
            Attempt::Exhausted => return Ok(()),
        };
        d.pause(delay).await?;
    }
}

async fn emit<E>(events: &mpsc::Sender<E>, ev: E) -> Result<(), Done> {
    events.send(ev).await.map_err(|_| Done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A device whose connects and sessions follow a script: `Ok(())` a
    /// connect that works (its session then loses the link), `Err` one
    /// that fails. When the script runs out, the session ends the driver.
    struct Scripted<const LOSS_REPORTS: bool> {
        script: VecDeque<Result<(), &'static str>>,
        events: mpsc::Sender<PrinterEvent>,
    }

    impl<const LOSS_REPORTS: bool> Device for Scripted<LOSS_REPORTS> {
        type Conn = ();
        type ConnectError = &'static str;
        type Event = PrinterEvent;
        const KIND: &'static str = "scripted";
        const READY_ON_CONNECT: bool = true;
        const LOSS_REPORTS_OUTAGE: bool = LOSS_REPORTS;

        fn name(&self) -> &str {
            "scripted"
        }
        fn events(&self) -> &mpsc::Sender<PrinterEvent> {
            &self.events
        }
        async fn connect(&mut self) -> Attempt<(), &'static str> {
            match self.script.pop_front() {
                Some(Ok(())) => Attempt::Connected(()),
                Some(Err(e)) => Attempt::Failed(e),
                None => Attempt::Exhausted,
            }
        }
        async fn session(&mut self, (): (), _: &mut Reconnect) -> End {
            if self.script.is_empty() {
                return End::Stopped;
            }
            End::lost("dropped", vec![7])
        }
    }

    async fn events_of<const LOSS_REPORTS: bool>(
        script: &[Result<(), &'static str>],
    ) -> Vec<PrinterEvent> {
        let (tx, mut rx) = mpsc::channel(64);
        let device = Scripted::<LOSS_REPORTS> {
            script: script.iter().copied().collect(),
            events: tx,
        };
        let backoff = Backoff::new(Duration::from_millis(1), 1, Duration::from_millis(1));
        supervise(device, Reconnect::with(backoff)).await;
        let mut out = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            out.push(ev);
        }
        out
    }

    fn fault(reason: &str, unknown: &[UnitId]) -> PrinterEvent {
        PrinterEvent::Fault {
            reason: reason.into(),
            unknown: unknown.to_vec(),
        }
    }

    #[tokio::test]
    async fn a_failing_connect_is_reported_once_per_outage() {
        let evs = events_of::<true>(&[Err("refused"), Err("refused again"), Ok(())]).await;
        assert_eq!(evs, [fault("refused", &[]), PrinterEvent::Ready]);
    }

    #[tokio::test]
    async fn a_lost_link_reports_its_unknown_units_then_the_outage_policy_applies() {
        let script = [Ok(()), Err("refused"), Err("refused again"), Ok(())];
        // Label printer, laser: the loss is the outage's report.
        let evs = events_of::<true>(&script).await;
        assert_eq!(
            evs,
            [
                PrinterEvent::Ready,
                fault("dropped", &[7]),
                PrinterEvent::Ready
            ]
        );
        // Framed printer, camera: the first failed reconnect is reported too.
        let evs = events_of::<false>(&script).await;
        assert_eq!(
            evs,
            [
                PrinterEvent::Ready,
                fault("dropped", &[7]),
                fault("refused", &[]),
                PrinterEvent::Ready
            ]
        );
    }

    #[tokio::test]
    async fn a_link_that_cannot_reconnect_ends_after_its_session() {
        let (tx, mut rx) = mpsc::channel(8);
        let device = Scripted::<false> {
            script: [Ok(()), Ok(())].into_iter().collect(),
            events: tx,
        };
        supervise(device, Reconnect::never()).await;
        assert_eq!(rx.recv().await, Some(PrinterEvent::Ready));
        assert_eq!(rx.recv().await, Some(fault("dropped", &[7])));
        assert_eq!(rx.recv().await, None, "no second connection");
    }
}

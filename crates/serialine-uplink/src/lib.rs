//! Serialine's MQTT uplink: block prefetch, durable outbox sync, operator
//! topics (status, metrics, alarms) and commands, all under the topic prefix
//! `serialine/{site}/{line}/`. Payloads are documented in the crate README.
//!
//! The uplink never blocks the line: every [`UplinkHandle`] method returns at
//! once, whether the broker is up or not. Outcomes wait in the store's durable
//! outbox and drain, in order, when the broker is back.
//!
//! ```no_run
//! # async fn f(store: serialine_store::Store) -> Result<(), serialine_uplink::UplinkError> {
//! use serialine_uplink::{start, UplinkConfig, StatusSnapshot, LineState};
//! let (uplink, mut commands) = start(UplinkConfig::new("127.0.0.1", 1883, "site-1", "line-1"), store)?;
//! uplink.publish_status(StatusSnapshot { state: LineState::Running, ..Default::default() });
//! while let Some(cmd) = commands.recv().await {
//!     // ... act on cmd.command, then:
//!     cmd.respond(Ok(()));
//! }
//! # Ok(()) }
//! ```

pub mod bench;
mod commands;
mod config;
mod conn;
mod error;
pub mod fence;
mod operator;
mod outbox;
mod prefetch;
pub mod prom_metrics;
mod tlscheck;
pub mod wire;

pub use commands::{
    ack_mac, canonical_json, command_mac, parse_command, sign_ack, sign_command, sign_command_at,
    Command, CommandRequest,
};
pub use config::{AckAuth, CommandAuth, OutboxConfig, PrefetchConfig, TlsPaths, UplinkConfig};
pub use conn::{classify, Link, LinkFault, OFFLINE};
pub use error::UplinkError;
pub use operator::{
    Alarm, BufferDepth, DeviceStatus, JobInfo, LineState, Metrics, MetricsPayload, StatusPayload,
    StatusSnapshot, ALARM_QUEUE,
};
pub use prefetch::{watermarks, ParentStock};
/// The kinds of [`Alarm`], defined in the core so the line raises the same.
pub use serialine_core::AlarmKind;
pub use tlscheck::{check_tls_files, TlsFile, TlsFileProblem};

use rumqttc::{AsyncClient, QoS};
use serialine_store::Store;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Commands waiting for the pipeline, at most.
const COMMAND_QUEUE: usize = 16;
/// Alarms an observer ([`UplinkHandle::alarm_tap`]) may fall behind by
/// before it misses some (it is told how many).
const ALARM_TAP: usize = 256;

/// Starts the uplink's tasks on the current tokio runtime and returns at once;
/// the connection is made (and remade) in the background.
///
/// Fails only on configuration: bad topic levels, unreadable TLS files, or a
/// store that belongs to another line.
pub fn start(
    cfg: UplinkConfig,
    store: Store,
) -> Result<(UplinkHandle, mpsc::Receiver<CommandRequest>), UplinkError> {
    if store.line_id() != cfg.line {
        return Err(UplinkError::LineMismatch {
            config: cfg.line.clone(),
            store: store.line_id().to_string(),
            path: store.path().to_path_buf(),
        });
    }
    let opts = conn::options(&cfg)?;
    // Said now, at warn: otherwise the first sign of a bad certificate is a
    // handshake that fails on every retry.
    if let Some(tls) = &cfg.tls {
        for p in check_tls_files(tls, std::time::SystemTime::now()) {
            tracing::warn!(file = ?p.file, "uplink TLS: {}", p.message);
        }
    }
    let (client, eventloop) = AsyncClient::new(opts, 256);
    let (link_tx, link_rx) = watch::channel(Link::default());
    let (fault_tx, fault_rx) = watch::channel(None);
    let (status_tx, status_rx) = watch::channel(StatusSnapshot::default());
    let (metrics_tx, metrics_rx) = watch::channel(Metrics::default());
    let (rate_tx, rate_rx) = watch::channel(0.0f64);
    let (product_tx, product_rx) = watch::channel(cfg.product);
    let (parents_tx, parents_rx) = watch::channel(Vec::new());
    let prefetch_held = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prefetch_asking = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (alarm_tx, alarm_rx) = mpsc::channel(ALARM_QUEUE);
    let (tap_tx, _) = broadcast::channel(ALARM_TAP);
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
    let local_commands = cmd_tx.downgrade();
    let (blocks_tx, blocks_rx) = mpsc::unbounded_channel();
    let (acks_tx, acks_rx) = mpsc::unbounded_channel();
    let (cmds_in_tx, cmds_in_rx) = mpsc::unbounded_channel();
    let (fence_tx, fence_rx) = mpsc::unbounded_channel();

    let tasks = vec![
        tokio::spawn(conn::run(
            eventloop,
            client.clone(),
            cfg.clone(),
            link_tx,
            conn::Inbound {
                blocks: blocks_tx,
                acks: acks_tx,
                commands: cmds_in_tx,
                fence: fence_tx,
            },
            conn::Reporting {
                fault: fault_tx,
                alarms: alarm_tx.clone(),
            },
        )),
        tokio::spawn(
            prefetch::Prefetch {
                cfg: cfg.clone(),
                store: store.clone(),
                client: client.clone(),
                link: link_rx.clone(),
                rate: rate_rx,
                product: product_rx,
                parents: parents_rx,
                held: prefetch_held.clone(),
                asking: prefetch_asking.clone(),
                responses: blocks_rx,
                alarms: alarm_tx.clone(),
            }
            .run(),
        ),
        tokio::spawn(
            outbox::OutboxSync {
                cfg: cfg.clone(),
                store: store.clone(),
                client: client.clone(),
                link: link_rx.clone(),
                acks: acks_rx,
                alarms: alarm_tx.clone(),
            }
            .run(),
        ),
        tokio::spawn(
            operator::Operator {
                cfg: cfg.clone(),
                store: store.clone(),
                client: client.clone(),
                link: link_rx.clone(),
                status: status_rx,
                metrics: metrics_rx,
                alarms: alarm_rx,
                tap: tap_tx.clone(),
                product: product_tx.subscribe(),
            }
            .run(),
        ),
        tokio::spawn(
            commands::Commands {
                cfg: cfg.clone(),
                client: client.clone(),
                incoming: cmds_in_rx,
                to_pipeline: cmd_tx,
                alarms: alarm_tx.clone(),
                store: store.clone(),
            }
            .run(),
        ),
    ];
    let mut tasks = tasks;
    if prom_metrics::gauge_sampling() {
        tasks.push(tokio::spawn(prom_metrics::sample_gauges(
            cfg.line.clone(),
            store.clone(),
            product_tx.subscribe(),
        )));
    }
    // Only a store with a fence takes part in the handshake.
    if store.has_fence() {
        tasks.push(tokio::spawn(
            fence::FenceCheck {
                cfg: cfg.clone(),
                store: store.clone(),
                client: client.clone(),
                link: link_rx.clone(),
                answers: fence_rx,
                alarms: alarm_tx.clone(),
            }
            .run(),
        ));
    }
    let handle = UplinkHandle {
        inner: Arc::new(Inner {
            cfg,
            client,
            link: link_rx,
            fault: fault_rx,
            status: status_tx,
            metrics: metrics_tx,
            rate: rate_tx,
            product: product_tx,
            parent_products: parents_tx,
            prefetch_held,
            prefetch_asking,
            alarms: alarm_tx,
            tap: tap_tx,
            // Weak: the supervisor sees the command channel close when the
            // uplink's own command task ends, as before local commands.
            local_commands,
            tasks: Mutex::new(tasks),
            gauge_store: Mutex::new(prom_metrics::gauge_sampling().then_some(store)),
        }),
    };
    Ok((handle, cmd_rx))
}

struct Inner {
    cfg: UplinkConfig,
    client: AsyncClient,
    link: watch::Receiver<Link>,
    fault: watch::Receiver<Option<LinkFault>>,
    status: watch::Sender<StatusSnapshot>,
    metrics: watch::Sender<Metrics>,
    rate: watch::Sender<f64>,
    /// The running (or last) job's product: prefetch keeps its buffer.
    product: watch::Sender<Option<serialine_core::Gtin>>,
    /// The parent products (case, pallet labels) kept in stock beside it.
    parent_products: watch::Sender<Vec<ParentStock>>,
    /// Set while the line's unused serials are (being) returned: no block
    /// is requested until the next job sets its product.
    prefetch_held: Arc<std::sync::atomic::AtomicBool>,
    /// A block request is out, unanswered.
    prefetch_asking: Arc<std::sync::atomic::AtomicBool>,
    alarms: mpsc::Sender<Alarm>,
    /// Every alarm the operator task takes, for local observers (OPC UA).
    tap: broadcast::Sender<Alarm>,
    local_commands: mpsc::WeakSender<CommandRequest>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// With metrics on, for the gauges' last sample at a clean shutdown;
    /// taken (and dropped) by the shutdown or abort that ends the tasks, so
    /// the ledger is held no longer than the tasks hold it.
    gauge_store: Mutex<Option<Store>>,
}

impl Inner {
    fn abort(&self) {
        drop(self.take_gauge_store());
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }

    fn take_gauge_store(&self) -> Option<Store> {
        self.gauge_store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.abort();
    }
}

/// What the pipeline uses. Cheap to clone; when the last clone is dropped the
/// uplink stops (abruptly: like a killed process, which it must survive).
#[derive(Clone)]
pub struct UplinkHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for UplinkHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UplinkHandle")
            .field("line", &self.inner.cfg.line)
            .field("link", &*self.inner.link.borrow())
            .finish()
    }
}

impl UplinkHandle {
    /// Replaces the retained `status` (published now if connected, and again
    /// after every reconnect and every metrics interval with fresh counts).
    pub fn publish_status(&self, snapshot: StatusSnapshot) {
        self.inner.status.send_replace(snapshot);
    }

    /// The latest status the pipeline published (what `status` carries,
    /// without the ledger's counts): for local observers such as the OPC UA
    /// server, which read the counts from the store themselves.
    pub fn watch_status(&self) -> watch::Receiver<StatusSnapshot> {
        self.inner.status.subscribe()
    }

    /// Every alarm from now on, whoever raised it (the pipeline through
    /// [`UplinkHandle::raise_alarm`], or the uplink's own tasks), as it is
    /// queued for the `alarms` topic, broker up or not. A receiver more
    /// than 256 alarms behind gets `RecvError::Lagged`.
    pub fn alarm_tap(&self) -> broadcast::Receiver<Alarm> {
        self.inner.tap.subscribe()
    }

    /// Hands a command that did not come over MQTT (an OPC UA method call)
    /// to the same consumer as `cmd/#`: the receiver [`start`] returned, so
    /// it runs the same way (the service's supervisor). The caller has
    /// authenticated and validated it (a job through
    /// [`parse_command`], as `cmd/job/start` is); waits for the answer at
    /// most the configured command timeout, as MQTT commands do.
    pub async fn submit_command(&self, command: Command) -> Result<(), String> {
        let Some(tx) = self.inner.local_commands.upgrade() else {
            return Err("the line is not accepting commands".into());
        };
        let (reply, rx) = oneshot::channel();
        if let Err(e) = tx.try_send(CommandRequest { command, reply }) {
            return Err(match e {
                mpsc::error::TrySendError::Full(_) => {
                    "the line is busy with earlier commands; try again"
                }
                mpsc::error::TrySendError::Closed(_) => "the line is not accepting commands",
            }
            .into());
        }
        drop(tx);
        match tokio::time::timeout(self.inner.cfg.command_timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err("the line dropped the command without answering".into()),
            Err(_) => Err(format!(
                "the line did not answer within {:?}",
                self.inner.cfg.command_timeout
            )),
        }
    }

    /// Queues an alarm for the `alarms` topic. Never waits: if
    /// [`ALARM_QUEUE`] alarms are already waiting, this one is only logged.
    pub fn raise_alarm(&self, alarm: Alarm) {
        if let Err(e) = self.inner.alarms.try_send(alarm) {
            let a = match e {
                mpsc::error::TrySendError::Full(a) | mpsc::error::TrySendError::Closed(a) => a,
            };
            tracing::error!(kind = %a.kind, "alarm not queued for MQTT: {}", a.message);
        }
    }

    /// Latest measurements, published every metrics interval. The rate also
    /// sets the prefetch's low-water mark in minutes.
    pub fn publish_metrics(&self, metrics: Metrics) {
        self.set_rate(metrics.units_per_minute);
        self.inner.metrics.send_replace(metrics);
    }

    /// Requests no more blocks until the next job starts
    /// ([`UplinkHandle::set_product`]): the line is giving its unused
    /// serials back upstream, and refilling the buffer would undo it. A
    /// request already sent may still be answered, and its block stored.
    pub fn hold_prefetch(&self) {
        self.inner
            .prefetch_held
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Waits, at most `bound`, until no block request is out: after
    /// [`UplinkHandle::hold_prefetch`], so a block answered late is stored
    /// before the line gives its unused serials back, not after. `false`
    /// if one was still out at the bound (its block may come later).
    pub async fn prefetch_settled(&self, bound: std::time::Duration) -> bool {
        let end = tokio::time::Instant::now() + bound;
        loop {
            if !self
                .inner
                .prefetch_asking
                .load(std::sync::atomic::Ordering::SeqCst)
            {
                return true;
            }
            if tokio::time::Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// The product the line makes now (a job's GTIN, set when the job
    /// starts): prefetch keeps the buffer of serials for this product between
    /// the watermarks and asks upstream for blocks sealed for it. Blocks of
    /// other products stay stored for their own jobs.
    /// The parent products the running job labels (its cases, its
    /// pallets), whose serials prefetch keeps in stock too once the job's
    /// own buffer is full enough; empty: none (a job without aggregation).
    pub fn set_parent_products(&self, stock: Vec<ParentStock>) {
        self.inner.parent_products.send_replace(stock);
    }

    pub fn set_product(&self, gtin: Option<serialine_core::Gtin>) {
        self.inner
            .prefetch_held
            .store(false, std::sync::atomic::Ordering::SeqCst);
        self.inner.product.send_if_modified(|p| {
            let changed = *p != gtin;
            *p = gtin;
            changed
        });
    }

    /// The measured production rate, for buffer minutes and prefetch.
    pub fn set_rate(&self, units_per_minute: f64) {
        self.inner.rate.send_if_modified(|r| {
            let changed = *r != units_per_minute;
            *r = units_per_minute;
            changed
        });
    }

    /// Connected and subscribed right now.
    pub fn is_connected(&self) -> bool {
        self.inner.link.borrow().ready
    }

    pub fn link(&self) -> watch::Receiver<Link> {
        self.inner.link.clone()
    }

    /// Why the uplink cannot connect, while it cannot (`None` once
    /// connected, and before the first attempt has failed).
    pub fn link_fault(&self) -> watch::Receiver<Option<LinkFault>> {
        self.inner.fault.clone()
    }

    /// Waits until connected and subscribed, at most `timeout`.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), UplinkError> {
        let mut rx = self.inner.link.clone();
        let ready = tokio::time::timeout(timeout, rx.wait_for(|l| l.ready))
            .await
            .map(|r| r.is_ok());
        match ready {
            Ok(true) => Ok(()),
            _ => Err(UplinkError::NotConnected {
                host: self.inner.cfg.host.clone(),
                port: self.inner.cfg.port,
                timeout,
            }),
        }
    }

    /// Publishes a job's reconciliation, retained, on `jobs/<number>/report`
    /// (QoS 1): the report's last word for upstream and dashboards. Queued
    /// in the client while the broker is away; the file the service writes
    /// beside the ledger is the record that survives.
    pub fn publish_job_report(&self, number: u32, report: &serde_json::Value) {
        let topic = self.inner.cfg.topic(&format!("jobs/{number}/report"));
        if let Err(e) =
            self.inner
                .client
                .try_publish(topic, QoS::AtLeastOnce, true, report.to_string())
        {
            tracing::warn!(line = %self.inner.cfg.line, job = number, "job report not queued for MQTT: {e}");
        }
    }

    /// Stops every task at once, publishing nothing: what a killed process
    /// looks like to the broker (the last will is published).
    pub fn abort(&self) {
        self.inner.abort();
    }

    /// Clean stop: retained `status` = offline, then disconnect, waiting at
    /// most `timeout` for the broker to take them.
    pub async fn shutdown(self, timeout: Duration) {
        let c = &self.inner.client;
        let bye = async {
            let _ = c
                .publish(
                    self.inner.cfg.topic("status"),
                    QoS::AtLeastOnce,
                    true,
                    OFFLINE.to_vec(),
                )
                .await;
            let _ = c.disconnect().await;
            // The connection task ends when the event loop has sent the
            // disconnect (it then reports the requests channel done).
            let mut link = self.inner.link.clone();
            let _ = link.wait_for(|_| false).await;
        };
        let _ = tokio::time::timeout(timeout, bye).await;
        // The sampler ends with the tasks: the gauges keep what the line
        // left (the demo's endpoint outlives its uplinks).
        if let Some(store) = self.inner.take_gauge_store() {
            let product = *self.inner.product.borrow();
            prom_metrics::StoreGauges::new(&self.inner.cfg.line).sample(&store, product);
        }
        self.inner.abort();
    }
}

//! What a line is, as plain data: everything [`crate::open_line`] needs
//! except its devices.
//!
//! The service builds a plan from one `[[line]]` of its configuration (each
//! piece by the configuration section it comes from: `StoreConfig` gives the
//! store options, `MqttConfig` and `BufferConfig` the uplink settings,
//! `PipelineConfig` the pipeline's, `JobConfig` the default job); the demo
//! and the bench build theirs by hand for their simulated plant. Building a
//! plan does no I/O beyond reading the files the configuration names (the
//! line secret); opening it is [`crate::open_line`]'s job.

use serialine_core::{Grade, Job};
use serialine_store::StoreOptions;
use serialine_uplink::UplinkConfig;
use std::time::Duration;

/// One line, ready to open. (Its `Debug` redacts the secrets: the store
/// options' and the uplink settings' own `Debug` do.)
#[derive(Debug, Clone)]
pub struct LinePlan {
    /// The line id, as in the topics and the ledger.
    pub id: String,
    /// The line's ledger: path, secret, commit mode, fence.
    pub store: StoreOptions,
    /// The line's MQTT uplink: broker, auth, prefetch marks, commands.
    pub uplink: UplinkConfig,
    /// How strict and how deep the pipeline is.
    pub pipeline: PipelinePlan,
    /// The job the line starts with, if any; otherwise it waits for one.
    pub default_job: Option<Job>,
}

/// The pipeline's settings for every job of a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelinePlan {
    /// Lowest ISO/IEC 15415 grade a read may have for its unit to commit.
    pub min_grade: Grade,
    /// Printed units that may await their camera read at once.
    pub camera_window: usize,
    /// A printed unit not read within this time is a no-read.
    pub read_deadline: Duration,
    /// Longest a job waits for the buffer to refill before it stops.
    pub starve_timeout: Duration,
    /// The packaging levels the line closes, from cases up (none: the
    /// line stops at the unit).
    pub aggregation: Vec<crate::aggregation::LevelPlan>,
}

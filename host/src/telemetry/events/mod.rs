//! What the host tells about itself, one type per event (in the spirit of
//! Vector's internal events): each writes its line in the log it belongs to,
//! its host log line, and its metrics, here and nowhere else. Metric labels
//! stay low in cardinality: tenant, pipeline, kind, failure kind, rule,
//! alert, direction; never a file name or a record key.
//!
//! One file per topic, the events named from here (`events::Quarantined`):
//! [`batch`] files and writes, [`invocation`] a guest's invocation,
//! [`stream`] the stream instances, [`monitor`] measurements, alerts and
//! decisions, [`host`] the platform as a whole.

mod batch;
mod host;
mod invocation;
mod monitor;
mod stream;

pub use batch::{BatchLoad, Duplicate, IngestionRecovered, Quarantined, WritesResumed, WritesStopped};
pub use host::{
    AcceptFailed, ConnectionRefused, EmbeddedCollectionsOpen, GaveWay, GuestsComputing, HostStarted, HostStopped, RegistryReloaded,
    RequestRefused, SearchRunning, TenantControlled, TenantSuspended,
};
pub use invocation::{CallDenied, GuestCounters, GuestLine, Ingested, Invocation, QuotaExceeded};
pub use monitor::{Alert, AlertKind, AlertRaised, Measured, Measurement, ScalingDecided};
pub use stream::{StreamBatchDone, StreamInstances, StreamProblem, StreamScaled, StreamStalled, StreamTrapped};

//! For benchmarks only, not for the host's users: the sandbox's pieces, so
//! a benchmark can rebuild a batch invocation with one engine setting
//! changed (`bench/src/ablation.rs` measures what fuel metering and epoch
//! interruption cost that way). The host's own engine settings are fixed.

pub use crate::capabilities::bindings::BatchReport;
pub use crate::capabilities::bindings::batch::BatchPipelinePre;
pub use crate::capabilities::input_file::InputFile;
pub use crate::sandbox::{HOST_STACK_BYTES, StoreData, linker};

use crate::capabilities::{HostState, Scope};
use crate::config::{BatchPipelineSpec, PipelineKind, Tenant};
use crate::platform::Platform;
use std::sync::Arc;

/// The store data of one batch invocation of `spec`'s version `version`, as
/// the host would make it (the tenant's scope and log, the spec's memory limit).
pub fn batch_store_data(platform: &Platform, tenant: &Arc<Tenant>, spec: &BatchPipelineSpec, version: u32) -> StoreData {
    let scope = Arc::new(Scope {
        tenant: tenant.clone(),
        kind: PipelineKind::Batch,
        pipeline: spec.name.clone(),
        version,
        parameters: tenant.profile.parameters_for(&spec.parameters),
        services: platform.services().clone(),
        log: platform.logs().tenant(tenant, PipelineKind::Batch),
        guest_log: platform.logs().tenant_guest(tenant, PipelineKind::Batch),
    });
    let limits = tenant.profile.sandbox.with(&spec.sandbox);
    StoreData::new(HostState::new(scope), limits.memory_bytes.bytes())
}

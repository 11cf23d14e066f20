//! Each tenant's concurrent file ingestions, capped by its service agreement
//! (`max_concurrent_ingestions`), whoever starts them: the batch manager's
//! workers or `mysimbdp ingest` through the API.

use crate::config::{Registry, Tenant, TenantId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

pub(super) struct TenantSlots {
    /// Each tenant's semaphore, with the cap it was made for.
    slots: Mutex<HashMap<TenantId, (u32, Arc<Semaphore>)>>,
}

fn slots_for(tenant: &Tenant) -> (u32, Arc<Semaphore>) {
    let cap = tenant.profile.agreement.max_concurrent_ingestions;
    (cap, Arc::new(Semaphore::new(cap as usize)))
}

impl TenantSlots {
    pub(super) fn new(registry: &Registry) -> TenantSlots {
        TenantSlots { slots: Mutex::new(registry.tenants().map(|t| (t.id.clone(), slots_for(t))).collect()) }
    }

    /// A new cap gets a new semaphore: ingestions holding the old one finish
    /// under the old cap.
    pub(super) fn update(&self, registry: &Registry) {
        let mut slots = self.slots.lock().expect("tenant slots poisoned");
        for tenant in registry.tenants() {
            let cap = tenant.profile.agreement.max_concurrent_ingestions;
            if slots.get(&tenant.id).is_none_or(|(old_cap, _)| *old_cap != cap) {
                slots.insert(tenant.id.clone(), slots_for(tenant));
            }
        }
    }

    /// The semaphore of `tenant`'s concurrent ingestions.
    pub(super) fn of(&self, tenant: &TenantId) -> Arc<Semaphore> {
        let slots = self.slots.lock().expect("tenant slots poisoned");
        slots.get(tenant).map(|(_, semaphore)| semaphore.clone()).unwrap_or_else(|| Arc::new(Semaphore::new(1)))
    }
}

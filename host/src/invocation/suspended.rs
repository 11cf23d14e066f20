//! Tenants the operator has suspended (`mysimbdp tenant suspend`): none of
//! their ingestions starts and the API refuses their calls, until `tenant
//! resume`. Kept in `<data_dir>/suspended` (one framed record, rewritten
//! atomically), so a suspension outlives a restart of the host.

use crate::config::TenantId;
use crate::framed;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

/// One suspension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspension {
    /// When it was suspended (RFC 3339).
    pub since: String,
    /// The stream instances that were running and were stopped by it: `tenant
    /// resume` starts as many again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_instances: Option<u32>,
}

impl Suspension {
    /// A suspension starting now, no stream stopped yet.
    pub fn now() -> Suspension {
        Suspension { since: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true), stream_instances: None }
    }
}

/// The suspended tenants, as persisted.
pub struct Suspensions {
    path: PathBuf,
    tenants: RwLock<BTreeMap<String, Suspension>>,
}

impl Suspensions {
    /// Reads `<data_dir>/suspended` (missing: nobody is suspended). A file
    /// that cannot be read is an error naming it: starting with the
    /// suspensions forgotten would let a suspended tenant run again.
    pub fn open(data_dir: &Path) -> anyhow::Result<Suspensions> {
        let path = data_dir.join("suspended");
        let unreadable = || format!("cannot read the suspended tenants from {} (remove it to resume every tenant)", path.display());
        let records = framed::recover(&path).with_context(unreadable)?;
        let tenants = match records.payloads.last() {
            Some(payload) => serde_json::from_slice(payload).with_context(unreadable)?,
            None => BTreeMap::new(),
        };
        Ok(Suspensions { path, tenants: RwLock::new(tenants) })
    }

    /// Whether `tenant` is suspended now.
    pub fn is_suspended(&self, tenant: &TenantId) -> bool {
        self.tenants.read().expect("suspensions poisoned").contains_key(tenant.as_str())
    }

    /// The suspension of `tenant`, if it is suspended.
    pub fn of(&self, tenant: &TenantId) -> Option<Suspension> {
        self.tenants.read().expect("suspensions poisoned").get(tenant.as_str()).cloned()
    }

    /// Suspends `tenant` (written durably before it takes effect); `false`
    /// when it was suspended already (the first suspension is kept).
    pub fn suspend(&self, tenant: &TenantId, suspension: Suspension) -> anyhow::Result<bool> {
        self.change(|tenants| match tenants.entry(tenant.to_string()) {
            std::collections::btree_map::Entry::Occupied(_) => false,
            std::collections::btree_map::Entry::Vacant(entry) => {
                entry.insert(suspension);
                true
            }
        })
    }

    /// Records the stream instances a suspension stopped.
    pub fn stopped_stream(&self, tenant: &TenantId, instances: u32) -> anyhow::Result<()> {
        self.change(|tenants| {
            if let Some(suspension) = tenants.get_mut(tenant.as_str()) {
                suspension.stream_instances = Some(instances);
            }
            true
        })
        .map(drop)
    }

    /// Resumes `tenant`: its suspension, or `None` if it was not suspended.
    pub fn resume(&self, tenant: &TenantId) -> anyhow::Result<Option<Suspension>> {
        let mut removed = None;
        self.change(|tenants| {
            removed = tenants.remove(tenant.as_str());
            removed.is_some()
        })?;
        Ok(removed)
    }

    /// Applies `change` and writes the result if it says something changed;
    /// on a failed write the suspensions in force stay as they were.
    fn change(&self, change: impl FnOnce(&mut BTreeMap<String, Suspension>) -> bool) -> anyhow::Result<bool> {
        let mut tenants = self.tenants.write().expect("suspensions poisoned");
        let mut changed = tenants.clone();
        if !change(&mut changed) {
            return Ok(false);
        }
        let payload = serde_json::to_vec(&changed)?;
        framed::rewrite(&self.path, [payload.as_slice()])
            .with_context(|| format!("cannot write the suspended tenants to {}", self.path.display()))?;
        *tenants = changed;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> TenantId {
        TenantId::parse(name).unwrap()
    }

    #[test]
    fn suspensions_outlive_a_restart_and_resume_ends_them() {
        let dir = tempfile::tempdir().unwrap();
        let since = |s: &str| Suspension { since: s.into(), stream_instances: None };
        let suspensions = Suspensions::open(dir.path()).unwrap();
        assert!(!suspensions.is_suspended(&id("shop")));
        assert!(suspensions.suspend(&id("shop"), since("first")).unwrap());
        assert!(!suspensions.suspend(&id("shop"), since("second")).unwrap(), "suspended already");
        suspensions.stopped_stream(&id("shop"), 2).unwrap();
        assert!(suspensions.suspend(&id("retail"), since("third")).unwrap());

        let reopened = Suspensions::open(dir.path()).unwrap();
        assert_eq!(reopened.of(&id("shop")), Some(Suspension { since: "first".into(), stream_instances: Some(2) }));
        assert!(reopened.is_suspended(&id("retail")));
        assert!(!reopened.is_suspended(&id("other")));
        assert_eq!(reopened.resume(&id("shop")).unwrap().and_then(|s| s.stream_instances), Some(2));
        assert_eq!(reopened.resume(&id("shop")).unwrap(), None, "resumed already");

        let again = Suspensions::open(dir.path()).unwrap();
        assert!(!again.is_suspended(&id("shop")));
        assert!(again.is_suspended(&id("retail")));
    }

    #[test]
    fn an_unreadable_file_is_an_error_naming_it_not_an_empty_set() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("suspended"), framed::frame(b"not json")).unwrap();
        let error = format!("{:#}", Suspensions::open(dir.path()).err().expect("refused"));
        assert!(error.contains("suspended") && error.contains(&dir.path().display().to_string()), "{error}");
    }
}

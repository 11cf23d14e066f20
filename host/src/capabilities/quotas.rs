//! A tenant's quotas across invocations (`quotas` in its profile): the
//! collections it has, the topics and the counter series its pipelines
//! created since the host started. Kept in [`Services`], which outlives
//! every invocation; an invocation asks before it creates.

use super::bindings::GuestError;
use super::{HostState, Services};
use crate::backends::SinkError;
use crate::config::{Name, RESERVED_COLLECTIONS, Tenant, TenantId};
use crate::telemetry::events;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

/// A quota a call would exceed: its field under `quotas` and what to say.
#[derive(Debug)]
pub(crate) struct Exceeded {
    pub quota: &'static str,
    pub message: String,
}

/// What one tenant has, as counted for its quotas.
#[derive(Default)]
pub(super) struct TenantUsage {
    /// Its indices (reserved ones aside), listed from the store on first use.
    collections: Option<BTreeSet<String>>,
    topics: BTreeSet<String>,
    /// `(pipeline, counter)`, with the counter's total since the host started.
    series: BTreeMap<(String, String), u64>,
}

#[derive(Default)]
pub(super) struct Usage(Mutex<HashMap<TenantId, TenantUsage>>);

/// Whether `name` may join `have` under `quota`: known names always may.
pub(crate) fn admits<T: Ord>(have: &BTreeSet<T>, name: &T, quota: u32) -> bool {
    have.contains(name) || have.len() < quota as usize
}

impl Services {
    fn usage<R>(&self, tenant: &TenantId, f: impl FnOnce(&mut TenantUsage) -> R) -> R {
        let mut usage = self.usage.0.lock().expect("quota usage poisoned");
        f(usage.entry(tenant.clone()).or_default())
    }

    /// May `tenant` write to `index`? `Ok(Err(message))` when a new
    /// collection would exceed `quotas.collections`.
    pub(crate) async fn admit_collection(&self, tenant: &Tenant, index: &str) -> Result<Result<(), Exceeded>, SinkError> {
        if self.usage(&tenant.id, |u| u.collections.is_none()) {
            let reserved: Vec<String> =
                RESERVED_COLLECTIONS.iter().filter_map(|c| Name::parse(c).ok()).map(|c| tenant.id.index(&c)).collect();
            let listed = self.coredms.indices(&tenant.id.index_prefix()).await?;
            let listed: BTreeSet<String> = listed.into_iter().filter(|i| !reserved.contains(i)).collect();
            self.usage(&tenant.id, |u| u.collections.get_or_insert(listed).len());
        }
        let quota = tenant.profile.quotas.collections;
        let admitted = self.usage(&tenant.id, |u| {
            let have = u.collections.as_mut().expect("listed above");
            let admitted = admits(have, &index.to_string(), quota);
            if admitted {
                have.insert(index.to_string());
            }
            admitted
        });
        Ok(if admitted {
            Ok(())
        } else {
            Err(Exceeded {
                quota: "collections",
                message: format!("a new collection would exceed the tenant's {quota} collections (quotas.collections)"),
            })
        })
    }

    /// May `tenant`'s pipelines publish to `topic`? Its stream's topics
    /// always may.
    pub(crate) fn admit_topic(&self, tenant: &Tenant, topic: &str) -> Result<(), Exceeded> {
        let declared = tenant.profile.stream.as_ref().is_some_and(|s| s.topics.iter().any(|t| tenant.id.topic(t) == topic));
        let quota = tenant.profile.quotas.topics;
        let admitted = declared
            || self.usage(&tenant.id, |u| {
                let admitted = admits(&u.topics, &topic.to_string(), quota);
                if admitted {
                    u.topics.insert(topic.to_string());
                }
                admitted
            });
        if admitted {
            Ok(())
        } else {
            Err(Exceeded { quota: "topics", message: format!("a new topic would exceed the tenant's {quota} topics (quotas.topics)") })
        }
    }

    /// May `tenant`'s `pipeline` export counter `name`?
    pub(crate) fn admit_series(&self, tenant: &Tenant, pipeline: &str, name: &str) -> Result<(), Exceeded> {
        let quota = tenant.profile.quotas.counter_series;
        let series = (pipeline.to_string(), name.to_string());
        let admitted = self.usage(&tenant.id, |u| {
            let admitted = u.series.contains_key(&series) || u.series.len() < quota as usize;
            if admitted {
                u.series.entry(series).or_default();
            }
            admitted
        });
        if admitted {
            Ok(())
        } else {
            Err(Exceeded {
                quota: "counter_series",
                message: format!("a new counter would exceed the tenant's {quota} counter series (quotas.counter_series)"),
            })
        }
    }
}

impl Services {
    /// Adds an invocation's counters to `tenant`'s totals (saturating, so a
    /// counter never goes back); returns the totals of those counters.
    pub(crate) fn add_counters(&self, tenant: &TenantId, pipeline: &str, counters: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
        self.usage(tenant, |u| {
            counters
                .iter()
                .map(|(name, value)| {
                    let total = u.series.entry((pipeline.to_string(), name.clone())).or_default();
                    *total = total.saturating_add(*value);
                    (name.clone(), *total)
                })
                .collect()
        })
    }
}

impl HostState {
    /// Logs and counts a quota the guest hit; returns the error for it.
    /// Written to the guest log, counted with the refused calls (the first
    /// [`super::MAX_DENIALS_LOGGED`] of an invocation are written).
    pub(crate) fn quota_exceeded(&mut self, exceeded: Exceeded) -> GuestError {
        let logged = self.refusal_is_logged();
        let event = events::QuotaExceeded { by: self.scope.invocation(), quota: exceeded.quota, message: &exceeded.message };
        if logged {
            event.emit(&self.scope.guest_log);
        } else {
            event.count();
        }
        GuestError::QuotaExceeded(exceeded.message)
    }
}

#[cfg(test)]
mod tests {
    use super::admits;
    use crate::capabilities::Services;
    use crate::config::TenantId;
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;

    #[test]
    fn counter_totals_saturate_across_invocations() {
        let dir = tempfile::tempdir().unwrap();
        let bus = crate::backends::embedded_bus::EmbeddedBus::open(dir.path()).unwrap();
        let services = Services::new(
            Arc::new(crate::backends::null_store::NullStore::default()),
            Arc::new(bus) as Arc<dyn crate::backends::MessageBus>,
        );
        let tenant = TenantId::parse("retail").unwrap();
        let invocations: [(u64, u64); 4] = [
            // (added by the invocation, total after it)
            (5, 5),
            (u64::MAX - 10, u64::MAX - 5),
            (10, u64::MAX),
            (1, u64::MAX),
        ];
        for (added, total) in invocations {
            let totals = services.add_counters(&tenant, "orders", &BTreeMap::from([("rows".to_string(), added)]));
            assert_eq!(totals["rows"], total, "after adding {added}");
        }
        let other = services.add_counters(&tenant, "features", &BTreeMap::from([("rows".to_string(), 1)]));
        assert_eq!(other["rows"], 1, "each pipeline has its own series");
    }

    #[test]
    fn a_quota_admits_what_is_known_and_new_names_below_it() {
        let have: BTreeSet<&str> = ["a", "b"].into();
        let cases = [
            // (name, quota, admitted)
            ("a", 2, true),
            ("c", 2, false),
            ("c", 3, true),
            ("a", 0, true),
            ("c", 0, false),
        ];
        for (name, quota, admitted) in cases {
            assert_eq!(admits(&have, &name, quota), admitted, "{name} under {quota}");
        }
    }
}

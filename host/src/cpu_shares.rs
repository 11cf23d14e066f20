//! CPU shares per tenant: at most `slots` guests of one tenant run at a
//! time, however many of its invocations are in flight. A guest takes its
//! tenant's turn before it starts and gives it back at every epoch tick
//! (10 ms), queueing for it again behind the tenant's other guests (the
//! semaphore is fair, first come first served). So a tenant running many
//! CPU-bound invocations shares its slots among them, and leaves the other
//! cores to its neighbours; each of its guests still makes progress. Host
//! calls that compute run inside the turn; one that waits (on a store, the
//! broker) gives it up while it waits (`HostState::waiting`), so a tenant's
//! ingestions still overlap their waits.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Guests of one tenant that may run at once by default on a machine with
/// `cores` cores: all but one, so that no tenant can take every core.
pub fn default_slots(cores: usize) -> usize {
    cores.saturating_sub(1).max(1)
}

/// Each tenant's slots.
pub struct CpuShares {
    slots: usize,
    tenants: Mutex<HashMap<String, Arc<Slots>>>,
}

/// One tenant's slots, and how many of its guests wait for one.
struct Slots {
    semaphore: Arc<Semaphore>,
    slots: usize,
    waiting: AtomicUsize,
}

impl CpuShares {
    pub fn new(slots: usize) -> CpuShares {
        CpuShares { slots: slots.max(1), tenants: Mutex::new(HashMap::new()) }
    }

    /// A turn of `tenant`'s, not taken yet.
    pub fn turn(&self, tenant: &str) -> Turn {
        let mut tenants = self.tenants.lock().expect("shares poisoned");
        let slots = tenants
            .entry(tenant.to_string())
            .or_insert_with(|| {
                Arc::new(Slots { semaphore: Arc::new(Semaphore::new(self.slots)), slots: self.slots, waiting: AtomicUsize::new(0) })
            })
            .clone();
        Turn { slots, held: Arc::new(Mutex::new(None)) }
    }
}

/// One guest's turn on a core of its tenant's slots.
#[derive(Clone)]
pub struct Turn {
    slots: Arc<Slots>,
    held: Arc<Mutex<Option<OwnedSemaphorePermit>>>,
}

impl Turn {
    /// Waits until the tenant has a free slot, and holds it.
    pub async fn take(&self) {
        self.slots.waiting.fetch_add(1, Ordering::Relaxed);
        let permit = self.slots.semaphore.clone().acquire_owned().await;
        self.slots.waiting.fetch_sub(1, Ordering::Relaxed);
        *self.held.lock().expect("turn poisoned") = Some(permit.expect("the semaphore is never closed"));
    }

    /// Gives the slot back (while the guest waits on something else).
    pub fn give_back(&self) {
        drop(self.held.lock().expect("turn poisoned").take());
    }

    /// Gives the slot back at once and returns the future that takes it
    /// again, after the other tasks (and the tenant's other guests queued
    /// for it) had their go: what the epoch callback yields to.
    pub fn pass(&self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        self.give_back();
        let turn = self.clone();
        Box::pin(async move {
            tokio::task::yield_now().await;
            turn.take().await;
        })
    }

    /// The tenant's guests computing now (holding a slot), and waiting for one.
    pub fn load(&self) -> (usize, usize) {
        let computing = self.slots.slots.saturating_sub(self.slots.semaphore.available_permits());
        (computing, self.slots.waiting.load(Ordering::Relaxed))
    }

    /// Whether the turn is held now.
    #[cfg(test)]
    pub fn is_held(&self) -> bool {
        self.held.lock().expect("turn poisoned").is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_tenant_may_take_every_core_but_one() {
        // (cores, slots)
        for (cores, slots) in [(0, 1), (1, 1), (2, 1), (3, 2), (8, 7), (64, 63)] {
            assert_eq!(default_slots(cores), slots, "{cores} cores");
        }
    }

    /// Guests of `tenant` that each run `steps` steps, passing their turn
    /// after each: the most of the tenant's guests that ever ran at once,
    /// and the order in which the steps ran.
    async fn run_guests(shares: Arc<CpuShares>, tenant: &'static str, guests: usize, steps: usize) -> (usize, Vec<usize>) {
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for guest in 0..guests {
            let (shares, running, most, order) = (shares.clone(), running.clone(), most.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let turn = shares.turn(tenant);
                turn.take().await;
                for _ in 0..steps {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    order.lock().unwrap().push(guest);
                    tokio::task::yield_now().await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    turn.pass().await;
                }
                assert!(turn.is_held());
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        (most.load(Ordering::SeqCst), order)
    }

    // One thread, so the order of the steps is the scheduler's and the
    // semaphore's alone, the same on every run.
    #[tokio::test(flavor = "current_thread")]
    async fn a_tenants_guests_take_turns_within_its_slots_and_each_gets_its_go() {
        // (slots, guests, most running at once)
        for (slots, guests, most) in [(1, 5, 1), (2, 5, 2), (3, 2, 2)] {
            let shares = Arc::new(CpuShares::new(slots));
            let (ran, order) = run_guests(shares, "hostile", guests, 20).await;
            assert_eq!(ran, most, "{slots} slots, {guests} guests");
            assert_eq!(order.len(), guests * 20);
            if slots == 1 {
                // First come, first served: each in turn, none twice while another waits.
                let round_robin: Vec<usize> = (0..guests * 20).map(|i| i % guests).collect();
                assert_eq!(order, round_robin);
            }
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn one_tenants_guests_do_not_take_another_tenants_slots() {
        let shares = Arc::new(CpuShares::new(1));
        let hostile = tokio::spawn(run_guests(shares.clone(), "hostile", 6, 50));
        tokio::task::yield_now().await;
        // The neighbour's guest takes its own slot while the hostile tenant's guests hold and queue for theirs.
        let neighbour = shares.turn("neighbour");
        neighbour.take().await;
        assert!(neighbour.is_held());
        assert_eq!(neighbour.load(), (1, 0), "the neighbour's guest computes, none of its waits");
        let hostile_load = shares.turn("hostile");
        for _ in 0..100 {
            if hostile_load.load().1 > 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        let (computing, waiting) = hostile_load.load();
        assert!(computing == 1 && waiting >= 4, "one hostile guest computes, the others wait: {computing}, {waiting}");
        let (most, _) = hostile.await.unwrap();
        assert_eq!(most, 1, "the hostile tenant never ran two guests at once");
    }
}

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
//!
//! Across tenants, the one ahead gives way. Each tenant's guests' time in
//! their turns adds up to its *run time*; a tenant arriving after an idle
//! spell starts at most [`ARRIVAL_CREDIT`] behind the least of those in
//! flight, so a short ingestion beside a long-running tenant goes first, and
//! idling earns no more credit than that. While the CPU is contended (some
//! task waited for a core for 1% of the last 100 ms, from
//! `/proc/pressure/cpu`) and another tenant with an
//! invocation in flight has run [`LEAD`] less, a guest keeps its turn for
//! [`GIVE_WAY_PAUSE`] after each tick without computing (never past its
//! deadline): its tenant computes one tick in sixteen, so the cores go to
//! the tenant behind. Nothing gives way on an idle machine, and a tenant
//! giving way still computes a sixteenth of its slots.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How much longer a tenant's guests may have run than those of another
/// tenant in flight before it gives way.
pub const LEAD: Duration = Duration::from_millis(100);

/// How far behind the least of the tenants in flight a tenant arriving
/// from idle may start ([`run_time_on_arrival`]).
pub const ARRIVAL_CREDIT: Duration = Duration::from_secs(1);

/// How long a guest that gives way holds its turn idle after a tick: fifteen
/// ticks, so its tenant computes one tick in sixteen. (Three ticks, one in
/// four, left the neighbour of `noisy-neighbour` at 0.83-0.86 of its speed
/// alone; fifteen at 0.95-0.97: docs/benchmarks/journal.md.)
pub const GIVE_WAY_PAUSE: Duration = Duration::from_millis(150);

/// How often the ticker samples whether the CPU is contended.
pub const CONTENTION_SAMPLE: Duration = Duration::from_millis(100);

/// Guests of one tenant that may run at once by default on a machine with
/// `cores` cores: all but one, so that no tenant can take every core.
pub fn default_slots(cores: usize) -> usize {
    cores.saturating_sub(1).max(1)
}

/// Whether a tenant whose guests have run `own` gives way: the CPU is
/// contended, and a tenant in flight has run at least [`LEAD`] less.
pub fn gives_way(contended: bool, own: Duration, others_in_flight: &[Duration]) -> bool {
    contended && others_in_flight.iter().any(|other| *other + LEAD <= own)
}

/// The run time a tenant arriving with no invocation in flight starts at:
/// its own, or [`ARRIVAL_CREDIT`] less than the least of the tenants in
/// flight if that is more. So a tenant that was idle while others computed
/// goes first for up to that long, and no longer: idling earns no more
/// credit to spend later on its neighbours.
pub fn run_time_on_arrival(own: Duration, others_in_flight: &[Duration]) -> Duration {
    others_in_flight.iter().min().map_or(own, |least| own.max(least.saturating_sub(ARRIVAL_CREDIT)))
}

/// Whether the CPU was contended over a sample: the share of its wall time
/// in which some task waited for a core (`/proc/pressure/cpu`, `some`) was
/// at least 1%.
pub fn contended_by_pressure(stalled: Duration, wall: Duration) -> bool {
    !wall.is_zero() && stalled.as_nanos() * 100 >= wall.as_nanos()
}

/// Where pressure stall information is missing: whether more tasks were
/// runnable (`/proc/stat` `procs_running`, less the sampling thread) than
/// there are cores.
pub fn contended_by_running(running: u64, cores: usize) -> bool {
    running.saturating_sub(1) > cores as u64
}

/// Samples the CPU contention of the machine, once per call.
pub struct Pressure {
    cores: usize,
    last: Option<(Instant, u64)>,
}

impl Pressure {
    pub fn new(cores: usize) -> Pressure {
        Pressure { cores, last: None }
    }

    /// Whether the CPU was contended since the last sample: from the
    /// pressure stall total, else from the tasks runnable now, else (neither
    /// readable) always.
    pub fn sample(&mut self) -> bool {
        let now = Instant::now();
        if let Some(total) = read_pressure_total() {
            let contended = match self.last {
                Some((at, before)) => contended_by_pressure(Duration::from_micros(total.saturating_sub(before)), now - at),
                None => false,
            };
            self.last = Some((now, total));
            return contended;
        }
        read_procs_running().is_none_or(|running| contended_by_running(running, self.cores))
    }
}

/// `total=` of the `some` line of `/proc/pressure/cpu`, in microseconds.
fn read_pressure_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/pressure/cpu").ok()?;
    let some = text.lines().find(|line| line.starts_with("some "))?;
    some.split_whitespace().find_map(|field| field.strip_prefix("total="))?.parse().ok()
}

/// `procs_running` of `/proc/stat`.
fn read_procs_running() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    text.lines().find_map(|line| line.strip_prefix("procs_running "))?.trim().parse().ok()
}

/// Each tenant's slots, and whether the CPU is contended.
pub struct CpuShares {
    slots: usize,
    tenants: Arc<Tenants>,
}

/// Every tenant's slots and run time, shared by the turns.
struct Tenants {
    by_id: Mutex<HashMap<String, Arc<Slots>>>,
    contended: AtomicBool,
}

/// The run times of the tenants other than `own` with an invocation in flight.
fn others_in_flight(by_id: &HashMap<String, Arc<Slots>>, own: &Arc<Slots>) -> Vec<Duration> {
    by_id
        .values()
        .filter(|slots| !Arc::ptr_eq(slots, own) && slots.in_flight.load(Ordering::Relaxed) > 0)
        .map(|slots| slots.run_time())
        .collect()
}

/// One tenant's slots, how many of its guests wait for one, its
/// invocations in flight and its guests' run time.
struct Slots {
    semaphore: Arc<Semaphore>,
    slots: usize,
    waiting: AtomicUsize,
    in_flight: AtomicUsize,
    run_nanos: AtomicU64,
}

impl Slots {
    fn run_time(&self) -> Duration {
        Duration::from_nanos(self.run_nanos.load(Ordering::Relaxed))
    }

    fn add_run_time(&self, ran: Duration) {
        self.run_nanos.fetch_add(nanos(ran), Ordering::Relaxed);
    }
}

fn nanos(time: Duration) -> u64 {
    time.as_nanos().min(u64::MAX as u128) as u64
}

impl CpuShares {
    pub fn new(slots: usize) -> CpuShares {
        CpuShares {
            slots: slots.max(1),
            tenants: Arc::new(Tenants { by_id: Mutex::new(HashMap::new()), contended: AtomicBool::new(false) }),
        }
    }

    /// A turn of `tenant`'s for one invocation, not taken yet; the
    /// invocation is in flight until the turn and its clones are dropped.
    pub fn turn(&self, tenant: &str) -> Turn {
        let mut by_id = self.tenants.by_id.lock().expect("shares poisoned");
        let slots = by_id
            .entry(tenant.to_string())
            .or_insert_with(|| {
                Arc::new(Slots {
                    semaphore: Arc::new(Semaphore::new(self.slots)),
                    slots: self.slots,
                    waiting: AtomicUsize::new(0),
                    in_flight: AtomicUsize::new(0),
                    run_nanos: AtomicU64::new(0),
                })
            })
            .clone();
        if slots.in_flight.fetch_add(1, Ordering::Relaxed) == 0 {
            let start = run_time_on_arrival(slots.run_time(), &others_in_flight(&by_id, &slots));
            slots.run_nanos.store(nanos(start), Ordering::Relaxed);
        }
        drop(by_id);
        let flight = Arc::new(InFlight(slots.clone()));
        Turn { slots, tenants: self.tenants.clone(), held: Arc::new(Mutex::new(None)), _flight: flight }
    }

    /// Records whether the CPU is contended now (the ticker's sample).
    pub fn set_contended(&self, contended: bool) {
        self.tenants.contended.store(contended, Ordering::Relaxed);
    }
}

/// An invocation in flight, counted until its last turn is dropped.
struct InFlight(Arc<Slots>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One guest's turn on a core of its tenant's slots.
#[derive(Clone)]
pub struct Turn {
    slots: Arc<Slots>,
    tenants: Arc<Tenants>,
    /// The slot, and since when the guest has run in it.
    held: Arc<Mutex<Option<(OwnedSemaphorePermit, Instant)>>>,
    _flight: Arc<InFlight>,
}

impl Turn {
    /// Waits until the tenant has a free slot, and holds it.
    pub async fn take(&self) {
        self.slots.waiting.fetch_add(1, Ordering::Relaxed);
        let permit = self.slots.semaphore.clone().acquire_owned().await;
        self.slots.waiting.fetch_sub(1, Ordering::Relaxed);
        *self.held.lock().expect("turn poisoned") = Some((permit.expect("the semaphore is never closed"), Instant::now()));
    }

    /// Gives the slot back (while the guest waits on something else), and
    /// adds the time it ran in it to its tenant's run time.
    pub fn give_back(&self) {
        if let Some((permit, since)) = self.held.lock().expect("turn poisoned").take() {
            self.slots.add_run_time(since.elapsed());
            drop(permit);
        }
    }

    /// Adds the time run in the slot so far to the tenant's run time, and
    /// counts from now on (holding the slot meanwhile).
    fn count_run_time(&self) {
        if let Some((_, since)) = self.held.lock().expect("turn poisoned").as_mut() {
            self.slots.add_run_time(since.elapsed());
            *since = Instant::now();
        }
    }

    /// Whether this tenant gives way now (see the module's doc).
    fn gives_way(&self) -> bool {
        if !self.tenants.contended.load(Ordering::Relaxed) {
            return false;
        }
        let others = others_in_flight(&self.tenants.by_id.lock().expect("shares poisoned"), &self.slots);
        gives_way(true, self.slots.run_time(), &others)
    }

    /// The future that gives the slot back and takes it again, after the
    /// other tasks (and the tenant's other guests queued for it) had their
    /// go: what the epoch callback yields to. A tenant that gives
    /// way first holds the slot idle for [`GIVE_WAY_PAUSE`], or the `left`
    /// of its deadline if less, so its other guests wait too. The future
    /// tells whether it gave way.
    pub fn pass(&self, left: Duration) -> Pin<Box<dyn Future<Output = bool> + Send>> {
        self.count_run_time();
        let give_way = self.gives_way();
        let turn = self.clone();
        Box::pin(async move {
            if give_way {
                tokio::time::sleep(GIVE_WAY_PAUSE.min(left)).await;
                turn.restart_clock();
            }
            turn.give_back();
            tokio::task::yield_now().await;
            turn.take().await;
            give_way
        })
    }

    /// Counts the run time from now on (after holding the slot idle).
    fn restart_clock(&self) {
        if let Some((_, since)) = self.held.lock().expect("turn poisoned").as_mut() {
            *since = Instant::now();
        }
    }

    /// The tenant's guests computing now (holding a slot), and waiting for one.
    pub fn load(&self) -> (usize, usize) {
        let computing = self.slots.slots.saturating_sub(self.slots.semaphore.available_permits());
        (computing, self.slots.waiting.load(Ordering::Relaxed))
    }

    /// Adds `time` to the tenant's run time, as if its guest had computed it.
    #[cfg(test)]
    pub fn ran(&self, time: Duration) {
        self.slots.add_run_time(time);
    }

    /// The tenant's run time.
    #[cfg(test)]
    pub fn run_time(&self) -> Duration {
        self.slots.run_time()
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
                    turn.pass(Duration::MAX).await;
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

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_tenant_gives_way_on_a_contended_cpu_to_one_in_flight_that_ran_less() {
        // (contended, own run time, the other tenants' in flight, gives way)
        let cases = [
            (true, ms(500), vec![ms(100)], true),
            (true, ms(200), vec![ms(100)], true),        // LEAD ahead exactly
            (true, ms(199), vec![ms(100)], false),       // not quite
            (false, ms(60_000), vec![ms(0)], false),     // an idle machine: nobody waits for the core
            (true, ms(60_000), vec![], false),           // nobody else in flight
            (true, ms(100), vec![ms(500)], false),       // behind
            (true, ms(500), vec![ms(900), ms(0)], true), // one tenant behind is enough
        ];
        for (contended, own, others, expected) in cases {
            assert_eq!(gives_way(contended, own, &others), expected, "contended {contended}, {own:?} against {others:?}");
        }
    }

    #[test]
    fn a_tenant_arriving_from_idle_starts_at_most_the_credit_behind_the_least_in_flight() {
        // (own run time, the other tenants' in flight, run time it starts at)
        let cases = [
            (ms(0), vec![], ms(0)),
            (ms(50), vec![], ms(50)),
            (ms(0), vec![ms(700), ms(300)], ms(0)),         // within the credit of the least
            (ms(0), vec![ms(5_700), ms(2_300)], ms(1_300)), // the credit behind the least, no more
            (ms(1_500), vec![ms(2_300)], ms(1_500)),        // less behind than the credit: its own
            (ms(9_000), vec![ms(300)], ms(9_000)),          // ahead already: nothing taken away either
        ];
        for (own, others, start) in cases {
            assert_eq!(run_time_on_arrival(own, &others), start, "{own:?} against {others:?}");
        }
    }

    #[test]
    fn the_cpu_is_contended_when_tasks_waited_for_a_core() {
        // (µs some task stalled, µs of wall time, contended)
        for (stalled, wall, contended) in
            [(0, 100_000, false), (999, 100_000, false), (1_000, 100_000, true), (100_000, 100_000, true), (0, 0, false)]
        {
            let (stalled, wall) = (Duration::from_micros(stalled), Duration::from_micros(wall));
            assert_eq!(contended_by_pressure(stalled, wall), contended, "{stalled:?} of {wall:?}");
        }
        // (procs_running, the sampler among them; cores; contended)
        for (running, cores, contended) in [(1, 2, false), (3, 2, false), (4, 2, true), (2, 1, false), (3, 1, true), (0, 1, false)] {
            assert_eq!(contended_by_running(running, cores), contended, "{running} running on {cores} cores");
        }
    }

    /// Polls `future` once; whether it finished.
    async fn poll_once<F: Future + Unpin>(future: &mut F) -> bool {
        std::future::poll_fn(|cx| std::task::Poll::Ready(Pin::new(&mut *future).poll(cx).is_ready())).await
    }

    // One thread: nothing runs between the polls but what the test polls.
    #[tokio::test(flavor = "current_thread")]
    async fn a_tenant_ahead_keeps_its_slot_idle_so_its_other_guests_wait_until_the_one_behind_is_done() {
        // (the CPU contended, the neighbour in flight, gives way)
        for (contended, neighbour_in_flight, gives) in [(true, true, true), (false, true, false), (true, false, false)] {
            let shares = CpuShares::new(1);
            shares.set_contended(contended);
            let neighbour = neighbour_in_flight.then(|| shares.turn("neighbour"));
            let (first, second) = (shares.turn("hostile"), shares.turn("hostile"));
            first.take().await;
            first.ran(LEAD * 3);
            let case = format!("contended {contended}, neighbour in flight {neighbour_in_flight}");

            let mut pass = first.pass(Duration::MAX);
            assert!(!poll_once(&mut pass).await, "{case}");
            assert_eq!(first.is_held(), gives, "{case}: the slot is held through the pause only when giving way");
            let mut take = Box::pin(second.take());
            assert_eq!(poll_once(&mut take).await, !gives, "{case}: the tenant's other guest gets the slot only when not giving way");
            if gives {
                // The pause over, the slot goes to the other guest (queued first), then back.
                let (gave, ()) = tokio::join!(pass.as_mut(), async {
                    take.as_mut().await;
                    assert!(!first.is_held(), "{case}: one guest of the tenant at a time");
                    second.give_back();
                });
                assert!(gave, "{case}: gave way");
                assert!(first.is_held(), "{case}");
            } else {
                second.give_back();
                assert!(!pass.as_mut().await, "{case}: did not give way");
            }
            drop(neighbour);
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn run_time_counts_the_turns_held_and_a_tenant_arrives_with_the_credit_at_most() {
        let shares = CpuShares::new(1);
        let hostile = shares.turn("hostile");
        hostile.take().await;
        hostile.ran(ms(3_000));
        hostile.give_back();
        assert!(hostile.run_time() >= ms(3_000), "the time held and the time added: {:?}", hostile.run_time());
        // The neighbour arrives while the hostile tenant is in flight: the credit behind it, no more.
        let neighbour = shares.turn("neighbour");
        assert_eq!(neighbour.run_time() + ARRIVAL_CREDIT, hostile.run_time());
        // A second invocation of the neighbour while one is in flight keeps its time.
        neighbour.ran(ms(300));
        let again = shares.turn("neighbour");
        assert_eq!(again.run_time() + ARRIVAL_CREDIT, hostile.run_time() + ms(300));
        shares.set_contended(true);
        assert!(hostile.gives_way(), "ahead of the neighbour in flight");
        drop((neighbour, again));
        assert!(!hostile.gives_way(), "the neighbour's invocations ended: nobody to give way to");
        // Back from idle, the neighbour starts where it was: it is less than the credit behind.
        let neighbour = shares.turn("neighbour");
        assert_eq!(neighbour.run_time() + ARRIVAL_CREDIT, hostile.run_time() + ms(300));
        neighbour.ran(ARRIVAL_CREDIT - ms(300) - LEAD + ms(1));
        assert!(!hostile.gives_way(), "less than LEAD ahead");
        shares.set_contended(false);
        neighbour.ran(ms(5_000));
        assert!(!neighbour.gives_way(), "far ahead, but nobody waits for a core");
        shares.set_contended(true);
        assert!(neighbour.gives_way(), "far ahead on a contended CPU");
    }
}

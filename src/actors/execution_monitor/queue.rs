//! `ProviderQueue`: one provider's FIFO queue, its concurrency limit and its start-rate
//! token bucket. Pure bookkeeping with the clock passed in, so it is tested alone; the
//! ExecutionMonitor asks it what may start next after every change.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::domain::{ExecutionId, ProviderLimits};

/// What the head of the queue may do now.
#[derive(Debug, PartialEq, Eq)]
pub enum NextStart {
    /// Start this one (it has left the queue and holds a slot).
    Start(ExecutionId),
    /// The head waits for a start token; ask again after this long.
    WaitFor(Duration),
    /// Nothing can start: the queue is empty, its head is not stored yet, or every slot
    /// is taken. A finish, a store commit or a limit change will ask again.
    Idle,
}

#[derive(Debug)]
struct Waiting {
    id: ExecutionId,
    /// Stored in the database: only then may it start.
    stored: bool,
}

#[derive(Debug)]
pub struct ProviderQueue {
    limits: ProviderLimits,
    waiting: VecDeque<Waiting>,
    /// Executions holding a slot: starting, running or paused.
    running: u32,
    /// Executions given a slot whose process has not started yet (their start snapshot
    /// is being taken). Under a start rate the next one waits for them, so the rate
    /// spaces the processes' real starts, not the grants.
    unstarted: u32,
    /// Start tokens, 0 to 1: the bucket is one deep, so starts are evenly spaced at
    /// 60 / rate_per_minute seconds, counted from each process's start.
    tokens: f64,
    refilled_at: Instant,
}

impl ProviderQueue {
    pub fn new(limits: ProviderLimits, now: Instant) -> Self {
        ProviderQueue { limits, waiting: VecDeque::new(), running: 0, unstarted: 0, tokens: 1.0, refilled_at: now }
    }

    pub fn limits(&self) -> ProviderLimits {
        self.limits
    }

    pub fn set_limits(&mut self, limits: ProviderLimits, now: Instant) {
        self.refill(now);
        self.limits = limits;
    }

    pub fn running(&self) -> u32 {
        self.running
    }

    pub fn queued(&self) -> u32 {
        self.waiting.len() as u32
    }

    /// Joins the back of the queue.
    pub fn push(&mut self, id: ExecutionId, stored: bool) {
        self.waiting.push_back(Waiting { id, stored });
    }

    /// The execution's row is committed; it may start when its turn comes.
    pub fn mark_stored(&mut self, id: ExecutionId) {
        if let Some(w) = self.waiting.iter_mut().find(|w| w.id == id) {
            w.stored = true;
        }
    }

    /// Leaves the queue (cancelled); false if it was not waiting.
    pub fn remove(&mut self, id: ExecutionId) -> bool {
        let before = self.waiting.len();
        self.waiting.retain(|w| w.id != id);
        self.waiting.len() != before
    }

    /// The waiting executions in order, the next to start first.
    pub fn order(&self) -> impl Iterator<Item = ExecutionId> + '_ {
        self.waiting.iter().map(|w| w.id)
    }

    /// A slot came free (an execution ended).
    pub fn release(&mut self) {
        self.running = self.running.saturating_sub(1);
    }

    /// The process of an execution given a slot has started (or failed to): the start
    /// rate counts from now. True when the next in line was held back for it (under a
    /// start rate), so the caller should ask again.
    pub fn started(&mut self, now: Instant) -> bool {
        self.unstarted = self.unstarted.saturating_sub(1);
        if self.limits.rate_per_minute == 0 {
            return false;
        }
        self.refill(now);
        self.tokens = 0.0;
        true
    }

    /// An execution given a slot leaves before its process starts (cancelled while its
    /// start snapshot was taken, or the daemon is stopping): the slot is given back and
    /// no start is counted.
    pub fn abandon_start(&mut self) {
        self.unstarted = self.unstarted.saturating_sub(1);
        self.release();
        if self.limits.rate_per_minute > 0 {
            self.tokens = 1.0;
        }
    }

    /// Takes a slot for an execution that is already running (recovery, resume).
    pub fn occupy(&mut self) {
        self.running += 1;
    }

    /// Decides about the head of the queue.
    pub fn next_start(&mut self, now: Instant) -> NextStart {
        match self.waiting.front() {
            Some(head) if head.stored => {}
            _ => return NextStart::Idle,
        }
        if self.limits.max_concurrent > 0 && self.running >= self.limits.max_concurrent {
            return NextStart::Idle;
        }
        if self.limits.rate_per_minute > 0 {
            if self.unstarted > 0 {
                // `started` or `abandon_start` will ask again.
                return NextStart::Idle;
            }
            self.refill(now);
            if self.tokens < 1.0 {
                let per_second = self.limits.rate_per_minute as f64 / 60.0;
                let wait = (1.0 - self.tokens) / per_second;
                // Round up to the millisecond, so the next look finds a whole token.
                return NextStart::WaitFor(Duration::from_millis((wait * 1000.0).ceil() as u64 + 1));
            }
            self.tokens -= 1.0;
        }
        let head = self.waiting.pop_front().expect("checked above");
        self.running += 1;
        self.unstarted += 1;
        NextStart::Start(head.id)
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled_at).as_secs_f64();
        self.refilled_at = now;
        if self.limits.rate_per_minute > 0 {
            self.tokens = (self.tokens + elapsed * self.limits.rate_per_minute as f64 / 60.0).min(1.0);
        } else {
            self.tokens = 1.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_concurrent: u32, rate_per_minute: u32) -> ProviderLimits {
        ProviderLimits { max_concurrent, rate_per_minute, ..ProviderLimits::default() }
    }

    #[test]
    fn starts_in_order_up_to_the_limit() {
        let now = Instant::now();
        let mut q = ProviderQueue::new(limits(2, 0), now);
        for i in 1..=3 {
            q.push(ExecutionId(i), true);
        }
        assert_eq!(q.next_start(now), NextStart::Start(ExecutionId(1)));
        assert_eq!(q.next_start(now), NextStart::Start(ExecutionId(2)));
        assert_eq!(q.next_start(now), NextStart::Idle);
        q.release();
        assert_eq!(q.next_start(now), NextStart::Start(ExecutionId(3)));
        assert_eq!(q.next_start(now), NextStart::Idle);
    }

    #[test]
    fn an_unstored_head_holds_the_line() {
        let now = Instant::now();
        let mut q = ProviderQueue::new(limits(0, 0), now);
        q.push(ExecutionId(1), false);
        q.push(ExecutionId(2), true);
        assert_eq!(q.next_start(now), NextStart::Idle);
        q.mark_stored(ExecutionId(1));
        assert_eq!(q.next_start(now), NextStart::Start(ExecutionId(1)));
        assert_eq!(q.next_start(now), NextStart::Start(ExecutionId(2)));
    }

    #[test]
    fn the_rate_spaces_starts_evenly() {
        let t0 = Instant::now();
        let mut q = ProviderQueue::new(limits(0, 60), t0);
        q.push(ExecutionId(1), true);
        q.push(ExecutionId(2), true);
        assert_eq!(q.next_start(t0), NextStart::Start(ExecutionId(1)));
        q.started(t0);
        match q.next_start(t0 + Duration::from_millis(250)) {
            NextStart::WaitFor(wait) => assert!((750..=752).contains(&wait.as_millis()), "{wait:?}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(q.next_start(t0 + Duration::from_secs(1)), NextStart::Start(ExecutionId(2)));
    }

    #[test]
    fn the_rate_counts_from_the_process_start_not_the_grant() {
        let t0 = Instant::now();
        let mut q = ProviderQueue::new(limits(0, 60), t0);
        for i in 1..=3 {
            q.push(ExecutionId(i), true);
        }
        assert_eq!(q.next_start(t0), NextStart::Start(ExecutionId(1)));
        // Its start snapshot takes 3 s: nothing else is granted meanwhile.
        assert_eq!(q.next_start(t0 + Duration::from_secs(2)), NextStart::Idle);
        q.started(t0 + Duration::from_secs(3));
        match q.next_start(t0 + Duration::from_secs(3)) {
            NextStart::WaitFor(wait) => assert!((1000..=1002).contains(&wait.as_millis()), "{wait:?}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(q.next_start(t0 + Duration::from_secs(4)), NextStart::Start(ExecutionId(2)));
        // One cancelled before its start counts no start and gives its slot back.
        q.abandon_start();
        assert_eq!(q.running(), 1);
        assert_eq!(q.next_start(t0 + Duration::from_secs(4)), NextStart::Start(ExecutionId(3)));
    }

    #[test]
    fn removal_and_positions() {
        let now = Instant::now();
        let mut q = ProviderQueue::new(limits(1, 0), now);
        for i in 1..=3 {
            q.push(ExecutionId(i), true);
        }
        assert!(q.remove(ExecutionId(2)));
        assert!(!q.remove(ExecutionId(2)));
        assert_eq!(q.order().collect::<Vec<_>>(), vec![ExecutionId(1), ExecutionId(3)]);
        q.set_limits(limits(0, 0), now);
        assert_eq!(q.next_start(now), NextStart::Start(ExecutionId(1)));
        assert_eq!(q.next_start(now), NextStart::Start(ExecutionId(3)));
    }
}

//! Warm instances of one plugin, reused across calls within two bounds: an instance serves at
//! most a fixed number of calls (so a guest's leaks and grown memory are shed), and the pool
//! keeps at most a fixed number idle (extra instances made under a burst are dropped).
//! A trapped instance is never given back: the caller drops it.

use std::ops::{Deref, DerefMut};

use parking_lot::Mutex;

/// Idle instances, newest last.
pub(super) struct InstancePool<T> {
    idle: Mutex<Vec<Pooled<T>>>,
    /// The most instances kept idle.
    idle_max: usize,
    /// Calls after which an instance is dropped instead of kept.
    calls_per_instance_max: u32,
}

/// An instance and the calls it has served.
pub(super) struct Pooled<T> {
    value: T,
    calls: u32,
}

impl<T> Pooled<T> {
    /// A fresh instance that has served no call.
    pub(super) fn fresh(value: T) -> Pooled<T> {
        Pooled { value, calls: 0 }
    }
}

impl<T> Deref for Pooled<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> DerefMut for Pooled<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

impl<T> InstancePool<T> {
    /// An empty pool keeping at most `idle_max` instances, each for at most
    /// `calls_per_instance_max` calls.
    pub(super) fn new(idle_max: usize, calls_per_instance_max: u32) -> InstancePool<T> {
        InstancePool { idle: Mutex::new(Vec::new()), idle_max, calls_per_instance_max }
    }

    /// An idle instance, if there is one.
    pub(super) fn take(&self) -> Option<Pooled<T>> {
        self.idle.lock().pop()
    }

    /// Gives back an instance that has just served a call; it is dropped if it has served its
    /// last call or the pool is full.
    pub(super) fn give_back(&self, mut pooled: Pooled<T>) {
        pooled.calls += 1;
        if pooled.calls >= self.calls_per_instance_max {
            return;
        }
        let mut idle = self.idle.lock();
        if idle.len() < self.idle_max {
            idle.push(pooled);
        }
    }

    /// How many instances are idle.
    #[cfg(test)]
    fn idle_len(&self) -> usize {
        self.idle.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves an instance is reused until it has served `calls_per_instance_max` calls, and then
    // dropped, so the next call gets a fresh one.
    #[test]
    fn instances_retire_after_their_last_call() {
        let pool = InstancePool::new(4, 3);
        let mut instance = Pooled::fresh("first");
        for served in 1..3 {
            pool.give_back(instance);
            assert_eq!(pool.idle_len(), 1, "kept after call {served}");
            instance = pool.take().expect("the same instance");
            assert_eq!(*instance, "first");
        }
        pool.give_back(instance);
        assert_eq!(pool.idle_len(), 0, "dropped after its third call");
        assert!(pool.take().is_none());
    }

    // Proves the pool keeps at most `idle_max` instances: those made under a burst beyond it
    // are dropped when given back, and the newest kept is reused first.
    #[test]
    fn the_pool_keeps_at_most_idle_max() {
        let pool = InstancePool::new(2, u32::MAX);
        for value in 0..5 {
            pool.give_back(Pooled::fresh(value));
        }
        assert_eq!(pool.idle_len(), 2);
        assert_eq!(pool.take().map(|pooled| *pooled), Some(1));
        assert_eq!(pool.take().map(|pooled| *pooled), Some(0));
        assert!(pool.take().is_none());
    }

    // Proves the bounds the plugins run with keep a pool and an instance's life finite.
    #[test]
    fn the_configured_bounds_are_finite() {
        use crate::plugin::limits::{CALLS_PER_INSTANCE_MAX, INSTANCES_PER_POOL_MAX};
        let pool = InstancePool::new(INSTANCES_PER_POOL_MAX, CALLS_PER_INSTANCE_MAX);
        for value in 0..INSTANCES_PER_POOL_MAX + 10 {
            pool.give_back(Pooled::fresh(value));
        }
        assert_eq!(pool.idle_len(), INSTANCES_PER_POOL_MAX);
        let mut instance = pool.take().expect("idle");
        instance.calls = CALLS_PER_INSTANCE_MAX - 1;
        pool.give_back(instance);
        assert_eq!(pool.idle_len(), INSTANCES_PER_POOL_MAX - 1);
    }
}

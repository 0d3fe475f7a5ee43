//! Built-in rate limiting: per scene, a token bucket (`scene_per_second` refill,
//! `scene_burst` capacity); per user in a scene, at most `user_max` grants per fixed window of
//! `user_window_seconds`.
//!
//! The state is in memory, per host: rate limits protect this host and the stores behind it,
//! and are not money. The state of a scene survives hot reloads (it is keyed by activity and
//! scene id), and new settings apply from the next request.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::config::{RateLimit, Scene};

/// The most users one scene tracks in one window. A window cannot see more users than the scene's
/// rate lets through, so this bound only bites for a scene configured beyond it; then further
/// new users are refused until the window turns, which errs on the side of the budget.
pub const USERS_PER_WINDOW_MAX: usize = 1_000_000;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateRejection {
    /// The scene's bucket is empty.
    Scene,
    /// The user has had `user_max` grants in this window.
    User,
}

#[derive(Debug)]
struct Bucket {
    /// Thousandths of a token, so refill needs no floating point.
    tokens_milli: u64,
    last_ms: u64,
}

#[derive(Debug, Default)]
struct UserWindow {
    start_ms: u64,
    counts: HashMap<i64, u32>,
}

#[derive(Debug)]
struct SceneState {
    bucket: Mutex<Bucket>,
    users: Mutex<UserWindow>,
}

/// The rate state of every scene on this host.
#[derive(Debug, Default)]
pub struct RateLimiter {
    scenes: RwLock<HashMap<String, HashMap<String, Arc<SceneState>>>>,
}

/// A request let through. Dropping the permit gives it back, so that a grant refused by a later
/// step consumes nothing whichever way that step returns; [`RatePermit::keep`] keeps it once the
/// grant is stored.
#[derive(Debug)]
#[must_use = "dropping a permit gives it back at once"]
pub struct RatePermit {
    state: Option<Arc<SceneState>>,
    act_id: i64,
}

impl RateLimiter {
    fn state(&self, scene: &Scene, limit: &RateLimit, now_ms: u64) -> Arc<SceneState> {
        if let Some(state) = self.scenes.read().get(&scene.activity_id).and_then(|scenes| scenes.get(&scene.id)) {
            return state.clone();
        }
        let mut scenes = self.scenes.write();
        scenes
            .entry(scene.activity_id.clone())
            .or_default()
            .entry(scene.id.clone())
            .or_insert_with(|| {
                Arc::new(SceneState {
                    bucket: Mutex::new(Bucket { tokens_milli: u64::from(limit.scene_burst) * 1000, last_ms: now_ms }),
                    users: Mutex::new(UserWindow::default()),
                })
            })
            .clone()
    }

    /// Lets one grant for `act_id` through `scene`, or says why not.
    pub fn acquire(&self, scene: &Scene, act_id: i64, now_ms: u64) -> Result<RatePermit, RateRejection> {
        let Some(limit) = &scene.rate_limit else { return Ok(RatePermit { state: None, act_id }) };
        let state = self.state(scene, limit, now_ms);
        {
            let mut bucket = state.bucket.lock();
            let capacity = u64::from(limit.scene_burst) * 1000;
            let elapsed_ms = now_ms.saturating_sub(bucket.last_ms);
            bucket.tokens_milli = capacity
                .min(bucket.tokens_milli.saturating_add(elapsed_ms.saturating_mul(u64::from(limit.scene_per_second))));
            bucket.last_ms = bucket.last_ms.max(now_ms);
            if bucket.tokens_milli < 1000 {
                return Err(RateRejection::Scene);
            }
            bucket.tokens_milli -= 1000;
        }
        let window_ms = u64::from(limit.user_window_seconds) * 1000;
        let mut users = state.users.lock();
        if now_ms >= users.start_ms + window_ms {
            users.start_ms = now_ms - now_ms % window_ms;
            users.counts.clear();
        }
        let full = users.counts.len() >= USERS_PER_WINDOW_MAX;
        let count = match users.counts.get_mut(&act_id) {
            Some(count) => count,
            None if full => {
                drop(users);
                refund_bucket(&state);
                return Err(RateRejection::User);
            }
            None => users.counts.entry(act_id).or_insert(0),
        };
        if *count >= limit.user_max {
            drop(users);
            refund_bucket(&state);
            return Err(RateRejection::User);
        }
        *count += 1;
        drop(users);
        Ok(RatePermit { state: Some(state), act_id })
    }
}

fn refund_bucket(state: &SceneState) {
    let mut bucket = state.bucket.lock();
    bucket.tokens_milli = bucket.tokens_milli.saturating_add(1000);
}

impl RatePermit {
    /// Keeps the permit: the grant went through.
    pub fn keep(mut self) {
        self.state = None;
    }

    /// Runs `work`, which may store the grant, keeping the permit if the caller gives up on it
    /// midway (the request's future dropped, say on a client disconnect): the grant may have
    /// been stored, and a permit is never given back for a grant that went through. Once `work`
    /// answers, the permit is back to being given back on drop unless kept.
    ///
    /// `work` comes pinned by the caller, which holds it: taken by value, this `async fn` would
    /// hold it twice, as its argument and as what it awaits (BENCHMARKS.md, "Futures moved, not
    /// copied").
    pub async fn kept_if_abandoned<F: Future>(&mut self, work: Pin<&mut F>) -> F::Output {
        /// Keeps the permit when dropped before `work` answered.
        struct Abandoned<'a>(Option<&'a mut RatePermit>);
        impl Drop for Abandoned<'_> {
            fn drop(&mut self) {
                if let Some(permit) = self.0.take() {
                    permit.state = None;
                }
            }
        }
        let mut abandoned = Abandoned(Some(self));
        let answer = work.await;
        abandoned.0 = None;
        answer
    }

    /// A permit that holds nothing: for scenes whose rate limit a plugin decided.
    pub fn unlimited() -> RatePermit {
        RatePermit { state: None, act_id: 0 }
    }
}

impl Drop for RatePermit {
    /// Gives the permit back: its grant was refused (or abandoned) after it was let through.
    fn drop(&mut self) {
        let Some(state) = self.state.take() else { return };
        refund_bucket(&state);
        if let Some(count) = state.users.lock().counts.get_mut(&self.act_id) {
            *count = count.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AmountRule, ScenePlugins};

    /// A scene that lets one grant through, and one per user per minute.
    fn scene_of_one() -> Scene {
        Scene {
            activity_id: "eve".into(),
            activity_name: "Eve".into(),
            award_type: "cash".into(),
            award_id: "cash-1".into(),
            id: "eve-rain".into(),
            name: "Eve rain".into(),
            app_ids: vec![1],
            amount: AmountRule::Fixed { cents: 1 },
            bill_copy: None,
            rate_limit: Some(RateLimit { scene_per_second: 1, scene_burst: 1, user_max: 1, user_window_seconds: 60 }),
            inventory: None,
            compensation: None,
            reconciliation: None,
            plugins: ScenePlugins::default(),
            version: "1".into(),
        }
    }

    // Proves a dropped permit gives back both the scene's token and the user's count: the same
    // user is let through again at the same instant.
    #[test]
    fn a_dropped_permit_is_refunded() {
        let limiter = RateLimiter::default();
        let scene = scene_of_one();
        let permit = limiter.acquire(&scene, 7, 1_000).expect("the bucket starts full");
        assert_eq!(limiter.acquire(&scene, 8, 1_000).unwrap_err(), RateRejection::Scene);
        drop(permit);
        let again = limiter.acquire(&scene, 7, 1_000).expect("the refund restored the token and the user's count");
        again.keep();
    }

    // Proves a kept permit stays spent: neither the scene's token nor the user's count comes back.
    #[test]
    fn a_kept_permit_is_not_refunded() {
        let limiter = RateLimiter::default();
        let scene = scene_of_one();
        limiter.acquire(&scene, 7, 1_000).expect("the bucket starts full").keep();
        assert_eq!(limiter.acquire(&scene, 8, 1_000).unwrap_err(), RateRejection::Scene);
        // A second later the bucket has refilled, but the user's window still counts the grant.
        assert_eq!(limiter.acquire(&scene, 7, 2_000).unwrap_err(), RateRejection::User);
        limiter.acquire(&scene, 8, 2_000).expect("another user gets the refilled token").keep();
    }

    // Proves a permit whose grant was abandoned while it was being stored stays spent (the grant
    // may have been stored), while one whose store answered is given back on drop as before.
    #[tokio::test]
    async fn a_permit_abandoned_while_storing_is_kept() {
        let limiter = RateLimiter::default();
        let scene = scene_of_one();
        let mut permit = limiter.acquire(&scene, 7, 1_000).expect("the bucket starts full");
        {
            let mut pending = std::pin::pin!(std::future::pending::<()>());
            let storing = permit.kept_if_abandoned(pending.as_mut());
            let polled = futures_util::FutureExt::now_or_never(Box::pin(storing));
            assert!(polled.is_none(), "the store never answers");
        }
        drop(permit);
        assert_eq!(limiter.acquire(&scene, 8, 1_000).unwrap_err(), RateRejection::Scene, "kept, not refunded");

        let limiter = RateLimiter::default();
        let mut permit = limiter.acquire(&scene, 7, 1_000).expect("the bucket starts full");
        permit.kept_if_abandoned(std::pin::pin!(async {})).await;
        drop(permit);
        limiter.acquire(&scene, 8, 1_000).expect("the store answered, so the drop refunded").keep();
    }

    // Proves a permit for a scene without a built-in limit holds nothing to give back.
    #[test]
    fn an_unlimited_permit_holds_nothing() {
        drop(RatePermit::unlimited());
        let limiter = RateLimiter::default();
        let scene = Scene { rate_limit: None, ..scene_of_one() };
        for _ in 0..3 {
            drop(limiter.acquire(&scene, 7, 1_000).expect("no limit"));
        }
    }
}

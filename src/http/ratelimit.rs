//! Per-subject rate limits: one GCRA bucket per signed-in subject, its rate set by role
//! (`[rate_limits]`). Checked right after a token verifies, so an unauthenticated flood costs a
//! signature check and no bucket, and one busy subject cannot crowd out the others. A subject over its
//! rate gets 429 `rate_limited` with `Retry-After`.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::RateLimitConfig;

use super::auth::{Principal, Role, ROLES};

/// Every this many checks, buckets that have refilled completely are dropped, so the table holds only
/// subjects seen recently.
const SWEEP_EVERY_CHECKS: u64 = 4096;

pub struct RateLimits {
    /// By role, in the order of `ROLES`; `None` is no limit.
    limiters: Vec<Option<DefaultKeyedRateLimiter<String>>>,
    clock: DefaultClock,
    checks: AtomicU64,
}

impl RateLimits {
    pub fn new(config: &RateLimitConfig) -> RateLimits {
        let limiters = ROLES
            .iter()
            .map(|role| {
                let per_second = NonZeroU32::new(match role {
                    Role::Citizen => config.citizen,
                    Role::Officer => config.officer,
                    Role::Issuer => config.issuer,
                    Role::Auditor => config.auditor,
                    Role::Admin => config.admin,
                })?;
                let burst = per_second.saturating_mul(NonZeroU32::new(config.burst_seconds).unwrap_or(NonZeroU32::MIN));
                Some(DefaultKeyedRateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)))
            })
            .collect();
        RateLimits { limiters, clock: DefaultClock::default(), checks: AtomicU64::new(0) }
    }

    /// `Err(wait)` if the principal has used up its rate; the wait is when its next request would pass.
    pub fn check(&self, principal: &Principal) -> Result<(), Duration> {
        let index = ROLES.iter().position(|role| *role == principal.role).unwrap_or_default();
        let Some(limiter) = self.limiters.get(index).and_then(Option::as_ref) else { return Ok(()) };
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY_CHECKS == SWEEP_EVERY_CHECKS - 1 {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        limiter.check_key(&principal.subject).map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(role: Role, subject: &str) -> Principal {
        Principal { subject: subject.into(), role, agency: None, owner: None, dev: false, expires_at: 0 }
    }

    #[test]
    fn each_subject_has_its_own_bucket_and_unlimited_roles_are_never_refused() {
        let config = RateLimitConfig { citizen: 2, issuer: 0, burst_seconds: 3, ..RateLimitConfig::default() };
        let limits = RateLimits::new(&config);
        let alice = principal(Role::Citizen, "alice");
        for n in 0..6 {
            assert!(limits.check(&alice).is_ok(), "request {n} is within the burst of 6");
        }
        let wait = limits.check(&alice).expect_err("the seventh is over the burst");
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(500), "one token every 500 ms: {wait:?}");
        assert!(limits.check(&principal(Role::Citizen, "bob")).is_ok(), "bob's bucket is his own");
        let agency = principal(Role::Issuer, "agency-system");
        assert!((0..10_000).all(|_| limits.check(&agency).is_ok()), "issuers are not limited at 0");
    }
}

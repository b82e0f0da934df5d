//! A tenant's quotas (`[[quotas]]`), so that one tenant cannot take what
//! the others need: how many of its transactions may be in flight on a
//! node, how many requests per second it may make (a token bucket), and
//! what share of the node's instances its transactions may hold.
//!
//! ```toml
//! [[quotas]]                 # without `tenant`: every tenant without a rule of its own
//! max_in_flight = 64
//! requests_per_second = 200
//! burst = 400                # the bucket's size; requests_per_second if unset
//! instance_share = 0.5       # of the node's instances (the runtime's max_instances)
//!
//! [[quotas]]
//! tenant = "acme"
//! max_in_flight = 16
//! ```
//!
//! Over a quota, a request is answered `429 quota_exceeded` with
//! `Retry-After`. Quotas are per node: with several nodes, a tenant may
//! have that much on each.

use crate::ServiceError;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};
use serde::Deserialize;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// One `[[quotas]]` rule.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    /// The tenant it applies to; every tenant without a rule of its own
    /// if unset.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Transactions accepted on this node and not ended.
    #[serde(default)]
    pub max_in_flight: Option<u32>,
    /// Requests per second, refilled steadily.
    #[serde(default)]
    pub requests_per_second: Option<u32>,
    /// How many requests may come at once after a quiet spell.
    #[serde(default)]
    pub burst: Option<u32>,
    /// The share of the node's instances the tenant's transactions may
    /// hold at once, in (0, 1].
    #[serde(default)]
    pub instance_share: Option<f64>,
}

impl QuotaConfig {
    /// Checks the bounds TOML types do not; `at` names the rule.
    pub(crate) fn check(&self, at: &str) -> Result<(), String> {
        let bounded = [
            ("max_in_flight", self.max_in_flight),
            ("requests_per_second", self.requests_per_second),
            ("burst", self.burst),
        ];
        for (setting, value) in bounded {
            if let Some(value) = value
                && !(1..=1_000_000).contains(&value)
            {
                return Err(format!("{at}: {setting} = {value} is outside 1..=1000000"));
            }
        }
        if self.burst.is_some() && self.requests_per_second.is_none() {
            return Err(format!("{at}: burst without requests_per_second"));
        }
        if let Some(share) = self.instance_share
            && !(share > 0.0 && share <= 1.0)
        {
            return Err(format!("{at}: instance_share = {share} is outside (0, 1]"));
        }
        if self.max_in_flight.is_none() && self.requests_per_second.is_none() && self.instance_share.is_none() {
            return Err(format!("{at} sets no quota"));
        }
        Ok(())
    }

    /// The instances a tenant may hold out of `max_instances`: at least
    /// two, a transaction's twins.
    pub(crate) fn instances(&self, max_instances: u32) -> Option<u32> {
        self.instance_share.map(|share| {
            let limit = (f64::from(max_instances) * share).ceil();
            // A share is at most 1, so the product fits.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "0 < limit <= max_instances")]
            let limit = limit as u32;
            limit.max(2)
        })
    }
}

/// A tenant's quotas on this node and their use.
#[derive(Debug)]
pub(crate) struct TenantQuota {
    rule: QuotaConfig,
    instances: Option<u32>,
    rate: Option<DefaultDirectRateLimiter>,
    in_flight: Arc<AtomicU32>,
    refused_rate: AtomicU64,
    refused_in_flight: AtomicU64,
}

/// A quota's use, as the API and the operator page show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct QuotaUsage {
    /// Transactions in flight on this node now.
    pub in_flight: u32,
    /// Their limit, if any.
    pub max_in_flight: Option<u32>,
    /// The request rate's limit, if any.
    pub requests_per_second: Option<u32>,
    /// The token bucket's size.
    pub burst: Option<u32>,
    /// The instances the tenant's transactions may hold at once, if limited.
    pub max_instances: Option<u32>,
    /// Requests refused for the rate since the node started.
    pub refused_for_rate: u64,
    /// Submissions refused for the in-flight limit since the node started.
    pub refused_for_in_flight: u64,
}

impl TenantQuota {
    /// The quota of `rule` (none if `None`), on a node of `max_instances`.
    pub(crate) fn new(rule: Option<&QuotaConfig>, max_instances: u32) -> Self {
        let rule = rule.cloned().unwrap_or_default();
        let rate = rule.requests_per_second.and_then(NonZeroU32::new).map(|per_second| {
            let burst = rule.burst.and_then(NonZeroU32::new).unwrap_or(per_second);
            DefaultDirectRateLimiter::direct(Quota::per_second(per_second).allow_burst(burst))
        });
        Self {
            instances: rule.instances(max_instances),
            rule,
            rate,
            in_flight: Arc::default(),
            refused_rate: AtomicU64::new(0),
            refused_in_flight: AtomicU64::new(0),
        }
    }

    /// The instances the tenant's runtime may hold, if limited.
    pub(crate) fn instances(&self) -> Option<u32> {
        self.instances
    }

    /// Takes a request from the bucket, or says when to come back.
    pub(crate) fn request(&self) -> Result<(), ServiceError> {
        let Some(rate) = &self.rate else { return Ok(()) };
        rate.check().map_err(|not_until| {
            self.refused_rate.fetch_add(1, Ordering::Relaxed);
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ServiceError::QuotaExceeded {
                message: format!(
                    "the tenant's {} requests per second are spent: retry in {} ms",
                    self.rule.requests_per_second.unwrap_or_default(),
                    wait.as_millis().max(1)
                ),
                retry_after: wait,
            }
        })
    }

    /// A place for one more transaction in flight, held until dropped.
    pub(crate) fn slot(&self) -> Result<InFlight, ServiceError> {
        let max = self.rule.max_in_flight.unwrap_or(u32::MAX);
        let taken =
            self.in_flight.fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| (now < max).then_some(now + 1));
        match taken {
            Ok(_) => Ok(InFlight(self.in_flight.clone())),
            Err(now) => {
                self.refused_in_flight.fetch_add(1, Ordering::Relaxed);
                Err(ServiceError::QuotaExceeded {
                    message: format!("the tenant has {now} transactions in flight, its limit: retry once one ends"),
                    retry_after: Duration::from_secs(1),
                })
            }
        }
    }

    /// The quotas and their use now.
    pub(crate) fn usage(&self) -> QuotaUsage {
        QuotaUsage {
            in_flight: self.in_flight.load(Ordering::Relaxed),
            max_in_flight: self.rule.max_in_flight,
            requests_per_second: self.rule.requests_per_second,
            burst: self.rule.requests_per_second.map(|per_second| self.rule.burst.unwrap_or(per_second)),
            max_instances: self.instances,
            refused_for_rate: self.refused_rate.load(Ordering::Relaxed),
            refused_for_in_flight: self.refused_in_flight.load(Ordering::Relaxed),
        }
    }
}

/// A transaction in flight, counted against its tenant's quota until it
/// ends (dropped).
#[derive(Debug)]
pub(crate) struct InFlight(Arc<AtomicU32>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn in_flight_places_are_given_back_when_their_transactions_end() {
        let quota = TenantQuota::new(Some(&QuotaConfig { max_in_flight: Some(2), ..QuotaConfig::default() }), 256);
        let first = quota.slot().unwrap();
        let _second = quota.slot().unwrap();
        let refused = quota.slot().unwrap_err();
        assert!(matches!(refused, ServiceError::QuotaExceeded { .. }), "{refused:?}");
        drop(first);
        assert!(quota.slot().is_ok());
        assert_eq!(quota.usage().refused_for_in_flight, 1);
    }

    #[test]
    fn the_bucket_takes_its_burst_then_refuses_with_a_wait() {
        let rule = QuotaConfig { requests_per_second: Some(1), burst: Some(3), ..QuotaConfig::default() };
        let quota = TenantQuota::new(Some(&rule), 256);
        for _ in 0..3 {
            quota.request().unwrap();
        }
        match quota.request() {
            Err(ServiceError::QuotaExceeded { retry_after, .. }) => {
                assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(1), "{retry_after:?}");
            }
            other => panic!("the fourth request within a second: {other:?}"),
        }
    }

    #[test]
    fn an_instance_share_is_at_least_one_instance() {
        let rule = |share| QuotaConfig { instance_share: Some(share), ..QuotaConfig::default() };
        assert_eq!(rule(0.5).instances(256), Some(128));
        assert_eq!(rule(0.001).instances(256), Some(2));
        assert_eq!(rule(1.0).instances(3), Some(3));
        assert!(rule(0.0).check("q").is_err());
        assert!(rule(1.5).check("q").is_err());
        assert!(rule(f64::NAN).check("q").is_err());
    }
}

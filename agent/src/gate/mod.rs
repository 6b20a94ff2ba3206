//! The gate: the one place where an action is allowed or denied, for every protocol.
//!
//! Protocols describe what a client asks for as an [`Action`] and hand it here with
//! the principal and the target; the gate answers with a [`Decision`] from the current
//! policy. Policy reloads swap the policy atomically: a decision is always made against
//! one whole policy, never a mix.

use crate::{
    identity::Principal,
    policy::{Decision, Policy},
};
use arc_swap::ArcSwap;
use serde::Serialize;
use std::sync::Arc;

/// What a client asks a target to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// Open a connection (the whole action for `tcp` targets).
    Connect,
}

/// Decides actions against the policy in force.
pub struct Gate {
    policy: ArcSwap<Policy>,
}

impl Gate {
    #[must_use]
    pub fn new(policy: Policy) -> Self {
        Self {
            policy: ArcSwap::from_pointee(policy),
        }
    }

    /// The policy in force.
    #[must_use]
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Puts `policy` in force for every decision from now on.
    pub fn replace_policy(&self, policy: Policy) {
        self.policy.store(Arc::new(policy));
    }

    /// Decides whether `principal` may do `action` on the target named `target`.
    #[must_use]
    pub fn decide(&self, principal: &Principal, target: &str, action: &Action) -> Decision {
        match action {
            Action::Connect => self.policy.load().decide(principal, target),
        }
    }
}

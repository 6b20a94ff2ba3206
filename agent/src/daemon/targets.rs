//! The protected set: every address of every target in the policy, host names
//! resolved (and re-resolved), pushed into the kernel's target map.

use crate::{
    intercept::Interceptor,
    policy::{Policy, Target, TargetAddress},
};
use arc_swap::ArcSwap;
use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, PoisonError},
};

/// Destination address → the protected target it belongs to.
#[derive(Default)]
pub struct TargetTable {
    by_addr: ArcSwap<HashMap<SocketAddr, Arc<Target>>>,
    /// Last good resolution per `host:port`: a failed lookup keeps these, so a DNS
    /// hiccup never drops protection for a target.
    resolved: Mutex<HashMap<(String, u16), Vec<SocketAddr>>>,
}

impl TargetTable {
    /// The target `dst` belongs to (IPv4-mapped addresses match their IPv4 form).
    #[must_use]
    pub fn lookup(&self, dst: SocketAddr) -> Option<Arc<Target>> {
        self.by_addr.load().get(&canonical(dst)).cloned()
    }

    /// How many addresses are protected.
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_addr.load().len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rebuilds the table from `policy` (resolving host names) and makes the kernel's
    /// target map match it.
    pub async fn refresh(
        &self,
        policy: &Policy,
        interceptor: &Interceptor,
    ) -> Result<(), crate::intercept::InterceptError> {
        let mut table = HashMap::new();
        for target in policy.targets() {
            let target = Arc::new(target.clone());
            for address in &target.addresses {
                for addr in self.resolve(address).await {
                    table.insert(canonical(addr), Arc::clone(&target));
                }
            }
        }
        let keys: HashSet<SocketAddr> = table.keys().copied().collect();
        interceptor.set_targets(&keys)?;
        self.by_addr.store(Arc::new(table));
        Ok(())
    }

    async fn resolve(&self, address: &TargetAddress) -> Vec<SocketAddr> {
        let (host, port) = match address {
            TargetAddress::Socket(a) => return vec![*a],
            TargetAddress::Host { host, port } => (host.clone(), *port),
        };
        let key = (host, port);
        let lookup = tokio::net::lookup_host((key.0.clone(), port)).await;
        match lookup {
            Ok(addrs) => {
                let addrs: Vec<SocketAddr> = addrs.collect();
                self.resolved
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(key, addrs.clone());
                addrs
            }
            Err(error) => {
                let kept = self
                    .resolved
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&key)
                    .cloned()
                    .unwrap_or_default();
                tracing::warn!(host = %key.0, port, %error, kept = kept.len(), "Cannot resolve target host; keeping its last addresses");
                kept
            }
        }
    }
}

/// IPv4-mapped IPv6 addresses in their IPv4 form, so both spellings find the target.
#[must_use]
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(addr, |v4| SocketAddr::new(IpAddr::V4(v4), addr.port())),
        IpAddr::V4(_) => addr,
    }
}

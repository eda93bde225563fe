//! A session's queue of undelivered messages, counted in its tenant's share.
//!
//! Each session's queue is bounded (`max_queued_messages`), but a tenant has many sessions: its
//! devices, and as many applications as its tokens open. So that one tenant cannot fill the
//! broker's memory for everyone else, the messages queued for all sessions of a tenant are
//! counted together and bounded by `max_queued_per_tenant`. Sessions of unscoped principals
//! (platform operators, open mode) are not counted.
//!
//! [`Queue`] keeps the count exact: every change to the queue goes through it (it hands out only
//! read access to the messages), and dropping it gives its messages back to the share.

use std::collections::{HashMap, VecDeque};
use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::message::Outgoing;

/// Messages queued for one tenant's sessions, all together.
pub(crate) type Share = Arc<AtomicUsize>;

/// Every tenant's [`Share`], created on first use. Lives as long as the broker.
#[derive(Debug, Default)]
pub(crate) struct TenantShares(Mutex<HashMap<Arc<str>, Share>>);

impl TenantShares {
    pub fn of(&self, tenant: &str) -> Share {
        let mut shares = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match shares.get(tenant) {
            Some(share) => share.clone(),
            None => shares.entry(Arc::from(tenant)).or_default().clone(),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Queue {
    items: VecDeque<Outgoing>,
    share: Option<Share>,
}

impl Deref for Queue {
    type Target = VecDeque<Outgoing>;

    fn deref(&self) -> &VecDeque<Outgoing> {
        &self.items
    }
}

impl Queue {
    /// Counts this queue in `share` from now on (the owner's tenant, known once it connects).
    pub fn count_in(&mut self, share: Option<Share>) {
        if let Some(old) = &self.share {
            old.fetch_sub(self.items.len(), Ordering::Relaxed);
        }
        if let Some(new) = &share {
            new.fetch_add(self.items.len(), Ordering::Relaxed);
        }
        self.share = share;
    }

    /// Whether the tenant's share holds `max` messages or more already.
    pub fn share_full(&self, max: usize) -> bool {
        self.share.as_ref().is_some_and(|s| s.load(Ordering::Relaxed) >= max)
    }

    pub fn push_back(&mut self, out: Outgoing) {
        self.items.push_back(out);
        self.add(1);
    }

    pub fn pop_front(&mut self) -> Option<Outgoing> {
        let out = self.items.pop_front()?;
        self.sub(1);
        Some(out)
    }

    pub fn clear(&mut self) {
        self.sub(self.items.len());
        self.items.clear();
    }

    pub fn retain(&mut self, keep: impl FnMut(&Outgoing) -> bool) {
        let before = self.items.len();
        self.items.retain(keep);
        self.sub(before - self.items.len());
    }

    fn add(&self, n: usize) {
        if let Some(share) = &self.share {
            share.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn sub(&self, n: usize) {
        if let Some(share) = &self.share {
            share.fetch_sub(n, Ordering::Relaxed);
        }
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        self.sub(self.items.len());
    }
}

//! `CertCache`: the TLS configurations already read from the store, and the names known to have
//! none, each for a while.

use std::{
    collections::HashMap,
    sync::{PoisonError, RwLock},
    time::{Duration, Instant},
};

use certbucket_core::Host;

/// Past this many names, expired and then negative entries are dropped before a new one is added,
/// so a flood of made-up SNIs cannot grow the cache without bound.
const MAX_ENTRIES: usize = 10_000;

/// What the cache knows about a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lookup<T> {
    /// A value read recently enough to use as is.
    Fresh(T),
    /// A value due for a re-read; still the one to serve if the re-read fails.
    Stale(T),
    /// The store was asked recently and had nothing usable: do not ask again yet.
    Missing,
    /// Never asked, or the negative entry expired.
    Unknown,
}

#[derive(Debug)]
struct Entry<T> {
    value: Option<T>,
    expires: Instant,
}

/// Per-host cache of TLS configurations with a short negative cache.
#[derive(Debug)]
pub(crate) struct CertCache<T> {
    entries: RwLock<HashMap<Host, Entry<T>>>,
    found_ttl: Duration,
    missing_ttl: Duration,
}

impl<T: Clone> CertCache<T> {
    /// A cache that re-reads found hosts after `found_ttl` and missing ones after `missing_ttl`.
    pub(crate) fn new(found_ttl: Duration, missing_ttl: Duration) -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
            found_ttl,
            missing_ttl,
        }
    }

    /// What is known about `host` at `now`.
    pub(crate) fn lookup(&self, host: &Host, now: Instant) -> Lookup<T> {
        // No code panics while holding the lock, so a poisoned map is still consistent.
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        match entries.get(host) {
            None => Lookup::Unknown,
            Some(Entry {
                value: Some(value),
                expires,
            }) if now < *expires => Lookup::Fresh(value.clone()),
            Some(Entry {
                value: Some(value), ..
            }) => Lookup::Stale(value.clone()),
            Some(Entry {
                value: None,
                expires,
            }) if now < *expires => Lookup::Missing,
            Some(Entry { value: None, .. }) => Lookup::Unknown,
        }
    }

    /// Records a value just read from the store.
    pub(crate) fn insert(&self, host: Host, value: T, now: Instant) {
        self.put(host, Some(value), now + self.found_ttl, now);
    }

    /// Records that the store has nothing usable for `host` (or could not be read).
    pub(crate) fn insert_missing(&self, host: Host, now: Instant) {
        self.put(host, None, now + self.missing_ttl, now);
    }

    /// Keeps serving `host`'s last good value after a failed re-read, and retries soon.
    pub(crate) fn keep(&self, host: &Host, now: Instant) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = entries.get_mut(host) {
            entry.expires = now + self.missing_ttl;
        }
    }

    /// Marks `host` for a re-read on its next lookup: a held certificate turns stale (and is
    /// kept if the re-read fails), a known absence is forgotten.
    pub(crate) fn invalidate(&self, host: &Host, now: Instant) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        match entries.get_mut(host) {
            Some(entry) if entry.value.is_some() => entry.expires = now,
            Some(_) => {
                entries.remove(host);
            }
            None => {}
        }
    }

    /// Forgets `host`, so the next lookup reads the store (e.g. once it has a certificate).
    pub(crate) fn forget(&self, host: &Host) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        entries.remove(host);
    }

    fn put(&self, host: Host, value: Option<T>, expires: Instant, now: Instant) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&host) {
            entries.retain(|_, e| e.value.is_some() || now < e.expires);
            if entries.len() >= MAX_ENTRIES {
                entries.retain(|_, e| e.value.is_some());
            }
        }
        entries.insert(host, Entry { value, expires });
    }

    /// Folds `f` over every value held, fresh or stale.
    pub(crate) fn fold<A>(&self, init: A, f: impl FnMut(A, &T) -> A) -> A {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries
            .values()
            .filter_map(|entry| entry.value.as_ref())
            .fold(init, f)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str) -> Host {
        Host::parse(name).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    #[test]
    fn found_and_missing_entries_expire() {
        let cache = CertCache::new(Duration::from_secs(300), Duration::from_secs(5));
        let t0 = Instant::now();
        let a = host("a.example.com");
        let b = host("b.example.com");
        assert_eq!(cache.lookup(&a, t0), Lookup::Unknown);

        cache.insert(a.clone(), 1, t0);
        cache.insert_missing(b.clone(), t0);
        let cases = [
            (&a, 0, Lookup::Fresh(1)),
            (&a, 299, Lookup::Fresh(1)),
            (&a, 300, Lookup::Stale(1)),
            (&b, 0, Lookup::Missing),
            (&b, 4, Lookup::Missing),
            (&b, 5, Lookup::Unknown),
        ];
        for (h, secs, want) in cases {
            assert_eq!(
                cache.lookup(h, t0 + Duration::from_secs(secs)),
                want,
                "{h} +{secs}s"
            );
        }

        let later = t0 + Duration::from_secs(400);
        cache.keep(&a, later);
        assert_eq!(cache.lookup(&a, later), Lookup::Fresh(1));
        assert_eq!(
            cache.lookup(&a, later + Duration::from_secs(5)),
            Lookup::Stale(1)
        );
    }

    #[test]
    fn a_flood_of_unknown_names_stays_bounded() {
        let cache = CertCache::new(Duration::from_secs(300), Duration::from_secs(5));
        let now = Instant::now();
        cache.insert(host("kept.example.com"), 7, now);
        for i in 0..(MAX_ENTRIES + 10) {
            cache.insert_missing(host(&format!("n{i}.example.com")), now);
        }
        assert!(cache.len() <= MAX_ENTRIES);
        assert_eq!(
            cache.lookup(&host("kept.example.com"), now),
            Lookup::Fresh(7)
        );
    }
}

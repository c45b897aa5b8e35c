//! `CertCache`: the TLS configurations already read from the store, and the names known to have
//! none, each for a while; bounded, evicting known absences first, then the least recently used.

use std::{
    collections::HashMap,
    sync::{
        PoisonError, RwLock,
        atomic::{AtomicU8, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use certbucket_core::Host;

/// The default bound on names held (certificates and known absences together).
pub(crate) const DEFAULT_CAPACITY: usize = 10_000;

/// A full cache evicts this fraction of its capacity at once, so a stream of new names costs one
/// scan per many inserts rather than one per insert.
const EVICT_FRACTION: usize = 64;

/// `Entry::refresh`: nobody is re-reading the entry.
const IDLE: u8 = 0;
/// Someone is re-reading it.
const REFRESHING: u8 = 1;
/// Someone is re-reading it, and the store changed since the re-read began.
const REFRESHING_DIRTY: u8 = 2;

/// What the cache knows about a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lookup<T> {
    /// A value to serve as is.
    Serve(T),
    /// A value due for a re-read: serve it, and re-read it (only this caller is told to, until
    /// the re-read ends with [`CertCache::insert`], [`CertCache::keep`] or an absence).
    ServeAndRefresh(T),
    /// The store was asked recently and had nothing usable: do not ask again yet.
    Missing,
    /// Never asked, or the negative entry expired.
    Unknown,
}

#[derive(Debug)]
struct Entry<T> {
    value: Option<T>,
    expires: Instant,
    /// Milliseconds since the cache's `base` of the last lookup or insert.
    last_used: AtomicU64,
    refresh: AtomicU8,
    /// Failed re-reads in a row, for the back-off.
    failures: u32,
}

/// Per-host cache of TLS configurations with a short negative cache.
///
/// Lookups take a shared lock and stamp the entry's use time with a relaxed store, so the hot path
/// never serialises handshakes; only inserts and evictions take the exclusive lock.
#[derive(Debug)]
pub(crate) struct CertCache<T> {
    entries: RwLock<HashMap<Host, Entry<T>>>,
    base: Instant,
    capacity: usize,
    found_ttl: Duration,
    missing_ttl: Duration,
}

impl<T: Clone> CertCache<T> {
    /// A cache of at most `capacity` names that re-reads found hosts after `found_ttl` and
    /// missing ones after `missing_ttl`.
    pub(crate) fn new(capacity: usize, found_ttl: Duration, missing_ttl: Duration) -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
            base: Instant::now(),
            capacity: capacity.max(1),
            found_ttl,
            missing_ttl,
        }
    }

    fn millis(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX)
    }

    /// What is known about `host` at `now`.
    pub(crate) fn lookup(&self, host: &Host, now: Instant) -> Lookup<T> {
        // No code panics while holding the lock, so a poisoned map is still consistent.
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = entries.get(host) else {
            return Lookup::Unknown;
        };
        let used = self.millis(now);
        // Skip the store when it would not change anything: a hot entry's cache line stays shared.
        if entry.last_used.load(Ordering::Relaxed) < used {
            entry.last_used.store(used, Ordering::Relaxed);
        }
        match &entry.value {
            Some(value) if now < entry.expires => Lookup::Serve(value.clone()),
            Some(value) => {
                let claimed = entry
                    .refresh
                    .compare_exchange(IDLE, REFRESHING, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok();
                if claimed {
                    Lookup::ServeAndRefresh(value.clone())
                } else {
                    Lookup::Serve(value.clone())
                }
            }
            None if now < entry.expires => Lookup::Missing,
            None => Lookup::Unknown,
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

    /// Keeps serving `host`'s last good value after a failed re-read, and retries later: after
    /// the negative period, doubling with each failure in a row, up to the found period.
    /// Returns how many re-reads in a row have failed.
    pub(crate) fn keep(&self, host: &Host, now: Instant) -> u32 {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = entries.get_mut(host) else {
            return 0;
        };
        entry.failures = entry.failures.saturating_add(1);
        let backoff = self
            .missing_ttl
            .saturating_mul(1 << (entry.failures - 1).min(16))
            .min(self.found_ttl);
        entry.expires = now + backoff;
        if entry.refresh.swap(IDLE, Ordering::AcqRel) == REFRESHING_DIRTY {
            // The store changed during the failed re-read: try the new version soon.
            entry.expires = now + self.missing_ttl.min(backoff);
        }
        entry.failures
    }

    /// The store has a new version of `host`: a held certificate turns due for a re-read (and
    /// is kept until one succeeds), a known absence is forgotten. Returns whether the caller
    /// should re-read it now (it holds a value and nobody else is re-reading it).
    pub(crate) fn invalidate(&self, host: &Host, now: Instant) -> bool {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        match entries.get_mut(host) {
            Some(entry) if entry.value.is_some() => {
                entry.expires = now;
                entry.failures = 0;
                match entry.refresh.compare_exchange(
                    IDLE,
                    REFRESHING,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => true,
                    Err(_) => {
                        // A re-read that began before the change may bring the old version:
                        // have it marked due again when it ends.
                        entry.refresh.store(REFRESHING_DIRTY, Ordering::Release);
                        false
                    }
                }
            }
            Some(_) => {
                entries.remove(host);
                false
            }
            None => false,
        }
    }

    /// Forgets `host`, so the next lookup reads the store (e.g. once it has a certificate).
    pub(crate) fn forget(&self, host: &Host) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        entries.remove(host);
    }

    fn put(&self, host: Host, value: Option<T>, mut expires: Instant, now: Instant) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = entries.get(&host)
            && value.is_some()
            && old.refresh.load(Ordering::Acquire) == REFRESHING_DIRTY
        {
            // Read before the store changed again: serve it, but re-read at the next lookup.
            expires = now;
        }
        if entries.len() >= self.capacity && !entries.contains_key(&host) {
            self.evict(&mut entries, now);
        }
        entries.insert(
            host,
            Entry {
                value,
                expires,
                last_used: AtomicU64::new(self.millis(now)),
                refresh: AtomicU8::new(IDLE),
                failures: 0,
            },
        );
    }

    /// Makes room for at least one entry: expired absences go first, then absences, then the
    /// certificates used longest ago.
    fn evict(&self, entries: &mut HashMap<Host, Entry<T>>, now: Instant) {
        entries.retain(|_, e| e.value.is_some() || now < e.expires);
        if entries.len() < self.capacity {
            return;
        }
        let count = (entries.len() + 1 - self.capacity).max(self.capacity / EVICT_FRACTION);
        let mut ranked: Vec<(bool, u64, &Host)> = entries
            .iter()
            .map(|(host, e)| (e.value.is_some(), e.last_used.load(Ordering::Relaxed), host))
            .collect();
        let victims: Vec<Host> = if count >= ranked.len() {
            ranked.iter().map(|(_, _, host)| (*host).clone()).collect()
        } else {
            ranked.select_nth_unstable_by_key(count - 1, |&(found, used, _)| (found, used));
            ranked[..count]
                .iter()
                .map(|(_, _, host)| (*host).clone())
                .collect()
        };
        for host in &victims {
            entries.remove(host);
        }
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

    fn cache(capacity: usize) -> CertCache<i32> {
        CertCache::new(capacity, Duration::from_secs(300), Duration::from_secs(5))
    }

    fn secs(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_secs(n)
    }

    #[test]
    fn found_and_missing_entries_expire() {
        let cache = cache(DEFAULT_CAPACITY);
        let t0 = Instant::now();
        let a = host("a.example.com");
        let b = host("b.example.com");
        assert_eq!(cache.lookup(&a, t0), Lookup::Unknown);

        cache.insert(a.clone(), 1, t0);
        cache.insert_missing(b.clone(), t0);
        let cases = [
            (&a, 0, Lookup::Serve(1)),
            (&a, 299, Lookup::Serve(1)),
            (&a, 300, Lookup::ServeAndRefresh(1)),
            // Someone is re-reading it: the others serve it as is.
            (&a, 301, Lookup::Serve(1)),
            (&b, 0, Lookup::Missing),
            (&b, 4, Lookup::Missing),
            (&b, 5, Lookup::Unknown),
        ];
        for (h, n, want) in cases {
            assert_eq!(cache.lookup(h, secs(t0, n)), want, "{h} +{n}s");
        }

        // Failed re-reads: kept, retried after 5 s, then 10 s, then 20 s.
        let mut at = 400;
        for wait in [5, 10, 20] {
            cache.keep(&a, secs(t0, at));
            assert_eq!(cache.lookup(&a, secs(t0, at + wait - 1)), Lookup::Serve(1));
            assert_eq!(
                cache.lookup(&a, secs(t0, at + wait)),
                Lookup::ServeAndRefresh(1),
                "retried {wait} s after a failure"
            );
            at += wait;
        }
        // A success resets the back-off.
        cache.insert(a.clone(), 2, secs(t0, at));
        assert_eq!(cache.lookup(&a, secs(t0, at + 299)), Lookup::Serve(2));
    }

    #[test]
    fn invalidation_asks_for_one_re_read_and_keeps_the_value() {
        let cache = cache(DEFAULT_CAPACITY);
        let t0 = Instant::now();
        let a = host("a.example.com");
        let gone = host("gone.example.com");
        cache.insert(a.clone(), 1, t0);
        cache.insert_missing(gone.clone(), t0);

        assert!(
            cache.invalidate(&a, secs(t0, 1)),
            "the first caller re-reads"
        );
        assert!(
            !cache.invalidate(&a, secs(t0, 1)),
            "only one re-read at a time"
        );
        // Until the re-read ends, the last good value is served.
        assert_eq!(cache.lookup(&a, secs(t0, 2)), Lookup::Serve(1));
        // The re-read began before the second change: its result is due again at once.
        cache.insert(a.clone(), 2, secs(t0, 3));
        assert_eq!(cache.lookup(&a, secs(t0, 3)), Lookup::ServeAndRefresh(2));
        cache.insert(a.clone(), 3, secs(t0, 4));
        assert_eq!(cache.lookup(&a, secs(t0, 5)), Lookup::Serve(3));

        assert!(!cache.invalidate(&gone, secs(t0, 1)));
        assert_eq!(cache.lookup(&gone, secs(t0, 1)), Lookup::Unknown);
    }

    #[test]
    fn a_full_cache_evicts_the_least_recently_used_certificate() {
        let cache = cache(3);
        let t0 = Instant::now();
        let [a, b, c, d] = ["a", "b", "c", "d"].map(|n| host(&format!("{n}.example.com")));
        cache.insert(a.clone(), 1, secs(t0, 0));
        cache.insert(b.clone(), 2, secs(t0, 1));
        cache.insert(c.clone(), 3, secs(t0, 2));
        // `a` is the oldest insert but was just used: `b` is the least recently used.
        assert_eq!(cache.lookup(&a, secs(t0, 3)), Lookup::Serve(1));
        cache.insert(d.clone(), 4, secs(t0, 4));

        assert_eq!(cache.len(), 3);
        assert_eq!(cache.lookup(&b, secs(t0, 5)), Lookup::Unknown, "b evicted");
        for (h, v) in [(&a, 1), (&c, 3), (&d, 4)] {
            assert_eq!(cache.lookup(h, secs(t0, 5)), Lookup::Serve(v), "{h} kept");
        }
    }

    #[test]
    fn absences_are_evicted_before_certificates() {
        let cache = cache(3);
        let t0 = Instant::now();
        let [a, b, n, c] = ["a", "b", "n", "c"].map(|n| host(&format!("{n}.example.com")));
        cache.insert(a.clone(), 1, secs(t0, 0));
        cache.insert(b.clone(), 2, secs(t0, 0));
        cache.insert_missing(n.clone(), secs(t0, 1));
        assert_eq!(cache.lookup(&n, secs(t0, 2)), Lookup::Missing);
        cache.insert(c.clone(), 3, secs(t0, 3));
        assert_eq!(cache.lookup(&n, secs(t0, 3)), Lookup::Unknown);
        for (h, v) in [(&a, 1), (&b, 2), (&c, 3)] {
            assert_eq!(cache.lookup(h, secs(t0, 3)), Lookup::Serve(v), "{h} kept");
        }
    }

    #[test]
    fn a_flood_of_unknown_names_stays_bounded() {
        let cache = cache(DEFAULT_CAPACITY);
        let now = Instant::now();
        cache.insert(host("kept.example.com"), 7, now);
        for i in 0..(DEFAULT_CAPACITY + 10) {
            cache.insert_missing(host(&format!("n{i}.example.com")), now);
        }
        assert!(cache.len() <= DEFAULT_CAPACITY);
        assert_eq!(
            cache.lookup(&host("kept.example.com"), now),
            Lookup::Serve(7)
        );
    }

    #[test]
    fn a_stream_of_certificates_stays_within_capacity() {
        let cache = cache(100);
        let t0 = Instant::now();
        let hot = host("hot.example.com");
        cache.insert(hot.clone(), -1, t0);
        for i in 0..1_000u64 {
            let now = t0 + Duration::from_millis(i + 1);
            assert_eq!(
                cache.lookup(&hot, now),
                Lookup::Serve(-1),
                "hot kept at {i}"
            );
            cache.insert(host(&format!("c{i}.example.com")), 0, now);
            assert!(cache.len() <= 100);
        }
    }
}

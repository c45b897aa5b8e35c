//! The storage conformance suite: every `Storage` implementation must pass it
//! (the local directory in unit tests, S3 against LocalStack in `tests/`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use bytes::Bytes;

use super::{Storage, StorageKeys};
use crate::host::Host;

fn host(name: &str) -> Host {
    Host::parse(name).expect("test host")
}

/// Runs every check against `store`, which must be empty.
pub async fn run(store: Arc<dyn Storage>) {
    get_put_delete(&*store).await;
    create_if_absent(&*store).await;
    replace_if_unchanged(&*store).await;
    racing_creates_have_one_winner(Arc::clone(&store)).await;
    racing_replaces_have_one_winner(Arc::clone(&store)).await;
    list_is_sorted_and_scoped(&*store).await;
    conditional_reads(&*store).await;
}

async fn conditional_reads(store: &dyn Storage) {
    use super::Freshness;
    let key = StorageKeys::manifest();
    let missing = StorageKeys::cert(&host("never.test"));
    assert!(matches!(
        store.get_if_changed(&missing, None).await.unwrap(),
        Freshness::Missing
    ));
    let v1 = store
        .put(&key, Bytes::from_static(b"{\"v\":1}"))
        .await
        .unwrap();
    assert!(matches!(
        store.get_if_changed(&key, Some(&v1)).await.unwrap(),
        Freshness::Unchanged
    ));
    let v2 = store
        .put(&key, Bytes::from_static(b"{\"v\":2}"))
        .await
        .unwrap();
    match store.get_if_changed(&key, Some(&v1)).await.unwrap() {
        Freshness::Changed(object) => {
            assert_eq!(object.bytes, Bytes::from_static(b"{\"v\":2}"));
            assert_eq!(object.etag, v2);
        }
        other => panic!("expected the new version, got {other:?}"),
    }
    assert!(matches!(
        store.get_if_changed(&key, None).await.unwrap(),
        Freshness::Changed(_)
    ));
}

async fn get_put_delete(store: &dyn Storage) {
    let key = StorageKeys::cert(&host("get-put.test"));
    assert!(
        store.get(&key).await.unwrap().is_none(),
        "missing object is None"
    );
    let etag = store.put(&key, Bytes::from_static(b"one")).await.unwrap();
    let got = store.get(&key).await.unwrap().expect("object after put");
    assert_eq!(got.bytes, Bytes::from_static(b"one"));
    assert_eq!(got.etag, etag, "get returns the tag put returned");
    let etag2 = store.put(&key, Bytes::from_static(b"two")).await.unwrap();
    assert_ne!(etag, etag2, "new content, new tag");
    store.delete(&key).await.unwrap();
    assert!(store.get(&key).await.unwrap().is_none(), "deleted");
    store
        .delete(&key)
        .await
        .expect("deleting a missing object is fine");
}

async fn create_if_absent(store: &dyn Storage) {
    let key = StorageKeys::lock(&host("create.test"));
    let first = store
        .create(&key, Bytes::from_static(b"first"))
        .await
        .unwrap();
    assert!(first.is_some(), "create on a missing key wins");
    let second = store
        .create(&key, Bytes::from_static(b"second"))
        .await
        .unwrap();
    assert!(second.is_none(), "create on an existing key loses");
    let got = store.get(&key).await.unwrap().unwrap();
    assert_eq!(
        got.bytes,
        Bytes::from_static(b"first"),
        "the loser wrote nothing"
    );
}

async fn replace_if_unchanged(store: &dyn Storage) {
    let key = StorageKeys::renewal(&host("replace.test"));
    let v1 = store.put(&key, Bytes::from_static(b"v1")).await.unwrap();
    let v2 = store
        .replace(&key, Bytes::from_static(b"v2"), &v1)
        .await
        .unwrap()
        .expect("replace at the current tag wins");
    let stale = store
        .replace(&key, Bytes::from_static(b"v3"), &v1)
        .await
        .unwrap();
    assert!(stale.is_none(), "replace at a stale tag loses");
    let got = store.get(&key).await.unwrap().unwrap();
    assert_eq!((got.bytes, got.etag), (Bytes::from_static(b"v2"), v2));

    let missing = StorageKeys::renewal(&host("missing.test"));
    let gone = store
        .replace(&missing, Bytes::from_static(b"x"), &v1)
        .await
        .unwrap();
    assert!(gone.is_none(), "replace of a missing object loses");
    assert!(
        store.get(&missing).await.unwrap().is_none(),
        "and writes nothing"
    );
}

async fn racing_creates_have_one_winner(store: Arc<dyn Storage>) {
    let key = StorageKeys::lock(&host("race-create.test"));
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let (store, key) = (Arc::clone(&store), key.clone());
            tokio::spawn(async move { store.create(&key, Bytes::from(format!("{i}"))).await })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        winners += usize::from(task.await.unwrap().unwrap().is_some());
    }
    assert_eq!(winners, 1, "exactly one racing create wins");
}

async fn racing_replaces_have_one_winner(store: Arc<dyn Storage>) {
    let key = StorageKeys::lock(&host("race-replace.test"));
    let base = store.put(&key, Bytes::from_static(b"base")).await.unwrap();
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let (store, key, base) = (Arc::clone(&store), key.clone(), base.clone());
            tokio::spawn(async move {
                store
                    .replace(&key, Bytes::from(format!("{i}")), &base)
                    .await
            })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        winners += usize::from(task.await.unwrap().unwrap().is_some());
    }
    assert_eq!(winners, 1, "exactly one racing replace wins");
}

async fn list_is_sorted_and_scoped(store: &dyn Storage) {
    for name in ["b.list.test", "a.list.test", "c.list.test"] {
        store
            .put(
                &StorageKeys::request(&host(name)),
                Bytes::from_static(b"{}"),
            )
            .await
            .unwrap();
    }
    store
        .put(&StorageKeys::manifest(), Bytes::from_static(b"{}"))
        .await
        .unwrap();
    let listed: Vec<_> = store
        .list(&StorageKeys::requests_prefix())
        .await
        .unwrap()
        .iter()
        .filter_map(StorageKeys::host_of_request)
        .map(|h| h.to_string())
        .collect();
    assert_eq!(listed, ["a.list.test", "b.list.test", "c.list.test"]);
    let everything = store.list(&StorageKeys::everything()).await.unwrap();
    assert!(
        everything.contains(&StorageKeys::manifest()),
        "{everything:?}"
    );
}

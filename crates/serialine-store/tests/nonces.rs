//! Command nonces (`Store::record_nonce`): refused when repeated, durable
//! across a reopen, pruned once expired.

mod common;

use common::*;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nonce_is_accepted_once_even_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let later = now_ms() + 60_000;
    {
        let (store, _) = open(dir.path());
        assert!(store.record_nonce("n-1", later).await.unwrap());
        assert!(!store.record_nonce("n-1", later).await.unwrap());
        assert!(store.record_nonce("n-2", later).await.unwrap());
        // A checkpoint (close and reopen in place) keeps them too.
        store.checkpoint().await.unwrap();
        assert!(!store.record_nonce("n-2", later).await.unwrap());
    }
    let (store, _) = open(dir.path());
    assert!(!store.record_nonce("n-1", later).await.unwrap());
    assert!(!store.record_nonce("n-2", later).await.unwrap());
    assert_eq!(store.nonce_count().unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_nonces_are_pruned_so_the_tree_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    let past = now_ms() - 1;
    for i in 0..50 {
        assert!(store.record_nonce(&format!("old-{i}"), past).await.unwrap());
    }
    // Each write prunes what expired before it: only the latest stays.
    assert_eq!(store.nonce_count().unwrap(), 1);
    assert!(store.record_nonce("new", now_ms() + 60_000).await.unwrap());
    assert_eq!(store.nonce_count().unwrap(), 1);
}

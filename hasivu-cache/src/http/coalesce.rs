//! Miss coalescing: while one request of a key is being answered by the
//! service, later misses of the same key wait for it and then look again,
//! so a burst on a cold key costs the service one call, not one per
//! request.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::watch;

/// At most this many keys are being loaded with followers able to join;
/// past it, misses go to the service on their own.
pub(crate) const MAX_LOADING: usize = 4096;

/// Keys whose miss is in flight, each with the channel its followers wait
/// on (closed when the leader ends, however it ends).
#[derive(Debug, Default)]
pub(crate) struct Loading {
    keys: Mutex<HashMap<String, watch::Sender<()>>>,
}

/// What a miss does.
#[derive(Debug)]
pub(crate) enum Join {
    /// Call the service; followers wait until this is dropped.
    Leader(LoadClaim),
    /// Wait for the leader (`changed` returns when it is done), then look
    /// again.
    Follower(watch::Receiver<()>),
    /// Too many keys in flight: call the service alone.
    Alone,
}

impl Loading {
    pub(crate) fn join(self: &Arc<Self>, key: &str) -> Join {
        let Ok(mut keys) = self.keys.lock() else {
            return Join::Alone;
        };
        if let Some(sender) = keys.get(key) {
            return Join::Follower(sender.subscribe());
        }
        if keys.len() >= MAX_LOADING {
            return Join::Alone;
        }
        keys.insert(key.to_owned(), watch::Sender::new(()));
        Join::Leader(LoadClaim {
            loading: Arc::clone(self),
            key: key.to_owned(),
        })
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.keys.lock().map_or(0, |keys| keys.len())
    }
}

/// The leader's claim: dropping it (answer stored, answer not storable,
/// error or cancellation) releases the key and wakes the followers.
#[derive(Debug)]
pub(crate) struct LoadClaim {
    loading: Arc<Loading>,
    key: String,
}

impl Drop for LoadClaim {
    fn drop(&mut self) {
        // Dropping the sender closes the channel: every receiver's
        // `changed` returns.
        if let Ok(mut keys) = self.loading.keys.lock() {
            keys.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_wake_when_the_leader_ends_however_it_ends() {
        let loading = Arc::new(Loading::default());
        let Join::Leader(claim) = loading.join("k") else {
            panic!("the first is the leader");
        };
        let Join::Follower(mut a) = loading.join("k") else {
            panic!("the second follows");
        };
        let Join::Follower(mut b) = loading.join("k") else {
            panic!("the third follows");
        };
        assert!(matches!(loading.join("other"), Join::Leader(_)));
        drop(claim);
        assert!(a.changed().await.is_err(), "closed: the leader is done");
        assert!(b.changed().await.is_err());
        assert_eq!(loading.len(), 0);
        assert!(matches!(loading.join("k"), Join::Leader(_)), "released");
    }

    #[test]
    fn the_number_of_keys_in_flight_is_bounded() {
        let loading = Arc::new(Loading::default());
        let claims: Vec<_> = (0..MAX_LOADING)
            .map(|i| match loading.join(&i.to_string()) {
                Join::Leader(claim) => claim,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(matches!(loading.join("one more"), Join::Alone));
        assert!(matches!(loading.join("7"), Join::Follower(_)));
        drop(claims);
        assert_eq!(loading.len(), 0);
    }
}

//! The fake Graph API of `wabot::dev::fake_graph` (the one `wabot try` and `wabot dev
//! fake-graph` run), seen by customer index: customer `u` is `wa_id(u)`.

use std::ops::Deref;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub use wabot::dev::fake_graph::{Inbox, Reply, StatusOptions};

use super::scenario::{wa_id, BUSINESS, SECRET};

pub struct FakeGraph {
    inner: Arc<wabot::dev::fake_graph::FakeGraph>,
    customers: usize,
}

impl FakeGraph {
    pub fn inbox(&self, u: usize) -> Arc<Inbox> {
        self.inner.inbox(&wa_id(u))
    }

    /// Messages sent to a recipient that is none of the customers (every accepted
    /// message lands in exactly one recipient's inbox).
    pub fn strangers(&self) -> u64 {
        let customers: usize = (0..self.customers).map(|u| self.inbox(u).len()).sum();
        self.inner
            .accepted
            .load(Ordering::Relaxed)
            .saturating_sub(customers as u64)
    }
}

impl Deref for FakeGraph {
    type Target = wabot::dev::fake_graph::FakeGraph;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

/// Starts the fake Graph API on 127.0.0.1 for `customers` customers; its base URL.
pub async fn start(
    run: &str,
    customers: usize,
    statuses: StatusOptions,
) -> anyhow::Result<(Arc<FakeGraph>, String)> {
    let (inner, url) = wabot::dev::fake_graph::start(
        ([127, 0, 0, 1], 0).into(),
        wabot::dev::fake_graph::Options {
            run: run.to_owned(),
            app_secret: SECRET.to_owned(),
            phone_number_id: BUSINESS.to_owned(),
            statuses,
        },
    )
    .await?;
    Ok((Arc::new(FakeGraph { inner, customers }), url))
}

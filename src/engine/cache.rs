//! Compiled chatbots kept in memory, keyed by chatbot id and version hash
//! ([`super::version::hash`]): a version's content never changes, so an entry is
//! never stale. Contexts pinned to an old version and new conversations on the
//! edited graph share the cache side by side.
//!
//! Which version a chatbot's row holds now is remembered by its `updatedAt` (an edit
//! in the builder changes it), so a new conversation finds the current graph without
//! reading it. An entry may also carry the version's content `S` while it is not
//! known to be stored: the turn that pins a context to it writes it in its commit,
//! and [`ChatbotCache::stored`] drops it once that commit succeeded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::compile::CompiledChatbot;

/// A bounded map of compiled chatbot versions; the least recently used goes first.
#[derive(Debug)]
pub struct ChatbotCache<S = ()> {
    capacity: usize,
    inner: Mutex<Inner<S>>,
}

#[derive(Debug)]
struct Inner<S> {
    entries: HashMap<(Uuid, String), Entry<S>>,
    /// The version each chatbot's row held at that `updatedAt`.
    current: HashMap<Uuid, (DateTime<Utc>, String)>,
    tick: u64,
}

#[derive(Debug)]
struct Entry<S> {
    chatbot: Arc<CompiledChatbot>,
    unstored: Option<Arc<S>>,
    used: u64,
}

/// A cached version.
#[derive(Debug)]
pub struct Cached<S> {
    pub chatbot: Arc<CompiledChatbot>,
    pub hash: String,
    /// The version's content, when it is not known to be stored yet.
    pub unstored: Option<Arc<S>>,
}

impl<S> ChatbotCache<S> {
    pub fn new(capacity: usize) -> Self {
        ChatbotCache {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                current: HashMap::new(),
                tick: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<S>> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The compiled version `hash` of chatbot `id`, if cached.
    pub fn get(&self, id: Uuid, hash: &str) -> Option<Cached<S>> {
        let mut inner = self.lock();
        inner.get(id, hash)
    }

    /// The version chatbot `id` holds as of `updated_at`, if that is known and cached.
    pub fn current(&self, id: Uuid, updated_at: DateTime<Utc>) -> Option<Cached<S>> {
        let mut inner = self.lock();
        let hash = inner
            .current
            .get(&id)
            .filter(|(at, _)| *at == updated_at)
            .map(|(_, hash)| hash.clone())?;
        inner.get(id, &hash)
    }

    /// Stores a compiled version. `unstored` is its content when it may not be in
    /// the database (any more: maintenance may have purged a version this process
    /// still holds, after it stopped being current); `None` when it was just read
    /// from there.
    pub fn insert(
        &self,
        id: Uuid,
        hash: &str,
        chatbot: Arc<CompiledChatbot>,
        unstored: Option<Arc<S>>,
    ) {
        let mut inner = self.lock();
        inner.tick += 1;
        let used = inner.tick;
        let key = (id, hash.to_owned());
        if let Some(entry) = inner.entries.get_mut(&key) {
            entry.used = used;
            entry.unstored = unstored;
            return;
        }
        if inner.entries.len() >= self.capacity {
            let oldest = inner
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone());
            if let Some((old_id, old_hash)) = oldest {
                inner.entries.remove(&(old_id, old_hash.clone()));
                if inner
                    .current
                    .get(&old_id)
                    .is_some_and(|(_, h)| *h == old_hash)
                {
                    inner.current.remove(&old_id);
                }
            }
        }
        inner.entries.insert(
            key,
            Entry {
                chatbot,
                unstored,
                used,
            },
        );
    }

    /// Remembers that chatbot `id`'s row holds version `hash` as of `updated_at`.
    pub fn set_current(&self, id: Uuid, updated_at: DateTime<Utc>, hash: &str) {
        let mut inner = self.lock();
        if inner.entries.contains_key(&(id, hash.to_owned())) {
            inner.current.insert(id, (updated_at, hash.to_owned()));
        }
    }

    /// The version is in the database: its content need not be written again.
    pub fn stored(&self, id: Uuid, hash: &str) {
        let mut inner = self.lock();
        if let Some(entry) = inner.entries.get_mut(&(id, hash.to_owned())) {
            entry.unstored = None;
        }
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<S> Inner<S> {
    fn get(&mut self, id: Uuid, hash: &str) -> Option<Cached<S>> {
        self.tick += 1;
        let tick = self.tick;
        let entry = self.entries.get_mut(&(id, hash.to_owned()))?;
        entry.used = tick;
        Some(Cached {
            chatbot: entry.chatbot.clone(),
            hash: hash.to_owned(),
            unstored: entry.unstored.clone(),
        })
    }
}

//! Compiled chatbots kept in memory, keyed by id and `updatedAt`: an edit in the
//! builder changes `updatedAt`, so a stale entry is never served.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::compile::CompiledChatbot;

/// A bounded map of compiled chatbots; the least recently used entry goes first.
#[derive(Debug)]
pub struct ChatbotCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<Uuid, Entry>,
    tick: u64,
}

#[derive(Debug)]
struct Entry {
    updated_at: DateTime<Utc>,
    chatbot: Arc<CompiledChatbot>,
    used: u64,
}

impl ChatbotCache {
    pub fn new(capacity: usize) -> Self {
        ChatbotCache {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The compiled chatbot for this version, if cached.
    pub fn get(&self, id: Uuid, updated_at: DateTime<Utc>) -> Option<Arc<CompiledChatbot>> {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        inner.tick += 1;
        let tick = inner.tick;
        let entry = inner
            .entries
            .get_mut(&id)
            .filter(|e| e.updated_at == updated_at)?;
        entry.used = tick;
        Some(entry.chatbot.clone())
    }

    /// Stores a compiled version, replacing older versions of the same chatbot.
    pub fn insert(&self, id: Uuid, updated_at: DateTime<Utc>, chatbot: Arc<CompiledChatbot>) {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        inner.tick += 1;
        let used = inner.tick;
        if !inner.entries.contains_key(&id) && inner.entries.len() >= self.capacity {
            let oldest = inner
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                inner.entries.remove(&oldest);
            }
        }
        inner.entries.insert(
            id,
            Entry {
                updated_at,
                chatbot,
                used,
            },
        );
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.entries.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

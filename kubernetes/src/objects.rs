//! The objects the watchers hold: per kind, as the API last served them.

use std::collections::BTreeMap;
use std::sync::Mutex;

use kube::api::DynamicObject;
use mesh_config::Location;
use serde_json::Value;

use crate::kinds::Kind;

/// Namespace and name.
type Key = (String, String);

#[derive(Default)]
struct KindObjects {
    objects: BTreeMap<Key, (Location, Value)>,
    /// A list under way (after `Init`): it replaces `objects` whole when done.
    listing: Option<BTreeMap<Key, (Location, Value)>>,
    listed: bool,
}

/// Every kind's objects; each watcher writes its own kind.
pub(crate) struct Objects {
    kinds: Mutex<Vec<KindObjects>>,
}

impl Objects {
    pub fn new(kinds: usize) -> Self {
        Objects {
            kinds: Mutex::new((0..kinds).map(|_| KindObjects::default()).collect()),
        }
    }

    fn with<T>(&self, index: usize, f: impl FnOnce(&mut KindObjects) -> T) -> T {
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut kinds[index])
    }

    pub fn begin_list(&self, index: usize) {
        self.with(index, |k| k.listing = Some(BTreeMap::new()));
    }

    pub fn listed(&self, index: usize, kind: &Kind, obj: DynamicObject) {
        let (key, entry) = entry(kind, obj);
        self.with(index, |k| {
            k.listing.get_or_insert_default().insert(key, entry)
        });
    }

    /// The list is complete: what it did not name is gone.
    pub fn end_list(&self, index: usize) {
        self.with(index, |k| {
            k.objects = k.listing.take().unwrap_or_default();
            k.listed = true;
        });
    }

    pub fn apply(&self, index: usize, kind: &Kind, obj: DynamicObject) {
        let (key, entry) = entry(kind, obj);
        self.with(index, |k| k.objects.insert(key, entry));
    }

    pub fn delete(&self, index: usize, obj: &DynamicObject) {
        self.with(index, |k| k.objects.remove(&key(obj)));
    }

    /// The API does not serve the kind: it has no objects, and counts as listed. Whether
    /// that is news (the kind was served, or not yet known).
    pub fn unserved(&self, index: usize) -> bool {
        self.with(index, |k| {
            let news = !k.listed || !k.objects.is_empty();
            k.objects.clear();
            k.listing = None;
            k.listed = true;
            news
        })
    }

    pub fn all_listed(&self) -> bool {
        let kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        kinds.iter().all(|k| k.listed)
    }

    /// Every object held now.
    pub fn current(&self) -> Vec<(Location, Value)> {
        let kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        kinds
            .iter()
            .flat_map(|k| k.objects.values().cloned())
            .collect()
    }
}

fn key(obj: &DynamicObject) -> Key {
    let meta = &obj.metadata;
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// An object as the config reads it: with its kind's `apiVersion` and `kind` (list items come
/// without them), located by its uid and resourceVersion.
fn entry(kind: &Kind, obj: DynamicObject) -> (Key, (Location, Value)) {
    let key = key(&obj);
    let location = Location::Kube {
        uid: obj.metadata.uid.clone().unwrap_or_default(),
        resource_version: obj.metadata.resource_version.clone().unwrap_or_default(),
    };
    let mut value = serde_json::to_value(&obj).unwrap_or(Value::Null);
    if let Some(map) = value.as_object_mut() {
        map.insert("apiVersion".into(), Value::String(kind.api_version()));
        map.insert("kind".into(), Value::String(kind.kind.to_string()));
    }
    (key, (location, value))
}

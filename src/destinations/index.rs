//! Which destinations want an event type: a token trie per tenant over the destinations'
//! patterns, updated incrementally so that loading 10,000 destinations stays linear and a
//! lookup costs a walk of the type's tokens, not a scan of every pattern. It agrees with
//! `Destination::accepts`: hookstream's own types go only to patterns that name them.

use std::collections::HashMap;
use std::sync::Arc;

use crate::model::pattern::RESERVED;

#[derive(Default, Debug)]
struct Node {
    children: HashMap<Box<str>, Node>,
    star: Option<Box<Node>>,
    /// Destinations whose pattern ends in `>` at this depth.
    rest: Vec<Arc<str>>,
    /// Destinations whose pattern ends exactly here.
    exact: Vec<Arc<str>>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.star.is_none()
            && self.rest.is_empty()
            && self.exact.is_empty()
    }

    fn insert(&mut self, tokens: &[&str], id: &Arc<str>) {
        match tokens.split_first() {
            None => push_unique(&mut self.exact, id),
            Some((&">", _)) => push_unique(&mut self.rest, id),
            Some((&"*", tail)) => self
                .star
                .get_or_insert_with(Default::default)
                .insert(tail, id),
            Some((token, tail)) => self
                .children
                .entry((*token).into())
                .or_default()
                .insert(tail, id),
        }
    }

    fn remove(&mut self, tokens: &[&str], id: &str) {
        match tokens.split_first() {
            None => self.exact.retain(|d| &**d != id),
            Some((&">", _)) => self.rest.retain(|d| &**d != id),
            Some((&"*", tail)) => {
                if let Some(star) = self.star.as_mut() {
                    star.remove(tail, id);
                    if star.is_empty() {
                        self.star = None;
                    }
                }
            }
            Some((token, tail)) => {
                if let Some(child) = self.children.get_mut(*token) {
                    child.remove(tail, id);
                    if child.is_empty() {
                        self.children.remove(*token);
                    }
                }
            }
        }
    }

    fn collect(&self, tokens: &[&str], out: &mut Vec<Arc<str>>) {
        let Some((token, tail)) = tokens.split_first() else {
            out.extend(self.exact.iter().cloned());
            return;
        };
        out.extend(self.rest.iter().cloned());
        if let Some(child) = self.children.get(*token) {
            child.collect(tail, out);
        }
        if let Some(star) = &self.star {
            star.collect(tail, out);
        }
    }
}

fn push_unique(v: &mut Vec<Arc<str>>, id: &Arc<str>) {
    if !v.iter().any(|d| d == id) {
        v.push(id.clone());
    }
}

/// tenant → trie of patterns → destination ids.
#[derive(Default, Debug)]
pub struct SubjectIndex {
    tenants: HashMap<Box<str>, Node>,
}

impl SubjectIndex {
    pub fn insert(&mut self, tenant: &str, pattern: &str, id: &Arc<str>) {
        let tokens: Vec<&str> = pattern.split('.').collect();
        self.tenants
            .entry(tenant.into())
            .or_default()
            .insert(&tokens, id);
    }

    pub fn remove(&mut self, tenant: &str, pattern: &str, id: &str) {
        let tokens: Vec<&str> = pattern.split('.').collect();
        if let Some(root) = self.tenants.get_mut(tenant) {
            root.remove(&tokens, id);
            if root.is_empty() {
                self.tenants.remove(tenant);
            }
        }
    }

    /// Destinations of `tenant` with a pattern matching `event_type` (deduplicated).
    pub fn lookup(&self, tenant: &str, event_type: &str) -> Vec<Arc<str>> {
        let mut out = Vec::new();
        if let Some(root) = self.tenants.get(tenant) {
            let tokens: Vec<&str> = event_type.split('.').collect();
            match tokens.split_first() {
                // Not the root's `>` and `*`: only patterns that name the namespace.
                Some((&RESERVED, tail)) => {
                    if let Some(child) = root.children.get(RESERVED) {
                        child.collect(tail, &mut out);
                    }
                }
                _ => root.collect(&tokens, &mut out),
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::pattern::subscribes;

    #[test]
    fn lookup_agrees_with_pattern_matching() {
        let patterns = [
            "a.b",
            "a.*",
            "a.>",
            "*",
            ">",
            "*.b",
            "a.b.c",
            "x.*.z",
            "hookstream.>",
            "hookstream.d.*",
            "*.d.x",
        ];
        let mut index = SubjectIndex::default();
        for (i, p) in patterns.iter().enumerate() {
            index.insert("t", p, &Arc::from(format!("d{i}")));
        }
        for subject in [
            "a",
            "a.b",
            "a.c",
            "a.b.c",
            "b.b",
            "x.y.z",
            "x.y",
            "q.r.s.t",
            "hookstream.d.x",
            "hookstream.e.x",
            "hookstream",
        ] {
            let mut want: Vec<Arc<str>> = patterns
                .iter()
                .enumerate()
                .filter(|(_, p)| subscribes(p, subject))
                .map(|(i, _)| Arc::from(format!("d{i}")))
                .collect();
            want.sort();
            assert_eq!(index.lookup("t", subject), want, "{subject}");
        }
        assert!(index.lookup("other", "a.b").is_empty());
    }

    #[test]
    fn removal_prunes_and_keeps_others() {
        let mut index = SubjectIndex::default();
        let (d1, d2): (Arc<str>, Arc<str>) = (Arc::from("d1"), Arc::from("d2"));
        index.insert("t", "a.*", &d1);
        index.insert("t", "a.*", &d2);
        index.remove("t", "a.*", "d1");
        assert_eq!(index.lookup("t", "a.x"), vec![d2.clone()]);
        index.remove("t", "a.*", "d2");
        assert!(index.tenants.is_empty());
    }
}

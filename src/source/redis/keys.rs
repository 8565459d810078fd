//! The Redis keys the emitter keeps beside the orchestrator's stream.
//!
//! Each starts with the stream's name as a hash tag (`{sandbox.events.stream}:…`): in a Redis
//! Cluster a key with a tag lives in the slot of the tag's text, which is the slot of the stream
//! key itself (it has no braces, so all of it is hashed). So one Lua script may check the lease
//! and touch the stream atomically, in a cluster too.

/// Key names for one stream and consumer group.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    /// The orchestrator's stream.
    pub(crate) stream: String,
    prefix: String,
}

impl Keys {
    pub(crate) fn new(stream: &str, group: &str) -> Self {
        Self {
            stream: stream.to_owned(),
            prefix: format!("{{{stream}}}:{group}"),
        }
    }

    /// The leader lease: `<fence>|<holder>|<since ms>|<nonce>`, with an expiry.
    pub(crate) fn lease(&self) -> String {
        format!("{}:leader", self.prefix)
    }

    /// A counter that grows with every lease granted (the fencing number).
    pub(crate) fn fence(&self) -> String {
        format!("{}:fence", self.prefix)
    }

    /// A random value set once per Redis data set: it changes when Redis restarts without its
    /// data, which tells entry ids read before apart from those read after.
    pub(crate) fn generation(&self) -> String {
        format!("{}:generation", self.prefix)
    }

    /// Hash of dead letters, id → JSON.
    pub(crate) fn dead_letters(&self) -> String {
        format!("{}:dead-letters", self.prefix)
    }

    /// Hash of the shared view of sandboxes, sandbox id → `<entry id>|<record JSON>`.
    pub(crate) fn sandboxes(&self) -> String {
        format!("{}:sandboxes", self.prefix)
    }

    /// The counter numbering dead letters.
    pub(crate) fn dead_letter_counter(&self) -> String {
        format!("{}:dead-letters:next", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_hashes_to_the_streams_slot() {
        let keys = Keys::new("sandbox.events.stream", "e2b-webhook-emitter");
        assert_eq!(
            keys.lease(),
            "{sandbox.events.stream}:e2b-webhook-emitter:leader"
        );
        for key in [
            keys.lease(),
            keys.fence(),
            keys.generation(),
            keys.dead_letters(),
            keys.dead_letter_counter(),
            keys.sandboxes(),
        ] {
            // Redis Cluster hashes only the text between the first `{` and the next `}`.
            let tag = key
                .split_once('{')
                .and_then(|(_, rest)| rest.split_once('}'))
                .map(|(tag, _)| tag);
            assert_eq!(tag, Some("sandbox.events.stream"), "{key}");
        }
    }
}

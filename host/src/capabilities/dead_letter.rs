//! The dead-letter topic, and the `dead-letter` import: every record a
//! tenant's pipeline or store refused goes to the tenant's own topic,
//! `<tenant>.dead-letter` on the platform's message bus, with headers that
//! say why and where it came from, so nothing is silently dropped.

use super::bindings::batch::mysimbdp::pipeline::dead_letter;
use super::bindings::{DeadRecord, GuestError};
use super::{HostState, Scope};
use crate::backends::{Doc, Header, InRecord, MessageBus, OutRecord, SinkError};
use crate::config::TenantId;
use crate::failure::capped;

/// Longest header value of a dead letter, marker included.
pub const MAX_HEADER_BYTES: usize = 1024;
/// Longest payload of a dead letter, and longest key: a refused record is
/// often refused for its size, and a letter the broker refuses too could go
/// nowhere (the input would fail again on every retry). Below Kafka's default
/// `message.max.bytes` of about 1 MB, headers included.
pub const MAX_PAYLOAD_BYTES: usize = 512 * 1024;

/// Header names, stable for operators' tools.
pub mod header {
    pub const ERROR_KIND: &str = "error-kind";
    pub const REASON: &str = "error-reason";
    pub const TENANT: &str = "tenant";
    pub const PIPELINE: &str = "pipeline";
    pub const PIPELINE_VERSION: &str = "pipeline-version";
    pub const ORIGIN: &str = "origin";
    pub const SOURCE_TOPIC: &str = "source-topic";
    pub const SOURCE_PARTITION: &str = "source-partition";
    pub const SOURCE_OFFSET: &str = "source-offset";
    /// Present when the payload was cut: its whole length in bytes (the
    /// whole record is at its origin).
    pub const PAYLOAD_BYTES: &str = "payload-bytes";
    /// Present when the key was cut: its whole length in bytes.
    pub const KEY_BYTES: &str = "key-bytes";
}

/// A refused record and the headers that explain it. Every dead letter of
/// the host is made here, by one of the constructors below.
pub struct DeadLetter {
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    headers: Vec<Header>,
}

impl DeadLetter {
    /// A record refused in an invocation of `scope`'s pipeline, as
    /// `error_kind` (`rejected`, `document-refused`, a failure kind), with
    /// the tenant, the pipeline and its version in the headers.
    pub fn refused(scope: &Scope, payload: Vec<u8>, error_kind: &str, reason: &str) -> DeadLetter {
        let letter = DeadLetter { key: None, payload, headers: Vec::new() };
        letter
            .header(header::ERROR_KIND, error_kind)
            .header(header::REASON, reason)
            .header(header::TENANT, &scope.tenant.id)
            .header(header::PIPELINE, &scope.pipeline)
            .header(header::PIPELINE_VERSION, scope.version)
    }

    /// Message `record` of one of the tenant's topics, refused: its own key
    /// and value, and where it came from.
    pub fn message(scope: &Scope, record: &InRecord, error_kind: &str, reason: &str) -> DeadLetter {
        let mut letter = DeadLetter::refused(scope, record.value.clone(), error_kind, reason)
            .header(header::SOURCE_TOPIC, &record.topic)
            .header(header::SOURCE_PARTITION, record.partition)
            .header(header::SOURCE_OFFSET, record.offset);
        letter.key = record.key.clone();
        letter
    }

    /// A document the store refused: keyed by its id, with its index and id as origin.
    fn document(scope: &Scope, index: &str, doc: Doc<'_>, error_kind: &str, reason: &str) -> DeadLetter {
        let mut letter = DeadLetter::refused(scope, doc.source.as_bytes().to_vec(), error_kind, reason)
            .header(header::ORIGIN, format!("{index}/{}", doc.id));
        letter.key = Some(doc.id.as_bytes().to_vec());
        letter
    }

    /// A message the broker refused as bad: keyed as it was, with the topic
    /// the guest named and its position in the call as origin.
    pub fn unpublished(scope: &Scope, topic: &str, index: usize, record: &OutRecord, reason: &str) -> DeadLetter {
        let mut letter =
            DeadLetter::refused(scope, record.value.clone(), "message-refused", reason).header(header::ORIGIN, format!("{topic}#{index}"));
        letter.key = record.key.clone();
        letter
    }

    /// The record published: a payload over [`MAX_PAYLOAD_BYTES`] (or a key
    /// over [`MAX_HEADER_BYTES`]) is cut there, with a header giving its
    /// whole length, so that the letter itself is never too large to publish.
    fn into_record(mut self) -> OutRecord {
        if self.payload.len() > MAX_PAYLOAD_BYTES {
            let whole = self.payload.len();
            self.payload.truncate(MAX_PAYLOAD_BYTES);
            self = self.header(header::PAYLOAD_BYTES, whole);
        }
        if let Some(key) = self.key.as_mut().filter(|key| key.len() > MAX_HEADER_BYTES) {
            let whole = key.len();
            key.truncate(MAX_HEADER_BYTES);
            self = self.header(header::KEY_BYTES, whole);
        }
        OutRecord { key: self.key, value: self.payload, headers: self.headers }
    }

    /// Adds a header, its value cut to [`MAX_HEADER_BYTES`]: a reason or an
    /// origin the guest wrote must not make the letter too large to publish
    /// (a refused publish is retried, forever).
    fn header(mut self, name: &str, value: impl ToString) -> Self {
        let value = value.to_string();
        self.headers.push((name.into(), capped(&value, MAX_HEADER_BYTES).into_owned().into_bytes()));
        self
    }
}

/// Publishes `letters` to the tenant's dead-letter topic and waits for the
/// broker's acknowledgement.
pub async fn send(bus: &dyn MessageBus, tenant: &TenantId, letters: Vec<DeadLetter>) -> Result<(), SinkError> {
    if letters.is_empty() {
        return Ok(());
    }
    let records: Vec<OutRecord> = letters.into_iter().map(DeadLetter::into_record).collect();
    // A dead letter the broker refuses cannot go anywhere else: the call
    // fails (retryably) rather than lose it.
    let topic = tenant.dead_letter_topic();
    bus.publish(&topic, &records).await?.all_or_refused("dead letters", &topic)
}

const MAX_RECORDS_PER_CALL: usize = 10_000;

impl dead_letter::Host for HostState {
    async fn send(&mut self, records: Vec<DeadRecord>) -> wasmtime::Result<Result<(), GuestError>> {
        if records.len() > MAX_RECORDS_PER_CALL {
            return Ok(Err(GuestError::QuotaExceeded(format!(
                "{} dead records in one call; send at most {MAX_RECORDS_PER_CALL}",
                records.len()
            ))));
        }
        let letters: Vec<DeadLetter> = records
            .into_iter()
            .map(|record| {
                DeadLetter::refused(&self.scope, record.payload, "rejected", &record.reason).header(header::ORIGIN, record.origin)
            })
            .collect();
        Ok(self.send_dead_letters(letters).await)
    }
}

impl HostState {
    /// The dead letter of a document the store refused in this invocation.
    pub(crate) fn refused_document(&self, index: &str, doc: Doc<'_>, error_kind: &str, reason: &str) -> DeadLetter {
        DeadLetter::document(&self.scope, index, doc, error_kind, reason)
    }

    /// Publishes dead letters; a failure is a sink error of the invocation.
    pub(crate) async fn send_dead_letters(&mut self, letters: Vec<DeadLetter>) -> Result<(), GuestError> {
        let count = letters.len() as u64;
        let quota = self.scope.tenant.profile.quotas.dead_letters_per_invocation;
        if self.effects.dead_lettered.saturating_add(count) > quota {
            // Failing the invocation (retryably) drops nothing; sending more would flood the topic.
            let message = format!(
                "dead letters: {} would exceed the tenant's {quota} per invocation (quotas.dead_letters_per_invocation); the input is retried, nothing is dropped",
                self.effects.dead_lettered.saturating_add(count)
            );
            let _ = self.quota_exceeded(super::quotas::Exceeded { quota: "dead_letters_per_invocation", message: message.clone() });
            self.effects.sink_error.get_or_insert(message.clone());
            return Err(GuestError::Unavailable(message));
        }
        let services = self.scope.services.clone();
        let tenant = self.scope.tenant.id.clone();
        match self.waiting("dead-letter.send", send(services.messaging.as_ref(), &tenant, letters)).await {
            Ok(()) => {
                self.effects.dead_lettered += count;
                Ok(())
            }
            Err(error) => {
                let message = format!("dead-letter topic: {error}");
                self.effects.sink_error.get_or_insert(message.clone());
                Err(GuestError::Unavailable(message))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(key: usize, payload: usize) -> DeadLetter {
        DeadLetter { key: Some(vec![b'k'; key]), payload: vec![b'p'; payload], headers: vec![("error-kind".into(), b"rejected".to_vec())] }
    }

    fn header_of<'r>(record: &'r OutRecord, name: &str) -> Option<&'r [u8]> {
        record.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
    }

    #[test]
    fn a_letter_too_large_to_publish_is_cut_and_says_its_whole_length() {
        // (key bytes, payload bytes, key kept, payload kept, headers saying what was cut)
        let cases = [
            (10, 100, 10, 100, (None, None)),
            (10, MAX_PAYLOAD_BYTES, 10, MAX_PAYLOAD_BYTES, (None, None)),
            (10, MAX_PAYLOAD_BYTES + 1, 10, MAX_PAYLOAD_BYTES, (None, Some("524289"))),
            (10, 2 << 20, 10, MAX_PAYLOAD_BYTES, (None, Some("2097152"))),
            (MAX_HEADER_BYTES + 5, 10, MAX_HEADER_BYTES, 10, (Some("1029"), None)),
        ];
        for (key, payload, key_kept, payload_kept, (key_header, payload_header)) in cases {
            let record = letter(key, payload).into_record();
            let what = format!("key {key}, payload {payload}");
            assert_eq!((record.key.as_ref().map(Vec::len), record.value.len()), (Some(key_kept), payload_kept), "{what}");
            assert_eq!(header_of(&record, header::KEY_BYTES), key_header.map(str::as_bytes), "{what}");
            assert_eq!(header_of(&record, header::PAYLOAD_BYTES), payload_header.map(str::as_bytes), "{what}");
            assert_eq!(header_of(&record, "error-kind"), Some(b"rejected".as_slice()), "{what}: the other headers are kept");
        }
    }
}

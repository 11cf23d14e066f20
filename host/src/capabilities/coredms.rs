//! `coredms`: bulk writes into the tenant's own indices.

use super::HostState;
use super::bindings::batch::mysimbdp::pipeline::coredms;
use super::bindings::{BulkReport, Document, GuestError, ItemFailure};
use crate::backends::Docs;
use sha2::{Digest, Sha256};

/// Documents one call may write.
pub const MAX_DOCS_PER_CALL: usize = 10_000;

/// The id of a document the guest gave none: its content, so a re-run
/// overwrites instead of duplicating.
fn content_id(json: &str) -> String {
    hex::encode(&Sha256::digest(json.as_bytes())[..16])
}

impl coredms::Host for HostState {
    async fn bulk_index(&mut self, collection: String, docs: Vec<Document>) -> wasmtime::Result<Result<BulkReport, GuestError>> {
        let bytes = docs.iter().map(|d| d.id.as_ref().map_or(32, String::len) + d.json.len()).sum();
        let mut packed = Docs::with_capacity(docs.len(), bytes);
        for doc in &docs {
            match &doc.id {
                Some(id) => packed.push(id, &doc.json),
                None => packed.push(&content_id(&doc.json), &doc.json),
            }
        }
        Ok(self.write_docs(&collection, &packed).await)
    }

    async fn bulk_index_packed(
        &mut self,
        collection: String,
        text: Vec<u8>,
        ends: Vec<u32>,
    ) -> wasmtime::Result<Result<BulkReport, GuestError>> {
        match Docs::from_packed(text, ends) {
            Ok(docs) => Ok(self.write_docs(&collection, &docs).await),
            Err(reason) => Ok(Err(GuestError::InvalidInput(format!("bulk-index-packed into `{collection}`: {reason}")))),
        }
    }
}

impl HostState {
    /// Both forms of `bulk-index`, once the documents are out of the guest.
    async fn write_docs(&mut self, collection: &str, docs: &Docs) -> Result<BulkReport, GuestError> {
        let index = match self.scope.index_name(collection) {
            Ok(index) => index,
            Err(reason) => return Err(self.deny("bulk-index", reason)),
        };
        if docs.len() > MAX_DOCS_PER_CALL {
            return Err(GuestError::QuotaExceeded(format!(
                "{} documents in one bulk-index; send at most {MAX_DOCS_PER_CALL} per call",
                docs.len()
            )));
        }
        let scope = self.scope.clone();
        let services = &scope.services;
        match self.waiting("coredms.bulk-index", services.admit_collection(&scope.tenant, &index)).await {
            Ok(Ok(())) => {}
            Ok(Err(exceeded)) => return Err(self.quota_exceeded(exceeded)),
            Err(error) => {
                self.effects.sink_error.get_or_insert(error.to_string());
                return Err(GuestError::Unavailable(error.to_string()));
            }
        }
        let mappings = scope.tenant.profile.collections.iter().find(|(name, _)| name.as_str() == collection);
        let mappings = mappings.and_then(|(_, spec)| spec.mappings.as_ref());
        let written = self
            .waiting("coredms.bulk-index", async {
                services.ensure_index(&index, mappings).await?;
                services.coredms.bulk_index(&index, docs).await
            })
            .await;
        let outcome = match written {
            Ok(outcome) => outcome,
            Err(error) => {
                self.effects.sink_error.get_or_insert(error.to_string());
                return Err(GuestError::Unavailable(error.to_string()));
            }
        };
        self.effects.indices.insert(index.clone());
        self.effects.docs_indexed += outcome.indexed as u64;
        self.effects.docs_failed += outcome.failed.len() as u64;
        let refused = |position: usize| docs.get(position).expect("failures name documents of the call");
        let letters = outcome
            .failed
            .iter()
            .map(|failure| {
                let doc = refused(failure.index);
                // Only documents refused as bad come here: load is a sink error.
                self.refused_document(&index, doc, "document-refused", &failure.reason)
            })
            .collect();
        self.send_dead_letters(letters).await?;
        Ok(BulkReport {
            indexed: outcome.indexed as u32,
            failed: outcome
                .failed
                .into_iter()
                .map(|f| ItemFailure {
                    index: f.index as u32,
                    id: Some(refused(f.index).id.to_string()),
                    status: f.status,
                    reason: f.reason,
                })
                .collect(),
        })
    }
}

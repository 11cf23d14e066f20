//! Write mysimbdp ingestion pipelines as plain Rust functions.
//!
//! A tenant's crate depends on this SDK under the name `mysimbdp`, is built as a
//! `cdylib` for `wasm32-wasip2`, and marks one function:
//!
//! ```no_run
//! # use mysimbdp_guest as mysimbdp;
//! use mysimbdp::prelude::*;
//!
//! #[mysimbdp::batch_pipeline]
//! fn ingest(file: &InputFile, ctx: &mut BatchContext) -> Result<(), Error> {
//!     let mut rows = file.csv()?;
//!     let mut out = DocumentWriter::new("orders");
//!     while let Some(row) = rows.next_row()? {
//!         match row.get("amount").map(str::parse::<f64>) {
//!             Some(Ok(amount)) => out.push(ctx.row_id(row.number()), format!("{{\"amount\":{amount}}}"))?,
//!             _ => ctx.reject_row(&row, "amount is not a number")?,
//!         }
//!     }
//!     out.finish()
//! }
//! # fn main() {}
//! ```
//!
//! The SDK reads the file in chunks, writes documents in batches (one host call
//! per batch), sends rejected records to the tenant's dead-letter topic and
//! builds the report the host records. The raw WIT bindings stay hidden.

#![deny(missing_docs)]

mod context;
mod csv;
mod error;
mod input;
mod json;
mod lines;
mod number;
mod tally;
mod writer;

pub mod log;

pub use context::{BatchContext, RowId, RowIds, StreamContext};
pub use csv::{CsvReader, Row};
pub use error::Error;
pub use input::{ChunkSource, InputFile, ReadSource};
pub use lines::{Line, LineReader};
pub use mysimbdp_guest_macros::{batch_pipeline, stream_pipeline};
pub use number::parse_f64;
pub use serde;
pub use serde_json;
pub use writer::{DocumentBatch, DocumentId, DocumentWriter};

/// A message consumed from one of the tenant's topics.
pub type Message = __private::bindings::mysimbdp::pipeline::types::Message;

/// A message to publish with [`publish`]; it borrows its key and value.
pub type Outgoing<'a> = __private::bindings::mysimbdp::pipeline::types::Outgoing<'a>;

/// Everything a pipeline usually needs.
pub mod prelude {
    pub use crate::{
        BatchContext, CsvReader, DocumentWriter, Error, InputFile, LineReader, Message, Outgoing, Row, StreamContext, publish,
    };
    pub use serde_json::{self, Value, json};
}

/// Publish messages to the tenant's topic `topic` (the host adds the tenant prefix).
pub fn publish(topic: &str, messages: &[Outgoing<'_>]) -> Result<(), Error> {
    __private::bindings::mysimbdp::pipeline::messaging::publish(topic, messages).map_err(Error::from)
}

impl Message {
    /// The value as UTF-8 text, if it is.
    pub fn value_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.value).ok()
    }

    /// The key as UTF-8 text, if there is one and it is text.
    pub fn key_str(&self) -> Option<&str> {
        self.key.as_deref().and_then(|key| std::str::from_utf8(key).ok())
    }

    /// Where the message came from, e.g. `readings/2@1041`.
    pub fn origin(&self) -> String {
        format!("{}/{}@{}", self.topic, self.partition, self.offset)
    }
}

/// The tests' generated inputs, the same on every run: fastrand's
/// generator from a fixed seed.
#[cfg(test)]
pub(crate) fn seeded(seed: u64) -> impl FnMut() -> u64 {
    let mut rng = fastrand::Rng::with_seed(seed);
    move || rng.u64(..)
}

#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;

    /// Import bindings shared by every pipeline; the attribute macros generate
    /// the export half in the tenant's crate and map these interfaces onto it.
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../wit/pipeline.wit",
            world: "mysimbdp:pipeline/guest-imports",
            // Import arguments borrow (`Document<'a>` holds `&str`s), so a
            // batch of documents is passed without a `String` per document.
            ownership: Borrowing { duplicate_if_necessary: false },
        });
    }

    pub use crate::context::{run_batch, run_stream};
}

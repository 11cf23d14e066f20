//! A batch invocation: one file through the tenant's batch pipeline, under
//! the tenant's concurrency cap; done only once what it wrote is durable and
//! searchable.

use super::record::{Measured, record};
use super::{FileInput, Invoked, Invoker, Loaded};
use crate::capabilities::HostState;
use crate::capabilities::input_file::InputFile;
use crate::failure::{Failure, FailureKind, UNAVAILABLE_RETRIES};
use crate::retry::Backoff;
use std::time::Duration;

/// Waits between the tries of a file the guest ended as `unavailable`.
const UNAVAILABLE_BACKOFF: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
use crate::telemetry::events;
use anyhow::Context;

impl Invoker {
    pub(super) async fn file(&self, loaded: &Loaded, input: FileInput) -> anyhow::Result<Invoked> {
        let identity = match input.identity {
            Some(identity) => identity,
            None => {
                let hashed = input.file.clone();
                tokio::task::spawn_blocking(move || hashed.identify()).await?.with_context(|| format!("cannot read `{}`", input.name))?
            }
        };
        let tenant = &loaded.scope.tenant;
        let _slot = self.slots.of(&tenant.id).acquire_owned().await?;
        let started_at = chrono::Utc::now();
        let mut attempt = 0;
        let mut wait = UNAVAILABLE_BACKOFF.first;
        let (result, usage, state) = loop {
            // Each try reads the file from its start, through the same descriptor.
            let mut file = InputFile::new(&input.name, &identity.sha256, input.file.clone());
            file.progress = input.progress.clone();
            let state = HostState::new(loaded.scope.clone());
            let (mut result, usage, state) = self.sandbox.run_batch(&loaded.compiled, &loaded.limits, state, file).await;
            // Acknowledged means durable and searchable: only then is the file done.
            for index in &state.effects().indices {
                if let Err(error) = self.services.coredms.flush(index, true).await
                    && result.is_ok()
                {
                    result = Err(Failure::new(FailureKind::SinkError, error.to_string()));
                }
            }
            let unavailable = matches!(&result, Err(failure) if failure.kind == FailureKind::Unavailable);
            if !crate::retry::retry_file(unavailable, attempt, UNAVAILABLE_RETRIES) {
                break (result, usage, state);
            }
            attempt += 1;
            tokio::time::sleep(crate::retry::sleep_for(wait)).await;
            wait = UNAVAILABLE_BACKOFF.after(wait);
        };
        let result = result.map_err(|failure| match failure.kind {
            FailureKind::Unavailable => Failure::new(
                FailureKind::Unavailable,
                format!("{}; tried {} times, the file is kept for `mysimbdp batch retry`", failure.message, attempt + 1),
            ),
            _ => failure,
        });

        let effects = state.effects();
        let (records_in, records_out, records_rejected) = match &result {
            Ok(report) => (report.records_in, report.records_out, report.records_rejected),
            Err(_) => (0, effects.docs_indexed, effects.docs_failed),
        };
        let totals = self.services.add_counters(&tenant.id, loaded.scope.pipeline.as_str(), &effects.counters);
        events::GuestCounters { tenant: &tenant.id, pipeline: loaded.scope.pipeline.as_str(), counters: &totals }.emit();
        let failure = result.err();
        let measured = Measured {
            source: input.name,
            records_in,
            records_out,
            records_rejected,
            dead_lettered: effects.dead_lettered,
            bytes: identity.bytes,
            started_at,
            duration: usage.duration,
            fuel_consumed: usage.fuel_consumed,
            peak_memory_bytes: usage.peak_memory_bytes,
        };
        Ok(Invoked { record: record(&loaded.scope, measured, failure.as_ref()), failure })
    }
}

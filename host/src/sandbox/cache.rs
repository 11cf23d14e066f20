//! Compiled components on disk (`<data_dir>/compiled`), so a restart does
//! not compile every pipeline again.

use anyhow::Context;
use std::path::Path;
use wasmtime::Engine;
use wasmtime::component::Component;

pub(super) fn compile_cached(engine: &Engine, wasm: &Path, cache_file: Option<&Path>) -> anyhow::Result<Component> {
    if let Some(cache_file) = cache_file
        && cache_file.exists()
    {
        // SAFETY: the file was written by `Component::serialize` of this
        // host into its own data directory; a stale or foreign artifact fails
        // the engine compatibility check instead of loading.
        match unsafe { Component::deserialize_file(engine, cache_file) } {
            Ok(component) => return Ok(component),
            Err(error) => tracing::warn!(file = %cache_file.display(), %error, "Compiled pipeline not reusable; compiling again."),
        }
    }
    let bytes = std::fs::read(wasm).with_context(|| format!("cannot read pipeline {}", wasm.display()))?;
    let component =
        Component::new(engine, &bytes).map_err(anyhow::Error::from).with_context(|| format!("cannot compile {}", wasm.display()))?;
    if let Some(cache_file) = cache_file {
        // Another host process may write the same artifact: a private temporary name.
        let temporary = cache_file.with_extension(format!("{}.tmp", std::process::id()));
        let written = cache_file
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| std::fs::write(&temporary, component.serialize().unwrap_or_default()))
            .and_then(|_| std::fs::rename(&temporary, cache_file));
        if let Err(error) = written {
            tracing::warn!(file = %cache_file.display(), %error, "Cannot cache the compiled pipeline.");
        }
    }
    Ok(component)
}

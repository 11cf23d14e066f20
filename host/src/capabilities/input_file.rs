//! `staging.input-file`: the guest reads the staged file in chunks.

use super::HostState;
use super::bindings::GuestError;
use super::bindings::batch::mysimbdp::pipeline::staging;
use crate::opened_file::OpenedFile;
use wasmtime::component::Resource;

/// Most bytes one `read` returns, whatever the guest asks for.
pub const MAX_READ_BYTES: u32 = 4 * 1024 * 1024;

/// The file of one batch invocation: the descriptor the host checked and
/// hashed, read from the start and never past its checked size.
pub struct InputFile {
    pub name: String,
    pub checksum: String,
    pub file: OpenedFile,
    /// Where the next `read` starts.
    pub position: u64,
    /// Bytes read so far, for a progress bar.
    pub progress: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

impl InputFile {
    pub fn new(name: &str, checksum: &str, file: OpenedFile) -> InputFile {
        InputFile { name: name.to_string(), checksum: checksum.to_string(), file, position: 0, progress: None }
    }
}

impl staging::Host for HostState {}

impl staging::HostInputFile for HostState {
    async fn name(&mut self, file: Resource<InputFile>) -> wasmtime::Result<String> {
        Ok(self.table().get(&file)?.name.clone())
    }

    async fn size(&mut self, file: Resource<InputFile>) -> wasmtime::Result<u64> {
        Ok(self.table().get(&file)?.file.size())
    }

    async fn checksum(&mut self, file: Resource<InputFile>) -> wasmtime::Result<String> {
        Ok(self.table().get(&file)?.checksum.clone())
    }

    async fn read(&mut self, file: Resource<InputFile>, max_bytes: u32) -> wasmtime::Result<Result<Vec<u8>, GuestError>> {
        let input = self.table().get_mut(&file)?;
        let room = input.file.size().saturating_sub(input.position).min(u64::from(max_bytes.min(MAX_READ_BYTES)));
        let mut chunk = vec![0; room as usize];
        let mut filled = 0;
        while filled < chunk.len() {
            match input.file.read_at(&mut chunk[filled..], input.position + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) => {
                    let name = input.name.clone();
                    let message = format!("cannot read staged file {name}: {e}");
                    self.effects.sink_error.get_or_insert(message.clone());
                    return Ok(Err(GuestError::Unavailable(message)));
                }
            }
        }
        input.position += filled as u64;
        chunk.truncate(filled);
        if let Some(progress) = &input.progress {
            progress.fetch_add(filled as u64, std::sync::atomic::Ordering::Relaxed);
        }
        self.effects.bytes_read += filled as u64;
        Ok(Ok(chunk))
    }

    async fn drop(&mut self, file: Resource<InputFile>) -> wasmtime::Result<()> {
        // The host owns the file; it removes it from the table after the call.
        let _ = file;
        Ok(())
    }
}

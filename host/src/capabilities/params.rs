//! `config`: who the guest is and its parameters from the tenant's profile.

use super::HostState;
use super::bindings::batch::mysimbdp::pipeline::config;

impl config::Host for HostState {
    async fn tenant(&mut self) -> wasmtime::Result<String> {
        Ok(self.scope.tenant.id.to_string())
    }

    async fn pipeline(&mut self) -> wasmtime::Result<String> {
        Ok(self.scope.pipeline.to_string())
    }

    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.scope.parameters.get(&key).cloned())
    }
}

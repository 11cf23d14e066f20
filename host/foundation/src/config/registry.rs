//! The tenant registry, `tenants/tenants.yaml`: which tenants exist and where
//! their profiles are. Each tenant's run-time directories live next to its
//! profile, under `tenants/<id>/`.

use super::platform_config::{ApiToken, read_token_file};
use super::{ConfigError, Profile, TenantId};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    tenants: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    id: TenantId,
    /// The profile, relative to the registry file.
    profile: PathBuf,
    /// A file with the tenant's own API token, relative to the registry file:
    /// it lets the tenant use the API for itself only.
    #[serde(default)]
    api_token_file: Option<PathBuf>,
}

/// A registered tenant with its validated profile.
#[derive(Debug)]
pub struct Tenant {
    pub id: TenantId,
    pub profile: Profile,
    pub profile_file: PathBuf,
    pub paths: TenantPaths,
    /// The tenant's own API token (`api_token_file` in the registry).
    pub api_token: Option<ApiToken>,
}

/// Where a tenant's files are. Only the host writes outside `staging/`.
#[derive(Debug, Clone)]
pub struct TenantPaths {
    pub root: PathBuf,
    /// Files waiting to be ingested.
    pub staging: PathBuf,
    /// Files that broke a constraint, each with a `.reason.json` beside it.
    pub quarantine: PathBuf,
    /// Files being ingested.
    pub work: PathBuf,
    /// Files ingested successfully.
    pub archive: PathBuf,
    /// Files whose ingestion failed, each with a `.reason.json` beside it.
    pub failed: PathBuf,
    /// Per-tenant logs (JSON lines).
    pub logs: PathBuf,
    /// Uploaded pipeline components, versioned.
    pub pipelines: PathBuf,
    /// What the host did with each staged file (claimed, done, failed, ...).
    /// Host state, so it lives in the platform's data directory: two
    /// platforms sharing the registry keep their own.
    pub manifest: PathBuf,
}

impl TenantPaths {
    fn new(root: PathBuf, manifest: PathBuf) -> Self {
        TenantPaths {
            manifest,
            staging: root.join("staging"),
            quarantine: root.join("quarantine"),
            work: root.join("work"),
            archive: root.join("archive"),
            failed: root.join("failed"),
            logs: root.join("logs"),
            pipelines: root.join("pipelines"),
            root,
        }
    }

    /// Creates the run-time directories.
    pub fn create(&self) -> std::io::Result<()> {
        for dir in [&self.staging, &self.quarantine, &self.work, &self.archive, &self.failed, &self.logs, &self.pipelines] {
            std::fs::create_dir_all(dir)?;
        }
        if let Some(dir) = self.manifest.parent() {
            std::fs::create_dir_all(dir)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct Registry {
    pub file: PathBuf,
    tenants: BTreeMap<TenantId, Arc<Tenant>>,
}

impl Registry {
    /// Loads the registry and every profile in it; the first invalid one is an
    /// error. Host state of the tenants goes under `data_dir`. Tenant tokens
    /// need the operator's (`api.token_file`) and must differ from it.
    pub fn load(file: &Path, data_dir: &Path, operator_token: Option<&ApiToken>) -> Result<Registry, ConfigError> {
        let raw: RegistryFile = super::load_yaml(file)?;
        let base = file.parent().unwrap_or(Path::new("."));
        let mut tenants = BTreeMap::new();
        for (i, entry) in raw.tenants.into_iter().enumerate() {
            if tenants.contains_key(&entry.id) {
                return Err(ConfigError::new(file, format!("tenants[{i}].id"), format!("`{}` is registered twice", entry.id)));
            }
            let profile_file = base.join(&entry.profile);
            let profile = Profile::load(&profile_file)?;
            let manifest = data_dir.join("manifests").join(format!("{}.jsonl", entry.id));
            let paths = TenantPaths::new(base.join(entry.id.as_str()), manifest);
            let field = format!("tenants[{i}].api_token_file");
            let api_token = entry.api_token_file.map(|token| read_token_file(&base.join(token), &field)).transpose()?;
            if let Some(token) = &api_token {
                let problem = match operator_token {
                    None => Some(
                        "tenant tokens need an operator token: set api.token_file in the platform config (without it the \
                         API is open to everyone, and a tenant token would limit nothing)",
                    ),
                    Some(operator) if operator.0 == token.0 => Some("is the operator's token (api.token_file); give the tenant its own"),
                    Some(_) if tenants.values().any(|t: &Arc<Tenant>| t.api_token.as_ref().is_some_and(|other| other.0 == token.0)) => {
                        Some("is the token of another tenant; give each tenant its own")
                    }
                    Some(_) => None,
                };
                if let Some(problem) = problem {
                    return Err(ConfigError::new(file, field, problem));
                }
            }
            tenants.insert(entry.id.clone(), Arc::new(Tenant { id: entry.id, profile, profile_file, paths, api_token }));
        }
        Ok(Registry { file: file.to_path_buf(), tenants })
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Tenant>> {
        TenantId::parse(id).ok().and_then(|id| self.tenants.get(&id))
    }

    /// The tenant `id`, or an error listing the registered ones.
    pub fn require(&self, id: &str) -> anyhow::Result<&Arc<Tenant>> {
        self.get(id).ok_or_else(|| {
            let known: Vec<&str> = self.tenants.keys().map(TenantId::as_str).collect();
            anyhow::anyhow!(
                "no tenant `{id}` in {} (registered: {}); add it there with a profile",
                self.file.display(),
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            )
        })
    }

    pub fn tenants(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.tenants.values()
    }
}

/// The registry in force, shared by every part of the host: replaced whole
/// by a reload, so a reader holds one consistent snapshot.
#[derive(Clone)]
pub struct RegistryHandle(Arc<RwLock<Arc<Registry>>>);

impl RegistryHandle {
    pub fn new(registry: Registry) -> RegistryHandle {
        RegistryHandle(Arc::new(RwLock::new(Arc::new(registry))))
    }

    /// The registry in force now (a snapshot: a reload does not change it).
    pub fn current(&self) -> Arc<Registry> {
        self.0.read().expect("registry poisoned").clone()
    }

    /// The tenant `id` as the registry in force has it.
    pub fn tenant(&self, id: &str) -> anyhow::Result<Arc<Tenant>> {
        self.current().require(id).cloned()
    }

    /// Puts `registry` in force.
    pub fn replace(&self, registry: Arc<Registry>) {
        *self.0.write().expect("registry poisoned") = registry;
    }
}

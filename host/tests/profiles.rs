//! Service profiles: the shipped ones and `valid/` parse; each file in
//! `invalid/` fails with exactly the message in its `.err` file (golden).
//! `UPDATE_GOLDEN=1 cargo test -p mysimbdp --test profiles` rewrites them.

use mysimbdp::config::Profile;
use std::path::{Path, PathBuf};

fn cases(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/profiles").join(dir);
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "yaml")).collect();
    files.sort();
    assert!(!files.is_empty(), "no cases in {}", dir.display());
    files
}

#[test]
fn valid_profiles_parse() {
    for file in cases("valid") {
        Profile::load(&file).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn invalid_profiles_fail_with_their_golden_message() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for file in cases("invalid") {
        let error = Profile::load(&file).expect_err(&format!("{} was accepted", file.display()));
        // The message names the file; compare without the machine's directory.
        let message = error.to_string().replace(&format!("{}", file.parent().unwrap().display()), "invalid");
        let golden = file.with_extension("err");
        if update {
            std::fs::write(&golden, format!("{message}\n")).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_else(|_| panic!("missing {}", golden.display()));
        assert_eq!(message, expected.trim_end(), "{}", file.display());
        assert_eq!(error.file, file, "the error names the file");
    }
}

#[test]
fn the_shipped_registry_loads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let registry = mysimbdp::config::Registry::load(&root.join("tenants/tenants.yaml"), &root.join("var"), None).unwrap();
    let ids: Vec<String> = registry.tenants().map(|t| t.id.to_string()).collect();
    assert_eq!(ids, ["retail", "sensors"]);
}

#[test]
fn an_invalid_tenant_id_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tenants.yaml");
    std::fs::write(&file, "tenants:\n  - id: Acme-EU\n    profile: acme/profile.yaml\n").unwrap();
    let error = mysimbdp::config::Registry::load(&file, dir.path(), None).unwrap_err();
    assert_eq!(error.field, "tenants[0].id");
    assert!(error.message.contains("`Acme-EU` is not a valid tenant id"), "{error}");
}

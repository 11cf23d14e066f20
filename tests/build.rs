//! Compiles every guest of the repository (the examples and the test
//! fixtures) from source for wasm32-wasip2 and exposes their paths as
//! constants, e.g. `artifacts::RETAIL_ORDERS`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let tests = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = tests.parent().expect("tests/ is inside the workspace").to_path_buf();
    let mut guests = Vec::new();
    for dir in [root.join("examples"), tests.join("fixtures")] {
        println!("cargo:rerun-if-changed={}", dir.display());
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir).expect("read guest dir").flatten().map(|e| e.path()).collect();
        entries.sort();
        for crate_dir in entries {
            let manifest = crate_dir.join("Cargo.toml");
            let Ok(text) = std::fs::read_to_string(&manifest) else { continue };
            // Library crates shared by guests (no cdylib) are not components.
            if text.contains("cdylib") {
                guests.push((package_name(&text, &manifest), crate_dir.starts_with(tests.join("fixtures"))));
            }
            println!("cargo:rerun-if-changed={}", crate_dir.join("src").display());
        }
    }
    for watched in ["wit", "guest-sdk/src", "guest-sdk/macros/src", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    let target_dir = root.join("target").join("guests");
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo.current_dir(&root).args(["build", "--release", "--target", "wasm32-wasip2", "--target-dir"]).arg(&target_dir);
    for (name, _) in &guests {
        cargo.args(["-p", name]);
    }
    // Flags meant for the host build must not leak into the wasm build, nor
    // the test command's clippy-driver (guests are built as tenants build
    // them; their crates are linted in the workspace's own build).
    for variable in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_PRIMARY_PACKAGE",
        "RUSTC_WORKSPACE_WRAPPER",
        "CLIPPY_ARGS",
    ] {
        cargo.env_remove(variable);
    }
    let output = cargo.output().expect("run cargo to build the guests");
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let hint = if stderr.contains("wasm32-wasip2") && stderr.contains("target may not be installed") {
            "\nInstall the target with `rustup target add wasm32-wasip2` (scripts/setup.sh does it)."
        } else {
            ""
        };
        panic!("building the guest components failed:\n{stderr}{hint}");
    }

    let mut constants = String::new();
    let mut fixtures = Vec::new();
    for (name, is_fixture) in &guests {
        let mut file = target_dir.join("wasm32-wasip2").join("release").join(format!("{}.wasm", name.replace('-', "_")));
        assert!(file.exists(), "cargo built {name} but {} is missing", file.display());
        if name == "many-memories" {
            // A second build of it: more memories than a store may create, each small.
            let nine = with_extra_memories(&file, MEMORIES_PAST_THE_CAP, 1, "nine");
            constants.push_str(&format!("pub const NINE_MEMORIES: &str = {:?};\n", nine.display().to_string()));
            file = with_extra_memories(&file, EXTRA_MEMORIES, 640, "extended");
        }
        let constant = name.replace('-', "_").to_uppercase();
        constants.push_str(&format!("pub const {constant}: &str = {:?};\n", file.display().to_string()));
        if *is_fixture {
            fixtures.push(constant);
        }
    }
    constants.push_str(&format!("/// Every test fixture, to check each one has a test.\npub const FIXTURES: &[&str] = &{fixtures:?};\n"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("artifacts.rs");
    std::fs::write(out, constants).expect("write artifacts.rs");
}

/// Extra core instances of the `many-memories` fixture, each with a memory
/// of 640 pages (40 MiB), touched page by page by its start function: with
/// the component's own memory 7, below the host's cap of 8 memories per
/// invocation, so only the shared byte budget stops them.
const EXTRA_MEMORIES: usize = 6;
/// Extra memories of one page of `NINE_MEMORIES`: with the component's own,
/// 9, one past the host's cap of 8 memories per invocation.
const MEMORIES_PAST_THE_CAP: usize = 8;

/// The component at `file` with `count` core instances added, each of a
/// module with its own memory of `pages` (64 KiB each) that its start
/// function touches page by page (in the component text format: printed,
/// extended, parsed again). Written beside it as `<name>-<suffix>.wasm`.
fn with_extra_memories(file: &Path, count: usize, pages: u32, suffix: &str) -> PathBuf {
    let bytes = std::fs::read(file).expect("read the built component");
    let text = wasmprinter::print_bytes(&bytes).expect("print the component");
    let end = text.trim_end().strip_suffix(')').expect("a component's text ends with `)`");
    let mut extended = end.to_string();
    extended.push_str(&format!(
        r#"
  (core module $mysimbdp_extra_memory
    (memory {pages})
    (func $touch (local $at i32)
      (loop $page
        (i32.store8 (local.get $at) (i32.const 1))
        (local.set $at (i32.add (local.get $at) (i32.const 65536)))
        (br_if $page (i32.lt_u (local.get $at) (i32.const {bytes})))))
    (start $touch))
"#,
        bytes = u64::from(pages) * 65536,
    ));
    for n in 0..count {
        extended.push_str(&format!("  (core instance $mysimbdp_extra_{n} (instantiate $mysimbdp_extra_memory))\n"));
    }
    extended.push_str(")\n");
    let binary = wat::parse_str(&extended).expect("parse the extended component");
    let out = file.with_file_name(format!("{}-{suffix}.wasm", file.file_stem().unwrap().to_string_lossy()));
    std::fs::write(&out, binary).expect("write the extended component");
    out
}

fn package_name(manifest_text: &str, manifest: &Path) -> String {
    manifest_text
        .lines()
        .find_map(|line| line.trim().strip_prefix("name = ").map(|v| v.trim_matches('"').to_string()))
        .unwrap_or_else(|| panic!("no package name in {}", manifest.display()))
}

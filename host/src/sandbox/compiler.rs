//! Compiling tenants' components in a child process under CPU-time and
//! memory limits (`setrlimit`), so a component built to make Cranelift work
//! for hours or allocate without end takes down only that child. The child
//! is this binary's hidden `compile-component` command: it reads the
//! component on stdin, compiles it with the engine settings of the host,
//! checks the world, and writes the serialized artifact on stdout.

use super::{EngineSet, prepare};
use crate::config::{PipelineKind, PipelinesConfig};
use anyhow::Context;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use wasmtime::component::Component;

/// The hidden command of the CLI that compiles in the child.
pub const CHILD_COMMAND: &str = "compile-component";

/// Exit code of the child for a component that is not valid or does not
/// implement its world (the reason is the last line on stderr).
const INVALID: i32 = 3;

/// Where and under which limits components are compiled.
#[derive(Debug, Clone)]
pub struct Compiler {
    exe: PathBuf,
    cpu_seconds: u64,
    memory_bytes: u64,
}

/// How a compilation in the child ended, from its exit status and stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Compiled,
    /// Not a valid component, or not one of the world: the child's reason.
    Invalid(String),
    CpuLimit,
    MemoryLimit,
    /// Still running when the wall-clock bound passed (it was killed).
    WallLimit,
    /// Ended some other way: what the status and stderr said.
    Crashed(String),
}

/// Decides what the child's end means. `killed_for_time` is whether the
/// parent killed it for passing the wall-clock bound.
pub fn verdict(code: Option<i32>, signal: Option<i32>, stderr: &str, killed_for_time: bool) -> Verdict {
    let out_of_memory =
        ["memory allocation of", "out of memory", "Cannot allocate memory", "failed to allocate"].iter().any(|text| stderr.contains(text));
    let last_line = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    match (code, signal) {
        _ if killed_for_time => Verdict::WallLimit,
        (Some(0), _) => Verdict::Compiled,
        (_, Some(libc::SIGXCPU)) => Verdict::CpuLimit,
        // The hard CPU limit, one second past the soft one, is SIGKILL.
        (_, Some(libc::SIGKILL)) => Verdict::CpuLimit,
        _ if out_of_memory => Verdict::MemoryLimit,
        (Some(INVALID), _) => Verdict::Invalid(last_line.trim_start_matches("error: ").to_string()),
        (Some(code), _) => Verdict::Crashed(format!("exit code {code}: {last_line}")),
        (None, Some(signal)) => Verdict::Crashed(format!("signal {signal}: {last_line}")),
        (None, None) => Verdict::Crashed(last_line.to_string()),
    }
}

impl Compiler {
    pub fn new(config: &PipelinesConfig) -> anyhow::Result<Compiler> {
        let exe = match &config.compiler {
            Some(exe) => exe.clone(),
            None => std::env::current_exe().context("cannot find this program to compile components in a child process")?,
        };
        Ok(Compiler { exe, cpu_seconds: config.compile_cpu_seconds, memory_bytes: config.compile_memory_bytes.bytes() })
    }

    /// Compiles `component` for an engine of `stack_bytes` in a child
    /// process and checks that it implements the world of `kind`; returns
    /// the serialized artifact. Blocks until the child ends.
    pub fn compile(&self, kind: PipelineKind, stack_bytes: u64, component: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut command = Command::new(&self.exe);
        command
            .args([CHILD_COMMAND, "--kind", kind.as_str(), "--stack-bytes", &stack_bytes.to_string()])
            .env("MYSIMBDP_LOG", "error")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let (cpu, memory) = (self.cpu_seconds, self.memory_bytes);
        // SAFETY: between fork and exec the closure only calls setrlimit,
        // which is async-signal-safe, and allocates nothing.
        unsafe {
            command.pre_exec(move || {
                let limit = |resource, soft: u64, hard: u64| {
                    let value = libc::rlimit { rlim_cur: soft, rlim_max: hard };
                    if libc::setrlimit(resource, &value) == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
                };
                limit(libc::RLIMIT_CPU, cpu, cpu + 1)?;
                limit(libc::RLIMIT_DATA, memory, memory)?;
                limit(libc::RLIMIT_CORE, 0, 0)
            });
        }
        let mut child =
            command.spawn().with_context(|| format!("cannot start the compiler {} (pipelines.compiler)", self.exe.display()))?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let input = component.to_vec();
        // The child may end before reading everything (a limit): ignore EPIPE.
        let writer = std::thread::spawn(move || drop(stdin.write_all(&input)));
        let mut stdout = child.stdout.take().expect("piped stdout");
        let reader = std::thread::spawn(move || {
            let mut artifact = Vec::new();
            stdout.read_to_end(&mut artifact).map(|_| artifact)
        });
        let mut stderr = child.stderr.take().expect("piped stderr");
        // Only the end of stderr is kept: a child cannot fill our memory.
        let errors = std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = stderr.by_ref().take(64 * 1024).read_to_end(&mut text);
            let _ = std::io::copy(&mut stderr, &mut std::io::sink());
            String::from_utf8_lossy(&text).into_owned()
        });
        // CPU time bounds the work; this bounds a child that waits instead.
        let wall = Duration::from_secs(self.cpu_seconds * 3 + 30);
        let started = Instant::now();
        let mut killed_for_time = false;
        let status = loop {
            if let Some(status) = child.try_wait().context("waiting for the compiler")? {
                break status;
            }
            if !killed_for_time && started.elapsed() > wall {
                let _ = child.kill();
                killed_for_time = true;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let _ = writer.join();
        let artifact = reader.join().expect("compiler output reader").context("reading the compiled artifact")?;
        let stderr = errors.join().expect("compiler error reader");
        match verdict(status.code(), status.signal(), &stderr, killed_for_time) {
            Verdict::Compiled => Ok(artifact),
            Verdict::Invalid(reason) => anyhow::bail!("{reason}"),
            Verdict::CpuLimit => anyhow::bail!(
                "compiling the component took more than {} s of CPU time, the platform's limit (pipelines.compile_cpu_seconds); make the component smaller or simpler",
                self.cpu_seconds
            ),
            Verdict::MemoryLimit => anyhow::bail!(
                "compiling the component needed more than {} of memory, the platform's limit (pipelines.compile_memory_bytes); make the component smaller or simpler",
                crate::config::ByteSize(self.memory_bytes)
            ),
            Verdict::WallLimit => anyhow::bail!(
                "compiling the component did not end within {} s and was stopped (pipelines.compile_cpu_seconds bounds it)",
                wall.as_secs()
            ),
            Verdict::Crashed(how) => anyhow::bail!("the compiler ended unexpectedly ({how})"),
        }
    }
}

/// The child's side (`mysimbdp compile-component`): stdin to stdout.
pub fn child_main(kind: PipelineKind, stack_bytes: u64) -> u8 {
    let mut component = Vec::new();
    if let Err(error) = std::io::stdin().read_to_end(&mut component) {
        eprintln!("error: cannot read the component: {error}");
        return 1;
    }
    let compiled = EngineSet::new(stack_bytes).and_then(|set| {
        let component =
            Component::new(&set.engine, &component).map_err(anyhow::Error::from).context("not a valid WebAssembly component")?;
        prepare(&set, kind, &component)?;
        component.serialize().map_err(anyhow::Error::from)
    });
    match compiled {
        Ok(artifact) => match std::io::stdout().lock().write_all(&artifact) {
            Ok(()) => 0,
            Err(error) => {
                eprintln!("error: cannot write the artifact: {error}");
                1
            }
        },
        Err(error) => {
            // One line: the parent reports the last one.
            eprintln!("error: {}", format!("{error:#}").replace('\n', " "));
            INVALID as u8
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_childs_end_is_read_as_what_happened() {
        let invalid = Verdict::Invalid("not a valid WebAssembly component: bad magic".into());
        // Exit code, signal, stderr, killed for the wall-clock bound: the verdict.
        type Case<'a> = (Option<i32>, Option<i32>, &'a str, bool, Verdict);
        let cases: &[Case] = &[
            (Some(0), None, "", false, Verdict::Compiled),
            (Some(0), None, "a warning", false, Verdict::Compiled),
            (Some(3), None, "noise\nerror: not a valid WebAssembly component: bad magic\n", false, invalid),
            (None, Some(libc::SIGXCPU), "", false, Verdict::CpuLimit),
            (None, Some(libc::SIGKILL), "", false, Verdict::CpuLimit),
            (None, Some(libc::SIGABRT), "memory allocation of 1048576 bytes failed\n", false, Verdict::MemoryLimit),
            (Some(3), None, "error: failed to allocate 64 MiB: Cannot allocate memory (os error 12)", false, Verdict::MemoryLimit),
            (None, Some(libc::SIGKILL), "", true, Verdict::WallLimit),
            (
                Some(101),
                None,
                "thread 'main' panicked at x\n",
                false,
                Verdict::Crashed("exit code 101: thread 'main' panicked at x".into()),
            ),
            (None, Some(libc::SIGSEGV), "", false, Verdict::Crashed(format!("signal {}: ", libc::SIGSEGV))),
        ];
        for (code, signal, stderr, killed, expected) in cases {
            assert_eq!(&verdict(*code, *signal, stderr, *killed), expected, "{code:?} {signal:?} {stderr:?} {killed}");
        }
    }
}

//! Fuzzing of every parser a tenant (or whoever writes the host's files)
//! can reach: the profile parser, the query pre-check, the packed-document
//! decoder, the manifest reader and the embedded message-log reader
//! (`mysimbdp::fuzzing`). Each target starts from its committed corpus
//! (`fuzz/corpus/<target>/`, where an input that once failed is added as a
//! regression input; none has so far) and runs mutated inputs for
//! `MYSIMBDP_FUZZ_SECONDS` (default 60) seconds: bit flips, interesting bytes, inserted and deleted ranges,
//! splices of two inputs, tokens of the format.
//!
//! A panic, or one input running longer than 10 s, fails the test: the input
//! is written to `target/fuzz-crashes/<target>-<hash>` and the seed printed,
//! `MYSIMBDP_FUZZ_SEED=<seed>` replays the run. Add the input to the corpus
//! and a regression test beside the parser when fixing it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Inputs longer than this are cut: the parsers' limits are tested elsewhere.
const MAX_INPUT: usize = 64 * 1024;
/// One input running longer than this is a hang.
const HANG: Duration = Duration::from_secs(10);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// fastrand's generator: the same inputs for the same seed.
struct Rng(fastrand::Rng);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0.u64(..)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { self.0.usize(..n) }
    }
}

const INTERESTING: &[u8] =
    &[0, 1, 0x7f, 0x80, 0xff, b'\n', b'\r', b'\t', b' ', b'#', b'"', b'\\', b'(', b')', b':', b'-', b'{', b'}', b'[', b']'];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>], tokens: &[&[u8]]) {
    for _ in 0..1 + rng.below(8) {
        let len = input.len();
        match rng.below(9) {
            0 if len > 0 => {
                let at = rng.below(len);
                input[at] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let at = rng.below(len);
                input[at] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let at = rng.below(len + 1);
                let bytes: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next() as u8).collect();
                input.splice(at..at, bytes);
            }
            3 if len > 0 => {
                let at = rng.below(len);
                let end = (at + 1 + rng.below(32)).min(len);
                input.drain(at..end);
            }
            4 if len > 0 => {
                // Repeat a range: deep nesting, long runs.
                let at = rng.below(len);
                let end = (at + 1 + rng.below(16)).min(len);
                let piece = input[at..end].to_vec();
                for _ in 0..1 + rng.below(64) {
                    input.splice(at..at, piece.iter().copied());
                }
            }
            5 if !corpus.is_empty() => {
                let other = &corpus[rng.below(corpus.len())];
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                input.truncate(cut);
                input.extend_from_slice(&other[from..]);
            }
            6 if !tokens.is_empty() => {
                let at = rng.below(len + 1);
                input.splice(at..at, tokens[rng.below(tokens.len())].iter().copied());
            }
            7 if len > 0 => {
                let at = rng.below(len);
                let digits = format!("{}", rng.next() >> rng.below(64));
                input.splice(at..at, digits.into_bytes());
            }
            _ => input.truncate(rng.below(len + 1)),
        }
    }
    input.truncate(MAX_INPUT);
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = repo_root().join("fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the corpus {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the corpus of {target} is empty");
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

fn save_crash(target: &str, input: &[u8]) -> PathBuf {
    let dir = repo_root().join("target/fuzz-crashes");
    std::fs::create_dir_all(&dir).unwrap();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in input {
        hash = (hash ^ *b as u64).wrapping_mul(0x100_0000_01b3);
    }
    let file = dir.join(format!("{target}-{hash:016x}"));
    std::fs::write(&file, input).unwrap();
    file
}

/// Runs `target` on its corpus, then on mutations of it until the time is up.
fn fuzz(target: &str, tokens: &[&[u8]], run: impl Fn(&[u8]) + Send + Sync + 'static) {
    let seconds: u64 = std::env::var("MYSIMBDP_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let seed: u64 = std::env::var("MYSIMBDP_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1);
    println!("fuzz {target}: seed {seed} (MYSIMBDP_FUZZ_SEED replays), {seconds} s");
    let mut corpus = corpus(target);
    let run = Arc::new(run);
    // A watchdog: an input that runs too long is saved and fails the run.
    let current: Arc<Mutex<Vec<u8>>> = Arc::default();
    let started_at = Arc::new(AtomicU64::new(0));
    let clock = Instant::now();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog = {
        let (current, started_at, stop, target) = (current.clone(), started_at.clone(), stop.clone(), target.to_string());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let since = started_at.load(Ordering::Relaxed);
                if since != 0 && (clock.elapsed().as_millis() as u64).saturating_sub(since) > HANG.as_millis() as u64 {
                    let file = save_crash(&target, &current.lock().unwrap());
                    eprintln!("fuzz {target}: an input ran longer than {HANG:?}: {} (seed {seed})", file.display());
                    std::process::abort();
                }
            }
        })
    };
    let try_one = |input: &[u8]| {
        *current.lock().unwrap() = input.to_vec();
        started_at.store(clock.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
        let run = run.clone();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(input)));
        started_at.store(0, Ordering::Relaxed);
        if outcome.is_err() {
            let file = save_crash(target, input);
            panic!("fuzz {target}: the input {} made the parser panic (seed {seed})", file.display());
        }
    };
    for input in corpus.clone() {
        try_one(&input);
    }
    let mut rng = Rng(fastrand::Rng::with_seed(seed));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut runs: u64 = 0;
    while Instant::now() < deadline {
        let mut input = corpus[rng.below(corpus.len())].clone();
        mutate(&mut rng, &mut input, &corpus, tokens);
        try_one(&input);
        runs += 1;
        // Keep some mutants as parents: deeper mutations over the run.
        if rng.below(64) == 0 && corpus.len() < 4096 {
            corpus.push(input);
        }
    }
    stop.store(true, Ordering::Relaxed);
    watchdog.join().unwrap();
    println!("fuzz {target}: {runs} inputs, no failure");
    assert!(runs > 0 || seconds == 0, "the run tried no mutated input");
}

#[test]
fn fuzz_profile_parser() {
    let tokens: &[&[u8]] = &[
        b"batch:\n",
        b"stream:\n",
        b"sandbox:\n",
        b"  - name: x\n",
        b"files: \"**/*.csv\"\n",
        b"memory_bytes: 64MiB\n",
        b"schedule: \"0 * * * * *\"\n",
        b"*a",
        b"&a ",
        b"!!binary ",
        b"999999999999999999999",
        b"1e400",
        b"~",
        b"{",
        b"[",
    ];
    fuzz("profile", tokens, mysimbdp::fuzzing::profile);
}

#[test]
fn fuzz_query_precheck() {
    fuzz("query", QUERY_TOKENS, mysimbdp::fuzzing::query);
}

const QUERY_TOKENS: &[&[u8]] = &[
    b"(",
    b")",
    b"\\",
    b"\"",
    b"NOT ",
    b"AND ",
    b"OR ",
    b"field:",
    b"[a TO b]",
    b"*",
    b"^2",
    b"~2",
    b"\t",
    b"\0",
    b"\x01",
    b"customer.country:",
    b"total_eur:",
    b"lines.sku:",
    b"note:\"o o o\"",
    b"at:[2026-11-01T00:00:00Z TO *]",
    b"o ",
    b"/o.*/",
];

/// Every query the pre-check passes, searched on a small embedded
/// collection: the store answers it or finds it invalid, never fails.
#[test]
fn fuzz_queries_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = mysimbdp::fuzzing::QueryStore::open(dir.path());
    fuzz("query", QUERY_TOKENS, move |bytes| {
        let _keep = &dir;
        store.query(bytes)
    });
}

#[test]
fn fuzz_packed_document_decoder() {
    let tokens: &[&[u8]] = &[&[0, 0, 0, 0], &[0xff, 0xff, 0xff, 0xff], "é".as_bytes(), "🦀".as_bytes(), b"{\"a\":1}"];
    fuzz("packed", tokens, mysimbdp::fuzzing::packed_documents);
}

#[test]
fn fuzz_manifest_reader() {
    let tokens: &[&[u8]] = &[b"#00000000 00000000 ", b"{\"id\":\"", b"\"state\":\"done\"", b"\"state\":\"claimed\"", b"null", b"\n"];
    fuzz("manifest", tokens, mysimbdp::fuzzing::manifest);
}

#[test]
fn fuzz_message_log_reader() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().to_path_buf();
    let tokens: &[&[u8]] = &[b"#00000000 00000000 ", b"{\"value\":\"", b"\"key\":", b"\"headers\":[", b"=", b"\n"];
    fuzz("message-log", tokens, move |bytes| mysimbdp::fuzzing::message_log(bytes, &dir));
    drop(scratch);
}

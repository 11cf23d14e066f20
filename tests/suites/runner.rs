//! The test runner's own check: a test that hangs must be stopped by its
//! timeout and named. `scripts/test.sh` runs the one test here through
//! cargo-nextest's `runner-self-test` profile (a 5 s timeout) with
//! `MYSIMBDP_RUNNER_SELF_TEST=hang`, and fails unless nextest failed it as a
//! timeout and printed its name. It is ignored otherwise, and without the
//! variable it fails at once instead of hanging a run that asked for it.

#[test]
#[ignore = "hangs on purpose: only the runner's self-test in scripts/test.sh runs it"]
fn a_test_that_hangs_is_stopped_by_its_timeout() {
    assert_eq!(
        std::env::var("MYSIMBDP_RUNNER_SELF_TEST").as_deref(),
        Ok("hang"),
        "this test hangs on purpose; it runs only in the runner's self-test (scripts/test.sh)"
    );
    loop {
        std::thread::park();
    }
}

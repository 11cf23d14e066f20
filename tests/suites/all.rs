//! Every integration suite, each a module of this one test binary (as
//! wasmtime's `tests/all`): the suites link wasmtime, cranelift, tantivy and
//! librdkafka once instead of once each. Run them with cargo-nextest
//! (`scripts/test.sh`, `scripts/test.sh --quick`), which runs each test in a
//! process of its own under the timeouts, groups and priorities of
//! `.config/nextest.toml`; a test's name is `<suite>::<test>`.
//!
//! Suites that need Kafka and OpenSearch (`distributed`, `overload`, and the
//! crash tests `…_on_kafka_and_opensearch`) fail when the services are
//! absent; the quick tier leaves them out by its filter.

mod batch;
mod budgets;
mod connections;
mod core;
mod crash;
mod distributed;
mod durability;
mod fuzz;
mod hostile;
mod observability;
mod overload;
mod runner;
mod upload;

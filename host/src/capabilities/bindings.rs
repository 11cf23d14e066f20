//! Host bindings of the two worlds, generated from `wit/pipeline.wit`. The
//! stream world reuses the batch world's interfaces so one set of trait
//! implementations (in `capabilities`) serves both.

pub mod batch {
    wasmtime::component::bindgen!({
        path: "../wit/pipeline.wit",
        world: "mysimbdp:pipeline/batch-pipeline",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "mysimbdp:pipeline/staging.input-file": crate::capabilities::input_file::InputFile,
        },
    });
}

pub mod stream {
    wasmtime::component::bindgen!({
        path: "../wit/pipeline.wit",
        world: "mysimbdp:pipeline/stream-pipeline",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "mysimbdp:pipeline/types": super::batch::mysimbdp::pipeline::types,
            "mysimbdp:pipeline/coredms": super::batch::mysimbdp::pipeline::coredms,
            "mysimbdp:pipeline/messaging": super::batch::mysimbdp::pipeline::messaging,
            "mysimbdp:pipeline/dead-letter": super::batch::mysimbdp::pipeline::dead_letter,
            "mysimbdp:pipeline/log": super::batch::mysimbdp::pipeline::log,
            "mysimbdp:pipeline/metrics": super::batch::mysimbdp::pipeline::metrics,
            "mysimbdp:pipeline/config": super::batch::mysimbdp::pipeline::config,
        },
    });
}

pub use batch::mysimbdp::pipeline::types::{
    BatchReport, BulkReport, DeadRecord, Document, Error as GuestError, ItemFailure, Level, Message, Outgoing, StreamReport,
};

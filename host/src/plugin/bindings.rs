//! Host-side bindings of the WIT contract (`sdk/wit/hongbao-plugin.wit`), one per world.
//!
//! `types` and `host` are generated once (in [`bill_copy`]) and shared by the other worlds
//! through `with`, so the host implements its functions once. Each world's export types
//! (`Award`, `Decision`, …) live in that world's own module.
#![allow(missing_docs, clippy::all)]

/// The bill-copy world; also the home of the shared `types` and `host` interfaces.
pub mod bill_copy {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "bill-copy-plugin",
        imports: { default: trappable },
        additional_derives: [PartialEq],
    });
}

/// The rate-limit world.
pub mod rate_limit {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "rate-limit-plugin",
        with: {
            "hongbao:plugin/types": super::bill_copy::hongbao::plugin::types,
            "hongbao:plugin/host": super::bill_copy::hongbao::plugin::host,
        },
        additional_derives: [PartialEq],
    });
}

/// The inventory world.
pub mod inventory {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "inventory-plugin",
        with: {
            "hongbao:plugin/types": super::bill_copy::hongbao::plugin::types,
            "hongbao:plugin/host": super::bill_copy::hongbao::plugin::host,
        },
        additional_derives: [PartialEq],
    });
}

/// The compensation world.
pub mod compensation {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "compensation-plugin",
        with: {
            "hongbao:plugin/types": super::bill_copy::hongbao::plugin::types,
            "hongbao:plugin/host": super::bill_copy::hongbao::plugin::host,
        },
        additional_derives: [PartialEq],
    });
}

/// The reconciliation world.
pub mod reconciliation {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "reconciliation-plugin",
        with: {
            "hongbao:plugin/types": super::bill_copy::hongbao::plugin::types,
            "hongbao:plugin/host": super::bill_copy::hongbao::plugin::host,
        },
        additional_derives: [PartialEq],
    });
}

pub use bill_copy::hongbao::plugin::{host, types};

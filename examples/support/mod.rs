//! Pieces the scale benchmarks share (`examples/scale.rs`, `examples/cluster_scale.rs`): the
//! proxy process under test, and the emulated VMs and clients that load it.

pub(crate) mod fleet;
pub(crate) mod proxy;

use std::time::Duration;

/// Every wait is bounded by this.
pub(crate) const WAIT: Duration = Duration::from_secs(60);

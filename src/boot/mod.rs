//! Booting images under QEMU and talking to them: `agent` is the host side of the
//! in-image test agent (agent/ crate, `slipway-agent test-agent`).

pub mod agent;

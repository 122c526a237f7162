//! The Rust side of the entry stubs: the dispatcher every vector reaches
//! (`traps`), external interrupts, NMIs, the paranoid-entry discipline, and
//! the frame observation and fault injection the tests use.

pub mod events;
pub mod fault;
pub mod irq;
pub mod nmi;
pub mod paranoid;
pub mod traps;

//! The entry core: what the dispatcher (`dispatch`) and the SYSCALL path
//! (`user::syscall`) build on. The kernel's side of the generic entry
//! (`platform`), the frame checker (`check`), the hooks the modes install
//! (`hooks`), external interrupts (`irq`), NMIs (`nmi`), the paranoid-entry
//! discipline (`paranoid`), and the frame observation (`events`) and fault
//! injection (`fault`) the tests use, and the NMI backtrace of every CPU
//! (`backtrace`).

pub mod backtrace;
pub mod check;
pub mod events;
pub mod fault;
pub mod hooks;
pub mod irq;
pub mod nmi;
pub mod paranoid;
pub mod platform;

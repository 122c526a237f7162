// Linux ABI numbers the entry code uses. Included by lib.rs and by
// build.rs (which hands them to the assembler), so each is written once.

/// Linux's ENOSYS (what a 32-bit SYSCALL returns, negated).
pub const ENOSYS: u64 = 38;

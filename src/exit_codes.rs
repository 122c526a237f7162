//! Every exit status the runner deals in, in one place: what QEMU exits
//! with when the kernel writes to `isa-debug-exit`, and what `extregs`
//! itself exits with (the contract in docs/design.md, "Contracts").
//! `qemu` (which runs a boot) and `report` (which judges it) both read
//! these; neither imports the other for them.

/// QEMU's exit status when the kernel wrote 0x10 to isa-debug-exit.
pub const QEMU_EXIT_SUCCESS: i32 = (0x10 << 1) | 1;
/// QEMU's exit status when the kernel wrote 0x11 to isa-debug-exit.
pub const QEMU_EXIT_FAILURE: i32 = (0x11 << 1) | 1;

/// `extregs` exit status: the kernel reported success.
pub const EXIT_SUCCESS: i32 = 0;
/// `extregs` exit status: the kernel failed, crashed or said nothing.
pub const EXIT_KERNEL_FAILURE: i32 = 1;
/// `extregs` exit status: bad usage or missing set-up.
pub const EXIT_USAGE: i32 = 2;
/// `extregs` exit status: QEMU was killed at the timeout.
pub const EXIT_TIMEOUT: i32 = 124;
/// `extregs` exit status: a campaign stopped by Ctrl-C (128 + SIGINT, as
/// a shell reports it).
pub const EXIT_INTERRUPTED: i32 = 130;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_exit_statuses_are_the_debug_exit_values() {
        assert_eq!(QEMU_EXIT_SUCCESS, 33);
        assert_eq!(QEMU_EXIT_FAILURE, 35);
    }
}

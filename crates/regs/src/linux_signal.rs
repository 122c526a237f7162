//! Linux's x86-64 signal frame, the user-visible ABI of signal delivery:
//! `struct rt_sigframe` (`arch/x86/include/asm/sigframe.h`) with its
//! `ucontext`, `sigcontext` and `siginfo`, in Linux's layout and field
//! order. A handler and `rt_sigreturn` read and write these bytes on the
//! user stack, so every offset is asserted here against the numbers
//! Linux's UAPI headers give (and the host tests check them again through
//! `offset_of!`), and the kernel writes them only through these types.
//!
//! ```text
//!   +------------------------+  <- 64-byte aligned, above the frame
//!   | fpstate: FXSAVE, 512 B |     (sigcontext.fpstate points here)
//!   +------------------------+
//!   | siginfo      (128 B)   |  frame + 312
//!   | ucontext     (304 B)   |  frame + 8: flags, link, uc_stack,
//!   |                        |    sigcontext (256 B), sigmask
//!   | pretcode = sa_restorer |  frame + 0: the handler's return address
//!   +------------------------+  <- handler's RSP: 16n + 8 (as after a call)
//! ```

use memoffset::offset_of;
use static_assertions::const_assert_eq;

/// `struct sigcontext` (64-bit): the interrupted registers, in Linux's
/// order (`r8` first, as `REG_R8 = 0` in glibc's `gregs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct SigContext {
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub di: u64,
    pub si: u64,
    pub bp: u64,
    pub bx: u64,
    pub dx: u64,
    pub ax: u64,
    pub cx: u64,
    pub sp: u64,
    pub ip: u64,
    pub flags: u64,
    pub cs: u16,
    pub gs: u16,
    pub fs: u16,
    pub ss: u16,
    pub err: u64,
    pub trapno: u64,
    pub oldmask: u64,
    pub cr2: u64,
    /// User address of the FXSAVE image (0: none, the FPU is reset).
    pub fpstate: u64,
    pub reserved1: [u64; 8],
}

/// `stack_t`: an alternate signal stack.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct StackT {
    pub ss_sp: u64,
    pub ss_flags: i32,
    pub padding: i32,
    pub ss_size: u64,
}

/// The kernel's `struct ucontext` (its sigmask is the kernel's 8-byte
/// `sigset_t`, not libc's 128-byte one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct UContext {
    pub uc_flags: u64,
    pub uc_link: u64,
    pub uc_stack: StackT,
    pub uc_mcontext: SigContext,
    pub uc_sigmask: u64,
}

/// `siginfo_t`: 128 bytes; the union's first words, as the signals here
/// fill them: `si_addr` (faults) or `si_pid`/`si_uid` (kill, tkill), one
/// `u64` word at offset 16.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct SigInfo {
    pub si_signo: i32,
    pub si_errno: i32,
    pub si_code: i32,
    pub padding: i32,
    /// `si_addr`, or `si_pid | si_uid << 32`.
    pub first: u64,
    pub rest: [u64; 13],
}

/// `struct rt_sigframe` (64-bit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct RtSigFrame {
    /// The handler's return address: `sa_restorer`.
    pub pretcode: u64,
    pub uc: UContext,
    pub info: SigInfo,
}

/// `uc_flags`: the frame's SS is meaningful, and `rt_sigreturn` restores
/// it strictly (Linux sets both on every 64-bit frame since 4.6).
pub const UC_SIGCONTEXT_SS: u64 = 0x2;
pub const UC_STRICT_RESTORE_SS: u64 = 0x4;
/// Bytes of the FXSAVE image a frame carries.
pub const FPSTATE_SIZE: usize = 512;
/// The fpstate's alignment on the stack (Linux aligns it to 64).
pub const FPSTATE_ALIGN: u64 = 64;
/// The bytes below a user RSP a handler's frame skips (the ABI's red
/// zone).
pub const RED_ZONE: u64 = 128;
/// `AT_MINSIGSTKSZ`: the frame, its fpstate and alignment slack.
pub const MIN_SIGNAL_STACK: u64 = 2048;

// Linux's offsets (UAPI `asm/sigcontext.h`, `asm/ucontext.h`,
// `asm-generic/siginfo.h`, `asm/sigframe.h`).
const_assert_eq!(core::mem::size_of::<SigContext>(), 256);
const_assert_eq!(core::mem::size_of::<StackT>(), 24);
const_assert_eq!(core::mem::size_of::<UContext>(), 304);
const_assert_eq!(core::mem::size_of::<SigInfo>(), 128);
const_assert_eq!(core::mem::size_of::<RtSigFrame>(), 440);

/// `offset_of!` for the layout tests and the kernel's argument registers.
pub fn frame_offsets() -> [(&'static str, usize); 12] {
    [
        ("uc", offset_of!(RtSigFrame, uc)),
        ("info", offset_of!(RtSigFrame, info)),
        ("uc_mcontext", offset_of!(UContext, uc_mcontext)),
        ("uc_sigmask", offset_of!(UContext, uc_sigmask)),
        ("uc_stack", offset_of!(UContext, uc_stack)),
        ("sc.ip", offset_of!(SigContext, ip)),
        ("sc.flags", offset_of!(SigContext, flags)),
        ("sc.cs", offset_of!(SigContext, cs)),
        ("sc.ss", offset_of!(SigContext, ss)),
        ("sc.err", offset_of!(SigContext, err)),
        ("sc.cr2", offset_of!(SigContext, cr2)),
        ("sc.fpstate", offset_of!(SigContext, fpstate)),
    ]
}

/// Where `ucontext` and `siginfo` start in the frame (`%rdx`, `%rsi`).
pub const FRAME_UC_OFFSET: u64 = 8;
pub const FRAME_INFO_OFFSET: u64 = 312;

impl RtSigFrame {
    /// The frame's bytes, as they go to the user stack.
    pub fn to_bytes(&self) -> [u8; 440] {
        // SAFETY: RtSigFrame is repr(C) made only of integers with every padding explicit
        // (sizes asserted above), so all 440 bytes are initialised and any value is valid.
        unsafe { core::mem::transmute::<RtSigFrame, [u8; 440]>(*self) }
    }

    /// A frame read back from the user stack.
    pub fn from_bytes(bytes: [u8; 440]) -> RtSigFrame {
        // SAFETY: as in `to_bytes`: every bit pattern is a valid RtSigFrame.
        unsafe { core::mem::transmute::<[u8; 440], RtSigFrame>(bytes) }
    }
}

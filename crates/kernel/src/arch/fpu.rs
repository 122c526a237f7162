//! The x87/SSE register file of user tasks (Linux's `fpu` core, FXSAVE
//! only).
//!
//! The kernel is built soft-float (`x86_64-unknown-none`): no kernel code
//! touches an x87, MMX or SSE register, so while the kernel runs, the
//! registers still hold the user state of the task that entered. The
//! scheduler saves them when a user task is switched out and loads the
//! next user task's (eager switching, as Linux does since 4.x), so no task
//! ever sees another's registers. Signal delivery copies the live state
//! into the user's signal frame, and `rt_sigreturn` loads it back after
//! checking it ([`FxState::check_from_user`]).
//!
//! CR4.OSXSAVE stays off, so CPUID tells user code that AVX state is not
//! managed and a libc keeps to SSE; the 512-byte FXSAVE format is the
//! whole state.

use core::arch::asm;

/// The 512-byte FXSAVE area (16-byte aligned, as FXSAVE requires).
#[derive(Clone, Copy)]
#[repr(C, align(16))]
pub struct FxState(pub [u8; 512]);

/// Where MXCSR sits in the FXSAVE area, and its mask of writable bits.
const MXCSR_OFFSET: usize = 24;
const MXCSR_MASK_OFFSET: usize = 28;
/// MXCSR's reset value: every exception masked, round to nearest.
pub const MXCSR_DEFAULT: u32 = 0x1f80;
/// The x87 control word at reset (`fninit`): every exception masked,
/// 64-bit precision.
const FCW_DEFAULT: u16 = 0x037f;
/// The MXCSR bits FXRSTOR accepts when the CPU reports no mask (Intel SDM
/// 11.6.6: 0xffbf without DAZ, 0xffff with it; QEMU reports DAZ).
const MXCSR_MASK_FALLBACK: u32 = 0x0000_ffbf;

impl FxState {
    /// All zero: an area that holds no state yet (FXRSTOR would take it,
    /// every exception unmasked), for storage that [`FxState::initial`]
    /// fills before anything loads it.
    pub const fn zeroed() -> FxState {
        FxState([0; 512])
    }

    /// The state a new task starts with (Linux's `fpstate_init_fxstate`).
    pub const fn initial() -> FxState {
        let mut bytes = [0u8; 512];
        let fcw = FCW_DEFAULT.to_le_bytes();
        bytes[0] = fcw[0];
        bytes[1] = fcw[1];
        let mxcsr = MXCSR_DEFAULT.to_le_bytes();
        let mut index = 0;
        while index < 4 {
            bytes[MXCSR_OFFSET + index] = mxcsr[index];
            index += 1;
        }
        FxState(bytes)
    }

    /// MXCSR as saved.
    pub fn mxcsr(&self) -> u32 {
        u32::from_le_bytes(self.0[MXCSR_OFFSET..MXCSR_OFFSET + 4].try_into().expect("4 bytes"))
    }

    /// Checks a state that came from user memory before FXRSTOR may load
    /// it: a reserved MXCSR bit would make FXRSTOR #GP in the kernel
    /// (Linux's `fpu__restore_sig` checks the same).
    pub fn check_from_user(&self) -> Result<(), u32> {
        let mxcsr = self.mxcsr();
        if mxcsr & !mxcsr_mask() != 0 {
            return Err(mxcsr);
        }
        Ok(())
    }
}

/// The MXCSR bits this CPU allows (from a FXSAVE of its own), read once.
fn mxcsr_mask() -> u32 {
    use core::sync::atomic::{AtomicU32, Ordering};
    static MASK: AtomicU32 = AtomicU32::new(0);
    let known = MASK.load(Ordering::Relaxed);
    if known != 0 {
        return known;
    }
    let mut probe = FxState([0; 512]);
    save(&mut probe);
    let reported = u32::from_le_bytes(
        probe.0[MXCSR_MASK_OFFSET..MXCSR_MASK_OFFSET + 4].try_into().expect("4 bytes"),
    );
    let mask = if reported == 0 { MXCSR_MASK_FALLBACK } else { reported };
    MASK.store(mask, Ordering::Relaxed);
    mask
}

/// Turns the FPU on for user code on this CPU: CR0.EM off, CR0.MP and NE
/// on, CR0.TS off (no lazy #NM), CR4.OSFXSR and OSXMMEXCPT on (SSE
/// allowed, SIMD exceptions as #XM). Then loads the initial state, so the
/// first user task finds reset values. Each CPU, once, at bring-up.
pub fn init_cpu() {
    use x86_64::registers::control::{Cr0, Cr0Flags, Cr4, Cr4Flags};
    let mut cr0 = Cr0::read();
    cr0.remove(Cr0Flags::EMULATE_COPROCESSOR | Cr0Flags::TASK_SWITCHED);
    cr0.insert(Cr0Flags::MONITOR_COPROCESSOR | Cr0Flags::NUMERIC_ERROR);
    // SAFETY: only the FPU bits change; paging, protection and caching bits are written back
    // as read.
    unsafe { Cr0::write(cr0) };
    let mut cr4 = Cr4::read();
    cr4.insert(Cr4Flags::OSFXSR | Cr4Flags::OSXMMEXCPT_ENABLE);
    // SAFETY: as above, for CR4: two FPU bits set, everything else (SMEP, SMAP, PKS, PAE,
    // ...) as read.
    unsafe { Cr4::write(cr4) };
    // SAFETY: the reset image, whose MXCSR is the default.
    unsafe { restore(&FxState::initial()) };
}

/// FXSAVE64 of the live registers into `state`.
pub fn save(state: &mut FxState) {
    // SAFETY: `state` is an exclusive, 16-byte aligned 512-byte area (the type's layout), which
    // is exactly what FXSAVE64 writes; it touches no other memory and no flags.
    unsafe {
        asm!("fxsave64 [{}]", in(reg) state.0.as_mut_ptr(), options(nostack, preserves_flags))
    };
}

/// FXRSTOR64 of `state` into the registers.
///
/// # Safety
///
/// `state` came from FXSAVE, is [`FxState::initial`], or passed
/// [`FxState::check_from_user`]: a reserved MXCSR bit would make FXRSTOR
/// #GP in the kernel.
pub unsafe fn restore(state: &FxState) {
    // SAFETY: `state` is a 16-byte aligned 512-byte area FXRSTOR64 only reads; its MXCSR was
    // written by FXSAVE or checked against this CPU's mask (the function's contract), so the
    // load can't #GP. It changes only x87/SSE registers, which no kernel code uses.
    unsafe {
        asm!("fxrstor64 [{}]", in(reg) state.0.as_ptr(), options(nostack, preserves_flags, readonly))
    };
}

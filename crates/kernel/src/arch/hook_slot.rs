//! [`HookSlot`]: one function pointer that a lower layer calls and a
//! higher one installs, without a lock.
//!
//! The entry code offers events to hooks that the modes install (the
//! selftests' recording hook, the fuzzer's event hook, the syscall hook of
//! `fuzz_event`), the per-pkey PKS fault handlers, and the next-NMI call.
//! A hook may be read by an NMI that lands anywhere, including
//! inside the code that installs it, so a slot is one atomic word: a
//! reader sees the old hook or the new one, never a torn one, and never
//! waits.

use core::marker::PhantomData;
use core::sync::atomic::{AtomicPtr, Ordering};

/// A function-pointer type a [`HookSlot`] can hold.
///
/// # Safety
///
/// The implementing type must be a function pointer (`fn(..) -> ..`):
/// the same size as `*mut ()`, and never null.
pub unsafe trait FnPointer: Copy {}

// SAFETY: each is a function-pointer type.
unsafe impl FnPointer for fn() {}
// SAFETY: a function-pointer type (the entry code's trap and event hooks).
unsafe impl FnPointer for fn(&mut extregs_regs::PtRegs, u8) -> bool {}
// SAFETY: a function-pointer type (the scheduler's reaper of an exited
// task's resources).
unsafe impl FnPointer for fn(usize) {}
// SAFETY: a function-pointer type (the signal delivery of the exit-to-user
// loop).
unsafe impl FnPointer for fn(&mut extregs_regs::PtRegs) {}
// SAFETY: a function-pointer type (a personality's syscall table).
unsafe impl FnPointer for fn(&mut extregs_regs::PtRegs) -> i64 {}
// SAFETY: a function-pointer type (a personality's user exceptions).
unsafe impl FnPointer for fn(&mut extregs_regs::PtRegs, u8, Option<u64>) {}
// SAFETY: a function-pointer type (the per-pkey PKS fault handlers).
unsafe impl FnPointer for fn(&mut extregs_regs::PtRegs, crate::arch::pks::PksFault) -> bool {}

/// One installed hook of type `F`, or none.
pub struct HookSlot<F: FnPointer> {
    raw: AtomicPtr<()>,
    _hook: PhantomData<F>,
}

impl<F: FnPointer> HookSlot<F> {
    const SAME_SIZE_AS_A_POINTER: () =
        assert!(core::mem::size_of::<F>() == core::mem::size_of::<*mut ()>());

    /// A slot with no hook.
    pub const fn empty() -> HookSlot<F> {
        let () = Self::SAME_SIZE_AS_A_POINTER;
        HookSlot { raw: AtomicPtr::new(core::ptr::null_mut()), _hook: PhantomData }
    }

    /// Installs `hook`, replacing any other.
    pub fn set(&self, hook: F) {
        // SAFETY: `F` is a function pointer (FnPointer's contract), the size of `*mut ()`
        // (asserted at compile time): its bits are a code address, which is all the slot keeps.
        let raw = unsafe { core::mem::transmute_copy::<F, *mut ()>(&hook) };
        self.raw.store(raw, Ordering::SeqCst);
    }

    /// Removes the hook.
    pub fn clear(&self) {
        self.raw.store(core::ptr::null_mut(), Ordering::SeqCst);
    }

    /// Installs `hook` if it is `Some`, removes the hook if `None`.
    pub fn set_or_clear(&self, hook: Option<F>) {
        match hook {
            Some(hook) => self.set(hook),
            None => self.clear(),
        }
    }

    /// The installed hook.
    pub fn get(&self) -> Option<F> {
        Self::from_raw(self.raw.load(Ordering::SeqCst))
    }

    /// The installed hook, removing it (a one-shot hook).
    pub fn take(&self) -> Option<F> {
        Self::from_raw(self.raw.swap(core::ptr::null_mut(), Ordering::SeqCst))
    }

    /// Is a hook installed?
    pub fn is_set(&self) -> bool {
        !self.raw.load(Ordering::SeqCst).is_null()
    }

    /// Runs `body` with `hook` installed, then removes it.
    pub fn with<T>(&self, hook: F, body: impl FnOnce() -> T) -> T {
        self.set(hook);
        let result = body();
        self.clear();
        result
    }

    fn from_raw(raw: *mut ()) -> Option<F> {
        if raw.is_null() {
            return None;
        }
        // SAFETY: the only non-null values ever stored are `F`s turned into pointers by `set`:
        // turning the same bits back gives that very function pointer. Data-pointer provenance
        // plays no part (the value is only ever called, never dereferenced as data).
        Some(unsafe { core::mem::transmute_copy::<*mut (), F>(&raw) })
    }
}

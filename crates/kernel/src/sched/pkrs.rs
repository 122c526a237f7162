//! A task's own PKRS: the rights it gives itself to each protection key, in
//! task context (the switch installs them on whichever CPU runs the task).

use super::*;

/// Sets the running task's rights for `pkey` (its own PKRS, and the live
/// one: it runs in task context).
pub fn pks_set_rights(pkey: u8, rights: pks::KeyRights) {
    assert!((1..16).contains(&pkey), "pkey {pkey}: key 0 is all kernel memory, keys end at 15");
    with_irqs_off(|| {
        let task = current_task();
        let value = pks::with_key_rights(task.pkrs.load(Ordering::Relaxed), pkey, rights);
        task.pkrs.store(value, Ordering::Relaxed);
        if pks::enabled() {
            // SAFETY: PKS is on; key 0 (all kernel memory) keeps its rights
            // unless a caller revokes them on purpose.
            unsafe { pks::update_pkrs(value) };
        }
    });
}

/// Grants the running task read/write access to `pkey`'s pages.
pub fn pks_set_readwrite(pkey: u8) {
    pks_set_rights(pkey, pks::KeyRights::ReadWrite);
}

/// Revokes the running task's access to `pkey`'s pages.
pub fn pks_set_noaccess(pkey: u8) {
    pks_set_rights(pkey, pks::KeyRights::NoAccess);
}

/// Puts the running task's own PKRS, and the live one, back to the
/// default (the selftest harness, after each test).
pub fn pks_reset_current() {
    with_irqs_off(|| {
        let default_pkrs = if pks::enabled() { pks::PKRS_DEFAULT } else { 0 };
        current_task().pkrs.store(default_pkrs, Ordering::Relaxed);
        if pks::enabled() {
            // SAFETY: PKS is on; the default keeps key 0 read/write.
            unsafe { pks::update_pkrs(default_pkrs) };
        }
    });
}

/// The running task's own PKRS.
pub fn current_pkrs() -> u32 {
    current_task().pkrs.load(Ordering::Relaxed)
}

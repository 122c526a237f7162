//! GDT and TSS, laid out like Linux's so dumps read the same
//! (`__KERNEL_CS` = 0x10, `__KERNEL_DS` = 0x18), with the four IST stacks
//! of Linux's paranoid entries: #DF, NMI, #DB and #MC.

use spin::Once;
use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::registers::segmentation::SegmentSelector;
use x86_64::structures::gdt::{Descriptor, DescriptorFlags, GlobalDescriptorTable};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::{PrivilegeLevel, VirtAddr};

/// IST slots (0-based, so IST1..IST4), in Linux's order (`IST_INDEX_*`).
pub const DOUBLE_FAULT_IST_INDEX: u16 = 0;
pub const NMI_IST_INDEX: u16 = 1;
pub const DEBUG_IST_INDEX: u16 = 2;
pub const MACHINE_CHECK_IST_INDEX: u16 = 3;
const IST_STACKS: usize = 4;

const IST_STACK_SIZE: usize = 64 * 1024;

/// A stack for an IST entry, 16-byte aligned as the CPU's push expects.
#[repr(C, align(16))]
struct IstStack([u8; IST_STACK_SIZE]);

static mut IST_STACK_AREAS: [IstStack; IST_STACKS] =
    [const { IstStack([0; IST_STACK_SIZE]) }; IST_STACKS];

/// The address range `[bottom, top)` of an IST stack: where frames taken on
/// it must lie.
pub fn ist_stack_range(index: u16) -> core::ops::Range<u64> {
    let base = (&raw const IST_STACK_AREAS) as u64;
    let bottom = base + u64::from(index) * IST_STACK_SIZE as u64;
    bottom..bottom + IST_STACK_SIZE as u64
}

/// Which IST stack (if any) holds `address`.
pub fn ist_stack_of(address: u64) -> Option<u16> {
    (0..IST_STACKS as u16).find(|&index| ist_stack_range(index).contains(&address))
}

/// Linux's name of an IST stack, for dumps.
pub fn ist_stack_name(index: u16) -> &'static str {
    match index {
        DOUBLE_FAULT_IST_INDEX => "DF",
        NMI_IST_INDEX => "NMI",
        DEBUG_IST_INDEX => "DB",
        MACHINE_CHECK_IST_INDEX => "MCE",
        _ => "?",
    }
}

static TSS: Once<TaskStateSegment> = Once::new();
static GDT: Once<GlobalDescriptorTable> = Once::new();

/// Linux's kernel code selector, `__KERNEL_CS`.
pub const KERNEL_CS: SegmentSelector = SegmentSelector::new(2, PrivilegeLevel::Ring0);
/// Linux's kernel data selector, `__KERNEL_DS`.
pub const KERNEL_DS: SegmentSelector = SegmentSelector::new(3, PrivilegeLevel::Ring0);

/// Loads the GDT and TSS and reloads every segment register.
pub fn init() {
    let tss = TSS.call_once(|| {
        let mut tss = TaskStateSegment::new();
        for index in 0..IST_STACKS as u16 {
            tss.interrupt_stack_table[usize::from(index)] =
                VirtAddr::new(ist_stack_range(index).end);
        }
        tss
    });
    let gdt = GDT.call_once(|| {
        let mut gdt = GlobalDescriptorTable::new();
        // Entry 1 is Linux's __KERNEL32_CS; it keeps the 64-bit selectors at
        // the values every Linux oops shows.
        gdt.append(Descriptor::UserSegment(DescriptorFlags::KERNEL_CODE32.bits()));
        let code = gdt.append(Descriptor::kernel_code_segment());
        let data = gdt.append(Descriptor::kernel_data_segment());
        assert_eq!((code, data), (KERNEL_CS, KERNEL_DS));
        gdt.append(Descriptor::tss_segment(tss));
        gdt
    });
    gdt.load();
    let tss_selector = SegmentSelector::new(4, PrivilegeLevel::Ring0);
    // SAFETY: the selectors index the descriptors appended above, in the GDT
    // just loaded; the TSS descriptor is loaded exactly once.
    unsafe {
        CS::set_reg(KERNEL_CS);
        SS::set_reg(KERNEL_DS);
        DS::set_reg(SegmentSelector(0));
        ES::set_reg(SegmentSelector(0));
        load_tss(tss_selector);
    }
}

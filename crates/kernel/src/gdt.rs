//! GDT and TSS, laid out like Linux's so dumps read the same
//! (`__KERNEL_CS` = 0x10, `__KERNEL_DS` = 0x18), with an IST stack for #DF.

use spin::Once;
use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::registers::segmentation::SegmentSelector;
use x86_64::structures::gdt::{Descriptor, DescriptorFlags, GlobalDescriptorTable};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::{PrivilegeLevel, VirtAddr};

/// IST slot (0-based, i.e. IST1) of the double-fault stack.
pub const DOUBLE_FAULT_IST_INDEX: u16 = 0;

const IST_STACK_SIZE: usize = 16 * 1024;

/// A stack for an IST entry, 16-byte aligned as the CPU's push expects.
#[repr(C, align(16))]
struct IstStack([u8; IST_STACK_SIZE]);

static mut DOUBLE_FAULT_STACK: IstStack = IstStack([0; IST_STACK_SIZE]);

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
        let stack_start = VirtAddr::from_ptr(&raw const DOUBLE_FAULT_STACK);
        tss.interrupt_stack_table[usize::from(DOUBLE_FAULT_IST_INDEX)] =
            stack_start + IST_STACK_SIZE as u64;
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

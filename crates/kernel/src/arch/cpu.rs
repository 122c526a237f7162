//! CPU feature detection (CPUID, through `raw-cpuid`).

use raw_cpuid::{cpuid, CpuId};

/// The features extregs cares about.
#[derive(Clone, Copy, Debug)]
pub struct CpuFeatures {
    /// Supervisor protection keys: CPUID.(EAX=7,ECX=0):ECX[31].
    pub pks: bool,
    /// User protection keys: CPUID.(EAX=7,ECX=0):ECX[3].
    pub pku: bool,
    pub x2apic: bool,
    /// Supervisor-mode execution prevention: CPUID.(EAX=7,ECX=0):EBX[7].
    pub smep: bool,
    /// Supervisor-mode access prevention: CPUID.(EAX=7,ECX=0):EBX[20].
    pub smap: bool,
}

/// CPUID.(EAX=7,ECX=0):ECX bit for PKS. `raw-cpuid` 11 has no accessor for
/// it yet, so the leaf is read raw.
const CPUID_7_ECX_PKS: u32 = 1 << 31;

/// Reads the features of this CPU.
pub fn detect() -> CpuFeatures {
    let cpu = CpuId::new();
    let leaf7 = cpuid!(7, 0);
    let max_leaf = cpuid!(0).eax;
    CpuFeatures {
        pks: max_leaf >= 7 && leaf7.ecx & CPUID_7_ECX_PKS != 0,
        pku: cpu.get_extended_feature_info().is_some_and(|f| f.has_pku()),
        x2apic: cpu.get_feature_info().is_some_and(|f| f.has_x2apic()),
        smep: cpu.get_extended_feature_info().is_some_and(|f| f.has_smep()),
        smap: cpu.get_extended_feature_info().is_some_and(|f| f.has_smap()),
    }
}

/// Prints the brand string and the features, one line.
pub fn print_summary(features: &CpuFeatures) {
    let cpu = CpuId::new();
    let brand = cpu.get_processor_brand_string();
    let brand = brand.as_ref().map(|b| b.as_str().trim()).unwrap_or("unknown CPU");
    println!(
        "extregs: cpu: {brand}: pks={} pku={} x2apic={} smep={} smap={}",
        yes_no(features.pks),
        yes_no(features.pku),
        yes_no(features.x2apic),
        yes_no(features.smep),
        yes_no(features.smap)
    );
}

fn yes_no(value: bool) -> &'static str {
    if value {
        "yes"
    } else {
        "no"
    }
}

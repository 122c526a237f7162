//! The kernel command line from QEMU's fw_cfg file `opt/extregs/cmdline`,
//! and the files `mode=exec` runs (`opt/extregs/program`, `.../argv`), read
//! with the `qemu-fw-cfg` crate.

use qemu_fw_cfg::FwCfg;

/// The fw_cfg file QEMU gets with `-fw_cfg name=opt/extregs/cmdline,string=…`.
pub const CMDLINE_FILE: &str = "opt/extregs/cmdline";

/// Longest command line accepted.
pub const CMDLINE_MAX: usize = 1024;

/// Why the command line could not be read.
#[derive(Debug)]
pub enum CmdlineReadError {
    TooLong(usize),
    NotUtf8,
}

impl core::fmt::Display for CmdlineReadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CmdlineReadError::TooLong(size) => {
                write!(f, "command line is {size} bytes, more than {CMDLINE_MAX}")
            }
            CmdlineReadError::NotUtf8 => f.write_str("command line is not UTF-8"),
        }
    }
}

/// Reads the command line into `buffer`. No fw_cfg device, or no such file,
/// gives the empty line (`mode=demo`).
pub fn read_cmdline(buffer: &mut [u8; CMDLINE_MAX]) -> Result<&str, CmdlineReadError> {
    // SAFETY: fw_cfg's I/O ports (0x510/0x511) are only used here, once, at
    // boot; the crate checks the "QEMU" signature before trusting them.
    let Ok(mut fw_cfg) = (unsafe { FwCfg::new_for_x86() }) else {
        return Ok("");
    };
    let Some(file) = fw_cfg.find_file(CMDLINE_FILE) else {
        return Ok("");
    };
    if file.size() > CMDLINE_MAX {
        return Err(CmdlineReadError::TooLong(file.size()));
    }
    fw_cfg.read_file_to_buffer(&file, buffer);
    let text = &buffer[..file.size()];
    // QEMU's string= form has no terminating NUL, but a file= form may.
    let text = text.strip_suffix(&[0]).unwrap_or(text);
    core::str::from_utf8(text).map_err(|_| CmdlineReadError::NotUtf8)
}

/// The program `mode=exec` runs, and its arguments (NUL-separated).
pub const PROGRAM_FILE: &str = "opt/extregs/program";
pub const ARGV_FILE: &str = "opt/extregs/argv";

/// Why a fw_cfg file could not be read.
#[derive(Debug)]
pub enum FileReadError {
    /// No fw_cfg device, or no such file.
    Missing(&'static str),
    TooLarge {
        name: &'static str,
        size: usize,
        limit: usize,
    },
    NoMemory(&'static str),
}

impl core::fmt::Display for FileReadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FileReadError::Missing(name) => write!(f, "no fw_cfg file {name}"),
            FileReadError::TooLarge { name, size, limit } => {
                write!(f, "fw_cfg file {name} is {size} bytes, more than {limit}")
            }
            FileReadError::NoMemory(name) => write!(f, "no memory to read fw_cfg file {name}"),
        }
    }
}

/// Reads fw_cfg file `name` (at most `limit` bytes) into a fresh kernel
/// buffer (`memory::map_kernel_buffer`); its bytes, exactly.
pub fn read_file(name: &'static str, limit: usize) -> Result<&'static [u8], FileReadError> {
    // SAFETY: as in `read_cmdline`: the fw_cfg ports are used only at boot, by one CPU, one read
    // at a time; the crate checks the signature first.
    let mut fw_cfg = unsafe { FwCfg::new_for_x86() }.map_err(|_| FileReadError::Missing(name))?;
    let file = fw_cfg.find_file(name).ok_or(FileReadError::Missing(name))?;
    if file.size() > limit {
        return Err(FileReadError::TooLarge { name, size: file.size(), limit });
    }
    let pages = (file.size() as u64).div_ceil(4096).max(1);
    let buffer =
        crate::arch::memory::map_kernel_buffer(pages).ok_or(FileReadError::NoMemory(name))?;
    let buffer = &mut buffer[..file.size()];
    fw_cfg.read_file_to_buffer(&file, buffer);
    Ok(buffer)
}

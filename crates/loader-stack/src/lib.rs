//! Moves the BIOS loader's stacks off the pages its code runs from.
//!
//! The BIOS image's loader (bootloader 0.11) runs four stages on one stack.
//! The boot sector sets `ss:sp` to `0:0x7c00`, so the stack grows down
//! through the same 4 KiB page as the boot sector's code (0x7c00) and the
//! first 512 bytes of stage 2 (0x7e00). Stages 2 and 3 keep that stack, and
//! stage 3 hands it, aligned down to 256 bytes, to stage 4.
//!
//! Under TCG that layout is slow. QEMU tracks every guest page that holds
//! translated code, and every store to such a page goes through its
//! self-modifying-code check (`notdirty_write`, which takes the page's lock
//! and looks the write up against the page's translations). Stage 2 copies
//! the kernel file a byte at a time, stage 3 draws a line of text pixel by
//! pixel, and both spill to the stack on every iteration: about 0.7 s of
//! every BIOS boot on this machine went to that check (docs/boot.md,
//! "Fourth pass", has the profile and the measurements).
//!
//! [`move_stacks`] changes two instructions in a built image:
//!
//! - the boot sector's `mov sp, 0x7c00` becomes `mov sp, 0x7000`
//!   ([`BOOT_SECTOR_STACK_TOP`]): stages 1 to 3 then push into the page
//!   below, which holds no code. They use about 1.5 KiB of the 26.75 KiB
//!   down to 0x500 (measured with gdb, docs/boot.md);
//! - stage 3's `and esp, 0xffffff00`, right before it enters long mode,
//!   becomes `mov esp, 0x90000; nop` ([`STAGE_4_STACK_TOP`]): stage 4 runs
//!   on 64 KiB of its own, 0x80000 to 0x90000, conventional memory just
//!   above the end of stage 2's partition (which stage 2's linker script
//!   ends at 0x80000; [`Error::Stage2ReachesStage4Stack`] guards that) and
//!   below SeaBIOS's extended BIOS data area (0x9fc00). Other firmware may
//!   start its EBDA lower, down to 0x80000: the images are made for QEMU's
//!   SeaBIOS. Stage 4 uses about 29 KiB; on the stock stack, where it
//!   starts at 0x78f8, that reaches 0x490, below the stack's own floor
//!   (0x500) and into the BIOS data area.
//!
//! Each instruction is found by its bytes and the bytes around it, and must
//! occur exactly once, or [`move_stacks`] refuses with an [`Error`] (a new
//! loader version has to be looked at again, not patched blindly). Stage 3
//! is rewritten through its FAT file system, the partition stage 2 reads it
//! from, so the file's clusters can lie anywhere, and its directory entry
//! keeps its modification time.

use std::io::{Cursor, Read, Seek, SeekFrom, Write};

/// The boot sector's stack top after the move: the stack grows down into
/// 0x6000..0x7000, the page below the one that holds the boot sector
/// (0x7000..0x8000).
pub const BOOT_SECTOR_STACK_TOP: u16 = 0x7000;

/// Stage 4's stack top after the move.
pub const STAGE_4_STACK_TOP: u32 = 0x9_0000;

/// Stage 4's stack size after the move: 0x80000..0x90000, more than twice
/// the 29 KiB it uses.
pub const STAGE_4_STACK_SIZE: u32 = 0x1_0000;

/// Where the boot sector loads stage 2's partition (right after itself).
pub const STAGE_2_LOAD_ADDRESS: u64 = 0x7e00;

/// The MBR partition type of stage 2's partition; the FAT partition that
/// holds stage 3 is the next entry (as stage 2 finds it).
pub const STAGE_2_PARTITION_TYPE: u8 = 0x20;

/// The MBR partition types stage 2 accepts for that FAT partition: FAT12,
/// FAT16 and FAT32 in their CHS and LBA forms.
pub const FAT_PARTITION_TYPES: [u8; 6] = [0x01, 0x04, 0x06, 0x0b, 0x0c, 0x0e];

/// Stage 3's file name in the FAT partition.
pub const STAGE_3_FILE: &str = "boot-stage-3";

const SECTOR_SIZE: u64 = 512;

/// The partition table's offset in the MBR: code before it is the boot
/// sector's.
const PARTITION_TABLE_OFFSET: usize = 446;

/// `mov ss, ax; mov fs, ax; mov gs, ax; cld; mov sp, 0x7c00`.
const BOOT_SECTOR_STOCK: [u8; 10] = [0x8e, 0xd0, 0x8e, 0xe0, 0x8e, 0xe8, 0xfc, 0xbc, 0x00, 0x7c];
/// The offset of `mov sp, imm16` in [`BOOT_SECTOR_STOCK`].
const BOOT_SECTOR_MOV_SP: usize = 7;

/// `and esp, 0xffffff00; push 0`: stage 3 aligning its stack before it
/// pushes stage 4's arguments.
const STAGE_3_STOCK: [u8; 8] = [0x81, 0xe4, 0x00, 0xff, 0xff, 0xff, 0x6a, 0x00];

/// `mov sp, imm16` (16-bit code).
fn boot_sector_moved() -> [u8; 10] {
    let mut bytes = BOOT_SECTOR_STOCK;
    bytes[BOOT_SECTOR_MOV_SP + 1..].copy_from_slice(&BOOT_SECTOR_STACK_TOP.to_le_bytes());
    bytes
}

/// `mov esp, imm32; nop; push 0` (32-bit code): the same length as the
/// `and` it replaces.
fn stage_3_moved() -> [u8; 8] {
    let top = STAGE_4_STACK_TOP.to_le_bytes();
    [0xbc, top[0], top[1], top[2], top[3], 0x90, 0x6a, 0x00]
}

/// Why an image can't be patched (or, for [`verify_moved`], isn't).
#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    /// The image is shorter than its MBR, or the MBR does not parse.
    PartitionTable(String),
    /// No partition of type [`STAGE_2_PARTITION_TYPE`], or no partition
    /// after it.
    NoStage2Partition,
    /// The partition after stage 2's is not of a FAT type.
    NotFat { partition_type: u8 },
    /// A partition lies (partly) outside the image.
    PartitionOutsideImage { start: u64, len: u64 },
    /// Stage 2's partition, loaded at 0x7e00, would reach stage 4's moved
    /// stack.
    Stage2ReachesStage4Stack { stage_2_end: u64 },
    /// The FAT partition does not mount, or stage 3's file can't be read
    /// or written.
    Fat(String),
    /// An instruction's bytes occur `found` times, not `expected` times
    /// (once for a stock instruction [`move_stacks`] replaces; for
    /// [`verify_moved`], once for a moved one and never for a stock one).
    Signature { what: &'static str, found: usize, expected: usize },
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::PartitionTable(why) => write!(f, "no MBR partition table: {why}"),
            Error::NoStage2Partition => write!(
                f,
                "no partition of type {STAGE_2_PARTITION_TYPE:#x} (stage 2) followed by a FAT one"
            ),
            Error::NotFat { partition_type } => write!(
                f,
                "the partition after stage 2's has type {partition_type:#x}, not a FAT one"
            ),
            Error::PartitionOutsideImage { start, len } => {
                write!(f, "a partition ({len} bytes at {start:#x}) lies outside the image")
            }
            Error::Stage2ReachesStage4Stack { stage_2_end } => write!(
                f,
                "stage 2, loaded up to {stage_2_end:#x}, would overlap stage 4's stack at \
                 {:#x}..{STAGE_4_STACK_TOP:#x}",
                STAGE_4_STACK_TOP - STAGE_4_STACK_SIZE
            ),
            Error::Fat(why) => write!(f, "stage 3 in the FAT partition: {why}"),
            Error::Signature { what, found, expected } => write!(
                f,
                "{what} occurs {found} times, not {expected}: is this the loader version the patch \
                 was written for (bootloader 0.11.17), and the image as it built it?"
            ),
        }
    }
}

impl std::error::Error for Error {}

/// Moves the loader's stacks in a BIOS disk image built by
/// `bootloader::DiskImageBuilder` (see the crate docs). The image keeps
/// its length; the bytes of the two instructions are all that change in
/// the boot sector and in stage 3's file.
///
/// On an error `image` is left as it was: the patch is made on a copy.
pub fn move_stacks(image: &mut [u8]) -> Result<(), Error> {
    let mut patched = image.to_vec();
    let stage_3 = fat_partition(&patched)?;
    replace_once(
        boot_sector_code(&mut patched)?,
        "the boot sector's `mov sp, 0x7c00`",
        &BOOT_SECTOR_STOCK,
        &boot_sector_moved(),
    )?;
    with_stage_3(&mut patched[stage_3], |file| {
        replace_once(
            file,
            "stage 3's `and esp, 0xffffff00; push 0`",
            &STAGE_3_STOCK,
            &stage_3_moved(),
        )
        .map(|_| ())
    })?;
    image.copy_from_slice(&patched);
    Ok(())
}

/// Checks that `image`'s stacks are moved: each moved instruction occurs
/// once, and neither stock one does. A test's check of a built image.
pub fn verify_moved(image: &[u8]) -> Result<(), Error> {
    let mut image = image.to_vec();
    let stage_3 = fat_partition(&image)?;
    let boot_sector = boot_sector_code(&mut image)?;
    expect_count(boot_sector, "the boot sector's `mov sp, 0x7c00`", &BOOT_SECTOR_STOCK, 0)?;
    expect_count(boot_sector, "the boot sector's moved `mov sp`", &boot_sector_moved(), 1)?;
    with_stage_3(&mut image[stage_3], |file| {
        expect_count(file, "stage 3's `and esp, 0xffffff00; push 0`", &STAGE_3_STOCK, 0)?;
        expect_count(file, "stage 3's moved `mov esp`", &stage_3_moved(), 1)
    })
}

/// The boot sector's code: the MBR before its partition table.
fn boot_sector_code(image: &mut [u8]) -> Result<&mut [u8], Error> {
    let len = image.len();
    image
        .get_mut(..PARTITION_TABLE_OFFSET)
        .ok_or_else(|| Error::PartitionTable(format!("the image is {len} bytes")))
}

/// The byte range of the FAT partition stage 2 loads stage 3 from, after
/// checking that stage 2's own partition stays below stage 4's new stack.
fn fat_partition(image: &[u8]) -> Result<std::ops::Range<usize>, Error> {
    let mbr = mbrman::MBR::read_from(&mut Cursor::new(image), SECTOR_SIZE as u32)
        .map_err(|error| Error::PartitionTable(error.to_string()))?;
    let entries: Vec<_> = mbr.iter().map(|(_, entry)| entry.clone()).collect();
    let stage_2_index = entries
        .iter()
        .position(|entry| entry.sys == STAGE_2_PARTITION_TYPE)
        .ok_or(Error::NoStage2Partition)?;
    let stage_2 = &entries[stage_2_index];
    let stage_2_end = STAGE_2_LOAD_ADDRESS + u64::from(stage_2.sectors) * SECTOR_SIZE;
    if stage_2_end > u64::from(STAGE_4_STACK_TOP - STAGE_4_STACK_SIZE) {
        return Err(Error::Stage2ReachesStage4Stack { stage_2_end });
    }
    let fat = entries.get(stage_2_index + 1).ok_or(Error::NoStage2Partition)?;
    if !FAT_PARTITION_TYPES.contains(&fat.sys) {
        return Err(Error::NotFat { partition_type: fat.sys });
    }
    let start = u64::from(fat.starting_lba) * SECTOR_SIZE;
    let len = u64::from(fat.sectors) * SECTOR_SIZE;
    let outside = || Error::PartitionOutsideImage { start, len };
    let start = usize::try_from(start).map_err(|_| outside())?;
    let end = usize::try_from(len)
        .ok()
        .and_then(|len| start.checked_add(len))
        .filter(|&end| end <= image.len())
        .ok_or_else(outside)?;
    Ok(start..end)
}

/// The time fatfs stamps on a file it writes: the file's own modification
/// time, so that its directory entry keeps its bytes.
#[derive(Debug)]
struct KeepModified(fatfs::DateTime);

impl fatfs::TimeProvider for KeepModified {
    fn get_current_date(&self) -> fatfs::Date {
        self.0.date
    }

    fn get_current_date_time(&self) -> fatfs::DateTime {
        self.0
    }
}

/// Stage 3's modification time in the FAT `partition`.
fn stage_3_modified(partition: &mut [u8]) -> Result<fatfs::DateTime, Error> {
    let fat_error = |error: std::io::Error| Error::Fat(error.to_string());
    let fs = fatfs::FileSystem::new(Cursor::new(partition), fatfs::FsOptions::new())
        .map_err(fat_error)?;
    let modified = fs
        .root_dir()
        .iter()
        .filter_map(Result::ok)
        .find(|entry| entry.file_name() == STAGE_3_FILE)
        .map(|entry| entry.modified())
        .ok_or_else(|| Error::Fat(format!("{STAGE_3_FILE}: no such file")))?;
    Ok(modified)
}

/// Mounts the FAT `partition`, hands `change` stage 3's file, and writes
/// back the bytes `change` changed (only those: the file keeps its length,
/// its clusters and its directory entry).
fn with_stage_3(
    partition: &mut [u8],
    change: impl FnOnce(&mut [u8]) -> Result<(), Error>,
) -> Result<(), Error> {
    let fat_error = |error: std::io::Error| Error::Fat(error.to_string());
    // fatfs wants a `'static` provider; one small leak per image built.
    let keep: &'static KeepModified =
        Box::leak(Box::new(KeepModified(stage_3_modified(partition)?)));
    let options = fatfs::FsOptions::new().update_accessed_date(false).time_provider(keep);
    let fs = fatfs::FileSystem::new(Cursor::new(partition), options).map_err(fat_error)?;
    let mut file = fs
        .root_dir()
        .open_file(STAGE_3_FILE)
        .map_err(|error| Error::Fat(format!("{STAGE_3_FILE}: {error}")))?;
    let mut stock = Vec::new();
    file.read_to_end(&mut stock).map_err(fat_error)?;
    let mut changed = stock.clone();
    change(&mut changed)?;
    if let Some(first) = stock.iter().zip(&changed).position(|(a, b)| a != b) {
        let last = stock.iter().zip(&changed).rposition(|(a, b)| a != b).unwrap_or(first);
        file.seek(SeekFrom::Start(first as u64)).map_err(fat_error)?;
        file.write_all(&changed[first..=last]).map_err(fat_error)?;
        file.flush().map_err(fat_error)?;
    }
    drop(file);
    fs.unmount().map_err(fat_error)
}

/// The offsets of `needle` in `haystack`, overlapping ones included.
fn occurrences(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    haystack
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

fn expect_count(
    haystack: &[u8],
    what: &'static str,
    needle: &[u8],
    count: usize,
) -> Result<(), Error> {
    let found = occurrences(haystack, needle).len();
    if found == count {
        Ok(())
    } else {
        Err(Error::Signature { what, found, expected: count })
    }
}

/// Replaces the one occurrence of `stock` in `bytes` with `moved` (of the
/// same length) and returns its offset.
fn replace_once(
    bytes: &mut [u8],
    what: &'static str,
    stock: &[u8],
    moved: &[u8],
) -> Result<usize, Error> {
    debug_assert_eq!(stock.len(), moved.len());
    match occurrences(bytes, stock)[..] {
        [offset] => {
            bytes[offset..offset + moved.len()].copy_from_slice(moved);
            Ok(offset)
        }
        ref found => Err(Error::Signature { what, found: found.len(), expected: 1 }),
    }
}

#[cfg(test)]
mod tests;

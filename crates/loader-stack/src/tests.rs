//! Tests of the stack move on small images built here: an MBR whose boot
//! code holds the boot sector's instructions, a stage 2 partition, and a
//! FAT partition with a `boot-stage-3` file. The built BIOS image itself
//! is checked in the runner's `images` tests.

use super::*;
use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, Register};

/// Where the test MBR's boot code holds the `mov sp` sequence.
const BOOT_CODE_AT: usize = 0x10;
/// The test image's FAT partition: 1 MiB from sector 64.
const FAT_LBA: u32 = 64;
const FAT_SECTORS: u32 = 2048;

/// A stage 3 file: filler, the stock instructions at `at`, more filler.
fn stage_3_file(at: usize, len: usize) -> Vec<u8> {
    let mut file: Vec<u8> = (0..len).map(|i| (i % 251) as u8 | 1).collect();
    file[at..at + STAGE_3_STOCK.len()].copy_from_slice(&STAGE_3_STOCK);
    file
}

/// The time the test images' files were made: not fatfs's default, so a
/// patch that stamped its own time on stage 3 would change its entry.
#[derive(Debug)]
struct MadeAt;

impl fatfs::TimeProvider for MadeAt {
    fn get_current_date(&self) -> fatfs::Date {
        fatfs::Date { year: 2001, month: 2, day: 3 }
    }

    fn get_current_date_time(&self) -> fatfs::DateTime {
        let time = fatfs::Time { hour: 4, min: 5, sec: 6, millis: 0 };
        fatfs::DateTime { date: self.get_current_date(), time }
    }
}

/// An image with the boot sector's instructions, a stage 2 partition of
/// `stage_2_sectors` and a FAT partition holding `files`, written in turn;
/// a file named twice gets the second part appended, after the files
/// between (so its clusters are not contiguous).
fn image(stage_2_sectors: u32, files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut image = vec![0u8; (FAT_LBA + FAT_SECTORS) as usize * 512];
    image[BOOT_CODE_AT..BOOT_CODE_AT + BOOT_SECTOR_STOCK.len()].copy_from_slice(&BOOT_SECTOR_STOCK);
    let mut entry = |index: usize, sys: u8, lba: u32, sectors: u32| {
        let at = PARTITION_TABLE_OFFSET + 16 * index;
        image[at] = 0x80;
        image[at + 4] = sys;
        image[at + 8..at + 12].copy_from_slice(&lba.to_le_bytes());
        image[at + 12..at + 16].copy_from_slice(&sectors.to_le_bytes());
    };
    entry(0, STAGE_2_PARTITION_TYPE, 1, stage_2_sectors);
    entry(1, 0x0c, FAT_LBA, FAT_SECTORS);
    image[510..512].copy_from_slice(&[0x55, 0xaa]);
    let fat = &mut image[FAT_LBA as usize * 512..];
    fatfs::format_volume(Cursor::new(&mut *fat), fatfs::FormatVolumeOptions::new())
        .expect("formatting the test partition");
    let options = fatfs::FsOptions::new().time_provider(&MadeAt);
    let fs = fatfs::FileSystem::new(Cursor::new(&mut *fat), options)
        .expect("mounting the test partition");
    for (name, bytes) in files {
        let mut file = fs.root_dir().create_file(name).unwrap();
        file.seek(SeekFrom::End(0)).unwrap();
        file.write_all(bytes).unwrap();
    }
    fs.unmount().unwrap();
    image
}

fn read_stage_3(image: &mut [u8]) -> Vec<u8> {
    let fat = &mut image[FAT_LBA as usize * 512..];
    let fs = fatfs::FileSystem::new(Cursor::new(fat), fatfs::FsOptions::new()).unwrap();
    let mut bytes = Vec::new();
    fs.root_dir().open_file(STAGE_3_FILE).unwrap().read_to_end(&mut bytes).unwrap();
    bytes
}

fn decode(bitness: u32, bytes: &[u8]) -> Vec<Instruction> {
    Decoder::new(bitness, bytes, DecoderOptions::NONE).into_iter().collect()
}

#[test]
fn the_moved_instructions_decode_as_the_new_stack_tops() {
    let boot = decode(16, &boot_sector_moved()[BOOT_SECTOR_MOV_SP..]);
    assert_eq!(boot.len(), 1);
    assert_eq!(boot[0].mnemonic(), Mnemonic::Mov);
    assert_eq!(boot[0].op0_register(), Register::SP);
    assert_eq!(boot[0].immediate16(), BOOT_SECTOR_STACK_TOP);

    let stage_3 = decode(32, &stage_3_moved());
    let mnemonics: Vec<_> = stage_3.iter().map(Instruction::mnemonic).collect();
    assert_eq!(mnemonics, [Mnemonic::Mov, Mnemonic::Nop, Mnemonic::Push]);
    assert_eq!(stage_3[0].op0_register(), Register::ESP);
    assert_eq!(stage_3[0].immediate32(), STAGE_4_STACK_TOP);
    // The replacement is exactly as long as the `and` it replaces.
    let stock = decode(32, &STAGE_3_STOCK);
    assert_eq!(stock[0].mnemonic(), Mnemonic::And);
    assert_eq!(stock[0].len(), stage_3[0].len() + stage_3[1].len());
}

#[test]
fn the_stock_instructions_decode_as_the_loader_source_has_them() {
    let boot = decode(16, &BOOT_SECTOR_STOCK);
    let last = boot.last().unwrap();
    assert_eq!((last.op0_register(), last.immediate16()), (Register::SP, 0x7c00));
    let stage_3 = decode(32, &STAGE_3_STOCK);
    assert_eq!(stage_3[0].op0_register(), Register::ESP);
    assert_eq!(stage_3[0].immediate32(), 0xffff_ff00);
}

#[test]
fn a_stock_image_is_moved_and_nothing_else_changes() {
    let mut stock = image(100, &[(STAGE_3_FILE, stage_3_file(5000, 9000))]);
    let mut moved = stock.clone();
    assert!(matches!(verify_moved(&stock), Err(Error::Signature { found: 1, expected: 0, .. })));
    move_stacks(&mut moved).unwrap();
    verify_moved(&moved).unwrap();

    let changed: Vec<usize> = (0..stock.len()).filter(|&i| stock[i] != moved[i]).collect();
    // The high byte of `mov sp`'s immediate, then, in the FAT partition,
    // the bytes in which `mov esp, 0x90000; nop` differs from the `and`.
    let stage_3_differing = STAGE_3_STOCK
        .iter()
        .zip(stage_3_moved())
        .filter(|(stock, moved)| **stock != *moved)
        .count();
    assert_eq!(changed[0], BOOT_CODE_AT + BOOT_SECTOR_MOV_SP + 2);
    let in_fat = &changed[1..];
    assert_eq!(in_fat.len(), stage_3_differing, "{in_fat:x?}");
    assert!(in_fat.iter().all(|&i| i >= FAT_LBA as usize * 512));
    assert!(in_fat.last().unwrap() - in_fat[0] < STAGE_3_STOCK.len(), "{in_fat:x?}");

    let mut expected = read_stage_3(&mut stock);
    expected[5000..5008].copy_from_slice(&stage_3_moved());
    assert_eq!(read_stage_3(&mut moved), expected);
}

#[test]
fn a_moved_image_is_refused_a_second_time() {
    let mut moved = image(100, &[(STAGE_3_FILE, stage_3_file(10, 600))]);
    move_stacks(&mut moved).unwrap();
    let before = moved.clone();
    assert!(matches!(move_stacks(&mut moved), Err(Error::Signature { found: 0, expected: 1, .. })));
    assert_eq!(moved, before);
}

#[test]
fn a_missing_or_repeated_instruction_is_refused_and_the_image_kept() {
    let mut twice = stage_3_file(10, 600);
    twice[300..308].copy_from_slice(&STAGE_3_STOCK);
    let mut image_with_two = image(100, &[(STAGE_3_FILE, twice)]);
    let before = image_with_two.clone();
    let error = move_stacks(&mut image_with_two).unwrap_err();
    assert!(matches!(error, Error::Signature { found: 2, expected: 1, .. }), "{error}");
    assert_eq!(image_with_two, before, "the boot sector was patched before stage 3 failed");

    let mut no_mov_sp = image(100, &[(STAGE_3_FILE, stage_3_file(10, 600))]);
    no_mov_sp[BOOT_CODE_AT + BOOT_SECTOR_MOV_SP + 2] = 0x7b;
    let before = no_mov_sp.clone();
    assert!(matches!(
        move_stacks(&mut no_mov_sp),
        Err(Error::Signature { found: 0, expected: 1, .. })
    ));
    assert_eq!(no_mov_sp, before);
}

#[test]
fn a_missing_stage_3_or_partition_is_refused() {
    let mut no_file = image(100, &[("boot-stage-4", stage_3_file(10, 600))]);
    let error = move_stacks(&mut no_file).unwrap_err();
    assert!(matches!(error, Error::Fat(ref why) if why.contains(STAGE_3_FILE)), "{error}");

    let mut no_stage_2 = image(100, &[(STAGE_3_FILE, stage_3_file(10, 600))]);
    no_stage_2[PARTITION_TABLE_OFFSET + 4] = 0x83;
    assert_eq!(move_stacks(&mut no_stage_2), Err(Error::NoStage2Partition));

    let mut not_fat = image(100, &[(STAGE_3_FILE, stage_3_file(10, 600))]);
    not_fat[PARTITION_TABLE_OFFSET + 16 + 4] = 0x83;
    assert_eq!(move_stacks(&mut not_fat), Err(Error::NotFat { partition_type: 0x83 }));

    let mut cut = image(100, &[(STAGE_3_FILE, stage_3_file(10, 600))]);
    cut.truncate(FAT_LBA as usize * 512 + 4096);
    assert!(matches!(move_stacks(&mut cut), Err(Error::PartitionOutsideImage { .. })));

    assert!(matches!(move_stacks(&mut [0u8; 100]), Err(Error::PartitionTable(_))));
}

#[test]
fn a_stage_2_that_would_reach_the_new_stack_is_refused() {
    // Stage 2 is loaded at 0x7e00: 0x3c1 sectors end exactly at 0x80000,
    // one more overlaps stage 4's stack.
    let fits = (0x8_0000 - STAGE_2_LOAD_ADDRESS as u32) / 512;
    let mut at_the_limit = image(fits, &[(STAGE_3_FILE, stage_3_file(10, 600))]);
    move_stacks(&mut at_the_limit).unwrap();
    let mut over = image(fits + 1, &[(STAGE_3_FILE, stage_3_file(10, 600))]);
    assert_eq!(
        move_stacks(&mut over),
        Err(Error::Stage2ReachesStage4Stack { stage_2_end: 0x8_0000 + 512 })
    );
}

#[test]
fn the_instruction_is_found_and_patched_across_a_cluster_boundary() {
    // Stage 3 in two runs of clusters with another file between, the
    // stock instructions straddling the end of the first run.
    let probe = image(100, &[]);
    let fat = &probe[FAT_LBA as usize * 512..];
    let cluster = fatfs::FileSystem::new(Cursor::new(fat.to_vec()), fatfs::FsOptions::new())
        .unwrap()
        .cluster_size() as usize;
    let whole = stage_3_file(cluster - 3, 3 * cluster);
    let (first, rest) = whole.split_at(cluster);
    let mut stock = image(
        100,
        &[
            (STAGE_3_FILE, first.to_vec()),
            ("between", vec![7; cluster]),
            (STAGE_3_FILE, rest.to_vec()),
        ],
    );
    assert_eq!(read_stage_3(&mut stock), whole);
    let mut moved = stock.clone();
    move_stacks(&mut moved).unwrap();
    verify_moved(&moved).unwrap();
    let mut expected = whole.clone();
    expected[cluster - 3..cluster + 5].copy_from_slice(&stage_3_moved());
    assert_eq!(read_stage_3(&mut moved), expected);
    // The two pieces of the instruction are in clusters apart in the image.
    let changed: Vec<usize> = (0..stock.len()).filter(|&i| stock[i] != moved[i]).collect();
    assert!(changed.last().unwrap() - changed[1] > cluster, "{changed:x?}");
}

//! The errno values the Linux personality returns (negated in `%rax`).

pub const EPERM: i64 = 1;
pub const ENOENT: i64 = 2;
pub const ESRCH: i64 = 3;
pub const EBADF: i64 = 9;
pub const ENOMEM: i64 = 12;
pub const EACCES: i64 = 13;
pub const EFAULT: i64 = 14;
pub const EEXIST: i64 = 17;
pub const ENODEV: i64 = 19;
pub const EINVAL: i64 = 22;
pub const ENOTTY: i64 = 25;
pub const ENOSYS: i64 = 38;
pub const EOPNOTSUPP: i64 = 95;

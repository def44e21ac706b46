//! `RINGS` mapped into the daemon's memory: the Maglev tables are written there directly,
//! one `memcpy`-like pass per table instead of a syscall per slot.

use std::{
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
};

use aya::maps::MapData;
use lb_common::{RINGS_SIZE, map_names};

use super::DataplaneError;

/// The `RINGS` array mapped into our memory. The kernel stores array values with an 8-byte
/// stride (`round_up(value_size, 8)`), so slot `i`'s `u32` is the low half of the `i`th u64.
pub(super) struct RingMmap {
    /// Keeps the map alive as long as the mapping.
    _map: MapData,
    ptr: NonNull<u64>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value.
unsafe impl Send for RingMmap {}
unsafe impl Sync for RingMmap {}

impl RingMmap {
    pub(super) fn new(map: MapData) -> Result<Self, DataplaneError> {
        let len = RINGS_SIZE as usize;
        let bytes = (len * size_of::<u64>()).next_multiple_of(4096);
        let fd = map.fd().as_fd().as_raw_fd();
        // SAFETY: mapping a BPF_F_MMAPABLE array map of exactly this size, shared.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(DataplaneError::Mmap {
                name: map_names::RINGS,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Self {
            _map: map,
            ptr: NonNull::new(p.cast()).expect("mmap returned null"),
            len,
        })
    }

    pub(super) fn write(&mut self, base: u32, table: &[u32]) {
        let base = base as usize;
        assert!(base + table.len() <= self.len, "ring write out of bounds");
        for (i, v) in table.iter().enumerate() {
            // SAFETY: in bounds (asserted); only this process writes the inactive half, and
            // a u64 store never tears a slot.
            unsafe {
                self.ptr
                    .as_ptr()
                    .add(base + i)
                    .write_volatile(u64::from(*v))
            };
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for RingMmap {
    fn drop(&mut self) {
        let bytes = (self.len * size_of::<u64>()).next_multiple_of(4096);
        // SAFETY: unmapping what `new` mapped.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), bytes) };
    }
}

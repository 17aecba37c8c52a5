//! A global allocator for tests that must prove no secret is left in freed memory: while armed, every
//! block the process frees (or leaves behind by a realloc that moves) is checked with the test binary's
//! own `matches`, and the hits counted. A test binary declares it as its `#[global_allocator]`, so it
//! scans everything that binary frees.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Scanning is on.
pub static ARMED: AtomicBool = AtomicBool::new(false);
/// Freed blocks `matches` said yes to while armed.
pub static HITS: AtomicUsize = AtomicUsize::new(0);

/// The allocator: `System`, with freed blocks of at least `min` bytes checked by `matches`.
pub struct Scanning {
    /// Whether a freed block holds what must not be left behind.
    pub matches: fn(&[u8]) -> bool,
    /// Blocks shorter than this are not checked (they cannot hold a whole marker).
    pub min: usize,
}

// SAFETY: every call is forwarded to `System`; `dealloc` only reads the block it is about to free.
unsafe impl GlobalAlloc for Scanning {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ARMED.load(Ordering::Relaxed) && layout.size() >= self.min {
            // SAFETY: the block is live and `layout.size()` bytes long until `System.dealloc` below.
            let block = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
            if (self.matches)(block) {
                HITS.fetch_add(1, Ordering::Relaxed);
            }
        }
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A move to a new block frees the old one: scan it as a free (the bytes it keeps move along).
        if ARMED.load(Ordering::Relaxed) && layout.size() >= self.min {
            // SAFETY: as in `dealloc`; allocate, copy and free by hand so the old block is scanned.
            unsafe {
                let new = System.alloc(Layout::from_size_align_unchecked(new_size, layout.align()));
                if !new.is_null() {
                    std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                return new;
            }
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

//! The process's allocator policy for the TEE commands.
//!
//! A proof moves megabyte buffers (records, keystreams, the plaintext, the bundle), each one new for
//! every proof. With glibc's defaults each such buffer is its own `mmap`, unmapped again when freed, so
//! every proof pays for fresh zeroed pages (page faults) and for returning them; measured, that is about
//! an eighth of a 1 MB proof's CPU (BENCHMARKS.md, tee). The TEE services and the prover therefore ask
//! glibc to serve allocations up to 32 MiB from its heap and to keep up to 64 MiB of freed memory
//! instead of giving it back at once: resident memory stays at the high-water mark of the proofs in
//! flight, which is what a service that will run the next proof wants anyway.
//!
//! The policy is left alone when the operator set `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_` or
//! either as a `GLIBC_TUNABLES` entry (glibc's own tunables), on other C libraries, and on 32-bit targets
//! (whose glibc caps the threshold far lower).
//!
//! Freed memory that stays in the process is not returned zeroed to the system: buffers that held secrets
//! are zeroized before they are freed (the channel's plaintext, keystreams, keys); a proof's plaintext
//! response is the user's own output and is not.

/// Heap allocations up to this size are not mmapped on their own.
#[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;
/// Freed memory at the heap's top is returned to the system only past this size.
#[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
const TRIM_THRESHOLD: libc::c_int = 64 << 20;

/// Keeps freed memory for reuse (see the module docs). Call before any thread starts.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
    {
        let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        let operator_chose = ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"]
            .iter()
            .any(|name| std::env::var_os(name).is_some())
            || tunables.contains("malloc.mmap_threshold")
            || tunables.contains("malloc.trim_threshold");
        if operator_chose {
            return;
        }
        // SAFETY: mallopt only changes glibc's allocator parameters; it is called before the runtime
        // starts any thread, with parameters and values glibc documents.
        let (mmap, trim) = unsafe {
            (
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1,
                libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1,
            )
        };
        if !(mmap && trim) {
            // Only slower proofs follow; nothing to stop for.
            let said = |set: bool| if set { "set" } else { "refused" };
            eprintln!(
                "tessera: glibc's allocator policy: mmap threshold {}, trim threshold {} (mallopt); \
                 what was refused keeps glibc's default",
                said(mmap),
                said(trim)
            );
        }
    }
}

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
//! The policy is left alone when the operator set `MALLOC_MMAP_THRESHOLD_` or `MALLOC_TRIM_THRESHOLD_`
//! (glibc's own tunables), and on other C libraries.

/// Heap allocations up to this size are not mmapped on their own.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;
/// Freed memory at the heap's top is returned to the system only past this size.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 64 << 20;

/// Keeps freed memory for reuse (see the module docs). Call before any thread starts.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let operator_chose = ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"]
            .iter()
            .any(|name| std::env::var_os(name).is_some());
        if operator_chose {
            return;
        }
        // SAFETY: mallopt only changes glibc's allocator parameters; it is called before the runtime
        // starts any thread, with parameters and values glibc documents.
        let ok = unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        };
        if !ok {
            // Only slower proofs follow; nothing to stop for.
            eprintln!(
                "tessera: glibc refused the allocator policy (mallopt); running with its defaults"
            );
        }
    }
}

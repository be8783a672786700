//! Packed-weight storage, and one huge-page arena for a whole model's weights.
//!
//! **Why.** A ResNet-18 forward pass streams ≈ 11.7 MB of packed weights, more than the
//! second-level TLB covers with 4 KiB pages (3072 entries ≈ 12 MiB on Zen 4, shared with the
//! activations and everything else). With 4 KiB pages the weight stream of the deep layers
//! misses the TLB at every page: measured on the Zen 4 machine, the same stage-4 3×3 conv took
//! 0.50 ms on its own (weights TLB-resident) and 0.54–0.58 ms inside the network; backed by
//! 2 MiB pages, 0.51 ms inside the network (stage 3 −3 %, the FC −35 %).
//!
//! Linux hands out transparent huge pages only for 2 MiB-aligned ranges that the program has
//! asked for with `madvise(MADV_HUGEPAGE)` (the default `transparent_hugepage=madvise` mode), and
//! only at first touch. Weights packed one layer at a time land in ordinary heap memory that is
//! already touched, so a model moves all its packed buffers, once, after loading, into one
//! anonymous mapping, 2 MiB-aligned and advised *before* it is written
//! ([`share_huge_pages`]); the mapping is then made read-only. Each [`PackedBuf`] becomes a
//! view into it. Where this is unavailable (not Linux, Miri, an `mmap` error) the buffers stay
//! where they are: this is a speed-up, never a requirement, and the bytes are the same.

use aligned_vec::{AVec, ConstAlign};
use std::ops::Deref;
use std::sync::Arc;

/// The packed bytes of one weight matrix: owned (as packed), or a view into a shared arena.
#[derive(Clone, Debug)]
pub(crate) enum PackedBuf {
    Own(AVec<u8, ConstAlign<64>>),
    Shared {
        arena: Arc<Arena>,
        off: usize,
        len: usize,
    },
}

impl Deref for PackedBuf {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        match self {
            PackedBuf::Own(v) => v,
            PackedBuf::Shared { arena, off, len } => &arena.bytes()[*off..*off + *len],
        }
    }
}

impl PackedBuf {
    /// Whether the bytes live in a shared arena (tests).
    #[cfg(test)]
    pub(crate) fn is_shared(&self) -> bool {
        matches!(self, PackedBuf::Shared { .. })
    }
}

/// A read-only anonymous mapping holding many packed buffers from a 2 MiB-aligned start.
#[derive(Debug)]
pub(crate) struct Arena {
    #[cfg(all(target_os = "linux", not(miri)))]
    map: memmap2::Mmap,
    start: usize,
    len: usize,
}

impl Arena {
    fn bytes(&self) -> &[u8] {
        #[cfg(all(target_os = "linux", not(miri)))]
        {
            &self.map[self.start..self.start + self.len]
        }
        #[cfg(not(all(target_os = "linux", not(miri))))]
        {
            let _ = (self.start, self.len);
            unreachable!("arenas are only built on Linux")
        }
    }
}

/// Huge-page size the arena is aligned to (x86-64 and aarch64 Linux with 4 KiB base pages).
const HUGE: usize = 2 << 20;
/// Each buffer starts on a 4 KiB boundary inside the arena (keeps the 64-byte alignment the
/// kernels' aligned loads of B rely on, and each buffer's first byte on a page of its own).
const SLOT: usize = 4096;

/// Moves every buffer in `bufs` into one new huge-page arena (see the module docs). Buffers
/// already shared are left alone. Does nothing when the total is under one huge page or an
/// arena cannot be made here.
pub(crate) fn share_huge_pages(bufs: &mut [&mut PackedBuf]) {
    let own: Vec<usize> = (0..bufs.len())
        .filter(|&i| matches!(bufs[i], PackedBuf::Own(_)))
        .collect();
    let total: usize = own
        .iter()
        .map(|&i| bufs[i].len().next_multiple_of(SLOT))
        .sum();
    if total < HUGE {
        return;
    }
    let Some(arena) = build(total, own.iter().map(|&i| &**bufs[i])) else {
        return;
    };
    let arena = Arc::new(arena);
    let mut off = 0;
    for &i in &own {
        let len = bufs[i].len();
        *bufs[i] = PackedBuf::Shared {
            arena: Arc::clone(&arena),
            off,
            len,
        };
        off += len.next_multiple_of(SLOT);
    }
}

/// Maps `total` bytes (rounded up to whole huge pages) 2 MiB-aligned, advises huge pages, copies
/// the buffers in at consecutive 4 KiB slots and makes the mapping read-only.
#[cfg(all(target_os = "linux", not(miri)))]
fn build<'a>(total: usize, bufs: impl Iterator<Item = &'a [u8]>) -> Option<Arena> {
    let len = total.next_multiple_of(HUGE);
    // One huge page more than needed, to align the start: the unused head and tail are never
    // touched, so they are never backed by memory.
    let mut map = memmap2::MmapMut::map_anon(len + HUGE).ok()?;
    let start = (map.as_ptr() as usize).next_multiple_of(HUGE) - map.as_ptr() as usize;
    // Before the first write: pages are only allocated huge at first touch. A refusal (THP
    // disabled) leaves ordinary pages, which is still correct.
    let _ = map.advise_range(memmap2::Advice::HugePage, start, len);
    let mut off = start;
    for b in bufs {
        map[off..off + b.len()].copy_from_slice(b);
        off += b.len().next_multiple_of(SLOT);
    }
    let map = map.make_read_only().ok()?;
    Some(Arena { map, start, len })
}

#[cfg(not(all(target_os = "linux", not(miri))))]
fn build<'a>(_total: usize, _bufs: impl Iterator<Item = &'a [u8]>) -> Option<Arena> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(bytes: &[u8]) -> PackedBuf {
        PackedBuf::Own(AVec::from_slice(64, bytes))
    }

    #[test]
    fn shared_buffers_keep_their_bytes_and_alignment() {
        let data: Vec<Vec<u8>> = [3 << 20, 1, 4095, 4096, 70_001]
            .iter()
            .enumerate()
            .map(|(s, &n)| (0..n).map(|i| (i * 31 + s * 7) as u8).collect())
            .collect();
        let mut bufs: Vec<PackedBuf> = data.iter().map(|d| owned(d)).collect();
        let mut refs: Vec<&mut PackedBuf> = bufs.iter_mut().collect();
        share_huge_pages(&mut refs);
        for (b, d) in bufs.iter().zip(&data) {
            assert_eq!(&**b, &d[..]);
            assert_eq!(b.as_ptr() as usize % 64, 0);
            #[cfg(all(target_os = "linux", not(miri)))]
            assert!(b.is_shared());
        }
        // A clone shares the arena and reads the same bytes.
        let c = bufs[4].clone();
        drop(bufs);
        assert_eq!(&*c, &data[4][..]);
    }

    #[test]
    fn small_totals_stay_owned() {
        let d: Vec<u8> = (0..1000).map(|i| i as u8).collect();
        let mut b = owned(&d);
        share_huge_pages(&mut [&mut b]);
        assert!(!b.is_shared());
        assert_eq!(&*b, &d[..]);
    }
}

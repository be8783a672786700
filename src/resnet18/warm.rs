//! Keeps the rayon pool's other workers awake for the duration of one forward pass.
//!
//! A forward pass is ~25 short parallel regions (one per conv, ≈ 50–500 µs each with two
//! threads) separated by short serial stretches (validation, the stem's quantize, pooling). An
//! idle rayon worker yields a few dozen times and then sleeps on a futex; waking it again costs
//! an inter-processor interrupt and, on a virtual machine, a vCPU wake-up, during which the
//! owner runs the layer's first work items alone. Measured on the 2-vCPU Zen 4 KVM guest (a
//! 2-item `par_iter` after 20–300 µs of serial work): the sleeping worker starts its item a
//! median 20–27 µs (p90 23–37 µs) after the fork, a spinning one after ~1 µs. ONNX Runtime and PyTorch avoid this by spinning their workers between regions
//! (their CPU time per inference is about twice the latency with two threads).
//!
//! [`KeepWarm::start`] does the same with rayon's own machinery: it posts one job to every other
//! worker of the current pool ([`rayon::spawn_broadcast`]) that loops on [`rayon::yield_now`],
//! which runs any pending job of the pool (a GEMM's work items are stolen exactly as a woken
//! worker would steal them). The loop ends
//! * when the guard is dropped (end of the forward pass, also on an error return), or
//! * after [`MAX_IDLE`] without finding work, so a worker never spins unboundedly: not when a
//!   forward pass stalls, not when several forward passes share a pool (a spinner may then run
//!   inside a worker that is itself waiting in another forward pass; the bound turns that into
//!   a short delay instead of a wait on each other).
//!
//! It changes who runs a work item, never what an item computes, so results stay identical for
//! every thread count.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long a spinning worker keeps looking for work before it goes back to rayon's normal
/// idle loop (and sleep). Longer than any serial stretch between two layers of ResNet-18 at
/// 224×224 (≈ 0.1 ms), short enough that a forgotten spinner costs little.
const MAX_IDLE: Duration = Duration::from_millis(1);

/// While alive, the current pool's other workers spin waiting for work (see the module docs).
pub(crate) struct KeepWarm {
    stop: Arc<AtomicBool>,
}

impl KeepWarm {
    /// Starts the spinners; `None` with a one-thread pool (nothing to keep awake).
    pub(crate) fn start() -> Option<KeepWarm> {
        if rayon::current_num_threads() < 2 {
            return None;
        }
        let owner = rayon::current_thread_index();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        rayon::spawn_broadcast(move |ctx| {
            // The caller's own copy (it runs when the caller next waits in a join) must not
            // spin: the caller would be stuck inside it.
            if Some(ctx.index()) != owner {
                spin(&flag);
            }
        });
        Some(KeepWarm { stop })
    }
}

impl Drop for KeepWarm {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Runs the pool's pending jobs until `stop` is set or nothing turns up for [`MAX_IDLE`].
fn spin(stop: &AtomicBool) {
    let mut idle_since = Instant::now();
    let mut polls = 0u32;
    while !stop.load(Ordering::Acquire) {
        match rayon::yield_now() {
            Some(rayon::Yield::Executed) => {
                idle_since = Instant::now();
                polls = 0;
            }
            Some(rayon::Yield::Idle) => {
                std::hint::spin_loop();
                polls += 1;
                // Reading the clock costs ~20 ns on KVM; every 64 polls is plenty.
                if polls.is_multiple_of(64) && idle_since.elapsed() > MAX_IDLE {
                    return;
                }
            }
            None => return,
        }
    }
}

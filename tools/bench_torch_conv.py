#!/usr/bin/env python3
"""PyTorch side of benches/conv.rs: every distinct ResNet-18 conv layer (224x224, batch 1) and a
few depthwise layers with torch.ao.nn.intrinsic.quantized.ConvReLU2d on the fbgemm engine, one
thread, channels_last quint8 input, per-channel qint8 weights, bias, fused ReLU (same shapes and
options as the criterion bench).

Default: one line per layer with the time (ms; median of 10 samples, each the mean of a batch of
iterations, as criterion measures) and GMAC/s; `--json` prints JSON instead.
`--per-iter` times every call individually and prints median and minimum (CSV), matching
`QKERNELS_BENCH_PER_ITER=1 cargo bench --bench conv`.
Run it in the same session as the criterion bench and compare ratios only (clock drift).
"""
import json
import statistics
import sys
import time

import torch
import torch.ao.nn.intrinsic.quantized as nniq

# (name, in_channels, out_channels, kernel, stride, padding, input size, groups)
LAYERS = [
    ("stem_7x7s2_3-64_224", 3, 64, 7, 2, 3, 224, 1),
    ("3x3_64-64_56", 64, 64, 3, 1, 1, 56, 1),
    ("3x3s2_64-128_56", 64, 128, 3, 2, 1, 56, 1),
    ("3x3_128-128_28", 128, 128, 3, 1, 1, 28, 1),
    ("3x3s2_128-256_28", 128, 256, 3, 2, 1, 28, 1),
    ("3x3_256-256_14", 256, 256, 3, 1, 1, 14, 1),
    ("3x3s2_256-512_14", 256, 512, 3, 2, 1, 14, 1),
    ("3x3_512-512_7", 512, 512, 3, 1, 1, 7, 1),
    ("1x1s2_64-128_56", 64, 128, 1, 2, 0, 56, 1),
    ("1x1s2_128-256_28", 128, 256, 1, 2, 0, 28, 1),
    ("1x1s2_256-512_14", 256, 512, 1, 2, 0, 14, 1),
    # Depthwise 3x3 (groups = channels, G % 8 == 0: fbgemm's direct depthwise kernel).
    ("dw3x3_32_112", 32, 32, 3, 1, 1, 112, 32),
    ("dw3x3s2_96_112", 96, 96, 3, 2, 1, 112, 96),
    ("dw3x3_144_56", 144, 144, 3, 1, 1, 56, 144),
    ("dw3x3_192_28", 192, 192, 3, 1, 1, 28, 192),
    ("dw3x3_576_14", 576, 576, 3, 1, 1, 14, 576),
]


def make_layer(ic, oc, k, s, p, hw, groups):
    conv = nniq.ConvReLU2d(ic, oc, k, stride=s, padding=p, groups=groups)
    w = torch.randn(oc, ic // groups, k, k) * 0.2
    scales = torch.full((oc,), 0.002) + 1e-5 * torch.arange(oc)
    qw = torch.quantize_per_channel(w, scales.double(), torch.zeros(oc, dtype=torch.long), 0, torch.qint8)
    conv.set_weight_bias(qw, 0.01 * torch.arange(oc, dtype=torch.float))
    conv.scale, conv.zero_point = 0.05, 3
    x = torch.rand(1, ic, hw, hw) * 4.0
    qx = torch.quantize_per_tensor(x, 0.02, 10, torch.quint8).contiguous(memory_format=torch.channels_last)
    oh = (hw + 2 * p - k) // s + 1
    macs = oh * oh * oc * (ic // groups) * k * k
    return conv, qx, macs


def bench_layer(layer, samples=10, sample_time=0.15):
    """Criterion-like: median of `samples` batch means (seconds), MACs."""
    conv, qx, macs = make_layer(*layer[1:])
    t0 = time.perf_counter()
    n = 0
    while time.perf_counter() - t0 < 0.3:
        conv(qx)
        n += 1
    iters = max(1, int(sample_time / ((time.perf_counter() - t0) / n)))
    means = []
    for _ in range(samples):
        t0 = time.perf_counter()
        for _ in range(iters):
            conv(qx)
        means.append((time.perf_counter() - t0) / iters)
    return statistics.median(means), macs


def bench_layer_per_iter(layer):
    """Every call timed individually after a warm-up: (median, min) seconds, MACs."""
    conv, qx, macs = make_layer(*layer[1:])
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 0.3:
        conv(qx)
    times = []
    t0 = time.perf_counter()
    while len(times) < 20 or time.perf_counter() - t0 < 1.0:
        t = time.perf_counter()
        conv(qx)
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times), macs


def main():
    torch.backends.quantized.engine = "fbgemm"
    torch.set_num_threads(1)
    if "--per-iter" in sys.argv:
        print("layer,isa,median_ms,min_ms,gmacs_median")
        for layer in LAYERS:
            med, mn, macs = bench_layer_per_iter(layer)
            print(f"{layer[0]},torch-fbgemm,{med * 1e3:.4f},{mn * 1e3:.4f},{macs / med / 1e9:.1f}")
        return
    rows = []
    for layer in LAYERS:
        med, macs = bench_layer(layer)
        rows.append({"layer": layer[0], "ms": med * 1e3, "gmacs": macs / med / 1e9, "macs": macs})
    if "--json" in sys.argv:
        print(json.dumps({"torch": torch.__version__, "engine": "fbgemm", "threads": 1, "layers": rows}, indent=1))
    else:
        print(f"# torch {torch.__version__}, fbgemm, 1 thread")
        for r in rows:
            print(f"{r['layer']:<22} {r['ms']:9.3f} ms  {r['gmacs']:7.2f} GMAC/s")


if __name__ == "__main__":
    main()

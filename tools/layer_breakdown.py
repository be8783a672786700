#!/usr/bin/env python3
"""Per-layer-type breakdown of the synthetic int8 ResNet-18, robust to a loaded machine.

    cargo build --release --example layer_profile
    gcc -O2 -o /tmp/clock_probe tools/clock_probe.c
    python3 tools/layer_breakdown.py [--isa avx512vnni] [--threads 1] [--batch 1] [--iters 100]

Runs `target/release/examples/layer_profile` (each layer's minimum time over the iterations:
a preemption inflates one layer of one iteration, not a minimum), groups the layers by type and
prints time share, GMAC/s, MAC/cycle/core and % of the VNNI peak, with the clock and the peak
(zmm `vpdpbusd` MAC/cycle: 64 on a Zen 4, 128 on a Zen 5) measured by tools/clock_probe.c right
before and after (`--peak-mac-per-cycle` overrides the peak). `--model FILE` profiles a model file
(e.g. the one tools/compare.py exports) instead of the synthetic ResNet-18.
"""
import argparse, collections, json, os, re, subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def kind(n):
    if n == "conv1":
        return "stem 7x7 s2 conv (K=147)"
    m = re.match(r"layer(\d)\.(\d)\.(.*)", n)
    if m:
        st, blk, what = m.groups()
        if what.startswith("downsample"):
            return f"1x1 s2 downsample, stage {st}"
        if what.startswith("conv"):
            if st != "1" and blk == "0" and what == "conv1":
                return f"3x3 s2 conv, stage {st}"
            return f"3x3 s1 convs, stage {st} (conv2 incl. fused add_relu)"
        return "add_relu (fused into conv2)"
    return n


def clock(probe):
    """(GHz, VNNI MAC/cycle) from one clock_probe run, or (None, None)."""
    if not os.path.exists(probe):
        return None, None
    out = subprocess.run([probe], capture_output=True, text=True).stdout.splitlines()
    if not out:
        return None, None
    mac = re.search(r"= ([\d.]+) MAC/cycle", out[0])
    return float(re.search(r"([\d.]+) GHz", out[0]).group(1)), mac and float(mac.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--isa", default="avx512vnni")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--peak-mac-per-cycle", type=float, default=None)
    ap.add_argument("--model", default=None)
    ap.add_argument("--probe", default="/tmp/clock_probe")
    a = ap.parse_args()
    exe = os.path.join(ROOT, "target", "release", "examples", "layer_profile")
    g0, p0 = clock(a.probe)
    env = dict(os.environ)
    if a.model:
        env["QKERNELS_PROFILE_MODEL"] = a.model
    out = subprocess.run([exe, a.isa, str(a.threads), str(a.batch), str(a.iters)],
                         capture_output=True, text=True, check=True, env=env).stdout
    g1, p1 = clock(a.probe)
    ghz = (g0 + g1) / 2 if g0 and g1 else None
    peak = a.peak_mac_per_cycle or (round(max(p0, p1) / 16) * 16 if p0 and p1 else 64.0)
    lines = [json.loads(l) for l in out.splitlines() if l.strip()]
    hdr, rows = lines[0], lines[1:]
    agg = collections.OrderedDict()
    for r in rows:
        x = agg.setdefault(kind(r["name"]), [0.0, 0])
        x[0] += r["min_ms"]
        x[1] += r["macs"]
    tot = sum(v[0] for v in agg.values())
    macs = sum(v[1] for v in agg.values())
    print(f"ISA {hdr['isa']}, {hdr['threads']} thread(s), batch {hdr['batch']}, {hdr['iters']} iterations; "
          f"load {os.getloadavg()[0]:.2f}; clock {ghz and round(ghz, 2)} GHz; "
          f"VNNI peak {peak:.0f} MAC/cycle/core")
    print(f"whole-run min {hdr['total_min_ms']:.3f} ms, sum of per-layer minima {tot:.3f} ms, "
          f"{macs / 1e9:.3f} GMAC -> {macs / tot / 1e6:.0f} GMAC/s")
    print("| layer type | GMAC | share of time | GMAC/s | MAC/cycle/core | % of VNNI peak |")
    print("|---|---:|---:|---:|---:|---:|")
    for k, (t, m) in agg.items():
        if m:
            g = m / t / 1e6
            per = g / ghz / hdr["threads"] if ghz else float("nan")
            print(f"| {k} | {m / 1e9:.3f} | {t / tot * 100:.1f}% | {g:.0f} | {per:.1f} | "
                  f"{per / peak * 100:.0f}% |")
        else:
            print(f"| {k} | - | {t / tot * 100:.1f}% | - | - | - |")


if __name__ == "__main__":
    main()

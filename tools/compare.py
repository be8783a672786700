#!/usr/bin/env python3
"""Side-by-side int8 ResNet-18 latency: qkernels vs PyTorch (fbgemm, onednn) vs ONNX Runtime.

    pip install torch torchvision onnxruntime onnx safetensors numpy
    cargo build --release
    python tools/compare.py --threads 1 --batch 1 --size 224 [--isa avx2] [--rounds 7] [--iters 20]

One random-weight torchvision ResNet-18 (batch-norm statistics randomised, like the golden model)
is post-training quantized three ways from the same float model and the same calibration data:
  * PyTorch eager, fbgemm engine (and the onednn engine) — `torch.ao.quantization` PTQ;
  * qkernels — the fbgemm-quantized model written by tools/export_resnet18.py, run by
    `qkernels bench --model FILE` (same weights, same qparams, bit-exact with PyTorch fbgemm);
  * ONNX Runtime — the float model exported to ONNX and quantized with onnxruntime's static QDQ
    quantizer (u8 activations, per-channel s8 weights), run with ORT_ENABLE_ALL.
The engines are timed **interleaved**: each round runs every engine for `--iters` iterations, so
clock drift (this VM's clock moves between ~2 and ~3.6 GHz) hits them alike. The table reports
the median over all iterations of all rounds, min, and the ratio qkernels / engine.

`--isa avx2` forces qkernels to AVX2 (QKERNELS_ISA) and asks the peers for AVX2 too where they
allow it (FBGEMM_ENABLE_INSTRUCTIONS=AVX2 for fbgemm, ONEDNN_MAX_CPU_ISA=AVX2 for onednn; ONNX
Runtime has no switch). Those variables must be set before the libraries load, so the script
re-executes itself with them.
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def parse():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--isa", default=None, help="force qkernels' ISA (and the peers' where possible), e.g. avx2")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--qkernels", default=os.path.join(ROOT, "target", "release", "qkernels"))
    ap.add_argument("--skip", default="", help="comma-separated engines to skip: fbgemm,onednn,ort,qkernels")
    ap.add_argument("--json", action="store_true", help="print the results as JSON too")
    return ap.parse_args()


def reexec_with_isa_env(a):
    if not a.isa or os.environ.get("QK_COMPARE_CHILD"):
        return
    env = dict(os.environ, QK_COMPARE_CHILD="1", QKERNELS_ISA=a.isa)
    if a.isa == "avx2":
        env.update(FBGEMM_ENABLE_INSTRUCTIONS="AVX2", ONEDNN_MAX_CPU_ISA="AVX2")
    sys.exit(subprocess.call([sys.executable] + sys.argv, env=env))


def build_float_model(seed):
    import torch
    from torchvision.models.quantization import resnet18
    torch.manual_seed(seed)
    m = resnet18(weights=None, quantize=False).eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
    return m


def quantize_torch(float_model, engine, calib):
    import copy, torch
    torch.backends.quantized.engine = engine
    m = copy.deepcopy(float_model)
    m.fuse_model()
    m.qconfig = torch.ao.quantization.get_default_qconfig(engine)
    torch.ao.quantization.prepare(m, inplace=True)
    with torch.no_grad():
        for x in calib:
            m(x)
    torch.ao.quantization.convert(m, inplace=True)
    return m


def ort_session(float_model, calib, size, threads, tmp):
    import numpy as np, torch, onnxruntime as ort
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process
    fp = os.path.join(tmp, "resnet18.onnx")
    pre = os.path.join(tmp, "resnet18_pre.onnx")
    q = os.path.join(tmp, "resnet18_int8.onnx")
    torch.onnx.export(float_model, torch.randn(1, 3, size, size), fp, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "n"}}, opset_version=17,
                      dynamo=False)
    quant_pre_process(fp, pre)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": x.numpy()} for x in calib])

        def get_next(self):
            return next(self.it, None)

    quantize_static(pre, q, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(q, so, providers=["CPUExecutionProvider"])


def export_for_qkernels(qmodel, path, size):
    sys.path.insert(0, HERE)
    import export_resnet18
    export_resnet18.export(qmodel, path, {"input_size": f"{size},{size}",
                                           "mean": "0.485,0.456,0.406", "std": "0.229,0.224,0.225"})


def time_callable(fn, iters):
    out = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return out


def time_qkernels(a, model_path):
    cmd = [a.qkernels, "bench", "--model", model_path, "--batch", str(a.batch),
           "--size", f"{a.size},{a.size}", "--threads", str(a.threads), "--iters", str(a.iters), "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"qkernels bench failed: {r.stderr.strip()}")
    j = json.loads(r.stdout)
    # Per-iteration latencies when the CLI reports them, else its median for this round.
    return [float(v) for v in j.get("latencies_ms", [j["median_ms"]])], j


def main():
    a = parse()
    reexec_with_isa_env(a)
    import torch
    torch.set_num_threads(a.threads)
    skip = set(filter(None, a.skip.split(",")))
    torch.manual_seed(a.seed + 1)
    calib = [torch.randn(2, 3, a.size, a.size) for _ in range(4)]
    x = torch.randn(a.batch, 3, a.size, a.size)
    fm = build_float_model(a.seed)
    engines = {}
    tmp = tempfile.mkdtemp(prefix="qk_compare_")
    fb = quantize_torch(fm, "fbgemm", calib)
    if "fbgemm" not in skip:
        def run_fbgemm():
            torch.backends.quantized.engine = "fbgemm"
            with torch.no_grad():
                fb(x)
        engines["PyTorch fbgemm"] = run_fbgemm
    if "onednn" not in skip:
        od = quantize_torch(fm, "onednn", calib)

        def run_onednn():
            torch.backends.quantized.engine = "onednn"
            with torch.no_grad():
                od(x)
        engines["PyTorch onednn"] = run_onednn
    if "ort" not in skip:
        sess = ort_session(fm, calib, a.size, a.threads, tmp)
        xn = x.numpy()
        engines["ONNX Runtime"] = lambda: sess.run(None, {"input": xn})
    model_path = os.path.join(tmp, "resnet18_qk.safetensors")
    qk_info = None
    if "qkernels" not in skip:
        torch.backends.quantized.engine = "fbgemm"
        export_for_qkernels(fb, model_path, a.size)
    times = {name: [] for name in engines}
    if "qkernels" not in skip:
        times["qkernels"] = []
    for name, fn in engines.items():  # warm-up
        time_callable(fn, 3)
    for r in range(a.rounds):
        for name, fn in engines.items():
            times[name] += time_callable(fn, a.iters)
        if "qkernels" not in skip:
            lat, qk_info = time_qkernels(a, model_path)
            times["qkernels"] += lat
        print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\nint8 ResNet-18, batch {a.batch}, {a.size}x{a.size}, threads {a.threads}, "
          f"isa {a.isa or 'best'}; {a.rounds} interleaved rounds x {a.iters} iterations")
    if qk_info:
        print(f"qkernels ISA: {qk_info.get('isa')}")
    print(f"{'engine':<16} {'median ms':>10} {'min ms':>9} {'qkernels/engine':>16}")
    for k, v in times.items():
        ratio = med["qkernels"] / med[k] if "qkernels" in med else float("nan")
        print(f"{k:<16} {med[k]:>10.2f} {min(v):>9.2f} {ratio:>16.3f}")
    if a.json:
        print(json.dumps({"median_ms": med, "min_ms": {k: min(v) for k, v in times.items()},
                          "args": vars(a)}))


if __name__ == "__main__":
    main()

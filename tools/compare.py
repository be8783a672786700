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

Every engine runs in a **fresh process per round** (qkernels: `qkernels bench`; the peers: this
script with `--worker`, loading the models saved once by the parent), each after the same 3
untimed warm-up runs (`qkernels bench --warmup 3`): on a loaded
machine the scheduler favours a newly started process over a long-running one, so timing the
peers inside this long-lived process (`--in-process`, the old behaviour) and qkernels in fresh
ones flattered qkernels' wall times. The table also gives the **CPU time per inference** (process
CPU time; for qkernels the difference of an `--iters K` and an `--iters 1` run over K - 1): with
one thread it is the latency minus the time spent descheduled, robust to a loaded machine.
(qkernels' figure subtracts two process totals that include model loading: use --iters >= 20.)

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
    ap.add_argument("--in-process", action="store_true",
                    help="time the PyTorch and ORT engines inside this process (the old way) instead of "
                         "one fresh worker process per engine and round, like qkernels")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
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
    return ort.InferenceSession(q, ort_options(threads), providers=["CPUExecutionProvider"]), q


def export_for_qkernels(qmodel, path, size):
    sys.path.insert(0, HERE)
    import export_resnet18
    export_resnet18.export(qmodel, path, {"input_size": f"{size},{size}",
                                           "mean": "0.485,0.456,0.406", "std": "0.229,0.224,0.225"})


def time_callable(fn, iters, cpu):
    """Wall-clock latencies (ms); appends the process CPU time of each call (ms) to `cpu`."""
    out = []
    for _ in range(iters):
        c = time.process_time()
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
        cpu.append((time.process_time() - c) * 1e3)
    return out


def children_cpu_ms():
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (r.ru_utime + r.ru_stime) * 1e3


def run_qkernels(a, model_path, iters):
    cmd = [a.qkernels, "bench", "--model", model_path, "--batch", str(a.batch),
           "--size", f"{a.size},{a.size}", "--threads", str(a.threads), "--iters", str(iters), "--warmup", "3", "--json"]
    c = children_cpu_ms()
    r = subprocess.run(cmd, capture_output=True, text=True)
    cpu = children_cpu_ms() - c
    if r.returncode != 0:
        raise SystemExit(f"qkernels bench failed: {r.stderr.strip()}")
    return json.loads(r.stdout), cpu


def time_qkernels(a, model_path):
    """Per-iteration wall latencies of one `qkernels bench` run, and the mean CPU time of an
    iteration: (CPU of an `--iters K` run - CPU of an `--iters 1` run) / (K - 1), which
    removes the model load, packing and warm-up the process also spends."""
    j, cpu_k = run_qkernels(a, model_path, a.iters)
    lat = [float(v) for v in j.get("latencies_ms", [j["median_ms"]])]
    cpu = []
    if a.iters > 1:
        _, cpu_1 = run_qkernels(a, model_path, 1)
        cpu = [max(cpu_k - cpu_1, 0.0) / (a.iters - 1)]
    return lat, j, cpu


def ort_options(threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return so


def worker(spec_path):
    """One engine, one round, in a fresh process: load, warm up (3 runs), time `iters` runs;
    prints {"lat": [...], "cpu": [...]} (ms)."""
    with open(spec_path) as f:
        w = json.load(f)
    import torch
    torch.set_num_threads(w["threads"])
    x = torch.load(w["input"])
    if w["engine"] == "ort":
        import onnxruntime as ort
        sess = ort.InferenceSession(w["model"], ort_options(w["threads"]),
                                    providers=["CPUExecutionProvider"])
        xn = x.numpy()
        fn = lambda: sess.run(None, {"input": xn})
    else:
        # Same architecture, converted without calibration, then the parent's quantized
        # state (weights, scales, zero points) loaded over it.
        m = quantize_torch(build_float_model(0), w["engine"], [])
        m.load_state_dict(torch.load(w["model"]))
        torch.backends.quantized.engine = w["engine"]

        def fn():
            with torch.no_grad():
                m(x)
    time_callable(fn, 3, [])
    cpu = []
    lat = time_callable(fn, w["iters"], cpu)
    print(json.dumps({"lat": lat, "cpu": cpu}))


def isolated(spec, tmp):
    """A round runner that times the engine in a fresh worker process."""
    path = os.path.join(tmp, f"worker_{spec['engine']}.json")
    with open(path, "w") as f:
        json.dump(spec, f)

    def run(iters, cpu):
        r = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", path],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"{spec['engine']} worker failed: {r.stderr.strip()[-2000:]}")
        j = json.loads(r.stdout.strip().splitlines()[-1])
        cpu += j["cpu"]
        return j["lat"]
    return run


def main():
    a = parse()
    if a.worker:
        return worker(a.worker)
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
        sess, ort_path = ort_session(fm, calib, a.size, a.threads, tmp)
        xn = x.numpy()
        engines["ONNX Runtime"] = lambda: sess.run(None, {"input": xn})
    if not a.in_process:
        # Same models and input, timed in fresh processes (see the module doc).
        x_path = os.path.join(tmp, "input.pt")
        torch.save(x, x_path)
        files = {"PyTorch fbgemm": ("fbgemm", lambda: fb), "PyTorch onednn": ("onednn", lambda: od)}
        runners = {}
        for name in engines:
            if name == "ONNX Runtime":
                spec = {"engine": "ort", "model": ort_path}
            else:
                eng, get = files[name]
                path = os.path.join(tmp, f"{eng}.pt")
                torch.save(get().state_dict(), path)
                spec = {"engine": eng, "model": path}
            spec.update(threads=a.threads, iters=a.iters, input=x_path)
            runners[name] = isolated(spec, tmp)
    else:
        runners = {name: (lambda fn: lambda iters, cpu: time_callable(fn, iters, cpu))(fn)
                   for name, fn in engines.items()}
    model_path = os.path.join(tmp, "resnet18_qk.safetensors")
    qk_info = None
    if "qkernels" not in skip:
        torch.backends.quantized.engine = "fbgemm"
        export_for_qkernels(fb, model_path, a.size)
    times = {name: [] for name in engines}
    cpu = {name: [] for name in engines}
    if "qkernels" not in skip:
        times["qkernels"] = []
        cpu["qkernels"] = []
    if a.in_process:
        for name, fn in engines.items():  # warm-up
            time_callable(fn, 3, [])
    load = [os.getloadavg()[0]]
    for r in range(a.rounds):
        for name, run in runners.items():
            times[name] += run(a.iters, cpu[name])
        if "qkernels" not in skip:
            lat, qk_info, c = time_qkernels(a, model_path)
            times["qkernels"] += lat
            cpu["qkernels"] += c
        load.append(os.getloadavg()[0])
        print(f"round {r + 1}/{a.rounds} done (load {load[-1]:.2f})", file=sys.stderr)
    med = {k: statistics.median(v) for k, v in times.items()}
    cmed = {k: statistics.median(v) for k, v in cpu.items() if v}
    print(f"\nint8 ResNet-18, batch {a.batch}, {a.size}x{a.size}, threads {a.threads}, "
          f"isa {a.isa or 'best'}; {a.rounds} interleaved rounds x {a.iters} iterations; "
          f"peers {'in this process' if a.in_process else 'in a fresh process per round'}")
    print(f"1-minute load average during the run: {min(load):.2f} .. {max(load):.2f} "
          f"({os.cpu_count()} CPUs)")
    if qk_info:
        print(f"qkernels ISA: {qk_info.get('isa')}")
    print(f"{'engine':<16} {'median ms':>10} {'min ms':>9} {'qkernels/engine':>16} "
          f"{'CPU ms/iter':>12} {'CPU ratio':>10}")
    for k, v in times.items():
        ratio = med["qkernels"] / med[k] if "qkernels" in med else float("nan")
        c = cmed.get(k, float("nan"))
        cr = cmed["qkernels"] / c if "qkernels" in cmed and k in cmed else float("nan")
        print(f"{k:<16} {med[k]:>10.2f} {min(v):>9.2f} {ratio:>16.3f} {c:>12.2f} {cr:>10.3f}")
    print("CPU ms/iter: process CPU time per inference (all threads; qkernels: mean over the "
          "timed iterations).\nWith one thread it is the latency without the time the thread "
          "spent descheduled, so it is robust to a loaded machine; with N threads it is the total work.")
    if a.json:
        print(json.dumps({"median_ms": med, "min_ms": {k: min(v) for k, v in times.items()},
                          "cpu_ms": cmed, "load": load, "args": vars(a)}))


if __name__ == "__main__":
    main()

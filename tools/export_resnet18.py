#!/usr/bin/env python3
"""Export a torchvision quantizable ResNet-18 to the qkernels model format (docs/model-format.md).

Three ways in:

  # 1. a float checkpoint (state_dict of torchvision.models.resnet18) + calibration images:
  #    fuse -> fbgemm post-training quantization (per-channel weights) -> export
  python tools/export_resnet18.py --checkpoint resnet18.pth --calib images/ --out model.safetensors \
      [--num-classes 1000] [--input-size 224,224] [--mean 0.485,0.456,0.406] [--std 0.229,0.224,0.225] \
      [--labels labels.txt] [--calib-limit 256]

  # 2. a model you already converted yourself (torch.save(model) of a converted
  #    torchvision.models.quantization.resnet18):
  python tools/export_resnet18.py --converted qmodel.pt --out model.safetensors [--input-size ...]

  # 3. random weights (tests):
  python tools/export_resnet18.py --random-init --out model.safetensors [--num-classes 7]

--calib takes a directory of PNG/JPEG images (needs Pillow; resized with the same bilinear
arithmetic qkernels uses) or a .npy float array [N, 3, H, W] already normalised.
--check-io PATH also writes a few random inputs with PyTorch's quantized logits (`input`,
`logits_q`, `logits`), so that qkernels can be checked bit for bit against this very model.

Needs torch, torchvision, numpy, safetensors. Runs PyTorch with the fbgemm engine and one thread.
"""
import argparse, json, os, sys
import numpy as np

try:
    import torch
    import torch.nn.functional as F
    from torchvision.models.quantization import resnet18 as quantizable_resnet18
    from safetensors.numpy import save_file
except ImportError as e:  # pragma: no cover
    sys.exit(f"export_resnet18.py needs torch, torchvision, numpy and safetensors: {e}")

FORMAT = "quantized-resnet18/v1"


def floats(s):
    return [float(v) for v in s.split(",")]


def size(s):
    h, w = (int(v) for v in s.split(","))
    return h, w


def load_calibration(path, hw, mean, std, limit):
    """Float calibration batches [n, 3, H, W], normalised like the deployment input."""
    if path.endswith(".npy"):
        x = torch.from_numpy(np.load(path).astype(np.float32))
        if x.ndim != 4 or x.shape[1] != 3:
            sys.exit(f"{path}: expected [N, 3, H, W], got {list(x.shape)}")
        return x[:limit]
    from PIL import Image
    files = sorted(f for f in os.listdir(path) if f.lower().endswith((".png", ".jpg", ".jpeg")))[:limit]
    if not files:
        sys.exit(f"{path}: no PNG/JPEG images")
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    out = []
    for f in files:
        img = np.asarray(Image.open(os.path.join(path, f)).convert("RGB"), dtype=np.float32) / 255.0
        t = torch.from_numpy(img).permute(2, 0, 1).unsqueeze(0)
        t = F.interpolate(t, size=hw, mode="bilinear", align_corners=False)[0]
        out.append((t - m) / s)
    return torch.stack(out)


def quantize(model, calib, batch=16):
    model.eval()
    model.fuse_model()
    model.qconfig = torch.ao.quantization.get_default_qconfig("fbgemm")
    torch.ao.quantization.prepare(model, inplace=True)
    with torch.no_grad():
        for i in range(0, len(calib), batch):
            model(calib[i:i + batch])
    torch.ao.quantization.convert(model, inplace=True)
    return model


def export(model, out, meta):
    """Every parameter of a converted quantized ResNet-18 as flat tensors (scales f64, zps i32)."""
    t = {}
    f64 = lambda v: np.asarray(v, dtype=np.float64).reshape(-1)
    i32 = lambda v: np.asarray(v, dtype=np.int32).reshape(-1)
    for name, mod in model.named_modules():
        kind = type(mod).__name__
        if kind in ("Conv2d", "ConvReLU2d", "QuantizedConv2d", "QuantizedConvReLU2d", "Linear", "LinearReLU") \
                and hasattr(mod, "scale") and callable(getattr(mod, "weight", None)):
            w = mod.weight()
            # contiguous(): quantized conv weights are channels-last in memory; store true OIHW
            t[f"{name}.weight"] = np.ascontiguousarray(w.int_repr().contiguous().numpy())
            if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                t[f"{name}.weight_scale"] = f64(w.q_per_channel_scales())
                t[f"{name}.weight_zero_point"] = i32(w.q_per_channel_zero_points())
            else:
                t[f"{name}.weight_scale"] = f64([w.q_scale()])
                t[f"{name}.weight_zero_point"] = i32([w.q_zero_point()])
            if mod.bias() is not None:
                t[f"{name}.bias"] = mod.bias().detach().float().numpy()
            t[f"{name}.scale"], t[f"{name}.zero_point"] = f64([mod.scale]), i32([mod.zero_point])
        elif kind == "QFunctional":  # the residual add_relu of each block
            t[f"{name}.scale"], t[f"{name}.zero_point"] = f64([mod.scale]), i32([mod.zero_point])
        elif kind == "Quantize":  # the quant stub
            t[f"{name}.scale"], t[f"{name}.zero_point"] = f64([float(mod.scale)]), i32([int(mod.zero_point)])
    if "quant.scale" not in t or "fc.weight" not in t:
        sys.exit("the model does not look like a converted torchvision quantized ResNet-18")
    meta = {"format": FORMAT, "arch": "resnet18", "engine": "fbgemm", "torch": torch.__version__,
            "num_classes": str(model.fc.out_features), "input_channels": "3", **meta}
    save_file(t, out, metadata={k: str(v) for k, v in meta.items()})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="float state_dict of torchvision resnet18 (.pth)")
    src.add_argument("--converted", help="torch.save()d converted quantized ResNet-18")
    src.add_argument("--random-init", action="store_true", help="random weights (for tests)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--calib", help="directory of PNG/JPEG images, or a .npy [N,3,H,W] (normalised)")
    ap.add_argument("--calib-limit", type=int, default=256)
    ap.add_argument("--num-classes", type=int)
    ap.add_argument("--input-size", type=size, default=(224, 224))
    ap.add_argument("--mean", type=floats, default=[0.485, 0.456, 0.406])
    ap.add_argument("--std", type=floats, default=[0.229, 0.224, 0.225])
    ap.add_argument("--labels", help="text file, one class name per line")
    ap.add_argument("--preprocess", help="free-text preprocessing note (starting with 'grayscale' makes "
                                         "qkernels classify convert images to grey)")
    ap.add_argument("--note")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check-io", help="also write random inputs and PyTorch's logits here")
    a = ap.parse_args()

    torch.backends.quantized.engine = "fbgemm"
    torch.set_num_threads(1)  # quantized::add picks its tail formula per thread chunk
    torch.manual_seed(a.seed)
    hw = a.input_size

    if a.converted:
        model = torch.load(a.converted, weights_only=False).eval()
    else:
        if a.checkpoint:
            sd = torch.load(a.checkpoint, map_location="cpu")
            sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
            classes = a.num_classes or sd["fc.weight"].shape[0]
            model = quantizable_resnet18(weights=None, quantize=False, num_classes=classes)
            model.load_state_dict(sd)
            if not a.calib:
                sys.exit("--checkpoint needs --calib (calibration images for post-training quantization)")
            calib = load_calibration(a.calib, hw, a.mean, a.std, a.calib_limit)
        else:
            model = quantizable_resnet18(weights=None, quantize=False, num_classes=a.num_classes or 1000)
            with torch.no_grad():  # non-trivial batch norm so that fusion matters
                for mod in model.modules():
                    if isinstance(mod, torch.nn.BatchNorm2d):
                        mod.running_mean.uniform_(-0.1, 0.1)
                        mod.running_var.uniform_(0.5, 1.5)
                        mod.weight.uniform_(0.5, 1.5)
                        mod.bias.uniform_(-0.2, 0.2)
            calib = (load_calibration(a.calib, hw, a.mean, a.std, a.calib_limit) if a.calib
                     else torch.randn(8, 3, *hw))
        model = quantize(model, calib)

    meta = {"input_size": f"{hw[0]},{hw[1]}", "mean": ",".join(map(repr, a.mean)),
            "std": ",".join(map(repr, a.std))}
    if a.labels:
        with open(a.labels) as f:
            labels = [line.strip() for line in f if line.strip()]
        if len(labels) != model.fc.out_features:
            sys.exit(f"{a.labels}: {len(labels)} labels for {model.fc.out_features} classes")
        meta["labels"] = json.dumps(labels)
    if a.preprocess:
        meta["preprocess"] = a.preprocess
    if a.note:
        meta["note"] = a.note
    export(model, a.out, meta)
    print(f"wrote {a.out} ({model.fc.out_features} classes, input {hw[0]}x{hw[1]})")

    if a.check_io:
        x = torch.randn(2, 3, *hw)
        got = {}
        hook = model.fc.register_forward_hook(lambda m, i, o: got.__setitem__("q", o))
        with torch.no_grad():
            logits = model(x)
        hook.remove()
        save_file({"input": x.numpy(), "logits": logits.numpy(),
                   "logits_q": got["q"].int_repr().numpy()}, a.check_io)
        print(f"wrote {a.check_io}")


if __name__ == "__main__":
    main()

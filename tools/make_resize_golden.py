#!/usr/bin/env python3
"""One-off: golden vectors for qkernels' bilinear resize (tests/data/resize_golden.safetensors).

PyTorch's F.interpolate(mode="bilinear", align_corners=False, antialias=False) on random float
images, up and down, odd sizes; `classify` must reproduce it bit for bit.

    pip install torch numpy safetensors ; python tools/make_resize_golden.py
"""
from pathlib import Path
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.manual_seed(0)
torch.set_num_threads(2)  # PyTorch picks its kernel by thread count for 3 channels
out = {}
for i, (c, h, w, oh, ow) in enumerate([
        (1, 8, 8, 32, 32), (3, 17, 23, 32, 32), (3, 40, 50, 7, 9), (3, 5, 3, 64, 48),  # oh+ow <= 128
        (1, 100, 61, 50, 37), (3, 9, 9, 9, 9),
        (1, 6, 7, 224, 13), (3, 50, 40, 100, 100), (1, 3, 4, 7, 300), (3, 31, 17, 60, 69)]):  # > 128
    x = torch.rand(1, c, h, w)
    y = F.interpolate(x, size=(oh, ow), mode="bilinear", align_corners=False)
    out[f"case{i}/x"] = x[0].contiguous()
    out[f"case{i}/y"] = y[0].contiguous()
save_file(out, str(Path(__file__).resolve().parent.parent / "tests/data/resize_golden.safetensors"))

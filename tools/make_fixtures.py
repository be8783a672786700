#!/usr/bin/env python3
"""One-off: copy the ResNet-18 test fixtures into the repository, as small as they can be.

    pip install numpy safetensors
    python tools/make_fixtures.py --shared ../shared

Writes
  tests/data/resnet18.safetensors      the golden random-weight ResNet-18 (copied as is: all weights needed)
  tests/data/resnet18_io.safetensors   its 2 inputs, logits, logits_q and act/<module> of input 0 (as is)
  tests/data/digits_test.safetensors   the 297 scikit-learn test digits: `images` U8 [297,8,8] (0..16),
                                       `labels` I64, `logits_q` U8 [297,10], `logits` F32 [297,10] --
                                       without the 3.6 MB float `input`, which the test rebuilds from
                                       `images` (this script checks that the rebuild is bit-identical)
  models/digits_resnet18.safetensors   the trained int8 digits model (the CLI's embedded default)
  samples/digit_<d>.png                one correctly classified test image per digit, 8x8 8-bit grey,
                                       value round(x * 255 / 16)
"""
import argparse, shutil, struct, zlib
from pathlib import Path
import numpy as np
from safetensors.numpy import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent


def resize_bilinear(img, oh, ow):
    """F.interpolate(mode="bilinear", align_corners=False) in float32, PyTorch's operation order."""
    h, w = img.shape
    def axis(n_in, n_out):
        scale = np.float32(n_in) / np.float32(n_out)
        src = scale * (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5)
        src = np.maximum(src, np.float32(0))
        i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
        i1 = np.where(i0 < n_in - 1, i0 + 1, i0)
        l1 = np.clip(src - i0.astype(np.float32), 0, 1).astype(np.float32)
        return i0, i1, (np.float32(1) - l1).astype(np.float32), l1
    y0, y1, hy0, hy1 = axis(h, oh)
    x0, x1, wx0, wx1 = axis(w, ow)
    r0 = img[y0][:, x0] * wx0 + img[y0][:, x1] * wx1
    r1 = img[y1][:, x0] * wx0 + img[y1][:, x1] * wx1
    return (r0 * hy0[:, None] + r1 * hy1[:, None]).astype(np.float32)


def png_gray8(path, a):
    h, w = a.shape
    raw = b"".join(b"\x00" + a[y].astype(np.uint8).tobytes() for y in range(h))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(ROOT.parent.parent / "shared"))
    a = ap.parse_args()
    shared = Path(a.shared)
    data = ROOT / "tests" / "data"
    data.mkdir(parents=True, exist_ok=True)
    for f in ("resnet18.safetensors", "resnet18_io.safetensors"):
        shutil.copyfile(shared / "golden" / f, data / f)
    (ROOT / "models").mkdir(exist_ok=True)
    shutil.copyfile(shared / "models" / "digits_resnet18.safetensors", ROOT / "models" / "digits_resnet18.safetensors")

    t = load_file(str(shared / "models" / "digits_test_sklearn.safetensors"))
    images, labels, logits_q = t["images"], t["labels"], t["logits_q"]
    assert images.max() <= 16
    # The float input is: x/16 -> bilinear 8x8 -> 32x32 -> 3 channels -> (x - 0.5) / 0.5.
    for i in range(len(images)):
        y = resize_bilinear(images[i].astype(np.float32) / np.float32(16), 32, 32)
        y = (y - np.float32(0.5)) / np.float32(0.5)
        for c in range(3):
            assert np.array_equal(y, t["input"][i, c]), f"image {i} channel {c}: preprocessing differs"
    save_file({"images": images, "labels": labels, "logits_q": logits_q, "logits": t["logits"]},
              str(data / "digits_test.safetensors"))

    pred = logits_q.argmax(1)
    (ROOT / "samples").mkdir(exist_ok=True)
    for d in range(10):
        i = next(i for i in range(len(images)) if labels[i] == d and pred[i] == d)
        png_gray8(ROOT / "samples" / f"digit_{d}.png", np.round(images[i].astype(np.float64) * 255 / 16))
        print(f"samples/digit_{d}.png <- test image {i}")


if __name__ == "__main__":
    main()

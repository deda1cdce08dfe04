"""Benchmark: preprocessing and inference speed (images/s) and peak memory of the imaging stage.

    python -m ml_pipelines.vision.bench --images ../shared/data/torchxrayvision-test-images \\
        [--weights-dir DIR] [--repeat 4] [--batch-size 8] [--device auto]

With ``--weights-dir`` holding the release file, the trained network is timed. Without it the
benchmark times TorchXRayVision's DenseNet-121 with random values, says so in its output, and
produces no findings: speed does not depend on the values of the weights. Figures are printed,
never asserted.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchxrayvision as xrv

from ml_pipelines.vision.inference import choose_device, score
from ml_pipelines.vision.options import DEFAULT_MODEL
from ml_pipelines.vision.preprocess import Prepared, image_format, prepare
from ml_pipelines.vision.weights import LoadedModel, load_model, model_spec

logger = logging.getLogger(__name__)


def _random_model(model_id: str, device: str) -> LoadedModel:
    spec = model_spec(model_id)
    network = xrv.models.DenseNet(num_classes=len(spec.labels))
    network.op_threshs = None
    network.apply_sigmoid = True
    network.input_resolution = spec.resolution
    return LoadedModel(spec=spec, network=network.eval().to(device),
                       weights_path=Path("(random values)"), weights_sha256="")


def _peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_benchmark(
    *, images: Path, weights_dir: Path | None, model_id: str, repeat: int, batch_size: int,
    device: str,
) -> dict[str, object]:
    files = [path for path in sorted(images.rglob("*"))
             if path.is_file() and image_format(path.read_bytes()[:132])]
    blobs = [path.read_bytes() for path in files] * repeat
    device = choose_device(device)
    model = (load_model(model_id, cache_dir=weights_dir, device=device) if weights_dir
             else _random_model(model_id, device))

    started = time.perf_counter()
    prepared = [prepare(blob, resolution=model.spec.resolution) for blob in blobs]
    inputs = [item.pixels for item in prepared if isinstance(item, Prepared)]
    preprocess_s = time.perf_counter() - started

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    score(model, inputs[:batch_size], batch_size=batch_size)  # warm-up: kernels, allocator
    started = time.perf_counter()
    probabilities = score(model, inputs, batch_size=batch_size)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    inference_s = time.perf_counter() - started

    figures: dict[str, object] = {
        "model": model_id,
        "weights": "trained (sha256 " + model.weights_sha256[:12] + ")" if weights_dir
        else "random values (speed only; no findings)",
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "batch_size": batch_size,
        "images": len(inputs),
        "preprocess_images_per_s": round(len(blobs) / preprocess_s, 2),
        "inference_images_per_s": round(len(inputs) / inference_s, 2),
        "end_to_end_images_per_s": round(len(inputs) / (preprocess_s + inference_s), 2),
        "peak_rss_mib": round(_peak_rss_mib(), 1),
        "output_shape": list(np.shape(probabilities)),
    }
    if device.startswith("cuda"):
        figures["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--weights-dir", type=Path, default=None)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--repeat", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    figures = run_benchmark(images=args.images, weights_dir=args.weights_dir, model_id=args.model,
                            repeat=args.repeat, batch_size=args.batch_size, device=args.device)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Peak memory of one training step of GCT models against SE and plain, with and without the gated convolution's
own backward (``attnzoo.backbones.layers.GatedConv2d``), measured with the bench's ``attnzoo.bench.memory``.

    python benchmarks/gct_memory.py --modes eager default --batch 32 --resolution 224

Each (model, mode) runs in its own process (no allocator state carried from one to the next): two warm-up steps,
then the median peak of three steps. ``gct_*@unfused`` is the same model with the fusion turned off, i.e. the
convolution applied to the gate module's output as before: each gated convolution then keeps x · g for its
weight gradient beside x. Ratios are to the plain backbone in the same mode.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

MODELS = ["r50", "se_r50", "gct_r50", "gct_r50@unfused",
          "mobilenetv2", "se_mobilenetv2", "gct_mobilenetv2", "gct_mobilenetv2@unfused"]


def measure(label: str, mode: str, batch: int, resolution: int) -> dict:
    import torch

    from attnzoo.backbones.layers import GatedConv2d
    from attnzoo.bench import memory
    from attnzoo.bench.selection import select
    from attnzoo.bench.workload import Setting, make_workload

    name, _, variant = label.partition("@")
    (entries,) = select([name]).values()
    entry = next(e for e in entries if e.name == name)
    setting = Setting("cpu", "fp32", False, "train", batch, resolution)
    workload = make_workload(entry, mode, setting, 1000, {})
    if variant == "unfused":
        for module in workload.model.modules():
            if isinstance(module, GatedConv2d):
                module.gate.gate_for = lambda x: None  # GatedConv2d then calls conv(gate(x)), as before the fusion
    for _ in range(2):
        workload.run()
    return {"model": label, "mode": mode, "peak_bytes": memory.peak_bytes(workload, "cpu", repeats=3),
            "torch": torch.__version__}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--modes", nargs="+", default=["eager", "default"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # "label,mode": measure in this process
    args = parser.parse_args()
    if args.one:
        label, mode = args.one.split(",")
        print(json.dumps(measure(label, mode, args.batch, args.resolution)))
        return 0
    results = []
    for mode in args.modes:
        for label in args.models:
            run = subprocess.run([sys.executable, __file__, "--one", f"{label},{mode}", "--batch", str(args.batch),
                                  "--resolution", str(args.resolution)], capture_output=True, text=True)
            if run.returncode:
                print(run.stderr, file=sys.stderr)
                return run.returncode
            results.append(json.loads(run.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), flush=True)
    plain = {(r["mode"], r["model"]): r["peak_bytes"] for r in results}
    print(f"\ntraining step, cpu fp32, batch {args.batch}, {args.resolution}x{args.resolution}: peak MB (x plain)")
    for r in results:
        backbone = "r50" if "r50" in r["model"] else "mobilenetv2"
        base = plain.get((r["mode"], backbone))
        ratio = f"{r['peak_bytes'] / base:.2f}x" if base else "-"
        print(f"{r['mode']:<8} {r['model']:<26} {r['peak_bytes'] / 1e6:9.0f} MB  {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

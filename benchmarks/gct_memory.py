"""Peak memory of one training step of GCT models against SE and plain, with and without the gated convolution's
own backward (``attnzoo.backbones.layers.GatedConv2d``), measured with the bench's ``attnzoo.bench.memory``:
the peak of live tensors (the bench's figure, exact) and, beside it, the process's resident set (allocator slack
included, a few percent of noise).

    python benchmarks/gct_memory.py --modes eager default --batch 32 --resolution 224

Each (model, mode) runs in its own process (no allocator state carried from one to the next): two warm-up steps,
then one measured step (the resident figure: median of three). ``gct_*@unfused`` is the same model with the
fusion turned off, i.e. the convolution applied to the gate module's output as before: each gated convolution
then keeps x · g for its weight gradient beside x. Ratios are to the plain backbone in the same mode.
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
    return {"model": label, "mode": mode, "peak_bytes": memory.peak_bytes(workload, "cpu"),
            "state_bytes": workload.state_bytes(), "resident_bytes": memory.peak_resident_bytes(workload),
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
    print(f"\ntraining step, cpu fp32, batch {args.batch}, {args.resolution}x{args.resolution}; ratios to the plain "
          "backbone in the same mode\n"
          "peak: state + the step's live tensors (the bench's figure); step: the same above the state (activations,\n"
          "gradients, temporaries); resident: state + the rise of the process's resident set (allocator slack in)")
    print(f"{'mode':<8} {'model':<26} {'peak MB':>9} {'x':>6} {'step MB':>9} {'x':>6} {'resident MB':>12} {'x':>6}")
    by_key = {(r["mode"], r["model"]): r for r in results}
    for r in results:
        plain = by_key.get((r["mode"], "r50" if "r50" in r["model"] else "mobilenetv2"))
        step = r["peak_bytes"] - r["state_bytes"]
        cells = [(r["peak_bytes"], plain and plain["peak_bytes"]),
                 (step, plain and plain["peak_bytes"] - plain["state_bytes"]),
                 (r["resident_bytes"], plain and plain["resident_bytes"])]
        line = f"{r['mode']:<8} {r['model']:<26}"
        for (value, base), width in zip(cells, (9, 9, 12)):
            line += f" {value / 1e6:{width}.0f}" if value else f" {'-':>{width}}"
            line += f" {value / base:5.2f}x" if value and base else f" {'-':>6}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What of a run's configuration does not fit this machine, all of it in one message before anything starts.

The ImageNet recipes are written for 8 GPUs; on a laptop a user would otherwise meet one problem per attempt
(first the device, then the data folder), or a run that starts 8 processes with 8 loader workers each in bf16
on 2 CPU cores without a word. Errors (a device or a folder that is not there) end the run, every one of them
named with the option that sets it; what only would be slow (more processes than cores, bf16 on a CPU) is said
in one line and the run goes on.
"""

from __future__ import annotations

import os
import sys

from attnzoo.devices import cuda_count
from attnzoo.errors import AttnzooError

# Half precisions a CPU emulates: they run, usually slower than float32.
CPU_PRECISIONS_THAT_CRAWL = ("bf16-mixed", "bf16", "bf16-true", "16-mixed", "16", "16-true")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _device_count(devices, available: int) -> int | None:
    """How many processes ``--trainer.devices`` asks for (None when it cannot be told without Lightning)."""
    if isinstance(devices, int):
        return available if devices == -1 else devices
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if isinstance(devices, str):
        text = devices.strip()
        if text in ("auto", "-1"):
            return available
        if text.isdigit():
            return int(text)
        if "," in text:
            return len([part for part in text.split(",") if part.strip()])
    return None


def _missing_device(accelerator) -> str | None:
    """The error for an accelerator this machine does not have (a name Lightning does not know is refused
    before, by ``attnzoo.training.cli.check_devices``)."""
    if not isinstance(accelerator, str) or accelerator == "auto":
        return None
    import torch
    from lightning.pytorch.accelerators import AcceleratorRegistry

    names = sorted(AcceleratorRegistry.available_accelerators())
    available = [name for name in names if AcceleratorRegistry[name]["accelerator"].is_available()]
    wanted = ("cuda", "mps") if accelerator == "gpu" else (accelerator,)
    if any(name in available for name in wanted):
        return None
    build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", a build without CUDA")
    device = "GPU" if accelerator in ("gpu", "cuda", "mps") else f"{accelerator} device"
    return (f"--trainer.accelerator {accelerator}: this machine has no {device} ({build}). Available here: "
            f"{', '.join(available)} (--trainer.accelerator {available[0] if len(available) == 1 else 'auto'}, or auto)")


def problems(subcommand: str, config) -> tuple[list[str], list[str]]:
    """(errors, slow) for ``config`` (one subcommand's parsed LightningCLI namespace) on this machine."""
    errors: list[str] = []
    slow: list[str] = []
    trainer = config.trainer
    accelerator = trainer.get("accelerator")
    gpus = cuda_count()
    wants_gpu = accelerator in ("gpu", "cuda")
    missing = _missing_device(accelerator)
    if missing:
        errors.append(missing)
    on_cpu = accelerator == "cpu" or (accelerator in (None, "auto") and gpus == 0) or (wants_gpu and gpus == 0)
    cores = _cores()
    processes = _device_count(trainer.get("devices"), gpus if (wants_gpu and gpus) else cores) or 1
    data = config.get("data")
    init_args = (data.get("init_args") if data is not None and hasattr(data, "get") else None) or {}
    workers = (init_args.get("num_workers") if hasattr(init_args, "get") else None) or 0
    if on_cpu and subcommand in ("fit", None):  # None: a configuration parsed without running it
        if processes > cores:
            slow.append(f"--trainer.devices {trainer.get('devices')} starts {processes} training processes on "
                        f"{cores} CPU core(s)")
        if processes * (1 + workers) > 2 * cores and workers:
            slow.append(f"{processes} process(es) x --data.init_args.num_workers {workers} = {processes * workers} "
                        f"data loader workers on {cores} core(s)")
        precision = str(trainer.get("precision"))
        if precision in CPU_PRECISIONS_THAT_CRAWL:
            slow.append(f"--trainer.precision {precision} on a CPU (emulated, usually slower than 32-true)")
    data_dir = init_args.get("data_dir") if hasattr(init_args, "get") else None
    if data_dir is not None and not init_args.get("download") and not os.path.isdir(str(data_dir)):
        errors.append(f"--data.init_args.data_dir {str(data_dir)!r} is not a folder here; "
                      "give the data set's root, e.g. --data.init_args.data_dir /data/imagenet")
    return errors, slow


def preflight(subcommand: str, config) -> None:
    """Raise one :class:`AttnzooError` naming every error (and what would be slow beside them); print what would
    only be slow as one line on stderr."""
    errors, slow = problems(subcommand, config)
    if errors:
        also = f". Also slow here: {'; '.join(slow)}" if slow else ""
        raise AttnzooError(f"this run does not fit this machine ({len(errors)} problem(s)): {'; '.join(errors)}{also}.")
    if slow:
        print(f"attnzoo: note: this run will be slow here: {'; '.join(slow)}; --trainer.devices 1 "
              f"--trainer.precision 32-true --data.init_args.num_workers {max(_cores() - 1, 0)} fit a "
              f"{_cores()}-core machine.", file=sys.stderr)

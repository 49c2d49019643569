"""Images per second of the ImageFolder training pipeline alone (decode, RandomResizedCrop, flip, collate),
so a run can tell whether the data or the model is the bottleneck. No model runs here."""

from __future__ import annotations

import time

from attnzoo.errors import AttnzooError


def throughput(data_dir: str, num_workers: int = 16, batch_size: int = 256, batches: int = 50,
               input_size: int = 224) -> dict:
    try:
        from attnzoo.data import ImageFolderDataModule
    except ImportError as err:
        raise AttnzooError(f"the data pipeline benchmark needs attnzoo.data ({err}).") from None
    data = ImageFolderDataModule(data_dir, batch_size=batch_size, num_workers=num_workers, input_size=input_size,
                                 pin_memory=False, persistent_workers=False)
    data.setup("fit")
    loader = iter(data.train_dataloader())
    next(loader)  # workers start and fill their queues: not part of the steady rate
    images, start = 0, time.perf_counter()
    for _ in range(batches):
        try:
            x, _ = next(loader)
        except StopIteration:
            break
        images += x.shape[0]
    seconds = time.perf_counter() - start
    return {"data_dir": data_dir, "num_workers": num_workers, "batch_size": batch_size, "images": images,
            "seconds": seconds, "images_per_s": images / seconds if seconds else None}

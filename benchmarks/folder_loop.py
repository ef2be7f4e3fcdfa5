"""The image-folder baseline: the loop a user writes by hand around torchvision's ``ImageFolder``.

``ImageFolder`` + ``DataLoader(num_workers=2, pin_memory=True)`` with the per-sample transforms project
templates and tutorials ship — ``RandomResizedCrop`` + ``RandomHorizontalFlip`` + ``ToTensor`` + ``Normalize``
(torchvision's v1 API, PIL images) — feeding cnnlab's own modern LeNet-5 module (so the network is identical),
Adam and a cosine schedule over the run, as ``cnnlab train model=lenet5`` uses. Evaluates the ``val/`` folder at
the end (centre crops of the size/0.875 resize). Prints one JSON line: per-epoch training images/s (training
batches only, as cnnlab's results.json counts them) and the test accuracy.

    python benchmarks/folder_loop.py --root FOLDER --image-size 64 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from cnnlab.models.lenet5 import ModernLeNet5

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True, help="folder holding train/<class>/ and val/<class>/")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    torch.manual_seed(42)
    size = args.image_size
    train_tf = transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(),
                                   transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    eval_tf = transforms.Compose([transforms.Resize(round(size / 0.875)), transforms.CenterCrop(size),
                                  transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    train = datasets.ImageFolder(f"{args.root}/train", transform=train_tf)
    test = datasets.ImageFolder(f"{args.root}/val", transform=eval_tf)
    train_loader = DataLoader(train, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                              pin_memory=True)
    test_loader = DataLoader(test, batch_size=256, num_workers=args.workers)

    model = ModernLeNet5(3, len(train.classes), size)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    images_per_s = []
    for _ in range(args.epochs):
        seen, started = 0, time.perf_counter()
        for images, labels in train_loader:
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(labels)
        images_per_s.append(seen / (time.perf_counter() - started))
        schedule.step()
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in test_loader)
    print(json.dumps({"epoch_images_per_s": images_per_s, "test/acc": correct / len(test)}))


if __name__ == "__main__":
    main()

"""The baseline a cnnlab run is measured against: the loop a user would write by hand.

Modern LeNet-5 (cnnlab's own module, so the network is identical) on MNIST preloaded into float tensors, Adam
with the one-cycle schedule of ``experiment=lenet5_mnist``, the same 54k/6k train/validation split, validation
after every epoch and a final test. Prints one JSON line: test accuracy and training images per second
(training batches only, as cnnlab's results.json counts them).

As a user writes it, the loop runs on torch's defaults. ``--tuned`` gives it the kernels a cnnlab run of the
recipe uses (NHWC layout, fused Adam); bench_train.py adds cnnlab's malloc settings through the environment, so
that the two differ only in the loop around the same kernels.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torchvision
from torch.nn import functional as F

from cnnlab.models.lenet5 import ModernLeNet5


def load(root: str, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    dataset = torchvision.datasets.MNIST(root, train=train, download=False)
    images = (dataset.data.unsqueeze(1).float() / 255 - 0.1307) / 0.3081
    return images, dataset.targets


@torch.no_grad()
def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int) -> float:
    model.eval()
    correct = sum(int((model(images[i:i + batch]).argmax(1) == labels[i:i + batch]).sum())
                  for i in range(0, len(labels), batch))
    model.train()
    return correct / len(labels)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--tuned", action="store_true", help="cnnlab's kernel and allocator choices")
    args = parser.parse_args()
    torch.manual_seed(42)

    images, labels = load(args.root, train=True)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(42))
    val, train = order[:6000], order[6000:]
    x_train, y_train, x_val, y_val = images[train], labels[train], images[val], labels[val]
    x_test, y_test = load(args.root, train=False)

    model = ModernLeNet5(1, 10, 28)
    if args.tuned:  # one-channel images are NCHW and NHWC at once: only the weights change layout
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, fused=args.tuned or None)
    steps = args.epochs * -(-len(y_train) // args.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=steps)
    train_seconds = 0.0
    for _ in range(args.epochs):
        started = time.perf_counter()
        permutation = torch.randperm(len(y_train))
        for i in range(0, len(y_train), args.batch_size):
            index = permutation[i:i + args.batch_size]
            loss = F.cross_entropy(model(x_train[index]), y_train[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        train_seconds += time.perf_counter() - started
        accuracy(model, x_val, y_val, 512)
    result = {"test/acc": accuracy(model, x_test, y_test, 512),
              "train_images_per_s": args.epochs * len(y_train) / train_seconds}
    print(json.dumps(result))


if __name__ == "__main__":
    main()

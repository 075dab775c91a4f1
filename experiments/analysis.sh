#!/usr/bin/env bash
# The figures of docs/analysis.md, on the shipped CIFAR-10 weights (run from the repository root, with the
# CIFAR-10 zip at ../shared/data/cifar10-jpeg-train.zip as the weights' training config says).
set -euo pipefail
OUT=${OUT:-experiments/results/analysis}
resnetkit analyze lesion cifar_resnet110 --compare cifar_plain20 --out "$OUT"
resnetkit analyze paths cifar_resnet110 --out "$OUT"
resnetkit analyze landscape cifar_resnet56 --compare cifar_plain56 --out "$OUT"
resnetkit analyze reuse cifar_resnet56 --compare cifar_plain56 --out "$OUT"
resnetkit analyze gradients cifar_resnet56 --compare cifar_plain56 --out "$OUT"
resnetkit analyze cam cifar_resnet110 --compare cifar_plain56 --out "$OUT"
# the time one model's full set takes (docs/analysis.md, "Cost")
resnetkit analyze all cifar_resnet110 --out "$OUT/timing_resnet110"

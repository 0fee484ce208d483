#!/usr/bin/python3
"""Writes models/imagenet_labels.txt: the 1000 ImageNet class names, in class
index order, from Debian's python3-torchvision."""
import os

from torchvision.models._meta import _IMAGENET_CATEGORIES

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
assert len(_IMAGENET_CATEGORIES) == 1000
with open(os.path.join(root, "models", "imagenet_labels.txt"), "w") as f:
    f.write("\n".join(_IMAGENET_CATEGORIES) + "\n")

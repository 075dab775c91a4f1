"""Data for training and evaluation: datasets decoded once into memory, splits, augmentation, loaders.

Sources: CIFAR-10/100 (downloaded and verified), image folders and zips in ImageFolder layout, and scikit-learn's
digits as an embedded default. Two loading paths: :class:`DeviceLoader` keeps an :class:`ImageSet` on the training
device and augments whole batches there; :func:`folder_loader` streams bigger sets through DataLoader workers.

    >>> train, val, test = digits_splits(seed=0)
    >>> cfg = AugmentConfig(size=32, padding=4, flip=False, mean=(0.3,), std=(0.4,))
    >>> loader = DeviceLoader(train, 128, BatchTransform.from_config(cfg, train=True), seed=0)
    >>> x, y = next(iter(loader))  # (128, 1, 32, 32) float32, (128,) int64
"""

from .batch import BatchTransform, normalize, random_crop, random_flip
from .cifar import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, URL_BASE, Cifar, load_cifar, read_pickle
from .digits import digits_splits, load_digits
from .download import ChecksumError, DatasetNotFoundError, download_url, extract_tar, file_md5
from .folder import ImageDecodeError, ImageIndex, SkippedImageWarning, decode_image, index_images, load_image_folder
from .imageset import ImageSet
from .loader import DeviceLoader
from .sources import NAMED_DATASETS, check_dataset
from .split import CIFAR_VAL_SIZE, split, split_indices, train_val_split
from .stream import ImageFolderDataset, folder_loader
from ..models.record import IMAGENET_MEAN, IMAGENET_STD
from .transforms import (
    Augment,
    AugmentConfig,
    AutoAugment,
    Mix,
    batch_mix,
    eval_transform,
    train_transform,
)

__all__ = [
    "ImageSet", "load_cifar", "Cifar", "URL_BASE", "read_pickle", "load_digits", "digits_splits",
    "load_image_folder", "index_images", "decode_image", "ImageIndex", "SkippedImageWarning", "ImageDecodeError",
    "download_url", "extract_tar", "file_md5", "DatasetNotFoundError", "ChecksumError",
    "split", "split_indices", "train_val_split", "CIFAR_VAL_SIZE",
    "Augment", "AutoAugment", "Mix", "AugmentConfig", "train_transform", "eval_transform", "batch_mix",
    "BatchTransform", "random_crop", "random_flip", "normalize", "DeviceLoader",
    "ImageFolderDataset", "folder_loader", "NAMED_DATASETS", "check_dataset",
    "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD", "IMAGENET_MEAN", "IMAGENET_STD",
]  # fmt: skip
from .dense import IGNORE
from .detection import CocoDetection, detection_collate, detection_transform, via_to_coco
from .segmentation import SegmentationDataset, segmentation_collate, segmentation_transform

__all__ += ["IGNORE", "SegmentationDataset", "segmentation_collate", "segmentation_transform"]
__all__ += ["CocoDetection", "detection_collate", "detection_transform", "via_to_coco"]

"""Load CIFAR-10 and preprocess it the way the EECS 498-007 / CS231n linear-classifier
assignment does.

    raw = load_cifar10("~/data", download=True)          # official python batches
    raw = load_image_folder("cifar10-jpeg.tar.gz")       # or a tree/tarball of PNG/JPEG files
    splits = preprocess(raw, validation_ratio=0.2)       # X_train (40000, 3073) float32, ...

Both loaders return a :class:`RawDataset` of uint8 images (N, H, W, C). Decoded arrays are
cached as a folder of ``.npy`` files keyed by the source's identity (resolved path, sizes,
modification times) and memory-mapped when read, so a second load of CIFAR-10 costs no copy.

A bad input file raises :class:`DataError` (a ValueError) whose one-line message starts with
the file or folder it is about. Nothing outside the dataset root is read (see load_image_folder
and load_cifar10 for the rule on links and archive members).

Modules: raw (RawDataset), errors (DataError), safe_io (restricted unpickling, md5, archive
members, download), cache (decoded-array cache), cifar10 (official python format),
image_folder (folder / tar image trees), decode (image decoding, worker pool), preprocess,
splits_cache (preprocessed CPU splits cached beside the decoded arrays),
whitening (standardization, PCA / ZCA whitening fitted on the training split).
Only torch, numpy and Pillow are used here: this package is part of the library.
"""
from .cache import CACHE_ENV
from .cifar10 import CIFAR10_ARCHIVE, CIFAR10_FOLDER, CIFAR10_MD5, CIFAR10_URL, load_cifar10
from .errors import DataError, DataNotFoundError
from .image_folder import load_image_folder
from .preprocess import preprocess
from .raw import RawDataset
from .safe_io import UnsafePickleError
from .splits_cache import cached_preprocess
from .whitening import PREPROCESSORS, Eigen, FeatureTransform, covariance_eigen, fit_feature_transform, transform_splits

__all__ = [
    "RawDataset", "PREPROCESSORS", "Eigen", "covariance_eigen", "FeatureTransform", "fit_feature_transform", "transform_splits",
    "DataError",
    "DataNotFoundError",
    "UnsafePickleError",
    "load_cifar10",
    "load_image_folder",
    "preprocess",
    "cached_preprocess",
    "CIFAR10_URL",
    "CIFAR10_MD5",
    "CIFAR10_ARCHIVE",
    "CIFAR10_FOLDER",
    "CACHE_ENV",
]

"""Dataset loading for the sweep: composed config -> preprocessed tensors, once per process."""
from __future__ import annotations

import contextlib
import functools
import logging
import threading
import urllib.error
from collections import OrderedDict
from typing import Dict, Iterator, NamedTuple, Optional, Sequence, Tuple

import torch
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

_CACHE: Dict[Tuple, dict] = {}
_FEATURES: "OrderedDict[Tuple, dict]" = OrderedDict()  # transformed variants, least recently used first
_EIGEN: Dict[Tuple, object] = {}  # (data key, mirror) -> linear_models.data.Eigen, reused across epsilons
MAX_FEATURE_VARIANTS = 4  # per process: each holds a full copy of the splits
_LOCK = threading.Lock()  # one loader at a time: the prefetch thread and the study's first load


class DatasetUnavailable(RuntimeError):
    """The dataset could not be found or fetched; the message lists the alternatives."""


OFFLINE_HINT = ("offline, pass a local copy: dataset.root=PATH (a cifar-10-batches-py/ folder or "
                "cifar-10-python.tar.gz), or an image tree: dataset=image_folder dataset.root=PATH")


def resolve_device(kind: str) -> torch.device:
    """auto -> cuda when available, else cpu; cuda -> the concrete cuda:N (the current device)."""
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    return concrete_device(kind)


def concrete_device(device, current_index: Optional[int] = None) -> torch.device:
    """``device`` with its index: 'cuda' -> cuda:N, N = ``current_index`` or torch's current device.

    'cuda' and 'cuda:0' name the same GPU; as data-cache keys they must be equal, or the data
    would be loaded on it twice.
    """
    device = torch.device(device)
    if device.type != "cuda" or device.index is not None:
        return device
    return torch.device("cuda", torch.cuda.current_device() if current_index is None else current_index)


def data_cache_key(dataset_cfg: DictConfig, dtype: str, device, current_index: Optional[int] = None) -> Tuple:
    """The key of load_data's cache: what the loaded splits depend on (the device made concrete,
    see :func:`concrete_device`)."""
    return dataset_key(dataset_cfg), dtype, str(concrete_device(device, current_index))


def _dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "float64": torch.float64}[name]


def matmul_dtype(model_cfg: DictConfig, device: torch.device) -> Optional[torch.dtype]:
    """model.matmul_dtype as a torch dtype for ``device`` (None: the data's own dtype).

    ``auto`` picks bfloat16 where the hardware multiplies it natively and float32 weights are
    trained (CPUs with AVX512-BF16 or AMX: the two matmuls run about 2.4x faster, with the same
    best accuracies, see docs/batched-trials.md), else None. float64 runs and CUDA get None: on a
    GPU, ``auto`` means float32 matmuls in TF32 instead (:func:`uses_tf32`), which need no
    conversion kernels. An explicit bfloat16 on CUDA takes the trainer's CUDA path (bf16 copy
    of the data, float32 accumulation in cuBLAS).
    """
    name = model_cfg.matmul_dtype
    if name == "auto":
        native = model_cfg.dtype == "float32" and device.type == "cpu" and cpu_has_native_bf16()
        return torch.bfloat16 if native else None
    return getattr(torch, name) if name else None


def score_dtype(model_cfg: DictConfig, device: torch.device) -> Optional[torch.dtype]:
    """The precision accuracies are scored in: the weights' own (None), so a run's val_acc is what
    its weights.pt predicts, unless ``model.score_in_matmul_dtype`` (bf16 scores flip near-ties)."""
    return matmul_dtype(model_cfg, device) if model_cfg.score_in_matmul_dtype else None


def uses_tf32(model_cfg: DictConfig, device: torch.device) -> bool:
    """model.matmul_dtype=auto with float32 weights on CUDA: float32 matmuls run in TF32."""
    return model_cfg.matmul_dtype == "auto" and model_cfg.dtype == "float32" and torch.device(device).type == "cuda"


def matmul_dtype_name(model_cfg: DictConfig, device: torch.device) -> Optional[str]:
    """What model.matmul_dtype resolves to on ``device``, for the run's params ('tf32' on CUDA)."""
    if uses_tf32(model_cfg, device):
        return "tf32"
    dtype = matmul_dtype(model_cfg, device)
    return str(dtype).removeprefix("torch.") if dtype is not None else None


@contextlib.contextmanager
def matmul_precision(model_cfg: DictConfig, device: torch.device) -> Iterator[None]:
    """Inside: float32 CUDA matmuls in TF32 when :func:`uses_tf32`, else in full float32 (what
    ``model.matmul_dtype=null`` promises); the previous setting is restored after. Not on CUDA: nothing.

    A process-wide torch flag, set around the code that trains or scores (one device per launch).
    """
    if torch.device(device).type != "cuda":
        yield
        return
    previous = _set_cuda_fp32_precision("tf32" if uses_tf32(model_cfg, device) else "ieee")
    try:
        yield
    finally:
        _set_cuda_fp32_precision(previous)


def _set_cuda_fp32_precision(value: str) -> str:
    """Set torch's float32 precision of CUDA matmuls ('tf32' | 'ieee' | 'none': inherit); returns
    the previous one. torch >= 2.9 has ``fp32_precision`` (mixing it with allow_tf32 is an error)."""
    matmul = torch.backends.cuda.matmul
    try:
        previous = matmul.fp32_precision
    except AttributeError:  # older torch
        previous = "tf32" if matmul.allow_tf32 else "ieee"
        matmul.allow_tf32 = value == "tf32"
        return previous
    matmul.fp32_precision = value
    return previous


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    """True when this CPU has bfloat16 dot-product instructions (x86 AVX512-BF16 or AMX-BF16).

    Without them oneDNN emulates bf16 matmuls, slower than float32. Read from /proc/cpuinfo
    (Linux); elsewhere False.
    """
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


def dataset_key(dataset_cfg: DictConfig) -> Tuple:
    # `download` and `url` say how to get the files, not what they hold.
    return tuple((k, str(dataset_cfg[k])) for k in sorted(dataset_cfg.keys()) if k not in ("download", "url"))


DATA_KEYS = ("dataset", "model.dtype", "device")  # the config that load_data's result depends on


class FeatureSpec(NamedTuple):
    """Which fitted transform of the splits a trial trains on (linear_models.data.whitening)."""

    kind: str = "mean"
    epsilon: Optional[float] = None  # zca, pca
    components: Optional[int] = None  # pca
    mirror: bool = False  # fitted on the training images and their mirror images (augment=flip)


def feature_spec(cfg: DictConfig) -> FeatureSpec:
    """The FeatureSpec of a composed config (preprocess and augment groups)."""
    kind = cfg.preprocess.name
    return FeatureSpec(kind, float(cfg.preprocess.epsilon) if kind in ("zca", "pca") else None,
                       int(cfg.preprocess.components) if kind == "pca" else None,
                       cfg.augment.name == "flip" and kind != "mean")


def load_features(cfg: DictConfig, device: torch.device) -> dict:
    """The splits a trial of ``cfg`` trains and is scored on: load_data with cfg's feature transform."""
    return load_data(cfg.dataset, cfg.model.dtype, device, feature_spec(cfg))


def prefetch_data(config: DictConfig, overrides: Sequence[str] = ()) -> Optional[threading.Thread]:
    """Start loading the launch's dataset in a background thread; returns it, or None if skipped.

    A sweep's heavy imports (MLflow, Optuna: Python code holding the GIL) then overlap the
    decoding (numpy/torch, mostly outside it): about 1.5 s of a sweep's start-up on 2 cores.
    With bf16 matmuls it also makes the training split's bf16 copy (:func:`matmul_rows`).
    The first study's ``load_data`` waits for this load and reuses it. Skipped when
    ``overrides`` (the launch's command line) or the search space sweep what the data depends
    on (each study loads its own), or when the config does not validate (the sweep says why).
    Never downloads; an error here is left for the study's own ``load_data`` to raise.
    """
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        from .config import validate_config

        swept = [o.get_key_element() for o in OverridesParser.create().parse_overrides(list(overrides))
                 if o.is_sweep_override()]
        swept += list(OmegaConf.select(config, "hydra.sweeper.params", default=None) or {})
        if any(key.lstrip("+~").startswith(DATA_KEYS) for key in swept):
            return None
        validate_config(config)
        dataset = OmegaConf.create(OmegaConf.to_container(config.dataset, resolve=True))
        dataset.download = False
        dtype, device = config.model.dtype, resolve_device(config.device.type)
        rows_dtype = _prefetched_rows_dtype(config, device, swept)
    except Exception as e:  # noqa: BLE001 -- the sweep composes, checks and loads again
        log.debug("no data prefetch: %s", e)
        return None

    def load() -> None:
        try:
            matmul_rows(load_data(dataset, dtype, device), rows_dtype)
        except Exception as e:  # noqa: BLE001
            log.debug("data prefetch failed (%s); the study loads the data itself", e)

    thread = threading.Thread(target=load, name="prefetch-data", daemon=True)
    thread.start()
    return thread


def _prefetched_rows_dtype(config: DictConfig, device: torch.device, swept: Sequence[str]) -> Optional[torch.dtype]:
    """The matmul dtype whose copy of the training split the prefetch makes too (None: none):
    the one every stack of the launch trains on, unless the preprocess or the dtype is swept."""
    if config.preprocess.name != "mean" or any(key.lstrip("+~").startswith(("preprocess", "model.matmul_dtype"))
                                               for key in swept):
        return None
    return matmul_dtype(config.model, device)


def load_data(dataset_cfg: DictConfig, dtype: str, device: torch.device,
              features: FeatureSpec = FeatureSpec()) -> dict:
    """Preprocessed splits (see linear_models.data.preprocess), cached per (dataset, dtype, device),
    transformed as ``features`` says (fitted on the training split; the dict's ``transform``)."""
    device = concrete_device(device)
    key = data_cache_key(dataset_cfg, dtype, device)
    with _LOCK:
        data = _load_locked(key, dataset_cfg, dtype, device)
        return _features_locked(key, data, dataset_cfg, features)


def matmul_rows(data: dict, dtype: Optional[torch.dtype]) -> torch.Tensor:
    """data["X_train"] (N, D) in the matmul ``dtype`` (None: as it is), converted once and kept in
    ``data`` (the launch's cached splits): every stack of a sweep gathers its minibatches (and,
    with ``model.score_in_matmul_dtype``, scores its train accuracy) from one copy (CIFAR-10 in bf16: 245 MB)."""
    X = data["X_train"]
    if dtype is None or dtype == X.dtype:
        return X
    key = f"X_train_{str(dtype).removeprefix('torch.')}"
    with _LOCK:
        if key not in data:
            data[key] = X.to(dtype)
        return data[key]


def _features_locked(key, data: dict, dataset_cfg: DictConfig, features: FeatureSpec) -> dict:
    from linear_models import data as lm_data

    if features.kind == "mean":  # the assignment's features themselves, with the identity transform
        if "transform" not in data:
            data["transform"] = lm_data.fit_feature_transform("mean", data["X_train"], data["image_shape"],
                                                              bias_trick=dataset_cfg.bias_trick)
        return data
    variant = (key, features)
    if variant not in _FEATURES:
        log.info("fitting the %s transform on the training split (%s)", features.kind, features)
        eigen = None
        if features.kind in ("zca", "pca"):
            if (key, features.mirror) not in _EIGEN:
                _EIGEN[(key, features.mirror)] = lm_data.covariance_eigen(data["X_train"], data["image_shape"],
                                                                          features.mirror)
            eigen = _EIGEN[(key, features.mirror)]
        _FEATURES[variant] = lm_data.transform_splits(
            data, features.kind, epsilon=features.epsilon if features.epsilon is not None else 0.1,
            components=features.components, mirror=features.mirror, bias_trick=dataset_cfg.bias_trick, eigen=eigen)
        while len(_FEATURES) > MAX_FEATURE_VARIANTS:
            _FEATURES.popitem(last=False)
    _FEATURES.move_to_end(variant)
    return _FEATURES[variant]


def _load_locked(key, dataset_cfg: DictConfig, dtype: str, device: torch.device) -> dict:
    if key not in _CACHE:
        from linear_models import data as lm_data

        raw = _load_raw(dataset_cfg, lm_data)
        for old in [k for k in _CACHE if k[2] == str(device)]:
            del _CACHE[old]  # keep one dataset per device
            for variant in [v for v in _FEATURES if v[0] == old]:
                del _FEATURES[variant]
            for eigen in [e for e in _EIGEN if e[0] == old]:
                del _EIGEN[eigen]
        # On the CPU the splits come memory-mapped from the data cache when they were made before.
        make_splits = lm_data.cached_preprocess if device.type == "cpu" else lm_data.preprocess
        _CACHE[key] = make_splits(
            raw,
            validation_ratio=dataset_cfg.validation_ratio,
            bias_trick=dataset_cfg.bias_trick,
            subtract_mean=dataset_cfg.subtract_mean,
            dtype=_dtype(dtype),
            device=device,
            seed=dataset_cfg.split_seed,
            num_train=dataset_cfg.num_train,
            num_val=dataset_cfg.num_val,
            num_test=dataset_cfg.num_test,
        )
    return _CACHE[key]


def _load_raw(dataset_cfg: DictConfig, lm_data):
    cache_dir = dataset_cfg.cache_dir
    if cache_dir is not None and str(cache_dir).lower() in ("false", "off", "no"):
        cache_dir = False  # caching switched off
    cache = {} if cache_dir is None else {"cache_dir": cache_dir}
    if dataset_cfg.name == "image_folder":
        return lm_data.load_image_folder(dataset_cfg.root, **cache)
    url = dataset_cfg.get("url") or lm_data.CIFAR10_URL
    try:
        return lm_data.load_cifar10(dataset_cfg.root, download=dataset_cfg.download, url=url, **cache)
    except lm_data.DataNotFoundError:
        if dataset_cfg.download:
            raise
        raise DatasetUnavailable(f"{dataset_cfg.root}: CIFAR-10 is not there and dataset.download=false\n"
                                 f"{OFFLINE_HINT}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        if isinstance(e, lm_data.DataError):
            raise
        reason = getattr(e, "reason", None) or e
        raise DatasetUnavailable(f"{dataset_cfg.root}: CIFAR-10 is not there, and downloading it from {url} "
                                 f"failed ({reason})\n{OFFLINE_HINT}") from None

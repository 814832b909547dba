"""Label files of ``noise.kind: file``: CIFAR-N (Wei et al., "Learning with noisy labels revisited", ICLR 2022,
arXiv:2110.12088) / CAL ``.pt`` files (safe, allow-listed unpickling), ``.npy`` (no pickle) and ``.csv``.

Pure functions returning new arrays; every bad file is a ConfigError naming it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lnl.errors import ConfigError

CIFARN_KEYS = ("aggre_label", "worse_label", "random_label1", "random_label2", "random_label3", "noisy_label")
_KEY_ALIASES = {"aggre": "aggre_label", "worst": "worse_label", "rand1": "random_label1",
                "rand2": "random_label2", "rand3": "random_label3", "noisy100": "noisy_label"}  # fmt: skip


def check_labels(labels, num_classes: int, what: str = "labels") -> np.ndarray:
    """`labels` as a new 1-D int64 array; ConfigError for another shape or a label outside 0..C-1."""
    arr = np.asarray(labels)
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise ConfigError(f"{what}: expected a 1-D integer array, got shape {arr.shape} dtype {arr.dtype}")
    bad = arr[(arr < 0) | (arr >= num_classes)]
    if bad.size:
        raise ConfigError(f"{what}: label {int(bad[0])} out of range; allowed are 0..{num_classes - 1}")
    return arr.astype(np.int64)  # a copy


def _safe_torch_load(path: Path):
    import torch  # only needed for .pt label files

    rec = (getattr(np, "_core", None) or np.core).multiarray._reconstruct  # numpy 2 / numpy 1 pickles
    allowed = [(rec, f"numpy.{m}.multiarray._reconstruct") for m in ("core", "_core")]
    allowed += [np.ndarray, np.dtype] + [
        getattr(np.dtypes, n) for n in dir(getattr(np, "dtypes", None)) if n.endswith("DType")
    ]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for anything outside the allow-list: never executed
        raise ConfigError(
            f"noise.file = {path}: refused or unreadable ({type(e).__name__}); only torch.save files of "
            "numpy arrays/tensors (optionally in a dict) are loaded, never arbitrary pickles"
        ) from None


def _pick_key(obj: dict, key: str | None, path: Path):
    keys = [k for k in obj if k != "clean_label"]
    key = _KEY_ALIASES.get(key, key) if key else None
    if key is None:
        known = [k for k in keys if k in CIFARN_KEYS]
        if len(keys) == 1 or len(known) == 1:
            key = keys[0] if len(keys) == 1 else known[0]
        else:
            raise ConfigError(f"noise.file_key = None: {path} has several label arrays; choose one of {keys}")
    if key not in obj:
        raise ConfigError(f"noise.file_key = {key!r}: not in {path}; available are {keys}")
    return obj[key]


def _read_csv(path: Path, expected_len: int) -> np.ndarray:
    rows = [r.split(",") for r in path.read_text().splitlines() if r.strip()]
    if rows and not rows[0][-1].strip().lstrip("-").isdigit():
        rows = rows[1:]  # header
    try:
        table = np.array([[int(v) for v in r] for r in rows], dtype=np.int64).reshape(len(rows), -1)
    except ValueError:
        raise ConfigError(f"noise.file = {path}: expected 'index,label' rows or one label per line") from None
    if table.shape[1] == 1:
        return table[:, 0]
    if table.shape[1] != 2 or not np.array_equal(np.sort(table[:, 0]), np.arange(expected_len)):
        raise ConfigError(f"noise.file = {path}: 'index,label' rows need each of 0..{expected_len - 1} once")
    out = np.empty(expected_len, dtype=np.int64)
    out[table[:, 0]] = table[:, 1]
    return out


def read_label_file(
    path, *, key: str | None = None, num_classes: int, expected_len: int, clean_labels=None
) -> np.ndarray:
    """Read noisy labels for ``noise.kind: file``: CIFAR-N (Wei et al. 2022) / CAL ``.pt`` (safe, allow-listed
    unpickling), ``.npy`` (no pickle), ``.csv`` (``index,label`` or one label per line).

    Wrong length, out-of-range labels or a ``clean_label`` entry unlike ``clean_labels``: ConfigError.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"noise.file = {path}: file not found")
    suffix, clean = path.suffix.lower(), None
    if suffix in (".pt", ".pth"):
        obj = _safe_torch_load(path)
    elif suffix == ".npy":
        try:
            obj = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise ConfigError(f"noise.file = {path}: unreadable without pickle ({e})") from None
    elif suffix == ".csv":
        obj = _read_csv(path, expected_len)
    else:
        raise ConfigError(f"noise.file = {path}: extension {suffix!r}; allowed are .pt, .pth, .npy, .csv")
    if isinstance(obj, dict):
        clean = obj.get("clean_label")
        obj = _pick_key(obj, key, path)
    arr = np.asarray(obj.numpy() if hasattr(obj, "numpy") else obj)
    if np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr)):
        arr = arr.astype(np.int64)
    arr = np.squeeze(arr) if arr.ndim == 2 and 1 in arr.shape else arr
    if arr.ndim != 1 or arr.size != expected_len:
        raise ConfigError(
            f"noise.file = {path}: {arr.size} labels, shape {arr.shape}; expected {expected_len}"
        )
    arr = check_labels(arr, num_classes, f"noise.file = {path}")
    if clean is not None and clean_labels is not None:
        clean = np.asarray(clean.numpy() if hasattr(clean, "numpy") else clean).reshape(-1)
        mism = int(np.sum(clean != np.asarray(clean_labels))) if clean.size == arr.size else clean.size
        if clean.size != arr.size or mism:
            raise ConfigError(
                f"noise.file = {path}: clean_label differs from the dataset's labels at {mism} positions "
                "(wrong file for this dataset, or a different sample order)"
            )
    return arr

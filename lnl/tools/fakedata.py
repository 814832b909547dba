"""Tiny datasets written in their REAL on-disk formats, for tests and `lnl.tools.gpu_check` (no downloads anywhere).

CIFAR pickles are written the way the originals were (Python 2 pickles: dict keys and strings are py2
``str``), so ``pickle.load(f, encoding="latin1")`` (torchvision) yields ``"data"`` keys and
``encoding="bytes"`` (the CIFAR website's snippet) yields ``b"data"``, exactly as with the real files. Images
carry a class-dependent colour plus noise so that tiny models can learn something. Every function returns the
folder/file it wrote.
"""

from __future__ import annotations

import csv
import io
import pickle
import struct
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lnl.validation import registered

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100_FINE = """\
apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly
camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup
dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower
leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid
otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray
road rocket rose sea seal shark shrew skunk skyscraper snail snake spider squirrel streetcar
sunflower sweet_pepper table tank telephone television tiger tractor train trout tulip turtle
wardrobe whale willow_tree wolf woman worm""".split()  # noqa: SIM905
CIFAR100_COARSE = """\
aquatic_mammals fish flowers food_containers fruit_and_vegetables household_electrical_devices
household_furniture insects large_carnivores large_man-made_outdoor_things
large_natural_outdoor_scenes large_omnivores_and_herbivores medium_mammals non-insect_invertebrates
people reptiles small_mammals trees vehicles_1 vehicles_2""".split()  # noqa: SIM905
# The genuine CIFAR-100 fine -> coarse (super-class) map.
CIFAR100_COARSE_OF_FINE = np.array(
    [4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
     6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
     5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
     10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
     16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13],
    dtype=np.int64,
)  # fmt: skip
CLOTHING1M_CLASSES = ["T-Shirt", "Shirt", "Knitwear", "Chiffon", "Sweater", "Hoodie", "Windbreaker", "Jacket",
                      "Down Coat", "Suit", "Shawl", "Dress", "Vest", "Underwear"]  # fmt: skip


class _Py2Str(bytes):
    """A Python 2 ``str`` (pickled with the STRING opcodes, decoded by the reader's ``encoding``)."""


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler lets us add one opcode writer
    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj: _Py2Str) -> None:
        n = len(obj)
        head = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)
        self.write(head + bytes(obj))
        self.memoize(obj)

    dispatch[_Py2Str] = _save_py2_str


def _py2(obj):
    if isinstance(obj, str):
        return _Py2Str(obj.encode("latin1"))
    if isinstance(obj, dict):
        return {_py2(k): _py2(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_py2(v) for v in obj]
    return obj


def _dump_py2(obj, path: Path) -> None:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(_py2(obj))
    path.write_bytes(buf.getvalue())


def _class_images(labels: np.ndarray, size: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [N, size, size, channels]: a per-class colour (fixed) plus uniform noise."""
    colours = np.random.default_rng(1234).integers(30, 226, size=(int(labels.max()) + 1, channels))
    noise = rng.integers(-30, 31, size=(len(labels), size, size, channels))
    return np.clip(colours[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)


def _balanced_labels(num_classes: int, per_class: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.repeat(np.arange(num_classes), per_class)).astype(np.int64)


def _flat(images: np.ndarray) -> np.ndarray:
    """[N, H, W, 3] -> CIFAR rows [N, 3*H*W]: the R, G and B planes one after another."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), -1))


def write_cifar10(root, n_train_per_class: int = 10, n_test_per_class: int = 2, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py/`` like the original: data_batch_1..5, test_batch, batches.meta."""
    rng = np.random.default_rng(seed)
    out = Path(root) / "cifar-10-batches-py"
    out.mkdir(parents=True, exist_ok=True)
    y_train = _balanced_labels(10, n_train_per_class, rng)
    y_test = _balanced_labels(10, n_test_per_class, rng)
    parts = np.array_split(y_train, 5)
    files = [(f"data_batch_{b + 1}", f"training batch {b + 1} of 5", y) for b, y in enumerate(parts)]
    for b, (name, batch_label, y) in enumerate([*files, ("test_batch", "testing batch 1 of 1", y_test)]):
        entry = {
            "batch_label": batch_label,
            "labels": [int(v) for v in y],
            "data": _flat(_class_images(y, 32, 3, rng)),
            "filenames": [f"{CIFAR10_CLASSES[v]}_s_{b:02d}{i:04d}.png" for i, v in enumerate(y)],
        }
        _dump_py2(entry, out / name)
    meta = {"num_cases_per_batch": len(parts[0]), "label_names": CIFAR10_CLASSES, "num_vis": 3072}
    _dump_py2(meta, out / "batches.meta")
    return out


def write_cifar100(root, n_train_per_class: int = 2, n_test_per_class: int = 1, seed: int = 0) -> Path:
    """``root/cifar-100-python/`` like the original: train, test (fine_labels, coarse_labels), meta."""
    rng = np.random.default_rng(seed)
    out = Path(root) / "cifar-100-python"
    out.mkdir(parents=True, exist_ok=True)
    for name, per_class in (("train", n_train_per_class), ("test", n_test_per_class)):
        y = _balanced_labels(100, per_class, rng)
        entry = {
            "filenames": [f"{CIFAR100_FINE[v]}_s_{i:06d}.png" for i, v in enumerate(y)],
            "batch_label": f"{'training' if name == 'train' else 'testing'} batch 1 of 1",
            "fine_labels": [int(v) for v in y],
            "coarse_labels": [int(v) for v in CIFAR100_COARSE_OF_FINE[y]],
            "data": _flat(_class_images(y, 32, 3, rng)),
        }
        _dump_py2(entry, out / name)
    _dump_py2({"fine_label_names": CIFAR100_FINE, "coarse_label_names": CIFAR100_COARSE}, out / "meta")
    return out


def _flip(y: np.ndarray, idx: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    out = y.copy()
    out[idx] = (y[idx] + rng.integers(1, num_classes, size=len(idx))) % num_classes  # a different class
    return out


def _cifar10_n(clean: np.ndarray, wrong: np.ndarray, worse: np.ndarray, rate: float, rng) -> dict:
    n = len(clean)
    obj = {"clean_label": clean, "worse_label": worse}
    counts = {f"random_label{k}": round(rate * n / 2) for k in (1, 2, 3)}
    for key, m in {**counts, "aggre_label": round(rate * n / 4)}.items():
        lab = clean.copy()
        sub = rng.permutation(wrong)[:m]
        lab[sub] = worse[sub]
        obj[key] = lab
    return obj


def _cifar100_n(clean: np.ndarray, wrong: np.ndarray, worse: np.ndarray, rate: float, rng) -> dict:
    coarse = CIFAR100_COARSE_OF_FINE
    return {"clean_label": clean, "noisy_label": worse, "noisy_coarse_label": coarse[worse],
            "clean_coarse_label": coarse[clean]}  # fmt: skip


CIFAR_N = {"cifar10": (10, _cifar10_n), "cifar100": (100, _cifar100_n)}  # kind -> (classes, label arrays)


def write_cifar_n(path, clean_labels, noise_rate: float, seed: int = 0, kind: str = "cifar10") -> Path:
    """A CIFAR-N label file (``torch.save`` of a dict of int64 numpy arrays, like CIFAR-10_human.pt).

    cifar10: ``clean_label``, ``worse_label`` (exactly round(rate*n) wrong), ``random_label1..3``
    (round(rate*n/2) wrong, a subset of the worse ones, same wrong label) and ``aggre_label`` (round(rate*n/4)
    wrong, likewise). cifar100 (CIFAR-100_human.pt): ``clean_label``, ``noisy_label`` (round(rate*n) wrong)
    and the coarse versions ``clean_coarse_label``, ``noisy_coarse_label``.
    """
    num_classes, label_arrays = registered("kind", kind, CIFAR_N)
    rng = np.random.default_rng(seed)
    clean = np.asarray(clean_labels, dtype=np.int64)
    n = len(clean)
    wrong = rng.permutation(n)[: round(noise_rate * n)]
    worse = _flip(clean, wrong, num_classes, rng)
    obj = label_arrays(clean, wrong, worse, noise_rate, rng)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


def _write_jpeg(path: Path, label: int, size: int, rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_class_images(np.array([label]), size, 3, rng)[0]).save(path, quality=90)


def write_clothing1m(
    root,
    n_noisy: int = 28,
    n_clean: int = 14,
    n_val: int = 14,
    n_test: int = 14,
    image_size: int = 32,
    n_overlap: int = 4,
    annotations: bool = False,
    seed: int = 0,
) -> Path:
    """A Clothing1M-style root: ``images/<a>/<bc>/<id>.jpg`` (tiny JPEGs) and the six lists.

    Lines look like the release's (``images/0/47/2409180047.jpg`` and ``images/0/47/2409180047.jpg 3``). The
    last ``n_overlap`` noisy-train images also belong to clean_train (they have both labels);
    noisy_label_kv also labels the val/test images (the real kv has 1,037,497 entries for 1M training keys).
    A noisy label is the image's class replaced, with probability 0.38, by a uniformly drawn class. Lists go
    under ``annotations/`` when ``annotations``; ``category_names_eng.txt`` is written too.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    n_img = n_noisy + n_clean - n_overlap + n_val + n_test
    keys = [f"images/{i % 10}/{(i // 10) % 100:02d}/{2409180000 + 37 * i}.jpg" for i in range(n_img)]
    latent = rng.integers(0, 14, size=n_img)
    noisy = np.where(rng.random(n_img) < 0.38, rng.integers(0, 14, size=n_img), latent)
    for key, y in zip(keys, latent):
        _write_jpeg(root / key, int(y), image_size, rng)
    a = n_noisy - n_overlap
    b, c = a + n_clean, a + n_clean + n_val
    lists = {
        "noisy_train": keys[:n_noisy],
        "clean_train": keys[a:b],
        "clean_val": keys[b:c],
        "clean_test": keys[c:],
    }
    ann = root / "annotations" if annotations else root
    ann.mkdir(parents=True, exist_ok=True)
    for name, ks in lists.items():
        (ann / f"{name}_key_list.txt").write_text("".join(k + "\n" for k in ks))
    noisy_ids = list(range(n_noisy)) + list(range(b, n_img))
    (ann / "noisy_label_kv.txt").write_text(
        "".join(f"{keys[i]} {noisy[i]}\n" for i in rng.permutation(noisy_ids))
    )
    (ann / "clean_label_kv.txt").write_text("".join(f"{keys[i]} {latent[i]}\n" for i in range(a, n_img)))
    (root / "category_names_eng.txt").write_text("".join(c + "\n" for c in CLOTHING1M_CLASSES))
    return root


def write_folder_csv(
    root,
    n: int = 24,
    num_classes: int = 3,
    image_size: int = 16,
    n_clean: int = 6,
    n_val: int = 6,
    n_test: int = 6,
    seed: int = 0,
) -> Path:
    """A user's folder: ``images/<split>/<i>.png`` and ``train.csv`` (noisy ``path,label``, with a header),
    ``clean.csv`` / ``val.csv`` / ``test.csv`` (clean labels) when their counts are > 0. The first 2 clean
    images are appended to train.csv with a wrong label (their true label is known there)."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    splits = {"train": n, "clean": n_clean, "val": n_val, "test": n_test}
    for split, count in splits.items():
        if count == 0:
            continue
        y = rng.integers(0, num_classes, size=count)
        rows = []
        for i, label in enumerate(y):
            rel = f"images/{split}/{i:04d}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_class_images(np.array([label]), image_size, 3, rng)[0]).save(root / rel)
            rows.append((rel, int(label)))
        if split == "train":
            rows = [(p, (lab + 1) % num_classes if rng.random() < 0.3 else lab) for p, lab in rows]
        if split == "clean":  # two clean images are also training images (true label known there)
            train_rows = [r.split(",") for r in (root / "train.csv").read_text().splitlines()]
            train_rows += [[p, str((lab + 1) % num_classes)] for p, lab in rows[:2]]
            with (root / "train.csv").open("w", newline="") as f:
                csv.writer(f).writerows(train_rows)
        with (root / f"{split}.csv").open("w", newline="") as f:
            csv.writer(f).writerows([("path", "label"), *rows])
    return root

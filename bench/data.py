"""MNIST from the standard IDX .gz files: located, checksum-verified, parsed without pickle.

Where the files come from, in order: `--data-dir` (an explicit directory), the `CONVBENCH_DATA`
environment variable, ../shared/data/mnist beside the repo when present, else a download from the
usual public mirrors into ~/.cache/convbench/mnist. Every file is verified against the sha256 of its
DECOMPRESSED bytes (gzip settings differ between copies; the IDX bytes do not).

Also the batch order: the same seed gives the same shuffling for every backend, and a hash of the
order goes into the record.

Runs inside workers, CNTK's CPython 3.6 included: keep it 3.6-compatible.
"""
import gzip
import hashlib
import os
import struct
import sys

import numpy as np

from bench.paths import REPO

SHARED_DIR = os.path.normpath(os.path.join(REPO, "..", "shared", "data", "mnist"))
CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "convbench", "mnist")
ENV_VAR = "CONVBENCH_DATA"
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

# name -> (decompressed bytes, sha256 of the decompressed IDX bytes)
FILES = {
    "train-images-idx3-ubyte": (47040016, "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    "train-labels-idx1-ubyte": (60008, "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    "t10k-images-idx3-ubyte": (7840016, "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    "t10k-labels-idx1-ubyte": (10008, "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
}


class DataError(RuntimeError):
    """Missing or corrupt data; the message names the file and the fix."""


def _absolute(directory):
    """Resolved once, in the parent: a worker runs in the repository, not the caller's directory."""
    return os.path.abspath(directory)


def _complete(directory):
    return bool(directory) and all(
        os.path.exists(os.path.join(directory, name + ".gz")) for name in FILES)


def resolve_data_dir(data_dir=None, download=True):
    """The directory holding the four .gz files, downloading them if nothing else works."""
    if data_dir:
        if not _complete(data_dir):
            raise DataError("--data-dir %s does not hold the four MNIST .gz files (%s); fix: point "
                            "it at a directory that does" % (data_dir, ", ".join(n + ".gz" for n in FILES)))
        return _absolute(data_dir)
    env = os.environ.get(ENV_VAR)
    if env:
        if not _complete(env):
            raise DataError("%s=%s does not hold the four MNIST .gz files; fix: point it at a "
                            "directory that does, or unset it" % (ENV_VAR, env))
        return _absolute(env)
    for candidate in (SHARED_DIR, CACHE_DIR):
        if _complete(candidate):
            return candidate
    if download:
        try:
            return download_mnist(CACHE_DIR)
        except (OSError, DataError) as exc:
            reason = str(exc)
    else:
        reason = "download disabled"
    raise DataError("MNIST not found: no --data-dir, no %s, no %s, and the download to %s failed "
                    "(%s); fix: pass --data-dir DIR or set %s to a directory with the four IDX .gz files"
                    % (ENV_VAR, SHARED_DIR, CACHE_DIR, reason, ENV_VAR))


def download_mnist(directory, mirrors=MIRRORS, timeout=30):
    """Fetch the four files from the first mirror that answers; verify before keeping them."""
    from urllib.request import urlopen

    if not os.path.isdir(directory):
        os.makedirs(directory)
    for name in FILES:
        target = os.path.join(directory, name + ".gz")
        if os.path.exists(target):
            continue
        errors = []
        for mirror in mirrors:
            try:
                blob = urlopen(mirror + name + ".gz", timeout=timeout).read()
                _verify(name, gzip.decompress(blob), mirror + name + ".gz")
            except Exception as exc:  # network, HTTP, gzip or checksum: try the next mirror
                errors.append("%s: %s" % (mirror, exc))
                continue
            tmp = target + ".part"
            with open(tmp, "wb") as fh:
                fh.write(blob)
            os.replace(tmp, target)
            break
        else:
            raise DataError("could not download %s.gz (%s)" % (name, "; ".join(errors)))
    return directory


def _verify(name, raw, path):
    size, sha = FILES[name]
    if len(raw) != size or hashlib.sha256(raw).hexdigest() != sha:
        raise DataError("%s is corrupt: its decompressed content has %d bytes and sha256 %s..., "
                        "expected %d bytes and %s...; fix: replace it with a good copy of %s.gz "
                        "(or delete it to re-download)"
                        % (path, len(raw), hashlib.sha256(raw).hexdigest()[:12], size, sha[:12], name))


def _inflate(path, name):
    """The decompressed bytes, never more than the file's known size plus one: a small .gz that
    inflates to gigabytes stops there. A FIFO or other non-regular file is refused unopened (it
    would block)."""
    import stat

    size = FILES[name][0]
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise DataError("cannot read %s (%s); fix: replace it with a good copy of %s.gz"
                        % (path, exc.strerror, name))
    if not stat.S_ISREG(mode):
        raise DataError("%s is not a regular file; fix: replace it with a good copy of %s.gz"
                        % (path, name))
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read(size + 1)
    except (OSError, EOFError) as exc:
        raise DataError("%s is not a readable gzip file (%s); fix: replace it with a good copy of "
                        "%s.gz" % (path, exc, name))
    if len(raw) > size:
        raise DataError("%s is corrupt: it inflates past the %d bytes of %s (%d bytes read, "
                        "reading stopped there); fix: replace it with a good copy of %s.gz"
                        % (path, size, name, len(raw), name))
    return raw


def read_idx(path, name):
    """Parse one verified IDX .gz file into a uint8 array (images (N, 28, 28), labels (N,))."""
    raw = _inflate(path, name)
    _verify(name, raw, path)
    magic, count = struct.unpack(">ii", raw[:8])
    if magic == 2051:
        rows, cols = struct.unpack(">ii", raw[8:16])
        return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(count, rows, cols)
    if magic == 2049:
        return np.frombuffer(raw, dtype=np.uint8, offset=8)
    raise DataError("%s: unknown IDX magic %d" % (path, magic))


class Mnist(object):
    """The four arrays as uint8, plus the directory they came from."""

    def __init__(self, data_dir=None, download=True):
        self.directory = resolve_data_dir(data_dir, download)
        load = lambda n: read_idx(os.path.join(self.directory, n + ".gz"), n)  # noqa: E731
        self.train_images = load("train-images-idx3-ubyte")
        self.train_labels = load("train-labels-idx1-ubyte")
        self.test_images = load("t10k-images-idx3-ubyte")
        self.test_labels = load("t10k-labels-idx1-ubyte")

    @staticmethod
    def to_input(images, dtype="float32"):
        """uint8 (N, H, W) -> canonical NCHW floats in [0, 1] (H = W = 28 unless upsampled)."""
        # the second astype only where the division promoted (NumPy < 2 with a Python float)
        return (images.astype(dtype) / 255.0).astype(dtype, copy=False).reshape(
            (images.shape[0], 1) + tuple(images.shape[1:]))


class Upsampled(object):
    """uint8 images (N, 28, 28) seen at an integer multiple of their size, nearest neighbour (each
    pixel repeated), one batch at a time: the scaling sweep's inputs (bench/scaling.py), the same
    for every backend. Upsampling the whole set first would hold 750 MB at 112 x 112."""

    def __init__(self, images, factor):
        self.images, self.factor = images, factor

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        batch = self.images[index]
        return batch.repeat(self.factor, axis=-2).repeat(self.factor, axis=-1)


def at_resolution(images, input_shape):
    """The images as a model with input_shape (C, H, W) wants them: as they are at 28 x 28, else
    Upsampled (one channel, H = W a multiple of 28)."""
    c, h, w = input_shape
    if (h, w) == images.shape[1:]:
        return images
    if c != 1 or h != w or h % images.shape[1]:
        raise ValueError("MNIST is 1 x 28 x 28: a model input %dx%dx%d is neither that nor a "
                         "square multiple of it" % (c, h, w))
    return Upsampled(images, h // images.shape[1])


def epoch_order(n, seed, epoch):
    """The shuffled example order of one epoch: a function of (seed, epoch) only.

    RandomState's stream is frozen across NumPy versions, so every backend's interpreter, old
    or new, draws the same permutation.
    """
    return np.random.RandomState([seed, epoch]).permutation(n)


def batches(order, batch_size, drop_last=False):
    """Index arrays of consecutive batches of `order`."""
    stop = len(order) - (len(order) % batch_size if drop_last else 0)
    return [order[i:i + batch_size] for i in range(0, stop, batch_size)]


def order_digest(orders):
    """sha256 (first 16 hex) over the epochs' index orders: proves identical data order."""
    h = hashlib.sha256()
    for order in orders:
        h.update(np.asarray(order, dtype="<i8").tobytes())
    return h.hexdigest()[:16]


if __name__ == "__main__":  # python -m bench.data [DIR]: verify a copy of MNIST
    m = Mnist(sys.argv[1] if len(sys.argv) > 1 else None)
    print("MNIST ok in %s: %d train, %d test" % (m.directory, len(m.train_labels), len(m.test_labels)))

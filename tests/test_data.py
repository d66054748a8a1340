"""The MNIST loader: real files, checksums, bad files, directory resolution, data order."""
import gzip
import os
import shutil

import numpy as np
import pytest

from bench import data
from bench.data import DataError, Mnist


def test_real_mnist_loads_and_verifies():
    m = Mnist()
    assert m.train_images.shape == (60000, 28, 28) and m.train_images.dtype == np.uint8
    assert m.test_images.shape == (10000, 28, 28)
    assert m.train_labels.shape == (60000,) and set(np.unique(m.test_labels)) == set(range(10))
    # the first training label of MNIST is a 5, the first test label a 7
    assert m.train_labels[0] == 5 and m.test_labels[0] == 7
    x = Mnist.to_input(m.test_images[:3], "float32")
    assert x.shape == (3, 1, 28, 28) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1


SOURCE = data.resolve_data_dir(download=False)  # the real files, found before any test changes env


def _copy_mnist(tmp_path):
    src = SOURCE
    for name in data.FILES:
        shutil.copy(os.path.join(src, name + ".gz"), tmp_path / (name + ".gz"))
    return tmp_path


def test_corrupted_file_names_file_and_fix(tmp_path):
    d = _copy_mnist(tmp_path)
    path = d / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[100] ^= 0xFF
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError) as err:
        Mnist(str(d))
    assert "t10k-labels-idx1-ubyte" in str(err.value) and "fix" in str(err.value)


def test_truncated_and_not_gzip(tmp_path):
    d = _copy_mnist(tmp_path)
    path = d / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError, match="train-labels-idx1-ubyte"):
        Mnist(str(d))
    path.write_bytes(b"this is not gzip")
    with pytest.raises(DataError, match="not a readable gzip"):
        Mnist(str(d))


def test_missing_dir_and_env_var(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="--data-dir"):
        Mnist(str(tmp_path))
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path))
    with pytest.raises(DataError, match=data.ENV_VAR):
        Mnist()
    d = _copy_mnist(tmp_path)
    assert Mnist().directory == str(d)


def test_nothing_found_names_all_three_sources(tmp_path, monkeypatch):
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    monkeypatch.setattr(data, "SHARED_DIR", str(tmp_path / "none"))
    monkeypatch.setattr(data, "CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DataError) as err:
        data.resolve_data_dir(download=False)
    msg = str(err.value)
    assert "--data-dir" in msg and data.ENV_VAR in msg and "none" in msg


def test_download_verifies_and_falls_back_between_mirrors(tmp_path):
    """Mirrors served from this machine (file:// URLs): a corrupt one is skipped, a good one used."""
    (tmp_path / "good").mkdir()
    good = _copy_mnist(tmp_path / "good")
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in data.FILES:
        (bad / (name + ".gz")).write_bytes(gzip.compress(b"not mnist"))
    target = tmp_path / "cache"
    data.download_mnist(str(target), mirrors=(bad.as_uri() + "/", good.as_uri() + "/"))
    assert Mnist(str(target)).train_labels[0] == 5
    with pytest.raises(DataError, match="could not download"):
        data.download_mnist(str(tmp_path / "c2"), mirrors=(bad.as_uri() + "/",))


def test_epoch_order_is_seeded_and_hashed():
    a, b = data.epoch_order(1000, 0, 0), data.epoch_order(1000, 0, 0)
    assert (a == b).all() and sorted(a) == list(range(1000))
    assert not (a == data.epoch_order(1000, 0, 1)).all()
    assert not (a == data.epoch_order(1000, 1, 0)).all()
    assert data.order_digest([a]) == data.order_digest([b]) != data.order_digest([a[::-1]])
    bs = data.batches(a, 128, drop_last=True)
    assert len(bs) == 7 and all(len(x) == 128 for x in bs)

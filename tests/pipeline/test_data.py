
import pytest
import torch
from PIL import Image

from edgekd.core.errors import DataError
from edgekd.data import load_data


def test_cifar10_reader_uses_train_batches_and_test_batch(tmp_path, write_cifar):
    write_cifar(tmp_path / "cifar-10-batches-py")
    data = load_data(f"cifar10:{tmp_path / 'cifar-10-batches-py'}", mini_val_fraction=0.2)
    assert data.input_shape == (3, 32, 32)
    assert data.classes == [f"c{i}" for i in range(10)]
    assert len(data.index("train")) == 100 and len(data.index("val")) == 20
    assert len(data.index("mini_val")) == 20 and len(data.index("mini_train")) == 80
    every = data.index("all")
    assert torch.equal(data.images(every)[:, 0, 0, 0].long(), data.labels)
    parent = load_data(f"cifar10:{tmp_path}", mini_val_fraction=0.2)  # where the archive was extracted
    assert torch.equal(parent.images(every), data.images(every)) and parent.source_note == data.source_note


def test_cifar10_errors_name_what_is_missing(tmp_path, write_cifar):
    with pytest.raises(DataError, match="not found"):
        load_data(f"cifar10:{tmp_path / 'nope'}")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "data_batch_1").write_bytes(b"junk")
    with pytest.raises(DataError, match="missing data_batch_2"):
        load_data(f"cifar10:{tmp_path / 'half'}")
    write_cifar(tmp_path / "bad")
    (tmp_path / "bad" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_3"):
        load_data(f"cifar10:{tmp_path / 'bad'}")


def test_imagefolder_reader_resizes_and_splits(tmp_path, write_image_tree):
    write_image_tree(tmp_path / "tree")
    data = load_data(f"imagefolder:{tmp_path / 'tree'}", resolution=16, val_fraction=1 / 3)
    assert data.input_shape == (3, 16, 16)
    assert data.classes == ["class0", "class1", "class2"]
    assert len(data.index("val")) == 6 and len(data.index("train")) == 12
    red = data.images(data.index("all"))[data.labels == 0]
    assert (red[:, 0] == 255).all() and (red[:, 1:] == 0).all()


def test_imagefolder_with_train_and_val_trees(tmp_path, write_image_tree):
    write_image_tree(tmp_path / "ds" / "train", per_class=4)
    write_image_tree(tmp_path / "ds" / "val", per_class=2)
    data = load_data(f"imagefolder:{tmp_path / 'ds'}")
    assert len(data.index("train")) == 12 and len(data.index("val")) == 6


def test_imagefolder_errors(tmp_path, write_image_tree):
    with pytest.raises(DataError, match="not found"):
        load_data(f"imagefolder:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        load_data(f"imagefolder:{tmp_path / 'empty'}")
    write_image_tree(tmp_path / "broken", per_class=2)
    (tmp_path / "broken" / "class1" / "x.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="cannot read image"):
        load_data(f"imagefolder:{tmp_path / 'broken'}")


def test_a_small_tree_is_split_without_stratification_and_a_tiny_one_is_a_clear_error(tmp_path, write_image_tree):
    write_image_tree(tmp_path / "small", per_class=2)  # 6 images: 1 held out cannot hold all 3 classes
    data = load_data(f"imagefolder:{tmp_path / 'small'}")
    parts = [set(data.index(s).tolist()) for s in ("mini_train", "mini_val", "val")]
    assert all(parts) and not (parts[0] & parts[1]) and len(set().union(*parts)) == 6
    for c in ("a", "b"):
        (tmp_path / "tiny" / c).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "tiny" / c / "0.png")
    with pytest.raises(DataError, match=r"too few images \(\d\) to split"):
        load_data(f"imagefolder:{tmp_path / 'tiny'}")


def test_splits_are_deterministic_disjoint_and_stratified():
    a, b = load_data("digits", seed=3), load_data("digits", seed=3)
    for split in ("mini_train", "mini_val", "val"):
        assert torch.equal(a.index(split), b.index(split))
    assert not set(a.index("mini_val").tolist()) & set(a.index("mini_train").tolist())
    assert set(a.index("mini_val").tolist()) | set(a.index("mini_train").tolist()) == set(a.index("train").tolist())
    assert not set(a.index("val").tolist()) & set(a.index("train").tolist())
    counts = torch.bincount(a.labels[a.index("mini_val")], minlength=10)
    assert counts.min() >= 0.8 * counts.max()
    other = load_data("digits", seed=4)
    assert torch.equal(other.images(other.index("val")), a.images(a.index("val")))  # held-out split is fixed
    assert not torch.equal(other.index("mini_val"), a.index("mini_val"))  # the seed redraws mini-val


def test_digits_is_the_embedded_default_at_16px():
    data = load_data("digits")
    assert data.input_shape == (1, 16, 16) and data.num_classes == 10 and len(data.labels) == 1797
    x, _, _ = next(data.batches("train", 4))
    assert x.dtype == torch.float32 and abs(float(data.normalize(data.images(data.index("all"))).mean())) < 0.2


def test_unknown_source_is_an_error():
    with pytest.raises(DataError, match="unknown data source"):
        load_data("mnist")

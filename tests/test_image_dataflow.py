"""Data flow of NIfTI images: every image header is read once per process, every image decoded
once per pass.

How we count, independently of the package's code:

* a *header read* is a call of ``nibabel.load`` on the image's path (it parses the header and
  builds a lazy proxy; no voxel is read);
* a *decode* is a call of ``ArrayProxy.__array__`` / ``ArrayProxy.__getitem__`` on the image's
  proxy (what ``np.asarray(img.dataobj)``, ``img.get_fdata()`` and proxy slicing all go
  through): the gzip stream is inflated and the voxels scaled.

A *pass* is one sweep over the images: the voxel statistics of ``standardize_voxels=True``,
each training epoch, the final BatchNorm recalibration of ``recalibrate_bn=True``, one
``transform``, an occlusion or saliency fit, each of the two sweeps of image QC (mean image,
then correlations). The
DataLoaders run in the main process (``num_workers=0``) so that every read is seen.
"""

import os
from collections import Counter

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from nibabel.arrayproxy import ArrayProxy
from sklearn.utils import Bunch

from sklearn_cgni.evaluation import ImageCovariateRegressor
from sklearn_cgni.imaging import BrainAgeCNNTransformer, RegionalMeans, image_quality_control
from sklearn_cgni.io import check_images
from sklearn_cgni.io._images import clear_header_cache

SHAPE = (12, 14, 12)
N = 6
TINY = dict(channels=(4, 8), padding=1, pool_blocks=2, device="cpu", batch_size=3, validation_fraction=0,
            early_stopping=False, lr_schedule="none", num_workers=0, random_state=0)


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.random(SHAPE)
    paths = {}
    for i in range(N):
        p = tmp_path / f"sub-{i}.nii.gz"
        nib.save(nib.Nifti1Image((base + 0.1 * rng.random(SHAPE)).astype(np.float32), np.eye(4)), p)
        paths[f"sub-{i}"] = os.fspath(p)
    return pd.Series(paths, name="image").rename_axis("participant_id")


@pytest.fixture
def counts(monkeypatch):
    """``(header_reads, decodes)``: Counters by absolute path, from a fresh process state."""
    clear_header_cache()
    headers, decodes = Counter(), Counter()
    load, array, getitem = nib.load, ArrayProxy.__array__, ArrayProxy.__getitem__

    def counting_load(filename, *args, **kwargs):
        headers[os.path.abspath(os.fspath(filename))] += 1
        return load(filename, *args, **kwargs)

    def counting_array(self, *args, **kwargs):
        decodes[os.path.abspath(os.fspath(self.file_like))] += 1
        return array(self, *args, **kwargs)

    def counting_getitem(self, *args, **kwargs):
        decodes[os.path.abspath(os.fspath(self.file_like))] += 1
        return getitem(self, *args, **kwargs)

    monkeypatch.setattr(nib, "load", counting_load)
    monkeypatch.setattr(ArrayProxy, "__array__", counting_array)
    monkeypatch.setattr(ArrayProxy, "__getitem__", counting_getitem)
    yield headers, decodes
    clear_header_cache()


def _each(counter, paths, expected):
    """Every path counted exactly ``expected`` times (and nothing else counted)."""
    assert dict(counter) == ({os.path.abspath(p): expected for p in paths} if expected else {}), dict(counter)


def test_fit_transform_qc_and_regional_means_read_each_header_once(images, counts):
    headers, decodes = counts
    age = np.linspace(50, 75, N)
    est = BrainAgeCNNTransformer(**TINY, max_epochs=2, standardize_voxels=True, recalibrate_bn=True).fit(images, age)
    _each(headers, images, 1)
    # passes: voxel statistics + 2 epochs + the final BatchNorm recalibration
    _each(decodes, images, 1 + 2 + 1)

    decodes.clear()
    h_v = est.transform(images)
    assert h_v.shape[0] == N
    _each(decodes, images, 1)
    est.predict(images.tolist())  # a list of the same paths: no header read either
    _each(decodes, images, 2)

    decodes.clear()
    report = image_quality_control(images)
    assert report.index.tolist() == images.index.tolist()
    _each(decodes, images, 2)  # two passes: the mean image, then each correlation

    decodes.clear()
    rm = RegionalMeans(_atlas()).fit(images)
    _each(decodes, images, 0)  # the grid comes from the headers
    out = rm.transform(images)
    assert list(out.index) == images.index.tolist()
    _each(decodes, images, 1)

    decodes.clear()
    X = pd.DataFrame({"image": images, "age": age})
    ImageCovariateRegressor(["age"]).fit_transform(X)
    _each(decodes, images, 2)  # fit (one pass) + adjusting the training images (one pass)

    _each(headers, images, 1)  # after all of the above: still one header read per image


def _atlas():
    atlas = np.zeros(SHAPE, np.int16)
    atlas[:6], atlas[6:] = 1, 2
    return Bunch(img=nib.Nifti1Image(atlas, np.eye(4)), labels=pd.DataFrame({"index": [1, 2], "name": ["L", "R"]}))


class _Linear(torch.nn.Module):
    snp_names = ["rsA", "rsB"]

    def __init__(self, n_out=2):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(int(np.prod(SHAPE)), n_out)

    def forward(self, x):
        return self.fc(x.reshape(x.shape[0], -1))


def test_occlusion_and_saliency_decode_each_image_once(images, counts):
    from sklearn_cgni.explain import OcclusionExplainer, SaliencyExplainer

    headers, decodes = counts
    OcclusionExplainer((np.eye(2), np.eye(2)), feature_extractor=_Linear(3), image_encoder=torch.nn.Linear(3, 2),
                       atlas=_atlas(), batch_size=4).fit(images)
    _each(decodes, images, 1)
    decodes.clear()
    SaliencyExplainer(_Linear(), atlas=_atlas(), batch_size=4).fit(images)
    _each(decodes, images, 1)
    _each(headers, images, 1)


def test_float16_cache_decodes_each_image_once_per_fit(images, counts, tmp_path):
    headers, decodes = counts
    est = BrainAgeCNNTransformer(**TINY, max_epochs=3, standardize_voxels=True,
                                 cache_dir=tmp_path / "cache").fit(images, np.linspace(50, 75, N))
    _each(headers, images, 1)
    _each(decodes, images, 1)  # 5 passes (statistics, 3 epochs, recalibration) over the memory map
    est.transform(images)
    _each(decodes, images, 1)  # the map is reused: nothing decoded again
    _each(headers, images, 1)


def test_the_image_source_is_built_once_and_handed_down(images, counts):
    headers, decodes = counts
    source = check_images(images, caller="test")
    assert source.participant_ids == [f"sub-{i}" for i in range(N)] and source.shape == SHAPE
    assert check_images(source) is source
    _each(headers, images, 1)
    _each(decodes, images, 0)
    sub = source.subset([4, 1])
    assert sub.participant_ids == ["sub-4", "sub-1"] and sub.paths == [images.iloc[4], images.iloc[1]]
    np.testing.assert_array_equal(sub.load(0), source.load(4))
    assert decodes[os.path.abspath(images.iloc[4])] == 2  # once per load
    _each(headers, images, 1)


def test_errors_name_the_participant_and_the_file(images, tmp_path):
    clear_header_cache()
    missing = images.copy()
    missing["sub-3"] = os.fspath(tmp_path / "gone.nii.gz")
    with pytest.raises(FileNotFoundError, match=r"participant 'sub-3', file '.*gone\.nii\.gz'"):
        check_images(missing)
    odd = images.copy()
    odd["sub-2"] = os.fspath(tmp_path / "odd.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((12, 14, 10), np.float32), np.eye(4)), odd["sub-2"])
    with pytest.raises(ValueError, match=r"differ in shape: participant 'sub-2', file '.*odd\.nii\.gz'"):
        BrainAgeCNNTransformer(**TINY, max_epochs=1).fit(odd, np.arange(N, dtype=float))
    with pytest.raises(ValueError, match=r"exactly one column"):
        check_images(pd.DataFrame({"a": images, "b": images}), caller="X")
    with pytest.raises(ValueError, match=r"shape \(n, X, Y, Z\)"):
        check_images(np.zeros((2, 3, 4)))
    arr = np.zeros((3, *SHAPE), np.float32)
    arr[1, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinite voxels: participant\(s\) \['b'\]"):
        check_images(arr, participant_ids=["a", "b", "c"])


def test_a_rewritten_file_is_read_again(images, counts):
    headers, _ = counts
    check_images(images)
    path = images.iloc[0]
    nib.save(nib.Nifti1Image(np.ones((12, 14, 12), np.float32), np.eye(4)), path)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a new modification time
    assert float(check_images(images).load(0).sum()) == float(np.prod(SHAPE))
    assert headers[os.path.abspath(path)] == 2


def test_decoded_source_refuses_paths_without_participant_ids(tmp_path):
    """ImageSource.decoded needs the IDs of a Series (its errors and outputs name participants): a plain list is
    refused in one line that names what it got."""
    from sklearn_cgni.io import ImageSource

    array = np.zeros((2, 4, 5, 6), np.float16)
    with pytest.raises(TypeError, match="paths must be a pandas Series indexed by participant ID; got list"):
        ImageSource.decoded([str(tmp_path / "a.nii.gz"), str(tmp_path / "b.nii.gz")], array, affine=np.eye(4))
    source = ImageSource.decoded(pd.Series({"sub-1": "a.nii.gz", "sub-2": "b.nii.gz"}), array, affine=np.eye(4))
    assert source.participant_ids == ["sub-1", "sub-2"] and source.shape == (4, 5, 6)
    with pytest.raises(ValueError, match="backed_by: 3 images"):  # one path more than the array has rows
        ImageSource.decoded(pd.Series({"a": "a", "b": "b", "c": "c"}), array, affine=np.eye(4))


def test_a_source_on_a_memory_map_pickles_the_file_not_the_voxels(tmp_path):
    """A source backed by a memory map (the run's float16 image cache) pickles as a reference to the file: numpy
    pickles a map as all its values, which a spawned DataLoader worker or a Dask task would receive whole. The
    unpickled source reads the same images, its subset and covariate offsets included; an in-memory array and a
    copy-on-write map still pickle their values."""
    import pickle

    from sklearn_cgni.io import ImageSource

    n, shape = 60, (12, 14, 12)
    values = np.random.default_rng(0).random((n, *shape)).astype(np.float16)
    values.tofile(tmp_path / "cache.f16")
    cache = np.memmap(tmp_path / "cache.f16", dtype=np.float16, mode="r", shape=(n, *shape))
    paths = pd.Series([f"{i}.nii.gz" for i in range(n)], index=[f"sub-{i}" for i in range(n)])
    source = ImageSource.decoded(paths, cache, rows=np.arange(n)[::-1], affine=np.eye(4))
    source = source.minus(np.ones((1, *shape), np.float32), np.full((n, 1), 0.5, np.float32))
    for s in (source, source.subset([3, 0, 17])):
        blob = pickle.dumps(s)
        assert len(blob) < cache.nbytes / 10
        back = pickle.loads(blob)
        assert isinstance(back._array, np.memmap) and back.participant_ids == s.participant_ids
        for i in range(len(s)):
            np.testing.assert_array_equal(back.load(i), s.load(i))
    np.testing.assert_array_equal(source.load(0), values[n - 1].astype(np.float32) - 0.5)
    for array in (np.asarray(cache), np.memmap(tmp_path / "cache.f16", dtype=np.float16, mode="c", shape=(n, *shape))):
        assert len(pickle.dumps(ImageSource.decoded(paths, array, affine=np.eye(4)))) > cache.nbytes

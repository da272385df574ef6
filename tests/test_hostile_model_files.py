"""Model files and checkpoints from strangers (`--model`, `--init_model`, `--pretrained`'s files): a small file
must never make pymeta allocate more than it stores. A 172 KB model file whose architecture declared a
40,000 x 40,000 layer took 20 GB and 44 s before Keras found that its weights did not fit: the weights are
now compared with the model's by their stored shapes, and every dataset read is checked against what
the file stores (`pymeta.data.h5_storage`)."""

import json
import os
import subprocess
import sys
import zipfile

import h5py
import numpy as np
import pytest

pytestmark = pytest.mark.timeout(300)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, resource, sys
from pymeta import make_sinusoid_model
from pymeta.model_io import load_weights_into
model = make_sinusoid_model()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    load_weights_into(model, sys.argv[1])
    out = {"error": None}
except ValueError as e:
    out = {"error": str(e)}
out["rss_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps(out))
"""


def load_in_child(path):
    """load_weights_into(a sinusoid model, path) in a subprocess: (error or None, its peak RSS growth in MB)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=240,
                          env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return out["error"], out["rss_mb"]


def sinusoid_file(tmp_path, name="model.h5"):
    from pymeta import make_sinusoid_model
    from pymeta.model_io import save_model
    return save_model(make_sinusoid_model(), tmp_path / name)


def test_an_architecture_of_a_gigabyte_in_a_small_file_is_refused_without_building_it(tmp_path):
    """The file stores a (16000, 1) kernel; its config says Dense(16000) on 16,000 inputs: 1 GB, which
    Keras built (three times over) before comparing. Compared from the stored shapes now."""
    import keras

    from pymeta.model_io import save_model
    path = save_model(keras.Sequential([keras.Input((16000,)), keras.layers.Dense(1)]), tmp_path / "bomb.h5")
    with h5py.File(path, "a") as f:
        config = f.attrs["model_config"]
        f.attrs["model_config"] = (config.decode() if isinstance(config, bytes) else config).replace(
            '"units": 1,', '"units": 16000,')
    assert os.path.getsize(path) < 100_000
    error, rss_mb = load_in_child(path)
    assert error is not None and "holds a model of another architecture: weight shapes [(16000, 1), (1,)] do " \
        "not match this model's [(1, 64), (64,)" in error, error
    assert rss_mb < 200, rss_mb  # the declared layer alone is 1,024 MB


def test_a_weight_the_file_does_not_store_is_refused_before_it_is_read(tmp_path):
    """A kernel of the right shape whose data was never written (only HDF5's fill value)."""
    path = sinusoid_file(tmp_path)
    with h5py.File(path, "a") as f:
        group = f["model_weights"]
        layer = next(n for n in group if "weight_names" in group[n].attrs and len(group[n].attrs["weight_names"]))
        name = group[layer].attrs["weight_names"][0]
        name = name.decode() if isinstance(name, bytes) else name
        shape = group[layer][name].shape
        del group[layer][name]
        group[layer].create_dataset(name, shape=shape, dtype=np.float32)  # declared, not written
    error, _ = load_in_child(path)
    assert error is not None and f"its weight '{layer}/{name}' declares {4 * int(np.prod(shape)):,} bytes but " \
        "only 0 are stored in the file" in error, error


def test_weights_load_as_keras_loads_them_from_every_zoo_file():
    """The reference: Keras' own load_model of each committed model (architecture and weights)."""
    import glob

    import keras

    import pymeta.rl.policies  # noqa: F401  (registers the RL policies' layers)
    from pymeta.model_io import load_model, load_weights_into
    files = [f for f in glob.glob(os.path.join(REPO, "pretrained", "**", "*.h5"), recursive=True)
             if os.sep + "checkpoints" + os.sep not in f]
    assert len(files) > 20
    for path in files:
        reference = load_model(path)
        model = keras.models.clone_model(reference)  # the same architecture, fresh weights
        load_weights_into(model, path)
        assert [v.path for v in model.weights] == [v.path for v in reference.weights], path
        for mine, theirs in zip(model.weights, reference.weights):
            np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs), err_msg=f"{path}: {mine.path}")


def test_a_keras_archive_whose_weights_expand_too_far_is_refused_before_decompressing(tmp_path):
    """A .keras file is a zip: its weights member, deflated, may declare 1000 times what it stores."""
    from pymeta import make_sinusoid_model
    from pymeta.model_io import load_weights_into
    good = sinusoid_file(tmp_path, "good.keras")
    model = make_sinusoid_model()
    load_weights_into(model, good)  # loads as it is
    bad = tmp_path / "bad.keras"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "model.weights.h5":
                data += bytes(20_000_000)  # 20 MB of zeros deflate to about 20 KB
            dst.writestr(info.filename, data)
    with pytest.raises(ValueError, match=r"bad.keras': its weights declare 20,\d{3},\d{3} bytes, more than 128 "
                                         r"times the [\d,]+ compressed bytes it stores"):
        load_weights_into(model, bad)


def test_an_inner_optimizer_state_the_file_does_not_store_is_refused(tmp_path):
    from pymeta.model_io import load_inner_state
    path = sinusoid_file(tmp_path)
    with h5py.File(path, "a") as f:
        f.create_group("pymeta_inner_optimizer_state").create_dataset("0", shape=(10 ** 9,), dtype=np.float32)
    with pytest.raises(ValueError, match=r"its inner optimizer state 'pymeta_inner_optimizer_state/0' declares "
                                         r"4,000,000,000 bytes but only 0 are stored in the file \(unwritten / "
                                         r"fill-value data\): pass --fresh_inner_state"):
        load_inner_state(path)


def test_a_checkpoint_of_gzip_zeros_is_refused_before_its_checksum_reads_it(tmp_path):
    """The checksum read every dataset of a checkpoint: a theta of 400 MB of gzip'd zeros (a 0.4 MB file)."""
    from pymeta.checkpoint import checkpoint_problem
    from pymeta.model_io import load_weights_into
    path = tmp_path / "ckpt-00000010.h5"
    with h5py.File(path, "w") as f:
        theta = f.create_group("theta").create_dataset("0", shape=(10 ** 8,), dtype=np.float32, chunks=(10 ** 6,),
                                                       compression="gzip")
        theta[:] = 0.0
        f.attrs["config"] = json.dumps({})
        f.attrs["iteration"] = 10
    assert os.path.getsize(path) < 1_000_000
    with h5py.File(path, "r") as f:
        stored = f["theta/0"].id.get_storage_size()
    assert checkpoint_problem(path) == ("its 'theta/0' declares 400,000,000 bytes, more than 128 times the "
                                        f"{stored:,} compressed bytes it stores (refused before decompressing)")
    from pymeta import make_sinusoid_model
    with pytest.raises(ValueError, match=r"cannot be used: its 'theta/0' declares 400,000,000 bytes"):
        load_weights_into(make_sinusoid_model(), path)


def test_a_keras_archive_is_compared_whole_with_the_model(tmp_path):
    """Keras' load_weights of a .keras file ignores the layers the model lacks: a file of three layers
    loaded into a model of its first one without a word. The stored shapes are compared first (the
    optimizer's state in the file left out), and a compiled conv net comes back exactly."""
    import keras

    from pymeta import make_omniglot_cnn_model
    from pymeta.model_io import load_weights_into, save_model
    path = save_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(4), keras.layers.Dense(1)]),
                      tmp_path / "two.keras")
    for layers in ([4], [4, 1, 1]):
        model = keras.Sequential([keras.Input((1,))] + [keras.layers.Dense(n) for n in layers])
        with pytest.raises(ValueError, match=r"two.keras' holds a model of another architecture: weight shapes "
                                             r"\[\(1,\), \(1, 4\), \(4,\), \(4, 1\)\] do not match this model's"):
            load_weights_into(model, path)
    trained = make_omniglot_cnn_model(5)
    trained.compile(optimizer=keras.optimizers.Adam(), loss="sparse_categorical_crossentropy")
    trained.fit(np.random.rand(8, 28, 28, 1).astype("float32"), np.arange(8) % 5, verbose=0)  # optimizer state too
    fresh = load_weights_into(make_omniglot_cnn_model(5), save_model(trained, tmp_path / "conv.keras"))
    for mine, theirs in zip(fresh.weights, trained.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))


def test_a_fifo_or_folder_named_like_a_model_file_is_refused_without_opening_it(tmp_path):
    """From Python (the command line refuses them earlier): opening a fifo blocks until someone writes."""
    from pymeta import make_sinusoid_model
    from pymeta.model_io import load_model, load_weights_into
    os.mkfifo(tmp_path / "fifo.h5")
    os.mkdir(tmp_path / "folder.keras")
    for name, kind in (("fifo.h5", "a fifo"), ("folder.keras", "a folder")):
        with pytest.raises(ValueError, match=f"{name}' is {kind}, not a model file"):
            load_weights_into(make_sinusoid_model(), tmp_path / name)
        with pytest.raises(ValueError, match=f"{name}' is {kind}, not a model file"):
            load_model(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="no model file at"):
        load_weights_into(make_sinusoid_model(), tmp_path / "none.h5")

"""Tests for carlab.learn.checkpoint: safe, atomic safetensors checkpoints."""

import fcntl
import hashlib
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import safetensors.numpy

from carlab.learn import checkpoint
from carlab.learn.checkpoint import (
    CheckpointError,
    list_checkpoints,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)

# Hand-written pickles of {"a": 1} (protocols 4 and 2), so this module never imports pickle.
PICKLE_V4 = b"\x80\x04\x95\n\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01a\x94K\x01s."
PICKLE_V2 = b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01K\x01s."


def make_tree(seed=0):
    """A training-state-like pytree: haiku-style params, an optax chain state, and assorted leaves."""
    rng = np.random.default_rng(seed)
    params = {
        "encoder/~/linear_0": {"w": jnp.asarray(rng.normal(size=(6, 8)), jnp.float32), "b": jnp.zeros(8)},
        "reward_head/linear": {"w": jnp.asarray(rng.normal(size=(8, 1)), jnp.float32), "b": jnp.ones(1)},
    }
    optimiser = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
    opt_state = optimiser.init(params)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5 + seed), params)
    _, opt_state = optimiser.update(grads, opt_state, params)  # non-trivial mu, nu, count
    return {
        "params": params,
        "opt_state": opt_state,
        "step": jnp.int32(1200 + seed),
        "key": jax.random.key(seed),  # typed PRNG key
        "raw_key": jax.random.PRNGKey(seed + 1),  # legacy uint32 key
        "odd_floats": np.array([np.nan, -0.0, np.inf, 1e-45], np.float32),
        "mask": np.array([[True, False], [False, seed % 2 == 0]]),
        "counts": np.arange(5, dtype=np.int32) * (seed + 1),
        "nothing": np.zeros((0, 3), np.float32),
        "explore_prob": 0.25 + seed,  # python float
        "episodes": 3 + seed,  # python int
        "np_scalar": np.float32(1.5 + seed),
    }


def leaf_bytes(leaf):
    if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
    array = np.asarray(leaf)
    return array.dtype, array.shape, array.tobytes()


def assert_trees_identical(a, b):
    """Same structure, same leaf kinds, bit-identical contents (NaN and -0.0 included)."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert type(x) is type(y) or (isinstance(x, jax.Array) and isinstance(y, jax.Array)), (
            type(x),
            type(y),
        )
        assert leaf_bytes(x) == leaf_bytes(y)


@pytest.fixture
def saved(tmp_path):
    tree = make_tree(0)
    path = save_checkpoint(tmp_path / "run.safetensors", tree, {"step": 1200})
    return path, tree


def test_round_trip_is_bit_exact(tmp_path):
    tree = make_tree(0)
    metadata = {"config": {"lr": 1e-3, "hidden": [64, 64]}, "episode_rewards": [1.5, -10.0], "name": "run"}
    path = save_checkpoint(tmp_path / "deep" / "dir" / "run.safetensors", tree, metadata)
    assert path == tmp_path / "deep" / "dir" / "run.safetensors" and path.is_file()  # parents created
    template = make_tree(1)  # same structure, different values
    loaded, loaded_metadata = load_checkpoint(path, like=template)
    assert_trees_identical(loaded, tree)
    assert loaded_metadata == metadata
    assert isinstance(loaded["opt_state"][1][0], optax.ScaleByAdamState)
    assert jax.random.key_impl(loaded["key"]) == jax.random.key_impl(tree["key"])
    np.testing.assert_array_equal(
        jax.random.normal(loaded["key"], (3,)), jax.random.normal(tree["key"], (3,))
    )  # the key still works


def test_file_is_plain_safetensors_with_carlab_header(saved):
    path, tree = saved
    with open(path, "rb") as f:
        header_size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_size))
    document = json.loads(header["__metadata__"]["carlab"])
    assert document["format"] == "carlab-checkpoint" and document["format_version"] == 1
    expected = [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    assert document["leaves"] == expected
    assert "['params']['encoder/~/linear_0']['w']" in document["leaves"]
    tensors = safetensors.numpy.load_file(str(path))  # any safetensors reader can open it
    assert set(tensors) == set(expected)


def test_single_array_tree(tmp_path):
    path = save_checkpoint(tmp_path / "a.safetensors", jnp.arange(4.0))
    loaded, metadata = load_checkpoint(path, like=jnp.zeros(4))
    np.testing.assert_array_equal(loaded, np.arange(4.0)) and metadata == {}


def test_metadata_round_trip_converts_numpy(tmp_path):
    metadata = {
        "counters": {"env_steps": np.int64(10_000), "updates": 12},
        "explore_prob": np.float32(0.125),
        "loss_history": np.array([1.0, 0.5, 0.25]),
        "jax_value": jnp.float32(2.0),
        "pair": (1, 2),
        "ok": True,
        "none": None,
    }
    path = save_checkpoint(tmp_path / "m.safetensors", {"x": jnp.zeros(2)}, metadata)
    expected = {
        "counters": {"env_steps": 10_000, "updates": 12},
        "explore_prob": 0.125,
        "loss_history": [1.0, 0.5, 0.25],
        "jax_value": 2.0,
        "pair": [1, 2],
        "ok": True,
        "none": None,
    }
    assert read_metadata(path) == expected
    assert load_checkpoint(path, like={"x": jnp.ones(2)})[1] == expected


def test_metadata_keeps_nan_losses(tmp_path):
    path = save_checkpoint(tmp_path / "n.safetensors", {"x": jnp.zeros(1)}, {"loss": [float("nan"), 1.0]})
    loss = read_metadata(path)["loss"]
    assert np.isnan(loss[0]) and loss[1] == 1.0


def test_bad_metadata_and_leaves_raise_type_error(tmp_path):
    tree = {"x": jnp.zeros(2)}
    with pytest.raises(TypeError, match="JSON-serialisable.*set"):
        save_checkpoint(tmp_path / "a.safetensors", tree, {"bad": {1, 2}})
    with pytest.raises(TypeError, match="JSON-serialisable.*object"):
        save_checkpoint(tmp_path / "a.safetensors", tree, {"bad": object()})
    with pytest.raises(TypeError, match="must be a dict"):
        save_checkpoint(tmp_path / "a.safetensors", tree, [1, 2])
    with pytest.raises(TypeError, match=r"\['name'\] has dtype <U3: only bool"):
        save_checkpoint(tmp_path / "a.safetensors", {"name": "car"}, {})
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("failing", ["fsync", "replace", "write"])
def test_crash_during_write_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch, failing):
    old = make_tree(0)
    path = save_checkpoint(tmp_path / "run.safetensors", old, {"version": "old"})
    old_bytes = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("simulated crash")

    if failing == "write":  # die after half the bytes reached the temp file
        real_fdopen = os.fdopen

        class HalfWriter:
            def __init__(self, f):
                self.f = f

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

            def write(self, data):
                self.f.write(data[: len(data) // 2])
                self.f.flush()
                assert len(list(tmp_path.glob(".run.safetensors.*.tmp"))) == 1  # the half-written temp file
                raise OSError("simulated crash")

        monkeypatch.setattr(checkpoint.os, "fdopen", lambda fd, mode: HalfWriter(real_fdopen(fd, mode)))
    else:
        monkeypatch.setattr(checkpoint.os, failing, crash)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(path, make_tree(1), {"version": "new"})
    monkeypatch.undo()
    assert path.read_bytes() == old_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.safetensors"]  # no temp file left
    loaded, metadata = load_checkpoint(path, like=make_tree(1))
    assert_trees_identical(loaded, old) and metadata == {"version": "old"}


def test_header_size_starting_like_pickle_magic_still_loads(tmp_path):
    # A header of 0x280 bytes begins with b"\x80\x02", the protocol-2 pickle magic: the file must still
    # parse as a checkpoint, because it is tried as safetensors before any pickle diagnosis.
    path = tmp_path / "x.safetensors"
    save_checkpoint(path, {"x": jnp.zeros(2)}, {"pad": ""})
    unpadded = int.from_bytes(path.read_bytes()[:8], "little")
    for pad in range(0x280 - unpadded - 8, 0x280 - unpadded + 8):  # headers are padded to 8 bytes
        save_checkpoint(path, {"x": jnp.zeros(2)}, {"pad": "p" * pad})
        if path.read_bytes()[:2] == b"\x80\x02":
            break
    else:
        pytest.fail("could not hit a 0x280-byte header")
    assert read_metadata(path)["pad"].startswith("p")
    load_checkpoint(path, like={"x": jnp.ones(2)})


def test_overwrite_replaces(tmp_path):
    path = tmp_path / "run.safetensors"
    save_checkpoint(path, make_tree(0), {"v": 0})
    save_checkpoint(path, make_tree(1), {"v": 1})
    loaded, metadata = load_checkpoint(path, like=make_tree(0))
    assert_trees_identical(loaded, make_tree(1)) and metadata == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.safetensors"]


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX file modes")
def test_saved_file_has_a_normal_files_mode(tmp_path):
    # The temp file behind the atomic write is private (0600); the checkpoint must not stay so.
    path = tmp_path / "run.safetensors"
    save_checkpoint(path, make_tree(0), {})
    plain = tmp_path / "plain"
    plain.write_bytes(b"")  # mode 0666 minus the umask, as any new file
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def write_safetensors(path, document=None, other_metadata=None):
    metadata = dict(other_metadata or {})
    if document is not None:
        metadata["carlab"] = json.dumps(document)
    safetensors.numpy.save_file({"['x']": np.zeros(2, np.float32)}, str(path), metadata=metadata or None)
    return path


def good_document(**changes):
    return {
        "format": "carlab-checkpoint",
        "format_version": 1,
        "leaves": ["['x']"],
        "metadata": {},
        **changes,
    }


def npy_bytes(writer, *args, **kwargs):
    buffer = io.BytesIO()
    writer(buffer, *args, **kwargs)
    return buffer.getvalue()


BAD_FILES = {
    "pickle_v4": (lambda p: p.write_bytes(PICKLE_V4), "looks like a pickle file; carlab never loads pickles"),
    "pickle_v2": (lambda p: p.write_bytes(PICKLE_V2), "looks like a pickle file; carlab never loads pickles"),
    "empty": (lambda p: p.write_bytes(b""), "is empty"),
    "random": (lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)), "truncated or corrupt"),
    "tiny": (lambda p: p.write_bytes(b"\x01\x02"), "truncated or corrupt"),
    "json_not_object": (
        lambda p: p.write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00[]"),
        "truncated or corrupt",
    ),
    "npz": (lambda p: p.write_bytes(npy_bytes(np.savez, x=np.zeros(2))), "zip archive"),
    "zip": (lambda p: zipfile.ZipFile(p, "w").close(), "zip archive"),
    "npy": (lambda p: p.write_bytes(npy_bytes(np.save, np.zeros(2))), ".npy file"),
    "foreign": (lambda p: write_safetensors(p), "not a carlab checkpoint"),
    "foreign_metadata": (
        lambda p: write_safetensors(p, other_metadata={"format": "pt"}),
        "not a carlab checkpoint",
    ),
    "future": (
        lambda p: write_safetensors(p, good_document(format_version=2)),
        "format_version 2, written by a newer",
    ),
    "bad_version": (
        lambda p: write_safetensors(p, good_document(format_version="1")),
        "corrupt carlab header",
    ),
    "wrong_format": (lambda p: write_safetensors(p, good_document(format="other")), "corrupt carlab header"),
    "no_leaves": (lambda p: write_safetensors(p, good_document(leaves=None)), "corrupt carlab header"),
}


@pytest.mark.parametrize("reader", ["load", "read_metadata"])
@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_rejects_bad_files(tmp_path, kind, reader):
    make, message = BAD_FILES[kind]
    path = tmp_path / "bad.safetensors"
    make(path)
    before = path.read_bytes()
    template = {"x": jnp.ones(2, jnp.float32)}
    with pytest.raises(CheckpointError, match=message):
        if reader == "load":
            load_checkpoint(path, like=template)
        else:
            read_metadata(path)
    assert path.read_bytes() == before  # loading never modifies the file
    np.testing.assert_array_equal(template["x"], np.ones(2))


def test_rejects_truncated_checkpoint(saved, tmp_path):
    path, _ = saved
    data = path.read_bytes()
    half = tmp_path / "half.safetensors"
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(half, like=make_tree(1))
    with pytest.raises(CheckpointError, match="truncated"):
        read_metadata(half)
    cut_header = tmp_path / "cut.safetensors"
    cut_header.write_bytes(data[:100])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(cut_header, like=make_tree(1))


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nope.safetensors", like={})
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        read_metadata(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="is not a file"):
        load_checkpoint(tmp_path, like={})


def test_header_leaf_list_must_match_arrays(tmp_path):
    path = write_safetensors(tmp_path / "x.safetensors", good_document(leaves=["['x']", "['y']"]))
    with pytest.raises(CheckpointError, match="do not match its carlab header"):
        load_checkpoint(path, like={"x": jnp.zeros(2)})


def test_template_mismatches_name_the_first_bad_key(saved):
    path, _ = saved
    cases = []
    missing = make_tree(1)
    missing["params"]["decoder/linear"] = {"w": jnp.zeros((2, 2))}
    cases.append((missing, r"it has no leaf \['params'\]\['decoder/linear'\]\['w'\]"))
    extra = make_tree(1)
    del extra["mask"]
    cases.append((extra, r"the template has no leaf \['mask'\]"))
    shape = make_tree(1)
    shape["params"]["reward_head/linear"]["w"] = jnp.zeros((8, 2))
    cases.append(
        (
            shape,
            r"at \['params'\]\['reward_head/linear'\]\['w'\]: stored float32\[8, 1\], template float32\[8, 2\]",
        )
    )
    dtype = make_tree(1)
    dtype["counts"] = dtype["counts"].astype(np.int64)
    cases.append((dtype, r"at \['counts'\]: stored int32\[5\], template int64\[5\]"))
    structure = make_tree(1)
    structure["opt_state"] = optax.sgd(0.1).init(structure["params"])
    cases.append((structure, r"\['opt_state'\]"))
    for template, message in cases:
        before = [leaf_bytes(x) for x in jax.tree.leaves(template)]
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(path, like=template)
        assert [leaf_bytes(x) for x in jax.tree.leaves(template)] == before  # caller's state untouched


def test_loaded_arrays_are_fresh(saved):
    path, _ = saved
    template = make_tree(1)
    loaded, _ = load_checkpoint(path, like=template)
    loaded["counts"][:] = -1  # writable, and owned by the result alone
    again, _ = load_checkpoint(path, like=template)
    np.testing.assert_array_equal(again["counts"], np.arange(5))
    np.testing.assert_array_equal(template["counts"], np.arange(5) * 2)


def test_list_checkpoints(tmp_path):
    assert list_checkpoints(tmp_path / "missing") == []
    save_checkpoint(tmp_path / "old.safetensors", {"x": jnp.zeros(1)}, {"step": 1})
    save_checkpoint(tmp_path / "new.safetensors", {"x": jnp.zeros(1)}, {"step": 2})
    (tmp_path / "broken.safetensors").write_bytes(PICKLE_V4)
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    (tmp_path / ".new.safetensors.abc.tmp").write_bytes(b"half")
    for name, mtime in (("old", 1_000), ("broken", 2_000), ("new", 3_000)):
        os.utime(tmp_path / f"{name}.safetensors", (mtime, mtime))
    entries = list_checkpoints(tmp_path)
    assert [e["name"] for e in entries] == ["new", "broken", "old"]
    new, broken, old = entries
    assert new["valid"] and new["error"] is None and new["metadata"] == {"step": 2}
    assert new["path"] == tmp_path / "new.safetensors" and new["mtime"] == 3_000
    assert new["size"] == (tmp_path / "new.safetensors").stat().st_size
    assert not broken["valid"] and "pickle" in broken["error"] and broken["metadata"] == {}
    assert old["valid"] and old["metadata"] == {"step": 1}


def _data_start(path):
    """Offset of the first array byte (after the 8-byte size and the JSON header)."""
    return 8 + int.from_bytes(path.read_bytes()[:8], "little")


def test_header_holds_the_checksum_of_the_array_data(saved):
    path, _ = saved
    with open(path, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    document = json.loads(header["__metadata__"]["carlab"])
    tensors = safetensors.numpy.load_file(str(path))
    digest = hashlib.sha256()
    for name in document["leaves"]:
        digest.update(np.ascontiguousarray(tensors[name]).tobytes())
    assert document["data_sha256"] == digest.hexdigest()


@pytest.mark.parametrize("where", [0, 0.5, -1])
def test_a_flipped_bit_in_the_data_is_refused(saved, tmp_path, where):
    path, _ = saved
    data = bytearray(path.read_bytes())
    start = _data_start(path)
    index = start + int(where * (len(data) - start - 1)) if where >= 0 else len(data) - 1
    data[index] ^= 0x01
    flipped = tmp_path / "flipped.safetensors"
    flipped.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"data do not match its checksum \(corrupt file\?\)"):
        load_checkpoint(flipped, like=make_tree(1))
    assert read_metadata(flipped) == {"step": 1200}  # the header alone is intact


def test_files_from_before_checksums_still_load(tmp_path):
    tree = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.int32(4)}
    document = good_document(leaves=["['n']", "['w']"], metadata={"step": 3})
    assert "data_sha256" not in document
    path = tmp_path / "old.safetensors"
    arrays = {"['n']": np.asarray(tree["n"]), "['w']": tree["w"]}
    safetensors.numpy.save_file(arrays, str(path), metadata={"carlab": json.dumps(document)})
    loaded, metadata = load_checkpoint(path, like={"w": np.zeros((2, 3), np.float32), "n": np.int32(0)})
    np.testing.assert_array_equal(loaded["w"], tree["w"]) and metadata == {"step": 3}
    assert loaded["n"] == 4


@pytest.mark.parametrize("checksum", ["abc", 7, "g" * 64, "A" * 64])
def test_a_malformed_checksum_is_a_corrupt_header(tmp_path, checksum):
    path = write_safetensors(tmp_path / "x.safetensors", good_document(data_sha256=checksum))
    with pytest.raises(CheckpointError, match="corrupt carlab header"):
        load_checkpoint(path, like={"x": jnp.zeros(2)})


@pytest.mark.parametrize(
    "error", [PermissionError(13, "Permission denied"), OSError(5, "Input/output error")]
)
@pytest.mark.parametrize("reader", ["load", "read_metadata"])
def test_an_unreadable_file_is_a_checkpoint_error(saved, monkeypatch, error, reader):
    path, _ = saved

    def refuse(*args, **kwargs):
        raise error

    # Patched in the module rather than chmod 000, which does not stop root (this test runs as root in CI).
    monkeypatch.setattr(checkpoint, "open", refuse, raising=False)
    with pytest.raises(CheckpointError, match=f"cannot read {re.escape(str(path))}: {error.strerror}$"):
        if reader == "load":
            load_checkpoint(path, like=make_tree(1))
        else:
            read_metadata(path)
    monkeypatch.undo()
    entry = list_checkpoints(path.parent)[0]
    assert entry["valid"]


def _temp_files(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX file locks")
def test_stale_temp_files_go_on_the_next_save_and_listing_but_live_ones_stay(tmp_path):
    path = save_checkpoint(tmp_path / "run.safetensors", make_tree(0), {})
    for name in (".run.safetensors.dead1.tmp", ".run.safetensors.dead2.tmp", ".other.safetensors.x.tmp"):
        (tmp_path / name).write_bytes(b"partial")
    live = tmp_path / ".run.safetensors.live.tmp"
    live.write_bytes(b"being written")
    with open(live, "rb") as holder:
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX)  # as a writer in another process holds its own
        save_checkpoint(path, make_tree(1), {})  # cleans its own target's stale files only
        assert _temp_files(tmp_path) == [".other.safetensors.x.tmp", ".run.safetensors.live.tmp"]
        assert [e["name"] for e in list_checkpoints(tmp_path)] == ["run"]  # temp files never listed
        assert _temp_files(tmp_path) == [".run.safetensors.live.tmp"]
    list_checkpoints(tmp_path)  # its writer is gone now
    assert _temp_files(tmp_path) == []
    assert_trees_identical(load_checkpoint(path, like=make_tree(0))[0], make_tree(1))


_SAVE_LOOP = """
import sys
import numpy as np
from carlab.learn.checkpoint import save_checkpoint
for i in range(10**6):
    save_checkpoint(sys.argv[1], {"w": np.full((512, 1024), float(i), np.float32), "i": np.int64(i)}, {"i": i})
    if i == 0:
        print("saving", flush=True)
"""


def test_kill_9_during_saves_never_leaves_an_unloadable_checkpoint(tmp_path):
    target = tmp_path / "run.safetensors"
    template = {"w": np.zeros((512, 1024), np.float32), "i": np.int64(0)}
    rng = random.Random(0)
    for _ in range(4):
        child = subprocess.Popen(
            [sys.executable, "-c", _SAVE_LOOP, str(target)], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout.readline() == "saving\n"
        time.sleep(rng.uniform(0.0, 0.15))  # a 2 MB save takes a few ms: kills land mid-write too
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
        loaded, metadata = load_checkpoint(target, like=template)  # the last finished save, whole
        np.testing.assert_array_equal(loaded["w"], np.full((512, 1024), float(metadata["i"]), np.float32))
        assert int(loaded["i"]) == metadata["i"]
    save_checkpoint(target, template, {"i": -1})
    assert _temp_files(tmp_path) == []  # what the killed writers left was cleaned by the next save
    assert load_checkpoint(target, like=template)[1] == {"i": -1}

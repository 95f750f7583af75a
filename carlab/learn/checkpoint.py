"""Safe checkpoints: one ``.safetensors`` file per checkpoint; loading never executes code.

File format (``format_version`` 1): a standard safetensors file holding every array leaf of a pytree
under its key path (``jax.tree_util.keystr``, e.g. ``"['wm']['encoder/linear']['w']"``). The
safetensors header's ``__metadata__`` has one entry, ``"carlab"``, a JSON document::

    {"format": "carlab-checkpoint", "format_version": 1,
     "leaves": ["<key path>", ...],                  # in tree order
     "data_sha256": "<64 hex digits>",              # of every leaf's raw bytes, in "leaves" order
     "metadata": {...}}                             # the caller's JSON: config, counters, losses, ...

Only JSON and raw little-endian arrays are ever parsed, so a checkpoint cannot run code; pickles
(and zips such as ``.npz``/``.pt``, which may wrap pickles) are recognised and refused. The tree
structure is not stored as code either: :func:`load_checkpoint` takes a template pytree (freshly
initialised params / optimiser state) and fills it, checking every key path, shape and dtype.
The checksum makes a flipped bit in the array data a clear error instead of silently changed
weights; files written before it existed (no ``data_sha256``) still load, unchecked.

Writes are atomic: the bytes go to a temp file ``.<name>.<random>.tmp`` beside the target, which is
then renamed over it. A writer holds an advisory lock on its temp file until the rename, so the temp
file of a writer that died (``kill -9``) is told from one being written: the next save of the same
target, and :func:`list_checkpoints`, remove such stale files.

    save_checkpoint("models/run1.safetensors", {"params": params, "opt_state": opt_state}, {"step": 1200})
    tree, metadata = load_checkpoint("models/run1.safetensors", like={"params": p0, "opt_state": o0})
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import safetensors
import safetensors.numpy

from carlab.checks import is_int

try:
    import fcntl
except ImportError:  # not POSIX: stale temp files are then told by their age alone
    fcntl = None

FORMAT = "carlab-checkpoint"
FORMAT_VERSION = 1
SUFFIX = ".safetensors"
_METADATA_KEY = "carlab"
_MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header, in bytes
_TEMP_SUFFIX = ".tmp"
_STALE_AGE_S = 3600.0  # without file locks: a temp file this old is taken for a dead writer's


class CheckpointError(ValueError):
    """A file that is not a loadable carlab checkpoint, or one that does not fit the template."""


def _is_prng_key(leaf) -> bool:
    return isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _to_numpy(leaf) -> np.ndarray:
    """A leaf as a contiguous NumPy array (typed PRNG keys as their raw key data)."""
    if _is_prng_key(leaf):
        leaf = jax.random.key_data(leaf)
    return np.asarray(leaf, order="C")  # not ascontiguousarray: that turns 0-d arrays into 1-d


def _spec(leaf) -> tuple[tuple[int, ...], np.dtype]:
    """The (shape, dtype) a leaf is stored with, without copying device arrays to the host."""
    if _is_prng_key(leaf):
        leaf = jax.eval_shape(jax.random.key_data, leaf)
    if isinstance(leaf, (np.ndarray, np.generic, jax.Array, jax.ShapeDtypeStruct)):
        return tuple(leaf.shape), np.dtype(leaf.dtype)
    array = np.asarray(leaf)  # python scalars: the same conversion save_checkpoint applies
    return array.shape, array.dtype


def _json_default(value):
    """Let numpy/JAX scalars and arrays in metadata through as plain python values."""
    if isinstance(value, (np.ndarray, np.generic, jax.Array)):
        return np.asarray(value).tolist()
    raise TypeError(f"object of type {type(value).__name__} is not JSON-serialisable")


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import (os.umask can only be read by setting it, which is not thread-safe).
_FILE_MODE = 0o666 & ~_read_umask()


def _data_sha256(arrays) -> str:
    """sha256 of the arrays' raw bytes, one after the other (the order given)."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
    return digest.hexdigest()


def _remove_stale_temps(directory: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Delete the temp files left in ``directory`` by saves that died (of target ``name``, default
    any checkpoint); a save still writing is left alone. Returns the paths removed."""
    target = f"*{SUFFIX}" if name is None else glob.escape(name)
    removed = []
    for tmp in Path(directory).glob(f".{target}.*{_TEMP_SUFFIX}"):
        try:
            fd = os.open(tmp, os.O_RDONLY)
        except OSError:  # renamed or removed meanwhile
            continue
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # a live writer holds it
            elif time.time() - os.fstat(fd).st_mtime < _STALE_AGE_S:
                continue
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:
                pass
        finally:
            os.close(fd)  # releases the lock
    return removed


def _new_temp(path: Path) -> tuple[int, str]:
    """A locked, empty temp file beside ``path``: ``(fd, name)``."""
    for _ in range(8):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TEMP_SUFFIX)
        if fcntl is None:
            return fd, tmp
        fcntl.flock(fd, fcntl.LOCK_EX)  # waits only while a cleaner looks at it
        if os.fstat(fd).st_nlink:
            return fd, tmp
        os.close(fd)  # a cleaner took it for stale between mkstemp and flock: make another
    raise OSError(f"cannot create a temp file beside {path}")


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part."""
    _remove_stale_temps(path.parent, path.name)
    fd, tmp = _new_temp(path)
    try:
        if hasattr(os, "fchmod"):  # mkstemp makes it private (0600); give it a normal file's mode
            os.fchmod(fd, _FILE_MODE)
        with os.fdopen(os.dup(fd), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # with the lock still held, so no cleaner takes the file for stale
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    try:  # make the rename itself durable; not every platform can open a directory
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def save_checkpoint(path: str | os.PathLike, tree: Any, metadata: dict | None = None) -> Path:
    """Write every array leaf of ``tree`` and the JSON ``metadata`` to one safetensors file, atomically.

    Leaves may be JAX or NumPy arrays, NumPy scalars or python numbers (stored as 0-d arrays), or typed
    PRNG key arrays (stored as their key data). ``metadata`` must be JSON-serialisable; NumPy/JAX
    values in it become python numbers and lists (and tuples become lists). Parent directories are
    created. Returns the path written.
    """
    path = Path(path)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise TypeError(f"checkpoint metadata must be a dict, got {type(metadata).__name__}")
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    tensors = {}
    for key_path, leaf in leaves:
        name = jax.tree_util.keystr(key_path)
        array = _to_numpy(leaf)
        if array.dtype == object or array.dtype.kind in "USV":
            raise TypeError(
                f"checkpoint leaf {name or '<root>'} has dtype {array.dtype}: only bool/int/uint/float/complex"
                " arrays can be stored (no strings, objects, or bfloat16 in the NumPy backend)"
            )
        tensors[name] = array
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "leaves": list(tensors),
        "data_sha256": _data_sha256(tensors.values()),
        "metadata": metadata,
    }
    try:
        header = json.dumps(document, default=_json_default)
    except (TypeError, ValueError) as error:  # ValueError: circular reference
        raise TypeError(f"checkpoint metadata must be JSON-serialisable: {error}") from None
    try:
        data = safetensors.numpy.save(tensors, metadata={_METADATA_KEY: header})
    except (ValueError, KeyError, safetensors.SafetensorError) as error:  # e.g. a dtype it cannot store
        raise TypeError(f"cannot store these leaves in safetensors: {error!r}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, data)
    return path


def _diagnose(head: bytes, path: Path) -> str:
    """Why a file that failed to parse as safetensors is not a checkpoint, from its first bytes."""
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return f"{path} looks like a pickle file; carlab never loads pickles (they can run code)"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return f"{path} is a zip archive (.npz/.pt?), not a carlab checkpoint; carlab never loads pickles"
    if head.startswith(b"\x93NUMPY"):
        return f"{path} is a .npy file, not a carlab checkpoint"
    return f"{path} is truncated or corrupt: not a safetensors file"


def _read_header(f, path: Path) -> dict:
    """Parse and validate a safetensors + carlab header; returns the carlab JSON document."""
    file_size = os.fstat(f.fileno()).st_size
    if file_size == 0:
        raise CheckpointError(f"{path} is empty (an interrupted write?)")
    head = f.read(8)
    if len(head) < 8:
        raise CheckpointError(_diagnose(head, path))
    (header_size,) = struct.unpack("<Q", head)
    if not 2 <= header_size <= min(_MAX_HEADER, file_size - 8):
        raise CheckpointError(_diagnose(head, path))
    try:
        header = json.loads(f.read(header_size).decode("utf-8"))
        if not isinstance(header, dict):
            raise TypeError("the header is not a JSON object")
        ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
    except (UnicodeDecodeError, ValueError, TypeError, KeyError, IndexError):
        raise CheckpointError(_diagnose(head, path)) from None
    if 8 + header_size + max(ends, default=0) > file_size:
        raise CheckpointError(f"{path} is truncated: its header promises more data than the file holds")
    raw = (header.get("__metadata__") or {}).get(_METADATA_KEY)
    if raw is None:
        raise CheckpointError(
            f"{path} is a safetensors file but not a carlab checkpoint (no carlab metadata)"
        )
    try:
        document = json.loads(raw)
    except (TypeError, ValueError):
        raise CheckpointError(f"{path} has a corrupt carlab header") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CheckpointError(f"{path} has a corrupt carlab header (format is not {FORMAT!r})")
    version = document.get("format_version")
    if not is_int(version) or version < 1:
        raise CheckpointError(f"{path} has a corrupt carlab header (format_version {version!r})")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format_version {version}, written by a newer carlab; "
            f"this one reads format_version {FORMAT_VERSION}"
        )
    if not isinstance(document.get("metadata"), dict) or not isinstance(document.get("leaves"), list):
        raise CheckpointError(f"{path} has a corrupt carlab header (no metadata or leaves)")
    checksum = document.get("data_sha256")
    if checksum is not None and not (
        isinstance(checksum, str) and len(checksum) == 64 and all(c in "0123456789abcdef" for c in checksum)
    ):
        raise CheckpointError(f"{path} has a corrupt carlab header (data_sha256 {checksum!r})")
    return document


def _read(path, read: Callable[[Any, Path], Any]):
    """``read(f, path)`` on the open file; a file that cannot be opened or read is a CheckpointError."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    if not path.is_file():
        raise CheckpointError(f"{path} is not a file")
    try:
        with open(path, "rb") as f:
            return read(f, path)
    except OSError as error:  # PermissionError, EIO, ...: one line, like every other unreadable file
        raise CheckpointError(f"cannot read {path}: {error.strerror or error}") from None


def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata saved with a checkpoint, reading only the header (raises :class:`CheckpointError`;
    the array data and their checksum are checked by :func:`load_checkpoint`)."""
    return _read(path, lambda f, path: _read_header(f, path)["metadata"])


def _read_all(f, path: Path) -> tuple[dict, bytes]:
    document = _read_header(f, path)
    f.seek(0)
    return document, f.read()


def load_checkpoint(path: str | os.PathLike, like: Any) -> tuple[Any, dict]:
    """Read a checkpoint into the structure of the template ``like``; returns ``(tree, metadata)``.

    Every key path of ``like`` must be stored with the same shape and dtype, and the file must hold
    nothing else; otherwise :class:`CheckpointError` names the first mismatching key. Leaves come back
    as the template's kind: JAX arrays (also for ``jax.ShapeDtypeStruct`` leaves, e.g. a template from
    ``jax.eval_shape``; typed PRNG keys rewrapped with the template's impl), NumPy arrays, or python
    scalars. All results are new objects; nothing passed in is modified. The array data must match
    the checksum saved with them (files from before checksums were saved have none and load as they are).
    """
    path = Path(path)
    document, data = _read(path, _read_all)
    try:
        tensors = safetensors.numpy.load(data)
    except (safetensors.SafetensorError, ValueError, TypeError, KeyError) as error:
        raise CheckpointError(f"{path} is corrupt: {error}") from None

    template, treedef = jax.tree_util.tree_flatten_with_path(like)
    names = [jax.tree_util.keystr(key_path) for key_path, _ in template]
    if set(tensors) != set(document["leaves"]):
        raise CheckpointError(f"{path} is corrupt: its arrays do not match its carlab header")
    missing = [name for name in names if name not in tensors]
    if missing:
        raise CheckpointError(f"{path} does not fit the template: it has no leaf {missing[0] or '<root>'}")
    known = set(names)
    extra = [name for name in document["leaves"] if name not in known]
    if extra:
        raise CheckpointError(
            f"{path} does not fit the template: the template has no leaf {extra[0] or '<root>'}"
        )
    checksum = document.get("data_sha256")
    if checksum is not None and _data_sha256(tensors[name] for name in document["leaves"]) != checksum:
        raise CheckpointError(f"{path}: its array data do not match its checksum (corrupt file?)")

    leaves = []
    for name, (_, leaf) in zip(names, template):
        stored = tensors[name]
        shape, dtype = _spec(leaf)
        if stored.shape != shape or stored.dtype != dtype:
            raise CheckpointError(
                f"{path} does not fit the template at {name or '<root>'}: stored {stored.dtype}{list(stored.shape)}, "
                f"template {dtype}{list(shape)}"
            )
        leaves.append(_like(leaf, np.array(stored)))  # np.array copies: results never alias the file buffer
    return jax.tree_util.tree_unflatten(treedef, leaves), document["metadata"]


def _like(template_leaf, array: np.ndarray):
    """``array`` as the same kind of value as ``template_leaf``."""
    if _is_prng_key(template_leaf):
        return jax.random.wrap_key_data(jnp.asarray(array), impl=jax.random.key_impl(template_leaf))
    if isinstance(template_leaf, (jax.Array, jax.ShapeDtypeStruct)):  # an abstract template gives JAX arrays
        return jnp.asarray(array)
    if isinstance(template_leaf, np.generic):
        return array[()]
    if isinstance(template_leaf, (bool, int, float, complex)):
        return type(template_leaf)(array.item())
    return array


def list_checkpoints(directory: str | os.PathLike = "models") -> list[dict]:
    """The ``*.safetensors`` files in ``directory``, newest first, with their metadata when readable.

    Each entry has ``path``, ``name`` (the stem), ``size`` (bytes), ``mtime`` (seconds since the epoch),
    ``valid``, ``error`` (the reason when not valid, else None) and ``metadata`` (a dict, empty when
    not valid). A missing directory lists nothing. Only the headers are read (``valid`` does not check
    the data's checksum). Temp files of saves never appear, and those of saves that died are removed.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    _remove_stale_temps(directory)
    entries = []
    for path in directory.glob(f"*{SUFFIX}"):
        try:
            stat = path.stat()
        except OSError:  # deleted while listing
            continue
        entry = {"path": path, "name": path.stem, "size": stat.st_size, "mtime": stat.st_mtime}
        try:
            entry.update(valid=True, error=None, metadata=read_metadata(path))
        except (CheckpointError, OSError) as error:
            entry.update(valid=False, error=str(error), metadata={})
        entries.append(entry)
    entries.sort(key=lambda entry: (entry["mtime"], entry["name"]), reverse=True)
    return entries

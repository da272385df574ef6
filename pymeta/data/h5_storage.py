"""Whether reading an HDF5 dataset stays within what its file stores.

An HDF5 dataset declares its shape apart from its data: a small file can declare gigabytes (only a fill
value, unwritten chunks, gzip of zeros, data kept in another file), and reading it allocates them all.
`storage_problem` says so from the metadata alone, before anything is read. The dataset loaders
(`pymeta.data.loaders`), model files (`pymeta.model_io`) and checkpoints (`pymeta.checkpoint`) check
every dataset they read with it.
"""

from typing import Any, Optional

MAX_COMPRESSION_RATIO = 128
"""A compressed HDF5 dataset may hold at most this many times its stored bytes. Images compress far less
(gzip -9 of 105x105 binary Omniglot images: 65x; of 28x28 ones 3.8x; of photos about 1x), weights about
1x; gzip of zeros reaches 1000x, which let a 2 MB file make the loader allocate 2 GB."""


def declared_bytes(ds: Any) -> int:
    """The bytes reading the h5py dataset `ds` allocates."""
    return int(ds.size) * ds.dtype.itemsize


def storage_problem(ds: Any) -> Optional[str]:
    """Why reading the h5py dataset `ds` would allocate more than its file stores (a phrase to follow the
    dataset's name: "declares 270,950,400 bytes, more than 128 times ..."), or None."""
    nbytes = declared_bytes(ds)
    if ds.external or ds.is_virtual:
        return "keeps its data outside the file (external or virtual dataset)"
    stored = ds.id.get_storage_size()
    if ds.chunks is not None and (ds.compression is not None or ds._filters):
        expected = 1
        for n, c in zip(ds.shape, ds.chunks):
            expected *= -(-n // c)
        if ds.id.get_num_chunks() < expected:
            return f"declares {nbytes:,} bytes but stores {stored:,} compressed bytes (unwritten chunks)"
        if nbytes > MAX_COMPRESSION_RATIO * stored:
            return (f"declares {nbytes:,} bytes, more than {MAX_COMPRESSION_RATIO} times the {stored:,} "
                    "compressed bytes it stores (refused before decompressing)")
    elif stored < nbytes:
        return f"declares {nbytes:,} bytes but only {stored:,} are stored in the file (unwritten / fill-value data)"
    return None


def first_storage_problem(group: Any) -> Optional[str]:
    """"'<name>' <storage_problem>" for the first dataset anywhere under the open h5py group or file
    `group` whose reading would allocate more than the file stores, or None."""
    import h5py
    found = []

    def check(name: str, obj: Any) -> Optional[bool]:
        problem = storage_problem(obj) if isinstance(obj, h5py.Dataset) else None
        if problem is not None:
            found.append(f"'{name}' {problem}")
            return True  # stops the visit
        return None
    group.visititems(check)
    return found[0] if found else None

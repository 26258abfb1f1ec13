"""Scale k-means, kNN and BPE counting out on Dask, with the single-machine kernels in each task.

``fit_kmeans`` runs Lloyd's algorithm on a Dask array sharded by rows, ``kneighbors`` searches a
training set sharded by rows, and ``count_pretokens`` and ``train_bpe`` count BPE pre-tokens over
many files or a Dask bag. Each function takes ``client=``: None starts a LocalCluster of worker
processes on 127.0.0.1 for the call and shuts it down afterwards, a ``distributed.Client`` or a
scheduler address uses an existing cluster. ``read_npy`` opens a .npy file as a Dask array whose
chunks each worker reads through a memory map, so the file never has to fit in memory.

Needs the ``distributed`` extra: ``pip install "fastml[distributed]"``. See docs/scale-out.md.
"""

try:
    import dask  # noqa: F401
    import dask.array  # noqa: F401
    import distributed  # noqa: F401
except ImportError as exc:
    raise ImportError(
        f"fastml.distributed needs dask[array] and distributed ({exc}); install them with "
        "`pip install \"fastml[distributed]\"`"
    ) from exc

from fastml.distributed._bpe import count_pretokens, train_bpe
from fastml.distributed._chunks import read_npy
from fastml.distributed._client import CONNECT_TIMEOUT, connect
from fastml.distributed._kmeans import fit_kmeans
from fastml.distributed._knn import kneighbors

__all__ = [
    "CONNECT_TIMEOUT",
    "connect",
    "count_pretokens",
    "fit_kmeans",
    "kneighbors",
    "read_npy",
    "train_bpe",
]

"""Bad input to fastml.distributed: clear errors, raised fast, and the embedded cluster."""

import pytest

pytest.importorskip("dask.array", reason="needs the distributed extra: pip install 'fastml[distributed]'")
pytest.importorskip("distributed", reason="needs the distributed extra: pip install 'fastml[distributed]'")

import os
import socket
import subprocess
import sys
import time

import dask
import dask.array as da
import numpy as np

from fastml import knn
from fastml.distributed import (
    CONNECT_TIMEOUT,
    connect,
    count_pretokens,
    fit_kmeans,
    kneighbors,
    train_bpe,
)


def gaussian(n_rows, n_features=4, dtype=np.float64, seed=0):
    return np.random.default_rng(seed).standard_normal((n_rows, n_features)).astype(dtype)


def chunks_with_dtypes(dtypes, rows=50, n_features=4, declared=np.float64):
    """Return a Dask array that declares `declared` but whose chunks compute to `dtypes`."""
    parts = [
        da.from_delayed(
            dask.delayed(gaussian)(rows, n_features, dtype, seed),
            shape=(rows, n_features),
            dtype=declared,
        )
        for seed, dtype in enumerate(dtypes)
    ]
    return da.concatenate(parts)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_chunks_across_features_rejected(client):
    X = da.from_array(gaussian(100), chunks=(50, 2))
    with pytest.raises(ValueError, match=r"X is split along the features into chunks \(2, 2\).*rechunk"):
        fit_kmeans(X, 3, client=client)
    with pytest.raises(ValueError, match=r"X_train is split along the features"):
        kneighbors(X, gaussian(5), 3, client=client)


def test_chunk_dtype_mismatch_rejected(client):
    X = chunks_with_dtypes([np.float64, np.float32])
    message = r"X chunk 1 \(rows 50:100\) has dtype float32, but X declares float64"
    with pytest.raises(ValueError, match=message):
        fit_kmeans(X, 3, client=client)
    with pytest.raises(ValueError, match=r"X_train chunk 1 \(rows 50:100\) has dtype float32"):
        kneighbors(X, gaussian(5), 3, client=client)


def test_nan_in_a_chunk_rejected(client):
    X = gaussian(100)
    X[73, 2] = np.nan
    with pytest.raises(ValueError, match=r"X contains NaN or infinity \(first at index \(73, 2\)"):
        fit_kmeans(da.from_array(X, chunks=(25, -1)), 3, client=client)
    with pytest.raises(ValueError, match=r"X_train contains NaN or infinity \(first at index \(73, 2\)"):
        kneighbors(da.from_array(X, chunks=(25, -1)), gaussian(5), 3, client=client)


def test_negative_weight_in_a_chunk_rejected(client):
    weights = np.ones(100)
    weights[61] = -1.0
    with pytest.raises(ValueError, match=r"sample_weight must be finite and non-negative, got -1.0 at index 61"):
        fit_kmeans(
            da.from_array(gaussian(100), chunks=(30, -1)), 3,
            sample_weight=da.from_array(weights, chunks=30), client=client,
        )


def test_parameters_out_of_range_rejected(client):
    X = da.from_array(gaussian(20), chunks=(10, -1))
    with pytest.raises(ValueError, match=r"n_samples=20 should be >= n_clusters=21"):
        fit_kmeans(X, 21, client=client)
    with pytest.raises(ValueError, match=r"invalid backend='naive' for distributed k-means"):
        fit_kmeans(X, 2, backend="naive", client=client)
    with pytest.raises(ValueError, match=r"k=21 is greater than the number of training rows n_train=20"):
        kneighbors(X, gaussian(3), 21, client=client)
    with pytest.raises(ValueError, match=r"X_query has 3 features but X_train has 4"):
        kneighbors(X, gaussian(3, n_features=3), 2, client=client)
    with pytest.raises(ValueError, match=r"invalid metric='hamming'"):
        kneighbors(X, gaussian(3), 2, metric="hamming", client=client)


def test_unreachable_address_fails_fast():
    address = f"tcp://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=r"could not reach a Dask scheduler at 'tcp://127.0.0.1:\d+' within"):
        kneighbors(gaussian(20), gaussian(2), 1, client=address)
    assert time.monotonic() - start < CONNECT_TIMEOUT + 10


def test_wrong_client_type_rejected():
    with pytest.raises(TypeError, match=r"client must be None, a distributed.Client or a scheduler address"):
        kneighbors(gaussian(20), gaussian(2), 1, client=42)


def test_scheduler_address_is_accepted(client):
    train, queries = gaussian(200), gaussian(5, seed=1)
    expected = kneighbors(train, queries, 3, client=client)
    result = kneighbors(train, queries, 3, client=client.scheduler.address)
    np.testing.assert_array_equal(result[1], expected[1])
    assert client.status == "running"


def test_embedded_cluster_binds_localhost_and_closes():
    psutil = pytest.importorskip("psutil", reason="psutil lists the listening sockets")
    with connect(n_workers=1) as local:
        assert local.scheduler.address.startswith("tcp://127.0.0.1:")
        workers = local.scheduler_info()["workers"]
        assert len(workers) == 1
        worker_pids = list(local.run(os.getpid).values())
        # The scheduler runs in this process, the worker in its own.
        listening = [
            connection.laddr.ip
            for pid in [os.getpid(), *worker_pids]
            for connection in psutil.Process(pid).net_connections(kind="inet")
            if connection.status == psutil.CONN_LISTEN
        ]
    assert listening
    assert set(listening) == {"127.0.0.1"}
    assert local.status == "closed"
    for pid in worker_pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_default_client_runs_an_embedded_cluster():
    train, queries = gaussian(100), gaussian(4, seed=1)
    distances, indices = kneighbors(train, queries, 2)
    np.testing.assert_array_equal(indices, knn.kneighbors(train, queries, 2)[1])


def test_bpe_corpus_rejected(tmp_path):
    with pytest.raises(TypeError, match=r"corpus must be a dask.bag.Bag or a sequence of file paths"):
        count_pretokens("some text")
    with pytest.raises(TypeError, match=r"corpus item 0 is a str"):
        count_pretokens(["some text"])
    with pytest.raises(FileNotFoundError, match=r"corpus item 0: no such file"):
        count_pretokens([tmp_path / "missing.txt"])
    with pytest.raises(ValueError, match=r"vocab_size=100 is below 256 byte tokens"):
        train_bpe([tmp_path / "missing.txt"], 100)


def test_missing_dask_gives_install_hint():
    code = (
        "import sys; sys.modules['distributed'] = None\n"
        "try:\n    import fastml.distributed\nexcept ImportError as exc:\n    print(exc)\n"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert 'pip install "fastml[distributed]"' in output.stdout

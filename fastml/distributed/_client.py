"""The Dask client of a call: an embedded LocalCluster, a given Client, or a scheduler address."""

import contextlib
import logging

from distributed import Client, LocalCluster

# Seconds to wait for a scheduler given by address before giving up. Dask's own default (30 s)
# makes a mistyped address look like a hang.
CONNECT_TIMEOUT = 5.0


@contextlib.contextmanager
def connect(client=None, *, n_workers=None, threads_per_worker=1, timeout=CONNECT_TIMEOUT):
    """Yield a ``distributed.Client``; close what this call opened when the block exits.

    Parameters
    ----------
    client : None, distributed.Client or str
        None starts a ``LocalCluster`` of `n_workers` worker processes and shuts it down on exit.
        Every server of it (scheduler, workers, HTTP endpoints) listens on 127.0.0.1 only, on
        ports the system picks. A Client is used as it is and left open. A str
        is a scheduler address such as ``"tcp://10.0.0.5:8786"``; the connection is closed on exit.
    n_workers : int, optional
        Worker processes of the embedded cluster; Dask's default (one per CPU core for one
        thread per worker) when None. Ignored unless `client` is None.
    threads_per_worker : int
        Threads of each embedded worker. Each task runs its kernel on one thread, so more
        threads per worker only run more tasks side by side.
    timeout : float
        Seconds to wait for the scheduler at a given address.

    Raises
    ------
    ConnectionError
        The scheduler at the address did not respond within `timeout` seconds.
    """
    if client is None:
        with _local_cluster(n_workers, threads_per_worker) as cluster, Client(cluster) as local:
            yield local
    elif isinstance(client, Client):
        yield client
    elif isinstance(client, str):
        remote = _connect_address(client, timeout)
        try:
            yield remote
        finally:
            remote.close()
    else:
        raise TypeError(
            f"client must be None, a distributed.Client or a scheduler address (str), got "
            f"{type(client).__name__}"
        )


def _local_cluster(n_workers, threads_per_worker):
    # With dashboard_address=None the scheduler would still serve HTTP, on port 8787 or another
    # when that one is taken; "127.0.0.1:0" keeps it on the loopback and a free port.
    # Worker processes rather than threads: the kernels release the GIL, but the Python steps
    # around them (pre-tokenization above all) do not.
    return LocalCluster(
        n_workers=n_workers,
        threads_per_worker=threads_per_worker,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        silence_logs=logging.ERROR,
    )


def _connect_address(address, timeout):
    try:
        return Client(address, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise ConnectionError(
            f"could not reach a Dask scheduler at {address!r} within {timeout} s ({exc}); check "
            "the address and that the scheduler runs, or pass client=None for a local cluster"
        ) from exc

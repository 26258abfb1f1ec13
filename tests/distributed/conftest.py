"""One LocalCluster of two worker processes on 127.0.0.1, shared by the distributed tests."""

import logging
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

N_WORKERS = 2
# Seconds that a fit or a search may take before a test counts it as hung.
HANG_TIMEOUT = 60


@pytest.fixture(scope="session")
def client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=N_WORKERS,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        silence_logs=logging.CRITICAL,
    )
    with cluster, Client(cluster) as dask_client:
        yield dask_client


@pytest.fixture
def run_killing_a_worker():
    """Return `kill_worker_during`, for the tests that kill a worker."""
    return kill_worker_during


def kill_worker_during(client, function, task_prefix):
    """Run `function()`; SIGKILL the worker that runs the first task named `task_prefix`.

    Returns ``(result, killed)``. `killed` is True only if the kill happened before `function`
    returned. Raises TimeoutError if `function` takes more than HANG_TIMEOUT seconds. The
    nanny restarts the killed worker, and this waits until the cluster has N_WORKERS again.
    """
    pids = client.run(os.getpid)
    finished = threading.Event()
    killed = threading.Event()

    def kill_first_runner():
        while not finished.is_set():
            for address, keys in client.processing().items():
                if address in pids and any(_key_name(key).startswith(task_prefix) for key in keys):
                    os.kill(pids[address], signal.SIGKILL)
                    killed.set()
                    return
            time.sleep(0.002)

    with ThreadPoolExecutor(2) as pool:
        watcher = pool.submit(kill_first_runner)
        try:
            result = pool.submit(function).result(timeout=HANG_TIMEOUT)
        finally:
            was_killed = killed.is_set()
            finished.set()
            watcher.result()
    client.wait_for_workers(N_WORKERS, timeout=HANG_TIMEOUT)
    return result, was_killed


def _key_name(key):
    return key[0] if isinstance(key, tuple) else str(key)

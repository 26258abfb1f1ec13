import pytest

import fastml


def test_set_and_restore():
    default = fastml.get_num_threads()
    fastml.set_num_threads(1)
    assert fastml.get_num_threads() == 1
    fastml.set_num_threads(None)
    assert fastml.get_num_threads() == default


def test_context_manager_restores_on_error():
    before = fastml.get_num_threads()
    with pytest.raises(RuntimeError):
        with fastml.num_threads(1):
            assert fastml.get_num_threads() == 1
            raise RuntimeError
    assert fastml.get_num_threads() == before


def test_environment_default(monkeypatch):
    monkeypatch.setenv("FASTML_NUM_THREADS", "3")
    assert fastml.get_num_threads() == 3
    monkeypatch.setenv("FASTML_NUM_THREADS", "many")
    with pytest.raises(ValueError, match="invalid FASTML_NUM_THREADS='many'"):
        fastml.get_num_threads()


@pytest.mark.parametrize("value, error", [(0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError)])
def test_invalid_count_rejected(value, error):
    with pytest.raises(error, match="n must be"):
        fastml.set_num_threads(value)


def test_blas_limit_applies_inside_block():
    from threadpoolctl import threadpool_info

    from fastml._threads import blas_threads

    with blas_threads(1):
        assert all(pool["num_threads"] == 1 for pool in threadpool_info() if pool["user_api"] == "blas")

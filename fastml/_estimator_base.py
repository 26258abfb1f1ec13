"""The base class of fastml's scikit-learn compatible estimators.

With scikit-learn installed the estimators derive from ``sklearn.base.BaseEstimator``, so
``clone``, pipelines, grid search and ``check_estimator`` work as with scikit-learn's own. Without
it a small stand-in provides ``get_params``, ``set_params`` and ``repr``, which is all the
estimators themselves use; scikit-learn stays an optional dependency.
"""

import inspect

import numpy as np

try:
    from sklearn.exceptions import NotFittedError as _NotFittedBase
except ImportError:
    _NotFittedBase = type("_NotFittedBase", (ValueError, AttributeError), {})


class NotFittedError(_NotFittedBase):
    """An estimator method that needs a fitted model was called before ``fit``.

    A ValueError and an AttributeError, and scikit-learn's NotFittedError where it is installed.
    """


try:
    from sklearn.base import (
        BaseEstimator,
        ClassifierMixin,
        ClusterMixin,
        RegressorMixin,
        TransformerMixin,
    )
except ImportError:

    # Without scikit-learn the mixins only mark the estimator's kind; the estimators define
    # fit_predict, fit_transform and score themselves.
    class ClassifierMixin:
        _estimator_type = "classifier"

    class ClusterMixin:
        _estimator_type = "clusterer"

    class RegressorMixin:
        _estimator_type = "regressor"

    class TransformerMixin:
        pass

    class BaseEstimator:
        """Parameter handling in the scikit-learn convention: every ``__init__`` argument is an
        attribute of the same name, set unchanged."""

        @classmethod
        def _get_param_names(cls):
            signature = inspect.signature(cls.__init__)
            return sorted(
                name
                for name, parameter in signature.parameters.items()
                if name != "self" and parameter.kind != parameter.VAR_KEYWORD
            )

        def get_params(self, deep=True):
            return {name: getattr(self, name) for name in self._get_param_names()}

        def set_params(self, **params):
            valid = self._get_param_names()
            for name, value in params.items():
                if name not in valid:
                    raise ValueError(
                        f"invalid parameter {name!r} for {type(self).__name__}; "
                        f"expected one of {valid}"
                    )
                setattr(self, name, value)
            return self

        def __repr__(self):
            args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
            return f"{type(self).__name__}({args})"


def check_is_fitted(estimator, attribute):
    """Raise ``NotFittedError`` if `estimator` has no fitted `attribute`."""
    if not hasattr(estimator, attribute):
        raise NotFittedError(
            f"this {type(estimator).__name__} instance is not fitted yet; call 'fit' first"
        )


def record_features(estimator, X, validated):
    """Store ``n_features_in_`` and, for a DataFrame `X`, ``feature_names_in_`` at fit time.

    `validated` is `X` after ``check_array``; the column names come from the original.
    """
    estimator.n_features_in_ = validated.shape[1]
    columns = getattr(X, "columns", None)
    if columns is not None and all(isinstance(c, str) for c in columns):
        estimator.feature_names_in_ = np.asarray(columns, dtype=object)
    elif hasattr(estimator, "feature_names_in_"):
        del estimator.feature_names_in_


def check_features(estimator, X):
    """Raise ``ValueError`` if the validated `X` has another number of features than at fit."""
    if X.shape[1] != estimator.n_features_in_:
        raise ValueError(
            f"X has {X.shape[1]} features, but {type(estimator).__name__} "
            f"is expecting {estimator.n_features_in_} features as input"
        )

"""Warnings and errors that fastml raises beyond the built-in ones."""


class ConvergenceWarning(UserWarning):
    """An iterative fit stopped early or produced a degenerate solution."""


class BackendUnavailableError(ImportError):
    """A backend that exists for a primitive cannot be imported on this machine."""

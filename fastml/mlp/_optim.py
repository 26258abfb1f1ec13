"""SGD with momentum and Adam, shared by every backend.

An optimizer keeps its state (velocities, moments, the step count) in arrays of the parameters'
dtype and updates the parameters in place through the backend's ``sgd_update`` or
``adam_update``, so the loop over parameter arrays is shared and only the elementwise update is
per backend. The learning rate is an argument of ``step`` because ``MLP.fit`` takes it.
"""

import numpy as np

from fastml._validation import check_float


class SGD:
    """Stochastic gradient descent with momentum, as ``torch.optim.SGD`` (no dampening).

    v = momentum v + g, then p -= learning_rate v; momentum=0 is plain SGD.
    """

    def __init__(self, momentum=0.0):
        self.momentum = check_float(momentum, "momentum", min_value=0.0, max_value=1.0, include_max=False)
        self.reset()

    def reset(self):
        """Forget the velocities: the next step starts from zero."""
        self._velocities = None

    def step(self, module, params, grads, learning_rate):
        """Update every array of `params` in place from the matching array of `grads`."""
        if self._velocities is None:
            self._velocities = [np.zeros_like(p) for p in params]
        for param, grad, velocity in zip(params, grads, self._velocities):
            module.sgd_update(param, grad, velocity, learning_rate, self.momentum)

    def __repr__(self):
        return f"SGD(momentum={self.momentum})"


class Adam:
    """Adam (Kingma and Ba, 2015) in the form ``torch.optim.Adam`` computes it.

    m = beta1 m + (1 - beta1) g and v = beta2 v + (1 - beta2) g^2; then
    p -= (learning_rate / (1 - beta1^t)) m / (sqrt(v) / sqrt(1 - beta2^t) + epsilon).
    """

    def __init__(self, beta1=0.9, beta2=0.999, epsilon=1e-8):
        self.beta1 = check_float(beta1, "beta1", min_value=0.0, max_value=1.0, include_max=False)
        self.beta2 = check_float(beta2, "beta2", min_value=0.0, max_value=1.0, include_max=False)
        self.epsilon = check_float(epsilon, "epsilon", min_value=0.0, include_min=False)
        self.reset()

    def reset(self):
        """Forget the moments and the step count."""
        self._moments = None
        self.n_steps = 0

    def step(self, module, params, grads, learning_rate):
        """Update every array of `params` in place from the matching array of `grads`."""
        if self._moments is None:
            self._moments = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
        self.n_steps += 1
        for param, grad, (m, v) in zip(params, grads, self._moments):
            module.adam_update(
                param, grad, m, v, learning_rate, self.beta1, self.beta2, self.epsilon, self.n_steps
            )

    def __repr__(self):
        return f"Adam(beta1={self.beta1}, beta2={self.beta2}, epsilon={self.epsilon})"

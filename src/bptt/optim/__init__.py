"""Optimisers: Hessian-free optimisation for recurrent networks."""

from bptt.optim._hf import HessianFree, conjugate_gradient, gauss_newton_product

__all__ = ["HessianFree", "conjugate_gradient", "gauss_newton_product"]

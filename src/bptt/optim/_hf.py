"""Hessian-free optimisation (Martens 2010; Martens & Sutskever 2011)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["HessianFree", "conjugate_gradient", "gauss_newton_product"]

Closure = Callable[[], tuple]  # () -> (loss, outputs) or (loss, outputs, hidden)


def _flat(tensors: Sequence[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _split(vector: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    out, start = [], 0
    for t in like:
        out.append(vector[start : start + t.numel()].view_as(t))
        start += t.numel()
    return out


def _jvp(outputs: Tensor, params: Sequence[Tensor], vector: Sequence[Tensor]) -> Tensor:
    """J v for J = d outputs / d params, by the double-vjp trick (what
    ``torch.autograd.functional.jvp`` does): J^T u is linear in u, and its vjp with v is J v.
    Works on the graph of any closure; needs double backward (the generic engine)."""
    u = torch.zeros_like(outputs, requires_grad=True)
    transposed = torch.autograd.grad(outputs, params, u, create_graph=True, allow_unused=True)
    pairs = [(t, v) for t, v in zip(transposed, vector, strict=True) if t is not None]
    (jv,) = torch.autograd.grad([t for t, _ in pairs], u, [v for _, v in pairs], retain_graph=True)
    return jv


class _ClosureAsModule(nn.Module):
    """A closure as a module's forward, so that :func:`torch.func.functional_call` can
    re-run it with substituted parameters (the closure calls ``inner`` itself)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.closure: Closure | None = None

    def forward(self) -> tuple[Tensor, ...]:
        assert self.closure is not None
        result = self.closure()
        return tuple(result[1:])  # outputs (and hidden states)


def _loss_hessian_product(outputs: Tensor, vector: Tensor, loss: str, targets_shape) -> Tensor:
    """H_L v in output space, for the mean MSE or mean softmax cross-entropy."""
    if loss == "mse":
        return 2.0 * vector / outputs.numel()
    probabilities = torch.softmax(outputs.detach(), dim=-1)
    rows = outputs.numel() // outputs.shape[-1]
    inner = (probabilities * vector).sum(-1, keepdim=True)
    return probabilities * (vector - inner) / rows


def gauss_newton_product(
    outputs: Tensor, params: Sequence[Tensor], vector: Sequence[Tensor], loss: str
) -> list[Tensor]:
    """G v = J^T H_L J v, the Gauss-Newton matrix of the loss through ``outputs`` times v.

    Args:
        outputs: the network's outputs, still attached to the graph of ``params``.
        params: the parameters.
        vector: one tensor per parameter.
        loss: ``"mse"`` (mean squared error over all elements) or ``"cross_entropy"``
            (mean softmax cross-entropy over the rows of the last dimension).

    Returns:
        One tensor per parameter. Never a matrix.
    """
    jv = _jvp(outputs, params, vector)
    hjv = _loss_hessian_product(outputs, jv, loss, None)
    grads = torch.autograd.grad(outputs, params, hjv, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]


def conjugate_gradient(
    product: Callable[[Tensor], Tensor],
    b: Tensor,
    x0: Tensor | None = None,
    *,
    max_iters: int = 250,
    tol: float = 5e-4,
    min_iters: int = 1,
    preconditioner: Tensor | None = None,
    keep: Callable[[int], bool] | None = None,
) -> tuple[Tensor, list[tuple[int, Tensor]], int]:
    """Minimise q(x) = 1/2 x^T A x - b^T x by (preconditioned) conjugate gradient.

    Stops by Martens' relative-progress rule: at iteration i > k with k = max(10, i/10),
    when q(x_i) < 0 and (q(x_i) - q(x_{i-k})) / q(x_i) < k * tol; or after ``max_iters``;
    or when the residual vanishes.

    Args:
        product: v -> A v (A symmetric positive definite).
        b: the right-hand side (flat).
        x0: the starting point (warm start); zero if None.
        preconditioner: the diagonal of M^{-1}, flat, or None.
        keep: iterations whose iterate is stored for backtracking (Martens: i = ceil(1.3^j)).

    Returns:
        ``(x, stored, iterations)``: the last iterate, ``[(i, x_i, q(x_i)), ...]`` the
        stored ones (the last always included), and how many iterations ran.
    """
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - product(x)
    m = r if preconditioner is None else r * preconditioner
    p = m.clone()
    rm = torch.dot(r, m)
    values: list[float] = []
    stored: list[tuple[int, Tensor, float]] = []
    i = 0
    for i in range(1, max_iters + 1):
        ap = product(p)
        curvature = torch.dot(p, ap)
        if curvature <= 0:  # not positive definite along p: stop where we are
            i -= 1
            break
        alpha = rm / curvature
        x = x + alpha * p
        r = r - alpha * ap
        # q(x) = 1/2 x^T A x - b^T x = -1/2 (r + b)^T x
        values.append(float(-0.5 * torch.dot(r + b, x)))
        if keep is not None and keep(i):
            stored.append((i, x.clone(), values[-1]))
        k = max(10, i // 10)
        if i > max(k, min_iters - 1) and values[-1] < 0:
            if (values[-1] - values[-1 - k]) / values[-1] < k * tol:
                break
        m = r if preconditioner is None else r * preconditioner
        rm_new = torch.dot(r, m)
        if rm_new.abs() < torch.finfo(b.dtype).tiny:
            break
        p = m + (rm_new / rm) * p
        rm = rm_new
    if not stored or stored[-1][0] != i:
        final = values[-1] if values else float(-0.5 * torch.dot(r + b, x))
        stored.append((i, x.clone(), final))
    return x, stored, i


class HessianFree(torch.optim.Optimizer):
    """Hessian-free optimisation with the Gauss-Newton matrix, for recurrent networks.

    Each :meth:`step` (Martens & Sutskever 2011):

    1. the closure gives the loss and the outputs on the gradient batch; g = grad;
    2. conjugate gradient solves (G + lambda I + lambda mu S) d = -g approximately,
       with G v = J^T H_L J v computed on the curvature batch (``curvature_closure``;
       the same batch if None) from the outputs' graph, never a matrix; S the Gauss-
       Newton matrix of the hidden states (structural damping, weight ``mu``; the
       closure then also returns the hidden states); warm-started from ``decay`` times
       the previous solution; stopped by Martens' relative-progress rule or ``max_cg``;
       optionally preconditioned by diag(g^2 + lambda)^(-0.75) (a cheap stand-in for
       Martens' empirical-Fisher diagonal);
    3. CG backtracking: of the stored iterates (i = ceil(1.3^j)), from the last back,
       keep the one with the lowest loss on the gradient batch, stopping at the first
       that is worse than its successor;
    4. Levenberg-Marquardt: with rho = (f(theta + d) - f(theta)) / q(d), lambda is
       multiplied by 3/2 if rho < 1/4 and by 2/3 if rho > 3/4;
    5. a backtracking line search on the step size (x 0.8) until the loss decreases
       (Armijo with 1e-2); no step if none does.

    Parameter groups may be several; they are optimised jointly (one damping).
    After a step, ``self.last`` holds ``cg_iters``, ``damping``, ``rho``, ``alpha`` and
    the losses.

    Args:
        params: parameters or groups.
        loss: ``"mse"`` or ``"cross_entropy"`` (the loss the closure computes from the
            outputs, for H_L).
        damping: initial lambda.
        mu: structural damping weight (0: plain Tikhonov damping).
        max_cg: cap on CG iterations per step.
        cg_tol: Martens' stopping tolerance epsilon.
        decay: warm start factor for the previous solution.
        preconditioner: use the diagonal preconditioner.
        module: the module holding ``params`` and called by the closures. Given, J v
            comes from :func:`torch.func.jvp` (forward mode, re-running the curvature
            closure under :func:`torch.func.functional_call`): about 2 gradient costs
            per product against about 4 without (J v then by the double-vjp trick on
            the closure's graph, which needs double backward: the generic engine).
            The closures must then be deterministic (the same batch each call).

    Example:
        >>> import bptt
        >>> model = bptt.SequenceModel(bptt.cells.RNN(2, 8), 1, engine="generic")
        >>> x, y = torch.randn(16, 5, 2), torch.randn(16, 1)
        >>> def closure():
        ...     out = model(x)[0]
        ...     return torch.nn.functional.mse_loss(out, y), out
        >>> hf = HessianFree(model.parameters(), loss="mse", module=model)
        >>> before = hf.step(closure)
        >>> hf.last["loss_after"] < float(before)
        True

    References:
        Martens (2010), Deep learning via Hessian-free optimization; Martens & Sutskever
        (2011), Learning recurrent neural networks with Hessian-free optimization.
    """

    def __init__(
        self,
        params,
        loss: str = "mse",
        damping: float = 1.0,
        mu: float = 0.0,
        max_cg: int = 250,
        cg_tol: float = 5e-4,
        decay: float = 0.95,
        preconditioner: bool = False,
        module: nn.Module | None = None,
    ) -> None:
        if loss not in ("mse", "cross_entropy"):
            raise ValueError(f"loss must be 'mse' or 'cross_entropy', got {loss!r}")
        for name, value in (("damping", damping), ("cg_tol", cg_tol)):
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be positive and finite, got {value}")
        if not mu >= 0:
            raise ValueError(f"mu must be >= 0, got {mu}")
        if not 0 <= decay <= 1:
            raise ValueError(f"decay must be in [0, 1], got {decay}")
        if isinstance(max_cg, bool) or not isinstance(max_cg, int) or max_cg < 1:
            raise ValueError(f"max_cg must be a positive integer, got {max_cg!r}")
        defaults = {"damping": damping, "mu": mu, "max_cg": max_cg, "cg_tol": cg_tol}
        defaults.update({"decay": decay, "preconditioner": preconditioner, "loss": loss})
        super().__init__(params, defaults)
        self.last: dict[str, Any] = {}
        self._names: list[str] | None = None
        self._wrapper: _ClosureAsModule | None = None
        if module is not None:
            self._wrapper = _ClosureAsModule(module)
            name_of = {id(p): f"inner.{n}" for n, p in module.named_parameters()}
            missing = [i for i, p in enumerate(self._params()) if id(p) not in name_of]
            if missing:
                raise ValueError(f"module does not hold the parameters at positions {missing}")
            self._names = [name_of[id(p)] for p in self._params()]

    def _params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"] if p.requires_grad]

    @property
    def _options(self) -> dict[str, Any]:
        return self.param_groups[0]

    def step(self, closure: Closure, curvature_closure: Closure | None = None) -> Tensor:  # type: ignore[override]
        """One Hessian-free update; returns the loss before it."""
        params = self._params()
        opts = self._options
        loss, outputs, hidden = self._evaluate(closure, graph=True)
        grads = torch.autograd.grad(loss, params, retain_graph=True)
        g = _flat(grads).detach()
        if curvature_closure is not None:
            product = self.curvature_product(curvature_closure)
        else:  # the gradient batch's graph serves
            product = self._product(closure, outputs, hidden)
        damping = opts["damping"]

        previous = [self.state[p].get("cg_solution") for p in params]
        x0 = None
        if all(s is not None for s in previous):
            x0 = opts["decay"] * _flat(previous)
        pre = (g.square() + damping).pow(-0.75) if opts["preconditioner"] else None
        marks = {math.ceil(1.3**j) for j in range(60)}
        solution, stored, iterations = conjugate_gradient(
            product,
            -g,
            x0,
            max_iters=opts["max_cg"],
            tol=opts["cg_tol"],
            preconditioner=pre,
            keep=lambda i: i in marks,
        )
        for p, s in zip(params, _split(solution.detach(), params), strict=True):
            self.state[p]["cg_solution"] = s.clone()
        start = [p.detach().clone() for p in params]
        base = float(loss.detach())

        def loss_at(direction: Tensor, scale: float = 1.0) -> float:
            with torch.no_grad():
                for p, p0, d in zip(params, start, _split(direction, params), strict=True):
                    p.copy_(p0 + scale * d)
                value = float(self._evaluate(closure, graph=False)[0])
            return value

        # backtracking over the stored CG iterates, from the last
        _, chosen, q = stored[-1]
        chosen_loss = loss_at(chosen)
        for _, candidate, model_value in reversed(stored[:-1]):
            value = loss_at(candidate)
            if not value < chosen_loss:
                break
            chosen, chosen_loss, q = candidate, value, model_value
        # reduction ratio: the actual decrease against the damped quadratic model's
        rho = (chosen_loss - base) / q if q < 0 else -math.inf
        if rho < 0.25:
            opts["damping"] = damping * 1.5
        elif rho > 0.75:
            opts["damping"] = damping * 2 / 3
        # line search on the step size
        alpha, slope = 1.0, float(torch.dot(g, chosen))
        value = chosen_loss
        while not value <= base + 1e-2 * alpha * slope and alpha > 1e-4:
            alpha *= 0.8
            value = loss_at(chosen, alpha)
        if not value <= base + 1e-2 * alpha * slope:
            alpha, value = 0.0, base
        with torch.no_grad():
            for p, p0, d in zip(params, start, _split(chosen, params), strict=True):
                p.copy_(p0 + alpha * d)
        for group in self.param_groups[1:]:
            group["damping"] = opts["damping"]
        self.last = {
            "grad_norm": float(torch.linalg.vector_norm(g)),
            "cg_iters": iterations,
            "damping": opts["damping"],
            "rho": rho,
            "alpha": alpha,
            "loss_before": base,
            "loss_after": value,
        }
        return loss.detach()

    def curvature_product(self, closure: Closure) -> Callable[[Tensor], Tensor]:
        """v -> (G + lambda I + lambda mu S) v on the closure's batch, at the current
        parameters and damping: the matrix conjugate gradient sees, never built.

        v and the result are flat, of length the number of optimised elements (in
        parameter-group order). The closure runs once now (and, with ``module``, once
        per product in forward mode).
        """
        _, outputs, hidden = self._evaluate(closure, graph=True)
        return self._product(closure, outputs, hidden)

    def _product(
        self, closure: Closure, outputs: Tensor, hidden: Tensor | None
    ) -> Callable[[Tensor], Tensor]:
        params, opts = self._params(), self._options
        damping, mu = opts["damping"], opts["mu"]
        structural = mu > 0 and hidden is not None
        tangents_of = self._forward_mode(closure, params)
        c_outputs, c_hidden = outputs, hidden

        def product(v: Tensor) -> Tensor:
            parts = _split(v, params)
            if tangents_of is None:  # reverse mode only: J v by the double-vjp trick
                gv = _flat(gauss_newton_product(c_outputs, params, parts, opts["loss"]))
                out = gv + damping * v
                if structural:
                    sv = _flat(gauss_newton_product(c_hidden, params, parts, "mse"))
                    out = out + damping * mu * sv * c_hidden.numel() / 2  # J_h^T J_h v
                return out
            # forward mode: J v (and J_h v) by one jvp, then one vjp for both terms
            tangents = tangents_of(parts)
            targets = [c_outputs]
            cotangents = [_loss_hessian_product(c_outputs, tangents[0], opts["loss"], None)]
            if structural:
                targets.append(c_hidden)
                cotangents.append(damping * mu * tangents[1])  # J_h^T J_h v
            grads = torch.autograd.grad(targets, params, cotangents, retain_graph=True)
            return _flat(grads) + damping * v

        return product

    def _forward_mode(
        self, closure: Closure, params: list[Tensor]
    ) -> Callable[[list[Tensor]], tuple[Tensor, ...]] | None:
        """With a module: v -> the jvp of the closure's outputs (and hidden states) by
        :func:`torch.func.jvp`, re-running the closure on the parameters; else None."""
        if self._wrapper is None or self._names is None:
            return None
        wrapper, names = self._wrapper, self._names
        primals = {n: p.detach() for n, p in zip(names, params, strict=True)}

        def outputs_of(values: dict[str, Tensor]) -> tuple[Tensor, ...]:
            wrapper.closure = closure
            try:
                return torch.func.functional_call(wrapper, values, ())
            finally:
                wrapper.closure = None

        def tangents_of(parts: list[Tensor]) -> tuple[Tensor, ...]:
            tangents = dict(zip(names, parts, strict=True))
            # torch's first forward-mode call loads decompositions through the deprecated
            # torch.jit.script and warns about it: torch's business, not the caller's
            with torch.no_grad(), warnings.catch_warnings():  # forward mode needs no graph
                warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated")
                return torch.func.jvp(outputs_of, (primals,), (tangents,))[1]

        return tangents_of

    @staticmethod
    def _evaluate(closure: Closure, graph: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        with torch.enable_grad() if graph else torch.no_grad():
            result = closure()
        if not isinstance(result, tuple) or len(result) not in (2, 3):
            raise TypeError("the closure must return (loss, outputs) or (loss, outputs, hidden)")
        loss, outputs = result[0], result[1]
        hidden = result[2] if len(result) == 3 else None
        return loss, outputs, hidden

"""Hessian-free optimisation (Martens 2010; Martens & Sutskever 2011)."""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from bptt import _checks
from bptt.engine import require_generic
from bptt.model import SequenceModel

__all__ = ["HessianFree", "conjugate_gradient", "gauss_newton_product"]

Closure = Callable[[], tuple]  # () -> (loss, outputs) or (loss, outputs, hidden)
LOSSES = ("mse", "cross_entropy")
_CLOSURE = "closure() -> (loss, outputs) or (loss, outputs, hidden)"

_WHY_GENERIC = (
    "Hessian-free differentiates the closure's graph more than once (the gradient, then "
    "J^T u in every conjugate-gradient product), which the fast engine's hand-written "
    "backward does not support"
)


def _generic_unrolls() -> contextlib.AbstractContextManager:
    """Inside it, ``bptt.unroll`` with ``engine="auto"`` (every model's default) runs the
    generic autograd engine, and an explicit ``engine="fast"`` is a ValueError saying why."""
    return require_generic(_WHY_GENERIC)


def _flat(tensors: Sequence[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _split(vector: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    out, start = [], 0
    for t in like:
        out.append(vector[start : start + t.numel()].view_as(t))
        start += t.numel()
    return out


def _vjp(targets, params: Sequence[Tensor], cotangents=None) -> list[Tensor]:
    """The vector-Jacobian product, one tensor per parameter (zeros for one unused);
    the graph is kept for the next product."""
    grads = torch.autograd.grad(targets, params, cotangents, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]


def _check_loss(loss: str) -> None:
    _checks.choice("loss", loss, LOSSES)


def _flat_tensor(name: str, value: Any, like: Tensor | None = None) -> Tensor:
    """A floating-point tensor (N,) (of ``like``'s shape and dtype if given)."""
    if not isinstance(value, Tensor) or not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (N,), got {_checks.shown(value)}")
    if value.dim() != 1:
        raise ValueError(f"{name} must be a flat tensor (N,), got shape {tuple(value.shape)}")
    if like is not None and (value.shape != like.shape or value.dtype != like.dtype):
        raise ValueError(
            f"{name} must have b's shape {tuple(like.shape)} and dtype {like.dtype}, got "
            f"{_checks.shown(value)}"
        )
    return value


def _check_cross_entropy(name: str, loss: Tensor, outputs: Tensor) -> None:
    """For ``loss="cross_entropy"``: the closure's outputs are class scores on their last
    dimension and its loss is a softmax cross-entropy of them. Its gradient over each
    row of scores, softmax minus the target distribution (over the rows), sums to 0,
    whatever the targets, weights, ignored rows or smoothing; a regression loss's does
    not. A mismatch would make every Gauss-Newton product wrong."""
    if outputs.dim() < 1 or outputs.shape[-1] < 2:
        raise ValueError(
            f"loss='cross_entropy' needs class scores (at least 2) on the last dimension of "
            f"{name}'s outputs, got outputs of shape {tuple(outputs.shape)}: a regression "
            f"closure? use loss='mse'"
        )
    (grad,) = torch.autograd.grad(loss, outputs, retain_graph=True, allow_unused=True)
    if grad is None:
        raise ValueError(f"{name}'s loss does not depend on its outputs: HessianFree needs it to")
    rows = grad.detach().reshape(-1, grad.shape[-1]).double()
    sums, sizes = rows.sum(-1).abs(), rows.abs().sum(-1)
    # a softmax row sums to 1 within C roundings of its dtype; its gradient row, (p - t)
    # times the row's weight (1 / rows for a mean), to that times the weight: a model
    # sure of every answer has rows far smaller than that rounding (seen in training)
    rounding = 8 * rows.shape[-1] * torch.finfo(outputs.dtype).eps / max(1, rows.shape[0])
    slack = 1e-3 * sizes + 1e-6 * float(sizes.max()) + rounding
    bad = (sums > slack).nonzero()
    if bad.numel():
        row = int(bad[0])
        raise ValueError(
            f"loss='cross_entropy' but {name}'s loss is no softmax cross-entropy of its "
            f"outputs' last dimension (its gradient over a row of class scores sums to 0; "
            f"in row {row} to {float(rows[row].sum()):.3g}): a regression closure "
            f"(float targets)? use loss='mse'"
        )


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

    def forward(self, closure: Closure) -> tuple[Tensor, ...]:
        result = closure()
        return tuple(result[1:])  # outputs (and hidden states)


def _loss_hessian_product(outputs: Tensor, vector: Tensor, loss: str) -> Tensor:
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
        outputs: the network's outputs, any shape, still attached to the graph of
            ``params`` (a graph that supports double backward: the generic engine).
        params: the parameters, P tensors.
        vector: one tensor per parameter, of its shape.
        loss: ``"mse"`` (mean squared error over all elements) or ``"cross_entropy"``
            (mean softmax cross-entropy over the rows of the last dimension).

    Returns:
        One tensor per parameter, of its shape. Never a matrix.

    Raises:
        ValueError: ``loss`` is not one of the two.
    """
    _check_loss(loss)
    jv = _jvp(outputs, params, vector)
    hjv = _loss_hessian_product(outputs, jv, loss)
    return _vjp(outputs, params, hjv)


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
) -> tuple[Tensor, list[tuple[int, Tensor, float]], int]:
    """Minimise q(x) = 1/2 x^T A x - b^T x by (preconditioned) conjugate gradient.

    Stops by Martens' relative-progress rule: at iteration i > k with k = max(10, i/10),
    when q(x_i) < 0 and (q(x_i) - q(x_{i-k})) / q(x_i) < k * tol; or after ``max_iters``;
    or when the residual vanishes.

    Args:
        product: v -> A v for flat v (N,) (A symmetric positive definite).
        b: the right-hand side (N,).
        x0: the starting point (N,) (warm start); zero if None.
        max_iters: cap on the iterations.
        tol: Martens' epsilon.
        min_iters: no stop by the progress rule before this iteration.
        preconditioner: the diagonal of M^{-1} (N,), or None.
        keep: iterations whose iterate is stored for backtracking (Martens: i = ceil(1.3^j)).

    Returns:
        ``(x, stored, iterations)``: the last iterate (N,), ``[(i, x_i, q(x_i)), ...]``
        the stored ones (the last always included), and how many iterations ran.

    A non-positive or NaN curvature p^T A p along a search direction stops the
    iteration where it is (a product that overflows cannot make the iterate NaN).

    Raises:
        TypeError: ``product`` or ``keep`` is not callable, ``b``, ``x0`` or
            ``preconditioner`` is not a floating-point tensor, ``product`` returns
            something else than a tensor.
        ValueError: ``b`` is not one-dimensional with N >= 1 or holds NaN or inf, ``x0``
            or ``preconditioner`` is not (N,) of b's dtype or not finite (the
            preconditioner not positive), ``product`` returns another shape or dtype,
            ``max_iters`` or ``min_iters`` is not a positive integer, ``tol`` is not
            positive.
    """
    _checks.function("product", product, "product(v) -> A v")
    b = _flat_tensor("b", b)
    if b.numel() < 1:
        raise ValueError("b must hold at least one element, got an empty tensor")
    if not bool(torch.isfinite(b).all()):
        raise ValueError("b holds NaN or inf: there is no system to solve")
    if x0 is not None:
        x0 = _flat_tensor("x0", x0, like=b)
        if not bool(torch.isfinite(x0).all()):
            raise ValueError("x0 holds NaN or inf: start from a finite point (or None)")
    if preconditioner is not None:
        preconditioner = _flat_tensor("preconditioner", preconditioner, like=b)
        if not bool((torch.isfinite(preconditioner) & (preconditioner > 0)).all()):
            raise ValueError(
                "preconditioner must be the positive, finite diagonal of M^-1, got "
                f"{_checks.shown(preconditioner)} with an element that is not"
            )
    if keep is not None:
        _checks.function("keep", keep, "keep(i) -> bool")
    max_iters = _checks.integer("max_iters", max_iters, 1)
    min_iters = _checks.integer("min_iters", min_iters, 1)
    tol = _checks.real("tol", tol, 0.0, open_low=True)

    def apply(v: Tensor) -> Tensor:
        out = product(v)
        if not isinstance(out, Tensor):
            raise TypeError(f"product must return a tensor (N,), got {_checks.shown(out)}")
        if out.shape != b.shape or out.dtype != b.dtype:
            raise ValueError(
                f"product must return a tensor of b's shape {tuple(b.shape)} and dtype "
                f"{b.dtype}, got {_checks.shown(out)}"
            )
        return out

    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - apply(x)
    m = r if preconditioner is None else r * preconditioner
    p = m.clone()
    rm = torch.dot(r, m)
    values: list[float] = []
    stored: list[tuple[int, Tensor, float]] = []
    i = 0
    for i in range(1, max_iters + 1):
        ap = apply(p)
        curvature = torch.dot(p, ap)
        if not curvature > 0:  # not positive definite along p (or NaN): stop where we are
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
        if not rm_new.abs() >= torch.finfo(b.dtype).tiny:  # vanished (or NaN)
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
    5. the step is each group's ``lr`` times d, and a backtracking line search on its
       size (x 0.8) runs until the loss decreases (Armijo with 1e-2); no step if none
       does: the parameters are then put back bit for bit (``alpha`` 0).

    A loss or gradient that is NaN or inf gives nothing to judge a step by: the step is
    rejected at once (parameters untouched, damping kept, ``alpha`` 0, the CG warm
    start dropped). A direction holding NaN or inf (CG overflowing under a huge
    damping, say) is never tried nor applied.

    The closure contract. ``closure()`` takes no argument and returns ``(loss, outputs)``,
    or ``(loss, outputs, hidden)`` for structural damping: ``loss`` the scalar mean loss
    named by ``loss`` computed from ``outputs`` (any shape; for cross-entropy, the class
    scores on the last dimension), ``hidden`` the hidden states (B, T, H) (for a
    :class:`bptt.SequenceModel`: ``model.predict_with_hidden(x)``), all computed from the
    parameters in the closure, never detached. The closure must not call ``backward()``
    (nor step or change the parameters): the optimizer differentiates what it returns
    itself, several times, and refuses a closure that backpropagates. It is called several
    times per step: once with the autograd graph, once per stored CG iterate tried and
    per line-search trial (under ``torch.no_grad()``) and, with ``module``, once per CG
    iteration (forward mode); so it must compute the same function of the parameters
    each time (the same batch, no dropout). The closure runs where ``bptt.unroll`` with
    ``engine="auto"`` (every model's default) uses the generic autograd engine: the fast
    engine's hand-written backward runs once per forward pass and Hessian-free needs
    more; a model built with ``engine="fast"`` is refused.

    Parameter groups may be several; they are optimised jointly (one damping, one CG
    solve). Each group's ``lr`` scales its part of the step (1.0, the default, is Martens'
    method; ``torch.optim.lr_scheduler`` schedules change it like any optimizer's learning
    rate; the damping still adapts to the unscaled step's reduction ratio). After a step,
    ``self.last`` holds ``grad_norm``, ``cg_iters``, ``cg_chosen`` (the iteration of the
    CG iterate taken), ``damping``, ``rho``, ``alpha`` and the losses before and after.

    Args:
        params: parameters or groups.
        lr: scale on every step, > 0 (per group in the groups' dicts; a scheduler may
            take it down to 0, no step).
        loss: ``"mse"`` or ``"cross_entropy"`` (the loss the closure computes from the
            outputs, for H_L).
        damping: initial lambda, > 0.
        mu: structural damping weight (0: plain Tikhonov damping).
        max_cg: cap on CG iterations per step.
        cg_tol: Martens' stopping tolerance epsilon.
        decay: warm start factor for the previous solution.
        preconditioner: use the diagonal preconditioner.
        module: the module holding ``params`` and called by the closures. Given, J v
            comes from :func:`torch.func.jvp` (forward mode, re-running the curvature
            closure under :func:`torch.func.functional_call`): about 2 gradient costs
            per product against about 4 without (J v then by the double-vjp trick on
            the closure's graph).

    Raises:
        ValueError: a setting is out of range, ``loss`` is unknown, ``module`` does not
            hold the parameters or holds a :class:`bptt.SequenceModel` built with
            ``engine="fast"``.
        TypeError: ``module`` is not an ``nn.Module``.

    Example:
        >>> import torch, bptt
        >>> from bptt.optim import HessianFree
        >>> _ = torch.manual_seed(0)
        >>> model = bptt.SequenceModel(bptt.cells.RNNCell(2, 16), 1)
        >>> x = torch.randn(32, 10, 2)  # (B, T, F)
        >>> y = x.sum(dim=(1, 2)).unsqueeze(1)  # (B, 1)
        >>> def closure():  # returns what HF differentiates; never calls backward()
        ...     prediction = model(x)[0]  # (B, 1)
        ...     return torch.nn.functional.mse_loss(prediction, y), prediction
        >>> hf = HessianFree(model.parameters(), loss="mse")
        >>> scheduler = torch.optim.lr_scheduler.StepLR(hf, step_size=2, gamma=0.5)
        >>> first = hf.step(closure)  # the loss before the step
        >>> hf.last["loss_after"] < float(first)
        True
        >>> scheduler.step()

    References:
        Martens (2010), Deep learning via Hessian-free optimization; Martens & Sutskever
        (2011), Learning recurrent neural networks with Hessian-free optimization.
    """

    def __init__(
        self,
        params,
        lr: float = 1.0,
        loss: str = "mse",
        damping: float = 1.0,
        mu: float = 0.0,
        max_cg: int = 250,
        cg_tol: float = 5e-4,
        decay: float = 0.95,
        preconditioner: bool = False,
        module: nn.Module | None = None,
    ) -> None:
        _check_loss(loss)
        lr = _checks.real("lr", lr, 0.0, open_low=True)
        damping = _checks.real("damping", damping, 0.0, open_low=True)
        cg_tol = _checks.real("cg_tol", cg_tol, 0.0, open_low=True)
        mu = _checks.real("mu", mu, 0.0)
        decay = _checks.real("decay", decay, 0.0, 1.0)
        preconditioner = _checks.flag("preconditioner", preconditioner)
        max_cg = _checks.integer("max_cg", max_cg, 1)
        if module is not None and not isinstance(module, nn.Module):
            raise TypeError(f"module must be an nn.Module or None, got {type(module).__name__}")
        defaults: dict[str, Any] = {
            "lr": lr,
            "damping": damping,
            "mu": mu,
            "max_cg": max_cg,
            "cg_tol": cg_tol,
        }
        defaults.update({"decay": decay, "preconditioner": preconditioner, "loss": loss})
        super().__init__(params, defaults)
        self.last: dict[str, Any] = {}
        self._names: list[str] | None = None
        self._wrapper: _ClosureAsModule | None = None
        if module is not None:
            _refuse_fast(module)
            self._wrapper = _ClosureAsModule(module)
            name_of = {id(p): f"inner.{n}" for n, p in module.named_parameters()}
            missing = [i for i, p in enumerate(self._params()) if id(p) not in name_of]
            if missing:
                raise ValueError(f"module does not hold the parameters at positions {missing}")
            self._names = [name_of[id(p)] for p in self._params()]

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:  # a state saved before groups had a step scale
            group.setdefault("lr", 1.0)

    def _params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"] if p.requires_grad]

    @property
    def _options(self) -> dict[str, Any]:
        return self.param_groups[0]

    def _step_scale(self) -> Tensor | None:
        """Each optimised element's group ``lr``, flat; None where every lr is 1."""
        rates = []
        for index, group in enumerate(self.param_groups):
            lr = group["lr"]
            lr = float(lr) if isinstance(lr, Tensor) and lr.numel() == 1 else lr
            if isinstance(lr, bool) or not isinstance(lr, (int, float)):
                raise TypeError(
                    f"param_groups[{index}]['lr'] must be a number, got {_checks.shown(lr)}"
                )
            if not (lr >= 0 and math.isfinite(lr)):
                raise ValueError(f"param_groups[{index}]['lr'] must be finite and >= 0, got {lr}")
            rates += [(p, lr) for p in group["params"] if p.requires_grad]
        if all(lr == 1 for _, lr in rates):
            return None
        return torch.cat([torch.full_like(p, lr).reshape(-1) for p, lr in rates])

    def step(self, closure: Closure, curvature_closure: Closure | None = None) -> Tensor:  # type: ignore[override]
        """One Hessian-free update.

        Args:
            closure: the gradient batch's loss and outputs, as the class docstring says.
            curvature_closure: the same for the batch the Gauss-Newton products use
                (Martens: a share of the gradient batch); None: ``closure``'s batch.

        Returns:
            The loss before the step, a scalar tensor without graph.

        Raises:
            TypeError: a closure is not callable or returns something else than
                ``(loss, outputs)`` or ``(loss, outputs, hidden)`` tensors.
            ValueError: a closure calls ``backward()``, returns a loss that is no scalar
                or tensors that do not depend on the parameters; with
                ``loss="cross_entropy"``, returns outputs without class scores on their
                last dimension or a loss that is no softmax cross-entropy of them (a
                regression closure); a group's ``lr`` is negative or not finite. Raised
                before any parameter changes.
        """
        _checks.function("closure", closure, _CLOSURE)
        if curvature_closure is not None:
            _checks.function("curvature_closure", curvature_closure, _CLOSURE)
        params = self._params()
        opts = self._options
        scale = self._step_scale()
        loss, outputs, hidden = self._evaluate(closure, graph=True)
        g = _flat(_vjp(loss, params)).detach()
        base = float(loss.detach())
        damping = opts["damping"]
        # nothing to judge a step by: the parameters stay exactly as they are
        if not (math.isfinite(base) and bool(torch.isfinite(g).all())):
            self._forget_solution(params)
            self._record(g, 0, 0, damping, math.nan, 0.0, base, base)
            return loss.detach()
        if curvature_closure is not None:
            product = self._curvature(curvature_closure, "curvature_closure")
        else:  # the gradient batch's graph serves
            product = self._product(closure, outputs, hidden)

        previous = [self.state[p].get("cg_solution") for p in params]
        x0 = None
        if all(s is not None for s in previous):
            x0 = opts["decay"] * _flat(previous)
        pre = None
        if opts["preconditioner"]:  # kept positive: g^2 + damping may overflow float32
            pre = (g.square() + damping).pow(-0.75).clamp_min(torch.finfo(g.dtype).tiny)
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
        if bool(torch.isfinite(solution).all()):
            for p, s in zip(params, _split(solution.detach(), params), strict=True):
                self.state[p]["cg_solution"] = s.clone()
        else:  # a warm start from it would poison every later solve
            self._forget_solution(params)
        # a direction holding NaN or inf is never tried, let alone applied
        stored = [entry for entry in stored if bool(torch.isfinite(entry[1]).all())]
        if not stored:
            self._record(g, iterations, 0, damping, -math.inf, 0.0, base, base)
            return loss.detach()
        start = [p.detach().clone() for p in params]

        def loss_at(direction: Tensor, size: float = 1.0) -> float:
            with torch.no_grad():
                for p, p0, d in zip(params, start, _split(direction, params), strict=True):
                    p.copy_(p0 + size * d)
                value = float(self._evaluate(closure, graph=False)[0])
            return value

        try:  # a trial that raises leaves the parameters as they were too
            # backtracking over the stored CG iterates, from the last
            chosen_at, chosen, q = stored[-1]
            chosen_loss = loss_at(chosen)
            for at, candidate, model_value in reversed(stored[:-1]):
                value = loss_at(candidate)
                if not value < chosen_loss:
                    break
                chosen_at, chosen, chosen_loss, q = at, candidate, value, model_value
            # reduction ratio: the actual decrease against the damped quadratic model's
            rho = (chosen_loss - base) / q if q < 0 and math.isfinite(chosen_loss) else -math.inf
            if rho < 0.25:
                opts["damping"] = damping * 1.5
            elif rho > 0.75:
                opts["damping"] = damping * 2 / 3
            # line search on the size of the step, each group's part scaled by its lr
            if scale is None:
                value = chosen_loss
            else:
                chosen = chosen * scale
                value = loss_at(chosen)
            alpha, slope = 1.0, float(torch.dot(g, chosen))
            while not value <= base + 1e-2 * alpha * slope and alpha > 1e-4:
                alpha *= 0.8
                value = loss_at(chosen, alpha)
            # a direction of zeros is no step either (and must not turn -0.0 into 0.0)
            accepted = value <= base + 1e-2 * alpha * slope and bool(chosen.any())
            with torch.no_grad():
                for p, p0, d in zip(params, start, _split(chosen, params), strict=True):
                    # a rejected step puts back the very values it started from (p0 + 0 * d
                    # would differ: -0.0 becomes 0.0, and NaN or inf in d would spread)
                    p.copy_(p0 + alpha * d if accepted else p0)
        except BaseException:
            opts["damping"] = damping
            with torch.no_grad():
                for p, p0 in zip(params, start, strict=True):
                    p.copy_(p0)
            for p, s in zip(params, previous, strict=True):  # and the warm start it had
                if s is None:
                    self.state[p].pop("cg_solution", None)
                else:
                    self.state[p]["cg_solution"] = s
            raise
        if not accepted:
            alpha, value = 0.0, base
        self._record(g, iterations, chosen_at, opts["damping"], rho, alpha, base, value)
        return loss.detach()

    def _forget_solution(self, params: list[Tensor]) -> None:
        """Drop the stored CG solution: the next step starts its solve from zero."""
        for p in params:
            self.state[p].pop("cg_solution", None)

    def _record(
        self,
        g: Tensor,
        iterations: int,
        chosen_at: int,
        damping: float,
        rho: float,
        alpha: float,
        before: float,
        after: float,
    ) -> None:
        """``self.last``, and the damping shared by every group."""
        for group in self.param_groups[1:]:
            group["damping"] = self._options["damping"]
        self.last = {
            "grad_norm": float(torch.linalg.vector_norm(g)),
            "cg_iters": iterations,
            "cg_chosen": chosen_at,
            "damping": damping,
            "rho": rho,
            "alpha": alpha,
            "loss_before": before,
            "loss_after": after,
        }

    def curvature_product(self, closure: Closure) -> Callable[[Tensor], Tensor]:
        """v -> (G + lambda I + lambda mu S) v on the closure's batch, at the current
        parameters and damping: the matrix conjugate gradient sees, never built.

        v and the result are flat, (N,) for N the number of optimised elements (in
        parameter-group order). The closure runs once now (and, with ``module``, once
        per product in forward mode).
        """
        _checks.function("closure", closure, _CLOSURE)
        return self._curvature(closure, "closure")

    def _curvature(self, closure: Closure, name: str) -> Callable[[Tensor], Tensor]:
        _, outputs, hidden = self._evaluate(closure, graph=True, name=name)
        return self._product(closure, outputs, hidden)

    def _product(
        self, closure: Closure, outputs: Tensor, hidden: Tensor | None
    ) -> Callable[[Tensor], Tensor]:
        params, opts = self._params(), self._options
        damping, mu = opts["damping"], opts["mu"]
        structural = mu > 0 and hidden is not None
        tangents_of = self._forward_mode(closure, params)
        c_outputs, c_hidden = outputs, hidden if structural else None

        def product(v: Tensor) -> Tensor:
            parts = _split(v, params)
            if tangents_of is None:  # reverse mode only: J v by the double-vjp trick
                gv = _flat(gauss_newton_product(c_outputs, params, parts, opts["loss"]))
                out = gv + damping * v
                if c_hidden is not None:  # structural damping
                    sv = _flat(gauss_newton_product(c_hidden, params, parts, "mse"))
                    out = out + damping * mu * sv * c_hidden.numel() / 2  # J_h^T J_h v
                return out
            # forward mode: J v (and J_h v) by one jvp, then one vjp for both terms
            tangents = tangents_of(parts)
            targets = [c_outputs]
            cotangents = [_loss_hessian_product(c_outputs, tangents[0], opts["loss"])]
            if c_hidden is not None:  # structural damping
                targets.append(c_hidden)
                cotangents.append(damping * mu * tangents[1])  # J_h^T J_h v
            return _flat(_vjp(targets, params, cotangents)) + damping * v

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
            return torch.func.functional_call(wrapper, values, (closure,))

        def tangents_of(parts: list[Tensor]) -> tuple[Tensor, ...]:
            tangents = dict(zip(names, parts, strict=True))
            # torch's first forward-mode call loads decompositions through the deprecated
            # torch.jit.script and warns about it: torch's business, not the caller's
            with torch.no_grad(), warnings.catch_warnings(), _generic_unrolls():
                warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated")
                return torch.func.jvp(outputs_of, (primals,), (tangents,))[1]

        return tangents_of

    def _evaluate(
        self, closure: Closure, graph: bool, name: str = "closure"
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """The closure's ``(loss, outputs, hidden or None)``, checked; with ``graph``,
        under grad mode and watching that it does not backpropagate itself."""
        if not graph:
            with torch.no_grad(), _generic_unrolls():
                return _checked(closure(), name, graph)
        backpropagated: list[Tensor] = []
        hooks = [
            p.register_post_accumulate_grad_hook(backpropagated.append) for p in self._params()
        ]
        try:
            with torch.enable_grad(), _generic_unrolls():
                result = closure()
        finally:
            for hook in hooks:
                hook.remove()
        if backpropagated:
            raise ValueError(
                f"{name} called backward() (the gradients of {len(backpropagated)} parameter "
                f"tensors were accumulated): HessianFree differentiates what the closure "
                f"returns itself, several times; return (loss, outputs) without calling "
                f"backward()"
            )
        checked = _checked(result, name, graph)
        if self._options["loss"] == "cross_entropy":
            _check_cross_entropy(name, checked[0], checked[1])
        return checked


def _checked(result: Any, name: str, graph: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(loss, outputs, hidden or None)`` from what a closure returned, or a clear error."""
    if not isinstance(result, tuple) or len(result) not in (2, 3):
        got = f"a tuple of {len(result)}" if isinstance(result, tuple) else type(result).__name__
        raise TypeError(
            f"{name} must return (loss, outputs) or (loss, outputs, hidden), got {got} "
            f"(it must not call backward() either: HessianFree differentiates the outputs)"
        )
    labels = ("loss", "outputs", "hidden")
    for label, value in zip(labels[: len(result)], result, strict=True):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} returned a {type(value).__name__} as {label}, not a tensor")
    loss, outputs = result[0], result[1]
    if loss.numel() != 1:
        raise ValueError(f"{name}'s loss must be a scalar, got shape {tuple(loss.shape)}")
    if graph:
        for label, value in zip(labels[: len(result)], result, strict=True):
            if not value.requires_grad:
                raise ValueError(
                    f"{name}'s {label} does not depend on the parameters (computed under "
                    f"torch.no_grad() or detached?): HessianFree differentiates it"
                )
    return loss, outputs, result[2] if len(result) == 3 else None


def _refuse_fast(module: nn.Module) -> None:
    """A SequenceModel built with engine="fast" (or "triton", the same hand-written
    backward) cannot give Hessian-free its products."""
    for name, sub in module.named_modules():
        if isinstance(sub, SequenceModel) and sub.engine in ("fast", "triton"):
            where = f"module.{name}" if name else "module"
            raise ValueError(
                f"{where} is a SequenceModel built with engine={sub.engine!r}: {_WHY_GENERIC}; "
                f"build it with engine='auto' (the default) or 'generic'"
            )

"""A fixed random reservoir of leaky tanh units (the echo state network's hidden layer)."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import scipy.sparse as sparse
import scipy.sparse.linalg
import torch
from scipy.sparse.csgraph import connected_components
from threadpoolctl import threadpool_limits
from torch import Tensor

from bptt import _checks

__all__ = ["NilpotentError", "Reservoir"]

# A W with at most this share of nonzeros runs as a sparse matrix (the compiled loop for
# one series, torch's CSR product for a batch); a denser one as a dense matrix (BLAS).
_SPARSE_BELOW = 0.3

# W is held as a dense (N, N) array (80 GB at this N in float64), W_in as (N, F)
_MAX_UNITS = 100_000
_MAX_INPUTS = 1_000_000

# In-place activations for the batch loop (torch), matching the compiled ones.
_TORCH_ACTIVATIONS: dict[str, Callable[[Tensor], object]] = {
    "tanh": Tensor.tanh_,
    "identity": lambda v: v,
    "relu": Tensor.relu_,
    "sigmoid": Tensor.sigmoid_,
}


class NilpotentError(ValueError):
    """The drawn W has no cycle (it is nilpotent), so no scaling gives it a spectral radius."""


def _float_dtype(name: str, value: object) -> torch.dtype:
    if not isinstance(value, torch.dtype):
        raise TypeError(
            f"{name} must be torch.float32 or torch.float64, got {_checks.shown(value)}"
        )
    if value not in (torch.float32, torch.float64):
        raise ValueError(f"{name} must be torch.float32 or torch.float64, got {value}")
    return value


def _spectral_radius(matrix: np.ndarray) -> float:
    """The largest |eigenvalue|: by ARPACK for large sparse matrices (about 0.1 s instead
    of 0.5 s at N = 1000), else dense.

    A random matrix's eigenvalues fill a disk, so several lie within a fraction of a
    percent of the largest modulus: asked for one eigenvalue (k=1, the default subspace),
    ARPACK returned one up to 1.2% short of the radius for 4 of 6 matrices at N = 1000.
    Six eigenvalues from a 60-vector subspace matched the dense result to 3e-14 on all
    56 matrices tried (N = 300 and 1000, 1 to 100 nonzeros a row); with ARPACK's
    tolerance at 1e-10 instead of machine precision, to 2e-12 on 50 such matrices in
    0.6x the time (four eigenvalues from 30 vectors missed by 0.6%). One BLAS thread:
    the products are small, and OpenBLAS's idle threads keep spinning after a call,
    slowing whatever runs next on a small machine.
    """
    n = matrix.shape[0]
    # below two nonzeros a row the matrix is near nilpotent, where ARPACK's answer was
    # seen to be spurious (a nonzero radius for a nilpotent W): dense there
    if n > 200 and np.count_nonzero(matrix) >= 2 * n:
        try:
            with threadpool_limits(1, user_api="blas"):
                values = scipy.sparse.linalg.eigs(
                    sparse.csr_matrix(matrix),
                    k=6,
                    ncv=min(60, n - 1),
                    which="LM",
                    tol=1e-10,
                    v0=np.random.default_rng(0).standard_normal(n),  # the same W per seed
                    return_eigenvectors=False,
                )
            return float(np.abs(values).max())
        except scipy.sparse.linalg.ArpackNoConvergence:
            pass
    return float(np.abs(np.linalg.eigvals(matrix)).max())


class Reservoir:
    r"""Leaky units driven by a fixed random recurrent matrix.

    .. math::
        x_t = (1 - a)\, x_{t-1} + a\, f(W_{in} u_t + W x_{t-1} + b)

    ``W`` is sparse (N(0, 1) entries with probability ``density``), rescaled to an exact
    spectral radius; ``W_in`` has Bernoulli +-1 entries with probability
    ``input_density``, times ``input_scaling``; ``b`` is ``bias`` (a number for every
    unit, or a vector). The names follow ReservoirPy's ``Reservoir`` where the meaning
    is the same: ``units`` = units, ``spectral_radius`` = ``sr``, ``leak_rate`` =
    ``lr``, ``input_scaling`` = input_scaling, ``density`` = ``rc_connectivity``,
    ``input_density`` = ``input_connectivity``, ``bias`` = bias, ``activation`` =
    activation, ``W``/``W_in``/``bias`` = ``W``/``Win``/``bias``.

    Args:
        units: N (at most 100,000: W is also held as a dense array).
        spectral_radius: the exact largest |eigenvalue| of the generated W.
        leak_rate: a in (0, 1].
        input_scaling: scale of W_in.
        density: share of nonzero entries of the generated W.
        input_density: share of nonzero entries of the generated W_in.
        bias: a number (the same for every unit) or a vector (N,).
        activation: ``tanh``, ``identity``, ``relu`` or ``sigmoid``.
        seed: seeds W and W_in.
        dtype: ``torch.float64`` or ``torch.float32`` for the states.
        W, W_in: explicit matrices (N, N) and (N, F) instead of generated ones
            (tensors, NumPy arrays or scipy sparse matrices).
        input_size: F (else known at the first run, or from ``W_in``).

    Raises:
        TypeError: an argument of the wrong kind (units not an int, W a list, ...).
        ValueError: a value out of range, W or W_in of the wrong shape or holding NaN
            or inf, or a drawn W with no cycle (:class:`NilpotentError`: it has spectral
            radius 0 and cannot be scaled; raise ``density`` or ``units``).

    The state is carried between calls of :meth:`run` (a long stream in chunks) until
    :meth:`reset`.

    Speed: one series through a sparse W (at most 30% nonzeros) runs in a compiled
    loop (numba; compiled on first use, cached on disk); a batch runs one matrix
    product a step over all its series (torch). Both use ``torch.get_num_threads()``
    threads. States agree with the update computed step by step up to rounding
    (about 1e-15 in float64; the tests bound it step by step): sums are reassociated
    and tanh is a vectorised series (within 3-92 u of the true tanh).
    A process forked after the compiled loop ran uses a one-thread build of it (GNU
    OpenMP does not survive a fork); torch's own threads have the same limit, so
    prefer spawn.
    """

    def __init__(
        self,
        units: int,
        spectral_radius: float = 1.0,
        leak_rate: float = 1.0,
        input_scaling: float = 1.0,
        density: float = 0.1,
        input_density: float = 0.1,
        bias: float | np.ndarray | Tensor = 0.0,
        activation: str = "tanh",
        seed: int | None = None,
        dtype: torch.dtype = torch.float64,
        *,
        W: np.ndarray | Tensor | None = None,
        W_in: np.ndarray | Tensor | None = None,
        input_size: int | None = None,
    ) -> None:
        units = _checks.integer("units", units, 1, _MAX_UNITS)
        self.units = units
        self.leak_rate = _checks.real("leak_rate", leak_rate, 0.0, 1.0, open_low=True)
        self.spectral_radius = _checks.real("spectral_radius", spectral_radius, 0.0)
        self.input_scaling = _checks.real("input_scaling", input_scaling)
        self.density = _checks.real("density", density, 0.0, 1.0, open_low=True)
        self.input_density = _checks.real("input_density", input_density, 0.0, 1.0, open_low=True)
        self.activation = _checks.choice("activation", activation, tuple(_TORCH_ACTIVATIONS))
        self.dtype = _float_dtype("dtype", dtype)
        self._np_dtype = np.float64 if self.dtype == torch.float64 else np.float32
        self._rng = np.random.default_rng(_checks.seed("seed", seed))
        if input_size is not None:
            input_size = _checks.integer("input_size", input_size, 1, _MAX_INPUTS)
        w_rng, in_rng = self._rng.spawn(2)
        self._set_w(
            self._as_array(W, (units, units), "W") if W is not None else self._generate_w(w_rng)
        )
        self._in_rng = in_rng
        self.W_in = None
        if W_in is not None:
            self.W_in = self._as_array(W_in, (units, None), "W_in")
            if input_size is not None and self.W_in.shape[1] != input_size:
                raise ValueError(
                    f"input_size ({input_size}) disagrees with W_in's {self.W_in.shape[1]} columns"
                )
        elif input_size is not None:
            self.W_in = self._generate_w_in(input_size)
        if isinstance(bias, (Tensor, np.ndarray)):
            bias_array = _checks.array("bias", bias)
        else:
            bias_array = np.asarray(_checks.real("bias", bias))
        if bias_array.ndim == 0:
            bias_array = np.full(units, float(bias_array))
        if bias_array.shape != (units,):
            raise ValueError(
                f"bias must be a number or have shape ({units},), got {bias_array.shape}"
            )
        self.bias = bias_array.astype(self._np_dtype)
        if not np.isfinite(self.bias).all():
            raise ValueError(f"bias is beyond {self.dtype}'s range")
        self.state: np.ndarray | None = None  # (B, N), carried between calls

    # --- weights ---------------------------------------------------------------------

    def _as_array(self, value, shape, name) -> np.ndarray:
        array = _checks.array(name, value, self._np_dtype, sparse_ok=True)
        if (
            array.ndim != 2
            or array.shape[0] != shape[0]
            or (shape[1] and array.shape[1] != shape[1])
            or array.shape[1] == 0
        ):
            expected = f"({shape[0]}, {shape[1] if shape[1] else 'F >= 1'})"
            raise ValueError(f"{name} must have shape {expected}, got {array.shape}")
        return array

    def _set_w(self, w: np.ndarray) -> None:
        """Take W (N, N) in the reservoir's dtype, and its sparse forms for the loops."""
        self.W = w
        self._csr = None  # W as (indptr, indices, values) for the compiled loop
        self._torch_csr: Tensor | None = None  # and as a torch tensor, once needed
        if np.count_nonzero(w) <= _SPARSE_BELOW * w.size:
            csr = sparse.csr_matrix(w)
            self._csr = (csr.indptr.astype(np.uint32), csr.indices.astype(np.uint32), csr.data)

    def _generate_w(self, rng: np.random.Generator) -> np.ndarray:
        mask = rng.random((self.units, self.units)) < self.density
        w = np.zeros((self.units, self.units))
        w[mask] = rng.standard_normal(int(np.count_nonzero(mask)))  # values for nonzeros only
        if self.spectral_radius == 0:
            return np.zeros_like(w, dtype=self._np_dtype)
        # W is nilpotent (radius 0, so no scaling reaches the asked radius) when the graph
        # of its nonzeros has no cycle: no self-loop and no strongly connected pair. A W
        # with a cycle and radius 0 needs its random values to cancel (probability 0).
        cycle = bool(np.any(np.diagonal(w))) or (
            connected_components(sparse.csr_matrix(w), directed=True, connection="strong")[0]
            < self.units
        )
        radius = _spectral_radius(w) if cycle else 0.0
        if radius == 0:
            raise NilpotentError(
                f"density {self.density:g} leaves W with no cycle at units {self.units} "
                f"({int(mask.sum())} nonzeros drawn): it is nilpotent (spectral radius 0) "
                "and cannot be scaled to a spectral radius; raise density or units"
            )
        return self._finite(
            (w * (self.spectral_radius / radius)).astype(self._np_dtype), "spectral_radius"
        )

    def _finite(self, array: np.ndarray, name: str) -> np.ndarray:
        """``array``, refused if the value of ``name`` made it overflow the dtype."""
        if not np.isfinite(array).all():
            raise ValueError(
                f"{name} {getattr(self, name)!r} makes weights beyond {self.dtype}'s range"
            )
        return array

    def _generate_w_in(self, input_size: int) -> np.ndarray:
        signs = self._in_rng.choice([-1.0, 1.0], size=(self.units, input_size))
        mask = self._in_rng.random((self.units, input_size)) < self.input_density
        weights = (signs * mask * self.input_scaling).astype(self._np_dtype)
        return self._finite(weights, "input_scaling")

    # --- running ---------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the carried state: the next run starts from zeros."""
        self.state = None

    def run(
        self, x: Tensor | np.ndarray, lengths: Tensor | None = None, *, reset: bool = False
    ) -> Tensor:
        """States of the reservoir driven by x (B, T, F): a tensor (B, T, N).

        The state carries on from the previous call (a stream in chunks) unless
        ``reset`` or the batch size changes. With ``lengths`` (B,), series b has only
        ``lengths[b]`` valid steps: its state stops there (it is not driven by the
        padding) and its states after it are zero; a carried state is then not kept.

        Args:
            x: (B, T, F) real numbers, a tensor or NumPy array; B, T, F >= 1.
            lengths: (B,) integers in 1..T, or None (every series has T steps).
            reset: start from zeros instead of the carried state.

        Raises:
            TypeError: x or lengths is not an array of real numbers (integers for
                lengths), or reset is not a bool.
            ValueError: x is not (B, T, F) with F the reservoir's input size, or holds
                NaN or inf, or lengths do not fit, or a hand-set ``state`` is not (B, N).
        """
        reset = _checks.flag("reset", reset)
        data, valid = self._prepare(x, lengths)
        batch, steps, _ = data.shape
        carried = self.state
        if carried is not None and not reset and valid is None:
            carried = np.asarray(carried, dtype=self._np_dtype)  # a hand-set state too
            if carried.ndim != 2 or carried.shape[1] != self.units:
                raise ValueError(
                    f"state must have shape (B, {self.units}), got {carried.shape}; "
                    "call reset() or pass reset=True"
                )
        if reset or carried is None or carried.shape[0] != batch or valid is not None:
            state = np.zeros((batch, self.units), dtype=self._np_dtype)
        else:
            state = carried
        # zeroed here, not lazily (np.zeros): the pages are then faulted in by one thread
        # up front instead of inside the per-step parallel loop, where each fault held up
        # both threads (median 0.535 s against 0.601 s for 10,000 steps at N = 1000)
        states = np.empty((batch, steps, self.units), dtype=self._np_dtype)
        states.fill(0.0)
        final = self._drive(data, valid, state, states_out=states)
        if valid is None:
            self.state = final
        return torch.from_numpy(states)

    def features(self, x: Tensor, lengths: Tensor | None = None, reduce: str = "mean") -> Tensor:
        """One feature vector per series, (B, T, F) -> (B, N), without keeping the states.

        Equals ``series_features(run(x, lengths, reset=True), lengths, reduce)`` (up to
        rounding) in O(B N) memory instead of O(B T N): ``"mean"`` averages each series'
        states over its valid steps, ``"last"`` takes its last valid state. Every series
        starts from zeros; the carried state of :meth:`run` is left as it was.

        Args:
            x: (B, T, F), as in :meth:`run`.
            lengths: (B,) or None, as in :meth:`run`.
            reduce: ``"mean"`` or ``"last"``.

        Returns:
            A tensor (B, N) in the reservoir's dtype.

        Raises:
            TypeError, ValueError: as :meth:`run`, or ``reduce`` is not ``mean`` or
                ``last``.
        """
        reduce = _checks.choice("reduce", reduce, ("mean", "last"))
        data, valid = self._prepare(x, lengths)
        batch, steps, _ = data.shape
        start = np.zeros((batch, self.units), dtype=self._np_dtype)
        if reduce == "last":  # a series' state stops changing at its end
            return torch.from_numpy(self._drive(data, valid, start))
        total = np.zeros((batch, self.units), dtype=self._np_dtype)
        self._drive(data, valid, start, sums_out=total)
        counts = np.full(batch, steps) if valid is None else valid
        return torch.from_numpy(total / counts[:, None].astype(self._np_dtype))

    def _prepare(
        self, x: Tensor | np.ndarray, lengths: Tensor | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """x as an array (B, T, F) checked against W_in (drawn now if still unknown),
        and the valid lengths (B,) or None."""
        data = self._inputs(x)
        batch, steps, features = data.shape
        valid = _checks.lengths("lengths", lengths, batch, steps)
        if self.W_in is not None and self.W_in.shape[1] != features:
            raise ValueError(
                f"x has {features} features per step but W_in expects {self.W_in.shape[1]}: "
                f"expected (B, T, {self.W_in.shape[1]}), got {tuple(x.shape)}"
            )
        if self.W_in is None:
            self.W_in = self._generate_w_in(features)
        return data, valid

    def _drive(
        self,
        data: np.ndarray,
        valid: np.ndarray | None,
        state: np.ndarray,
        states_out: np.ndarray | None = None,
        sums_out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Drive a batch (B, T, F) from ``state`` (B, N); returns the final states
        (B, N), each series' taken at its own last valid step. Every state goes to
        ``states_out`` (B, T, N) and each series' sum of states to ``sums_out`` (B, N)
        when given; ``state`` is not changed.

        One series through a sparse W runs in the compiled loop; a batch (or a dense W)
        runs one matrix product a step over the whole batch (:meth:`_drive_batch`).
        """
        batch, steps, _ = data.shape
        if batch > 1 or self._csr is None:
            return self._drive_batch(data, valid, state, states_out, sums_out)
        from bptt.reservoir import _kernels  # numba takes 0.8 s to import: only when used

        steps = steps if valid is None else int(valid[0])
        final = state[0].astype(self._np_dtype)  # a copy, in the reservoir's dtype
        unused = np.empty((0, 0), dtype=self._np_dtype)
        _kernels.run_one(
            *self._csr, self.W_in, self.bias, data[0, :steps], self.leak_rate,
            _kernels.ACTIVATION_CODES[self.activation], final,
            states_out[0, :steps] if states_out is not None else unused,
            sums_out[0] if sums_out is not None else unused.ravel(), states_out is not None,
        )  # fmt: skip
        return final[None]

    def _drive_batch(
        self,
        data: np.ndarray,
        valid: np.ndarray | None,
        state: np.ndarray,
        states_out: np.ndarray | None,
        sums_out: np.ndarray | None,
    ) -> np.ndarray:
        """:meth:`_drive` by one matrix product a step over the whole batch (torch):
        W sparse (CSR) or dense as built, times the states stored (N, B), so the
        product runs along contiguous rows of series. The series run longest first,
        so step t works on the leading ``active`` columns; results go back to the
        batch's order at the end."""
        batch, steps, _ = data.shape
        lengths = np.full(batch, steps) if valid is None else valid
        order = np.argsort(-lengths, kind="stable")
        lengths = lengths[order]
        inputs = torch.from_numpy(np.ascontiguousarray(data[order].transpose(1, 2, 0)))
        current = torch.from_numpy(np.ascontiguousarray(state[order].T))  # (N, B)
        matrix, w_in = self._recurrent_matrix(), torch.from_numpy(self.W_in)
        bias, activate = torch.from_numpy(self.bias)[:, None], _TORCH_ACTIVATIONS[self.activation]
        total = torch.zeros_like(current) if sums_out is not None else None
        recorded = torch.from_numpy(states_out) if states_out is not None else None
        rows = torch.from_numpy(order)
        from_zero = not state.any()  # then the first step has no recurrent term
        for t in range(steps):
            active = int(np.count_nonzero(lengths > t))
            if active == 0:
                break
            s = current[:, :active]
            # (b + W_in u) + W x: one pass fewer over (N, active) than ReservoirPy's order
            pre = torch.addmm(bias, w_in, inputs[t, :, :active])
            if t > 0 or not from_zero:  # W 0 = 0: one product in T fewer from a zero state
                pre = torch.addmm(pre, matrix, s)
            activate(pre)
            s.lerp_(pre, self.leak_rate)  # (1 - a) x + a f(...)
            if total is not None:
                total[:, :active] += s
            if recorded is not None:
                recorded[rows[:active], t] = s.t()
        if sums_out is not None:
            assert total is not None  # made for sums_out
            sums_out[order] += total.numpy().T
        final = np.empty_like(state)
        final[order] = current.numpy().T
        return final

    def _recurrent_matrix(self) -> Tensor:
        """W for the batch loop: a torch CSR tensor when sparse (built once), else a
        dense view.

        The indices are int32 where they fit: torch's product hands int32 indices to
        MKL, and converted int64 ones on every call (50-75 us a step at N = 500, 2-5% of
        a Japanese Vowels run).
        """
        if self._csr is None:
            return torch.from_numpy(self.W)
        if self._torch_csr is None:
            indptr, indices, values = self._csr
            index_type = np.int32 if indptr[-1] < np.iinfo(np.int32).max else np.int64
            with warnings.catch_warnings():  # torch calls its CSR support beta
                warnings.simplefilter("ignore", UserWarning)
                self._torch_csr = torch.sparse_csr_tensor(
                    torch.from_numpy(indptr.astype(index_type)),
                    torch.from_numpy(indices.astype(index_type)),
                    torch.from_numpy(values),
                    size=self.W.shape,
                )
        return self._torch_csr

    def _inputs(self, x: Tensor | np.ndarray) -> np.ndarray:
        if not isinstance(x, (Tensor, np.ndarray)):
            raise TypeError(f"x must be a tensor or array (B, T, F), got {type(x).__name__}")
        if x.ndim != 3 or 0 in x.shape:
            raise ValueError(f"x must have shape (B, T, F) with B, T, F >= 1, got {tuple(x.shape)}")
        return _checks.array("x", x, self._np_dtype, axes=("series", "step", "feature"))

    def weights(self) -> dict[str, Tensor]:
        """W (N, N), W_in (N, F) and bias (N,) as tensors."""
        out = {"W": torch.from_numpy(self.W), "bias": torch.from_numpy(self.bias)}
        if self.W_in is not None:
            out["W_in"] = torch.from_numpy(self.W_in)
        return out

    # --- saving, loading, converting -------------------------------------------------

    def state_dict(self) -> dict[str, Tensor]:
        """The reservoir's arrays as tensors, sharing memory with it (as
        ``nn.Module.state_dict`` does).

        Returns:
            ``W`` (N, N), ``bias`` (N,), ``W_in`` (N, F) once given or drawn, and
            ``state`` (B, N) while a state is carried: tensors only, so a saved one loads
            with ``torch.load(path, weights_only=True)``. The settings (``leak_rate``,
            ``activation``, ...) are the constructor's and are not in it.

        Example:
            >>> source = Reservoir(20, 0.9, 0.5, seed=0)
            >>> x = torch.rand(1, 5, 2, dtype=torch.float64)
            >>> states = source.run(x)
            >>> twin = Reservoir(20, leak_rate=0.5, seed=1).load_state_dict(source.state_dict())
            >>> torch.equal(twin.run(x), source.run(x))
            True
        """
        out = self.weights()
        if self.state is not None:
            out["state"] = torch.from_numpy(np.asarray(self.state, dtype=self._np_dtype))
        return out

    def load_state_dict(self, state_dict: dict[str, Tensor]) -> Reservoir:
        """Take the arrays of :meth:`state_dict` (copied, in this reservoir's dtype).

        A dict without ``W_in`` leaves W_in to be drawn at the first run (from this
        reservoir's seed); one without ``state`` starts the next run from zeros.

        Args:
            state_dict: ``W`` (N, N) and ``bias`` (N,) with N this reservoir's units,
                optionally ``W_in`` (N, F) and ``state`` (B, N).

        Returns:
            This reservoir.

        Raises:
            TypeError: state_dict is not a dict of tensors or arrays.
            ValueError: a key is missing or unknown, or an array has the wrong shape or
                holds NaN or inf.
        """
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        unknown = sorted(str(k) for k in state_dict if k not in ("W", "W_in", "bias", "state"))
        missing = [k for k in ("W", "bias") if k not in state_dict]
        if unknown or missing:
            raise ValueError(
                f"state_dict must have keys W and bias (W_in and state optional); "
                f"missing {missing}, unexpected {unknown}"
            )
        n = self.units
        w = self._as_array(state_dict["W"], (n, n), "state_dict['W']")
        bias = _checks.array("state_dict['bias']", state_dict["bias"], self._np_dtype)
        if bias.shape != (n,):
            raise ValueError(f"state_dict['bias'] must have shape ({n},), got {bias.shape}")
        w_in: Tensor | np.ndarray | None = state_dict.get("W_in")
        if w_in is not None:
            w_in = self._as_array(w_in, (n, None), "state_dict['W_in']")
        state: Tensor | np.ndarray | None = state_dict.get("state")
        if state is not None:
            state = _checks.array("state_dict['state']", state, self._np_dtype)
            if state.ndim != 2 or state.shape[0] < 1 or state.shape[1] != n:
                raise ValueError(f"state_dict['state'] must have shape (B, {n}), got {state.shape}")
        self._set_w(w)
        self.W_in, self.bias, self.state = w_in, bias, state
        return self

    def to(
        self,
        device: str | torch.device | torch.dtype | None = None,
        dtype: torch.dtype | None = None,
    ) -> Reservoir:
        """Convert the weights and the carried state to ``dtype``; returns self.

        The reservoir computes with NumPy and numba on the CPU: ``device`` may only be
        the CPU. As with ``nn.Module.to``, a dtype may be given in the first place.
        Converting float64 to float32 gives the weights a float32 reservoir of the same
        seed draws; converting back keeps their float32 values.

        Raises:
            TypeError: device is not a device or string, or dtype not a torch.dtype.
            ValueError: device is not the CPU, or dtype not float32 or float64.
        """
        if isinstance(device, torch.dtype) and dtype is None:
            device, dtype = None, device
        if device is not None:
            if not isinstance(device, (str, torch.device)):
                raise TypeError(
                    f"device must be a string or torch.device, got {_checks.shown(device)}"
                )
            try:
                kind = torch.device(device).type
            except RuntimeError as err:
                raise ValueError(f"device: not a torch device: {device!r}") from err
            if kind != "cpu":
                raise ValueError(
                    f"device must be the CPU (the reservoir computes with NumPy and numba), "
                    f"got {device!r}"
                )
        if dtype is None or _float_dtype("dtype", dtype) == self.dtype:
            return self
        self.dtype = dtype
        self._np_dtype = np.float64 if dtype == torch.float64 else np.float32
        self._set_w(self.W.astype(self._np_dtype))
        self.bias = self.bias.astype(self._np_dtype)
        if self.W_in is not None:
            self.W_in = self.W_in.astype(self._np_dtype)
        if self.state is not None:
            self.state = np.asarray(self.state).astype(self._np_dtype)
        return self

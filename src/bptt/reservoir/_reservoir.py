"""A fixed random reservoir of leaky tanh units (the echo state network's hidden layer)."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import scipy.sparse as sparse
import scipy.sparse.linalg
import torch
from threadpoolctl import threadpool_limits
from torch import Tensor

__all__ = ["Reservoir"]

# A W with at most this share of nonzeros runs as a sparse matrix (the compiled loop for
# one series, torch's CSR product for a batch); a denser one as a dense matrix (BLAS).
_SPARSE_BELOW = 0.3

# In-place activations for the batch loop (torch), matching the compiled ones.
_TORCH_ACTIVATIONS: dict[str, Callable[[Tensor], object]] = {
    "tanh": Tensor.tanh_,
    "identity": lambda v: v,
    "relu": Tensor.relu_,
    "sigmoid": Tensor.sigmoid_,
}


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
        units: N.
        spectral_radius: the exact largest |eigenvalue| of the generated W.
        leak_rate: a in (0, 1].
        input_scaling: scale of W_in.
        density: share of nonzero entries of the generated W.
        input_density: share of nonzero entries of the generated W_in.
        bias: a number (the same for every unit) or a vector (N,).
        activation: ``tanh``, ``identity``, ``relu`` or ``sigmoid``.
        seed: seeds W and W_in.
        dtype: ``torch.float64`` or ``torch.float32`` for the states.
        W, W_in: explicit matrices (N, N) and (N, F) instead of generated ones.
        input_size: F (else known at the first run, or from ``W_in``).

    The state is carried between calls of :meth:`run` (a long stream in chunks) until
    :meth:`reset`.

    Speed: one series through a sparse W (at most 30% nonzeros) runs in a compiled
    loop (numba; compiled on first use, cached on disk); a batch runs one matrix
    product a step over all its series (torch). Both use ``torch.get_num_threads()``
    threads. States agree with the update computed step by step to about 1e-15
    (float64): sums are reassociated and tanh is a vectorised series (within 5e-16).
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
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise ValueError(f"units must be a positive integer, got {units!r}")
        if not 0 < leak_rate <= 1:
            raise ValueError(f"leak_rate must be in (0, 1], got {leak_rate}")
        for name, value in (("density", density), ("input_density", input_density)):
            if not 0 < value <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        if not spectral_radius >= 0:
            raise ValueError(f"spectral_radius must be >= 0, got {spectral_radius}")
        if activation not in _TORCH_ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(_TORCH_ACTIVATIONS)}, got {activation!r}"
            )
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        self.units, self.leak_rate = units, float(leak_rate)
        self.spectral_radius, self.input_scaling = spectral_radius, input_scaling
        self.density, self.input_density = density, input_density
        self.activation, self.dtype = activation, dtype
        self._np_dtype = np.float64 if dtype == torch.float64 else np.float32
        self._rng = np.random.default_rng(seed)
        w_rng, in_rng = self._rng.spawn(2)
        self.W = (
            self._as_array(W, (units, units), "W") if W is not None else self._generate_w(w_rng)
        )
        self._in_rng = in_rng
        self.W_in = None
        if W_in is not None:
            self.W_in = self._as_array(W_in, (units, None), "W_in")
        elif input_size is not None:
            self.W_in = self._generate_w_in(input_size)
        bias_array = np.asarray(
            bias.detach().cpu() if isinstance(bias, Tensor) else bias, dtype=np.float64
        )
        if bias_array.ndim == 0:
            bias_array = np.full(units, float(bias_array))
        if bias_array.shape != (units,):
            raise ValueError(
                f"bias must be a number or have shape ({units},), got {bias_array.shape}"
            )
        self.bias = bias_array.astype(self._np_dtype)
        self._csr = None  # W as (indptr, indices, values) for the compiled loop
        self._torch_csr: Tensor | None = None  # and as a torch tensor, once needed
        if np.count_nonzero(self.W) <= _SPARSE_BELOW * self.W.size:
            csr = sparse.csr_matrix(self.W)
            self._csr = (csr.indptr.astype(np.uint32), csr.indices.astype(np.uint32), csr.data)
        self.state: np.ndarray | None = None  # (B, N), carried between calls

    # --- weights ---------------------------------------------------------------------

    def _as_array(self, value, shape, name) -> np.ndarray:
        array = value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)
        if sparse.issparse(value):
            array = value.toarray()
        if (
            array.ndim != 2
            or array.shape[0] != shape[0]
            or (shape[1] and array.shape[1] != shape[1])
        ):
            expected = f"({shape[0]}, {shape[1] if shape[1] else 'F'})"
            raise ValueError(f"{name} must have shape {expected}, got {array.shape}")
        array = np.ascontiguousarray(array, dtype=self._np_dtype)
        if not np.isfinite(array).all():
            raise ValueError(f"{name} holds NaN or inf")
        return array

    def _generate_w(self, rng: np.random.Generator) -> np.ndarray:
        mask = rng.random((self.units, self.units)) < self.density
        w = np.zeros((self.units, self.units))
        w[mask] = rng.standard_normal(int(np.count_nonzero(mask)))  # values for nonzeros only
        radius = _spectral_radius(w)
        if radius == 0:
            raise ValueError("the generated W is nilpotent (spectral radius 0); raise density")
        return (w * (self.spectral_radius / radius)).astype(self._np_dtype)

    def _generate_w_in(self, input_size: int) -> np.ndarray:
        signs = self._in_rng.choice([-1.0, 1.0], size=(self.units, input_size))
        mask = self._in_rng.random((self.units, input_size)) < self.input_density
        return (signs * mask * self.input_scaling).astype(self._np_dtype)

    # --- running ---------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the carried state: the next run starts from zeros."""
        self.state = None

    def run(self, x: Tensor, lengths: Tensor | None = None, *, reset: bool = False) -> Tensor:
        """States of the reservoir driven by x (B, T, F): a tensor (B, T, N).

        The state carries on from the previous call (a stream in chunks) unless
        ``reset`` or the batch size changes. With ``lengths`` (B,), series b has only
        ``lengths[b]`` valid steps: its state stops there (it is not driven by the
        padding) and its states after it are zero; a carried state is then not kept.

        Raises:
            ValueError: x is not (B, T, F) with F the reservoir's input size, or holds
                NaN or inf, or lengths do not fit.
        """
        data, valid = self._prepare(x, lengths)
        batch, steps, _ = data.shape
        if reset or self.state is None or self.state.shape[0] != batch or valid is not None:
            state = np.zeros((batch, self.units), dtype=self._np_dtype)
        else:
            state = np.asarray(self.state, dtype=self._np_dtype)  # a hand-set state too
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

        Raises:
            ValueError: as :meth:`run`, or ``reduce`` is not ``mean`` or ``last``.
        """
        if reduce not in ("mean", "last"):
            raise ValueError(f"reduce must be 'mean' or 'last', got {reduce!r}")
        data, valid = self._prepare(x, lengths)
        batch, steps, _ = data.shape
        start = np.zeros((batch, self.units), dtype=self._np_dtype)
        if reduce == "last":  # a series' state stops changing at its end
            return torch.from_numpy(self._drive(data, valid, start))
        total = np.zeros((batch, self.units), dtype=self._np_dtype)
        self._drive(data, valid, start, sums_out=total)
        counts = np.full(batch, steps) if valid is None else valid
        return torch.from_numpy(total / counts[:, None].astype(self._np_dtype))

    def _prepare(self, x: Tensor, lengths: Tensor | None) -> tuple[np.ndarray, np.ndarray | None]:
        """x as an array (B, T, F) checked against W_in (drawn now if still unknown),
        and the valid lengths (B,) or None."""
        data = self._inputs(x)
        batch, steps, features = data.shape
        if self.W_in is None:
            self.W_in = self._generate_w_in(features)
        if self.W_in.shape[1] != features:
            raise ValueError(
                f"x has {features} features per step but W_in expects {self.W_in.shape[1]}: "
                f"expected (B, T, {self.W_in.shape[1]}), got {tuple(x.shape)}"
            )
        return data, self._lengths(lengths, batch, steps)

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

    def _inputs(self, x: Tensor) -> np.ndarray:
        if not isinstance(x, Tensor) or x.dim() != 3:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be a tensor of shape (B, T, F), got {shape}")
        data = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=self._np_dtype)
        if not np.isfinite(data).all():
            b, t, f = (int(i) for i in np.argwhere(~np.isfinite(data))[0])
            raise ValueError(f"x holds a non-finite value at series {b}, step {t}, feature {f}")
        return data

    @staticmethod
    def _lengths(lengths: Tensor | None, batch: int, steps: int) -> np.ndarray | None:
        if lengths is None:
            return None
        valid = np.asarray(lengths.cpu() if isinstance(lengths, Tensor) else lengths)
        if valid.shape != (batch,) or (valid < 1).any() or (valid > steps).any():
            raise ValueError(f"lengths must be (B,) = ({batch},) integers in 1..{steps}")
        return valid.astype(np.int64)

    def weights(self) -> dict[str, Tensor]:
        """W (N, N), W_in (N, F) and bias (N,) as tensors."""
        out = {"W": torch.from_numpy(self.W), "bias": torch.from_numpy(self.bias)}
        if self.W_in is not None:
            out["W_in"] = torch.from_numpy(self.W_in)
        return out

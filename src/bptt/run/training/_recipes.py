"""Recipes by name: a cell, its initialisation, the optimizer and clipping that go with it.

``bptt train --method NAME`` (or ``method = "NAME"`` in a config) starts from the
recipe's settings; any field given explicitly overrides them, except the cell.

* ``rnn``: tanh RNN, torch's uniform init; Adam.
* ``rnn-clip``: the same, global norm clipped at 1.
* ``irnn``: ReLU RNN with W_hh = I, input weights from N(0, 0.001^2), biases 0 (Le et
  al. 2015; the initialisation as every re-implementation we could read has it: Keras'
  ``mnist_irnn.py``, Knet.jl's ``examples/adding.jl``); Adam lr 1e-4, clip 1. The
  paper's optimizer settings for the adding problem could not be read from a primary
  source here (the secondary ones point to plain SGD, batch 16, hidden 100, clipping
  chosen among 1, 10 and 100), so the optimizer is our own choice: Adam at 1e-4 suits
  T up to about 200 (Hu et al. 2018, arXiv 1801.06105, retraining an IRNN with Adam,
  needed 1e-5 at T=300 and 1e-6 at T=400).
* ``orthogonal``: tanh RNN with W_hh = exp(A - A^T) kept orthogonal (expRNN); Adam lr 1e-3,
  clip 1.
* ``skip``: tanh RNN with shortcuts from h_{t-1} (orthogonal) and h_{t-10} (starting at
  zero); Adam, clip 1.
* ``lstm``: LSTM with forget bias 1; Adam.
* ``lstm-chrono``: LSTM with chrono initialisation as Tallec & Ollivier 2018 train it
  (section 3 of the paper; no code was released): forget biases log U[1, T_max - 1],
  input biases their negatives, T_max = 3T/2 on copy and T on adding; RMSprop lr 1e-3,
  moving average 0.9, no momentum, constant rate, no gradient clipping ("No gradient
  clipping is performed"). The paper gives neither the batch size nor the number of
  iterations; hidden 128 is theirs.
* ``lstm-chrono-adam``: the same initialisation (T_max the task's dependency length),
  trained as tuned here: Adam lr 1e-2 on a cosine schedule, clip 1. Chosen on copy and
  adding at T=100-200 against RMSprop lr 1e-3 with momentum 0, a constant rate and
  clip 1 (torch's alpha 0.99): that one solved copy T=100 only at step 34,000 (seed 0)
  and adding at step 3,400 against this recipe's 600 (T=100) and 4,400 against 900
  (T=200). On copy T=100, Adam at lr 1e-3 and 3e-3 stayed on the baseline for 8,000
  and 4,000 steps; a constant 1e-2 with clipping left it by step 2,000, reached 0.12 of
  the baseline by step 17,500 and then fell back to it (the late steps need a smaller
  rate, hence the cosine). The remedies name this recipe.
* ``gru``: GRU; Adam.
* ``esn-momentum``: as Sutskever, Martens, Dahl & Hinton (2013, section 4 and Table 4)
  train RNNs on the pathological problems: 100 tanh units; the recurrent matrix sparse
  (15 incoming weights a unit, N(0, 1)) and rescaled to spectral radius 1.1; input
  weights 0.001 N(0, 1) on the tasks with distractor inputs (their addition and
  multiplication; here every task but memorization and copy) and 0.1 N(0, 1) on
  memorization; readout weights 0.1 N(0, 1), the readout's bias the mean target (a
  regression) or the log class frequencies (a classification: the softmax then gives
  the mean target), of a sample of the task; hidden biases 0. Nesterov's momentum,
  0.9 for the first 1,000 updates and 0.995 after (their best, mu_0 = 0.995 with
  Nesterov, in every row of their Table 5), minibatches of 100, no clipping (none is
  mentioned). Their learning rate was the best of 1e-3 ... 1e-6 per problem and is not
  reported; ours, 1e-3, the largest of their grid, is the one of 1e-3 and 1e-4 that
  moved off the baseline in 5,000 updates on adding T=100 (seed 0: 0.992 of the
  baseline against 1.000; neither learned temporal order T=100 in 5,000). Not
  reproduced: they centre inputs and targets (needed for multiplication, they say) and
  train 50,000 updates; our tasks are as generated.
* ``hf``: Hessian-free with structural damping as Martens & Sutskever (2011) ran it,
  from the code released with the paper (Sutskever's HF-RNN, "release A"; read at the
  mirror github.com/barapa/HF-RNN, ``opt/r/demo.py``, ``opt/hf.py``,
  ``opt/m/rnn/rnn.py``; its comments say the code differs "somewhat" from the paper,
  whose body we could not read): 100 tanh units; every weight matrix sparse, 15
  incoming weights a unit from N(0, 1/15), the input weights then x 0.25; biases 0
  (the code has none); structural damping mu = 0.03 (lambda and mu lambda start at
  [1, 0.03] x 0.01 per output); initial damping 0.01 (theirs for one output: addition,
  multiplication, XOR; their code scales it with the outputs, 0.08 on temporal order:
  ``--hf-damping``); Levenberg-Marquardt x 3/2 below rho 1/4, x 2/3 above 3/4 (the
  library's rule); gradients on 10,000 fresh sequences a step, curvature products on
  1,000 of them; at most 300 CG iterations, warm-started from 0.95 of the previous
  solution (the library's decay). Differences: their run takes exactly 300 CG steps
  (ours stops earlier by Martens' progress rule, their code's rule with its minimum
  raised), backtracks over every 10th CG iterate on another batch (ours over
  ceil(1.3^j) on the gradient batch), keeps an L2 penalty of 2e-5 and learns the
  initial state (ours: none, zero).
* ``exprnn``: the orthogonal RNN with modReLU as the code released with expRNN trains
  it on the copy task with ``--mode exprnn`` (Lezcano-Casado & Martinez-Rubio 2019;
  github.com/Lezcano/expRNN, ``1_copying.py``, ``orthogonal.py``, ``parametrization.py``):
  RMSprop (torch's alpha 0.99, eps 1e-8, no momentum), lr 2e-4, and 2e-5 for A in their
  parametrization (their README: a 10:1 ratio works best), no clipping; Henaff
  initialisation of A (rotations by angles from U[-pi, pi]), the input weights and the
  readout's from Kaiming's
  normal for ReLU, the modReLU biases from U(-0.01, 0.01), the readout's bias 0. Their
  script's hidden 190 and batch 128 are the run's to set. Their skew matrix is built
  from the upper triangle of A alone; ours, A - A^T, moves each rotation through two
  entries, so under RMSprop our rate 1e-5 on A is exactly their 2e-5 (tested; the
  recipe had 2e-5, twice their rate, before). One difference: their input and
  recurrent maps have no bias; ours start at 0 and train.
* ``dtriv``: the same with the dynamic trivialization that is the default of that
  script (``--mode dtriv --K 100``; Lezcano-Casado 2019, "Trivializations for
  gradient-based optimization on manifolds"): every 100 steps W is folded into the
  base and A restarts at 0, the first time before the first step.
* ``mingru``: the minimal GRU of Feng et al. 2024 ("Were RNNs All We Needed?", arXiv
  2410.01201), one layer, in the paper's log-space form (g activation, h_0 = g(0)),
  trained by the parallel scan; torch.nn.Linear's initialisation (the paper's
  layers); Adam lr 1e-2 with global-norm clipping at 1 (our choice: the paper trains
  deeper stacks with per-task settings, not this single layer under a readout). The
  rate was chosen on adding T=200, seed 0, 1,500 steps: lr 1e-2 solved it (test MSE
  0.0021), lr 3e-3 reached 0.026 (0.15 of the baseline).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import nn

from bptt import init
from bptt.cells import OrthogonalRNNCell, RNNCell, SkipRNNCell
from bptt.model import SequenceModel
from bptt.tasks import Task

__all__ = ["LSTM_INITS", "RECIPES", "Recipe"]


@dataclass(frozen=True)
class Recipe:
    """A named recipe.

    Attributes:
        description: one line for help texts.
        settings: TrainConfig fields the method sets (the cell among them).
        initialise: ``initialise(model, task)`` applied to the freshly built model,
            under the run's initialisation seed; None for the cell's own.
    """

    description: str
    settings: dict[str, Any] = field(default_factory=dict)
    initialise: Callable[[SequenceModel, Task], None] | None = None


def _lstm_forget(model: SequenceModel, task: Task) -> None:
    for cell in model.recurrent_cells():
        init.forget_bias_(cell, 1.0)


def _lstm_chrono(model: SequenceModel, task: Task) -> None:
    for cell in model.recurrent_cells():
        init.chrono_(cell, max(task.dependency_length, 2))


# ``lstm_init``: how an LSTM no method initialises starts (torch: as built), the same
# functions the lstm and lstm-chrono-adam recipes start from
LSTM_INITS: dict[str, Callable[[SequenceModel, Task], None] | None] = {
    "chrono": _lstm_chrono,
    "forget-bias-1": _lstm_forget,
    "torch": None,
}


def _lstm_chrono_paper(model: SequenceModel, task: Task) -> None:
    # Tallec & Ollivier 2018, section 3: T_max = 3T/2 on copy ("a bit larger than the
    # input length", T + 20), the dependency length T on adding
    span = 3 * task.length // 2 if task.name == "copy" else task.dependency_length
    for cell in model.recurrent_cells():
        init.chrono_(cell, max(span, 2))


def _skip_orthogonal(model: SequenceModel, task: Task) -> None:
    for cell in model.recurrent_cells():
        skip = cast(SkipRNNCell, cell)  # the recipe's cell
        with torch.no_grad():
            for weight, k in zip(skip.weight_skips, skip.skips, strict=True):
                if k == 1:
                    init.orthogonal_(weight)
                else:
                    weight.zero_()  # the shortcut starts closed; training opens it


def _exprnn(model: SequenceModel, task: Task) -> None:
    with torch.no_grad():
        for each in model.recurrent_cells():
            cell = cast(OrthogonalRNNCell, each)  # the recipe's cell, with modReLU
            nn.init.kaiming_normal_(cell.weight_ih, nonlinearity="relu")
            cell.modrelu_bias.uniform_(-0.01, 0.01)
            cell.bias_ih.zero_()
            cell.bias_hh.zero_()
        nn.init.kaiming_normal_(model.head.weight, nonlinearity="relu")
        model.head.bias.zero_()


def _dtriv(model: SequenceModel, task: Task) -> None:
    _exprnn(model, task)
    for cell in model.recurrent_cells():
        cast(OrthogonalRNNCell, cell).rebase()  # their first rebase, before step 1


# Sutskever et al. 2013, Table 4: input scale 0.1 on memorization, 0.001 where inputs
# carry many irrelevant distractors (their addition and multiplication)
_WITHOUT_DISTRACTORS = ("memorization", "copy")


def _readout_at_mean_target(head: nn.Linear, task: Task) -> None:
    """The readout's bias at the mean target of a sample of the task (a classification:
    the log class frequencies, so the softmax gives the mean one-hot target)."""
    generator = torch.Generator().manual_seed(int(torch.randint(2**62, ()).item()))
    _, y = task.sample(1000, generator, dtype=head.weight.dtype)
    if task.metric == "test_mse":
        head.bias.copy_(y.reshape(-1, head.out_features).mean(dim=0))
        return
    y = y[y >= 0]  # a stream's first targets are ignored (marked negative)
    counts = torch.bincount(y.reshape(-1), minlength=head.out_features).to(head.bias.dtype)
    head.bias.copy_(((counts + 1) / (counts.sum() + head.out_features)).log())


def _momentum_reservoir(model: SequenceModel, task: Task) -> None:
    scale = 0.1 if task.name in _WITHOUT_DISTRACTORS else 0.001
    with torch.no_grad():
        for each in model.recurrent_cells():
            cell = cast(RNNCell, each)  # the recipe's cell
            init.sparse_fan_in_(cell.weight_hh, fan_in=15)
            init.spectral_radius_(cell.weight_hh, 1.1)
            cell.weight_ih.normal_(0.0, scale)
            cell.bias_ih.zero_()
            cell.bias_hh.zero_()
        model.head.weight.normal_(0.0, 0.1)
        _readout_at_mean_target(model.head, task)


def _martens_sparse(model: SequenceModel, task: Task) -> None:
    std = 15**-0.5
    with torch.no_grad():
        for each in model.recurrent_cells():
            cell = cast(RNNCell, each)  # the recipe's cell
            init.sparse_fan_in_(cell.weight_hh, fan_in=15, std=std)
            init.sparse_fan_in_(cell.weight_ih, fan_in=15, std=std).mul_(0.25)
            cell.bias_ih.zero_()
            cell.bias_hh.zero_()
        init.sparse_fan_in_(model.head.weight, fan_in=15, std=std)
        model.head.bias.zero_()


RECIPES: dict[str, Recipe] = {
    "rnn": Recipe("tanh RNN, default init, Adam", {"cell": "rnn"}),
    "rnn-clip": Recipe("tanh RNN, Adam, norm clipped at 1", {"cell": "rnn", "clip_norm": 1.0}),
    "irnn": Recipe(
        "ReLU RNN at the identity (IRNN), Adam lr 1e-4, clip 1",
        {"cell": "irnn", "lr": 1e-4, "clip_norm": 1.0},
    ),
    "orthogonal": Recipe(
        "orthogonal RNN (expRNN), Adam lr 1e-3, clip 1",
        {"cell": "orthogonal", "lr": 1e-3, "clip_norm": 1.0},
    ),
    "skip": Recipe(
        "tanh RNN with a shortcut from 10 steps back, Adam, clip 1",
        {"cell": "skip", "clip_norm": 1.0},
        _skip_orthogonal,
    ),
    "lstm": Recipe("LSTM, forget bias 1, Adam", {"cell": "lstm"}, _lstm_forget),
    "lstm-chrono": Recipe(
        "LSTM, chrono initialisation, RMSprop lr 1e-3 (alpha 0.9), no clipping, as "
        "Tallec & Ollivier 2018",
        {
            "cell": "lstm",
            "optimizer": "rmsprop",
            "lr": 1e-3,
            "rmsprop_alpha": 0.9,
            "momentum": 0.0,
        },
        _lstm_chrono_paper,
    ),
    "lstm-chrono-adam": Recipe(
        "LSTM, chrono initialisation, Adam lr 1e-2 on a cosine schedule, clip 1 (tuned here)",
        {"cell": "lstm", "lr": 1e-2, "lr_schedule": "cosine", "clip_norm": 1.0},
        _lstm_chrono,
    ),
    "gru": Recipe("GRU, Adam", {"cell": "gru"}),
    "esn-momentum": Recipe(
        "tanh RNN from a sparse reservoir at spectral radius 1.1, Nesterov momentum 0.9 "
        "then 0.995, as Sutskever et al. 2013",
        {
            "cell": "rnn",
            "hidden": 100,
            "batch_size": 100,
            "optimizer": "sgd",
            "lr": 1e-3,
            "momentum": 0.995,
            "early_momentum": 0.9,
            "early_momentum_steps": 1000,
            "clip": "none",
        },
        _momentum_reservoir,
    ),
    "hf": Recipe(
        "tanh RNN from Martens' sparse init, Hessian-free with structural damping, as "
        "Martens & Sutskever 2011",
        {
            "cell": "rnn",
            "hidden": 100,
            "batch_size": 10_000,
            "optimizer": "hf",
            "hf_damping": 0.01,
            "hf_mu": 0.03,
            "hf_max_cg": 300,
            "hf_curvature_fraction": 0.1,
            "clip": "none",
        },
        _martens_sparse,
    ),
    "exprnn": Recipe(
        "orthogonal RNN with modReLU, RMSprop lr 2e-4 (A as expRNN's 2e-5), as expRNN's copy task",
        {
            "cell": "orthogonal-modrelu",
            "optimizer": "rmsprop",
            "lr": 2e-4,
            "lr_recurrent": 1e-5,  # their 2e-5 on the upper triangle (see above)
            "momentum": 0.0,
        },
        _exprnn,
    ),
    "dtriv": Recipe(
        "exprnn with a dynamic trivialization (the base moved every 100 steps), as the "
        "default of expRNN's copy-task code",
        {
            "cell": "orthogonal-modrelu",
            "optimizer": "rmsprop",
            "lr": 2e-4,
            "lr_recurrent": 1e-5,
            "momentum": 0.0,
            "rebase_every": 100,
        },
        _dtriv,
    ),
    "lru": Recipe(
        "two linear recurrent units with mixing (deep LRU), AdamW lr 1e-3 (5e-4 for the "
        "units), cosine, as minimal-LRU",
        {
            "cell": "deep-lru",
            "lr": 1e-3,
            "lr_recurrent": 5e-4,
            "lr_schedule": "cosine",
            "weight_decay": 0.05,
        },
    ),
    "mingru": Recipe(
        "minimal GRU (Feng et al. 2024), trained by its log-space scan, Adam lr 1e-2, clip 1",
        {"cell": "mingru", "lr": 1e-2, "clip_norm": 1.0},
    ),
}

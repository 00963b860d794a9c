"""Recipes by name: a cell, its initialisation, the optimizer and clipping that go with it.

``bptt train --method NAME`` (or ``method = "NAME"`` in a config) starts from the
recipe's settings; any field given explicitly overrides them, except the cell.

* ``rnn``: tanh RNN, torch's uniform init; Adam.
* ``rnn-clip``: the same, global norm clipped at 1.
* ``irnn``: ReLU RNN with W_hh = I and small inputs (Le et al. 2015); Adam lr 1e-4, clip 1.
* ``orthogonal``: tanh RNN with W_hh = exp(A - A^T) kept orthogonal (expRNN); Adam lr 1e-3,
  clip 1.
* ``skip``: tanh RNN with shortcuts from h_{t-1} (orthogonal) and h_{t-10} (starting at
  zero); Adam, clip 1.
* ``lstm``: LSTM with forget bias 1; Adam.
* ``lstm-chrono``: LSTM with chrono initialisation for the task's dependency length
  (Tallec & Ollivier 2018); Adam lr 1e-2 on a cosine schedule, clip 1 (on copy T=100,
  lr 1e-3 and 3e-3 stayed on the baseline for 8,000 and 4,000 steps; a constant 1e-2
  with clipping left it by step 2,000, reached 0.12 of the baseline by step 17,500 and
  then fell back to it: the late steps need a smaller rate). Copy T=100 was solved at
  step 34,000 (seed 0) with the chrono paper's RMSprop, lr 1e-3, no momentum, constant
  rate (``--optimizer rmsprop --lr 1e-3 --momentum 0 --lr-schedule constant``), which
  is slower on adding (solved at step 3,400 against 600 at T=100, 4,400 against 900
  at T=200).
* ``gru``: GRU; Adam.
* ``esn-momentum``: tanh RNN from a sparse reservoir (density 0.1, spectral radius 1.1,
  inputs scaled to 0.1), then every weight trained by Nesterov SGD (lr 1e-3, momentum
  0.9, clip 1): Sutskever, Martens, Dahl & Hinton (2013).
* ``exprnn``: the orthogonal RNN with modReLU as the code released with expRNN trains
  it on the copy task (Lezcano-Casado & Martinez-Rubio 2019; github.com/Lezcano/expRNN,
  ``1_copying.py`` and ``orthogonal.py``): RMSprop (torch's alpha 0.99, eps 1e-8, no
  momentum), lr 2e-4 and 2e-5 for A (their README: a 10:1 ratio works best), no
  clipping; Henaff initialisation of A (rotations by angles from U[-pi, pi]), the input
  weights and the readout's from Kaiming's normal for ReLU, the modReLU biases from
  U(-0.01, 0.01), the readout's bias 0. Their script's hidden 190 and batch 128 are the
  run's to set. One difference: their input and recurrent maps have no bias; ours
  start at 0 and train.
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

__all__ = ["RECIPES", "Recipe"]


@dataclass(frozen=True)
class Recipe:
    """A named recipe.

    Attributes:
        description: one line for help texts.
        settings: TrainConfig fields the method sets (the cell among them).
        initialise: ``initialise(model, dependency_length)`` applied to the freshly
            built model, under the run's initialisation seed; None for the cell's own.
    """

    description: str
    settings: dict[str, Any] = field(default_factory=dict)
    initialise: Callable[[SequenceModel, int], None] | None = None


def _lstm_forget(model: SequenceModel, length: int) -> None:
    init.forget_bias_(model.cell, 1.0)


def _lstm_chrono(model: SequenceModel, length: int) -> None:
    init.chrono_(model.cell, max(length, 2))


def _skip_orthogonal(model: SequenceModel, length: int) -> None:
    cell = cast(SkipRNNCell, model.cell)  # the recipe's cell
    with torch.no_grad():
        for weight, k in zip(cell.weight_skips, cell.skips, strict=True):
            if k == 1:
                init.orthogonal_(weight)
            else:
                weight.zero_()  # the shortcut starts closed; training opens it


def _exprnn(model: SequenceModel, length: int) -> None:
    cell = cast(OrthogonalRNNCell, model.cell)  # the recipe's cell, with modReLU
    with torch.no_grad():
        nn.init.kaiming_normal_(cell.weight_ih, nonlinearity="relu")
        cell.modrelu_bias.uniform_(-0.01, 0.01)
        cell.bias_ih.zero_()
        cell.bias_hh.zero_()
        nn.init.kaiming_normal_(model.head.weight, nonlinearity="relu")
        model.head.bias.zero_()


def _reservoir(model: SequenceModel, length: int) -> None:
    cell = cast(RNNCell, model.cell)  # the recipe's cell
    with torch.no_grad():
        init.sparse_reservoir_(cell.weight_hh, density=0.1, rho=1.1)
        cell.weight_ih.mul_(0.1 / cell.weight_ih.abs().max())


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
        "LSTM, chrono initialisation, Adam lr 1e-2 on a cosine schedule, clip 1",
        {"cell": "lstm", "lr": 1e-2, "lr_schedule": "cosine", "clip_norm": 1.0},
        _lstm_chrono,
    ),
    "gru": Recipe("GRU, Adam", {"cell": "gru"}),
    "esn-momentum": Recipe(
        "tanh RNN from a sparse reservoir, Nesterov SGD with momentum, clip 1",
        {
            "cell": "rnn",
            "optimizer": "sgd",
            "lr": 1e-3,
            "momentum": 0.9,
            "clip_norm": 1.0,
        },
        _reservoir,
    ),
    "exprnn": Recipe(
        "orthogonal RNN with modReLU, RMSprop lr 2e-4 (2e-5 for A), as expRNN's copy task",
        {
            "cell": "orthogonal-modrelu",
            "optimizer": "rmsprop",
            "lr": 2e-4,
            "lr_recurrent": 2e-5,
            "momentum": 0.0,
        },
        _exprnn,
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
}

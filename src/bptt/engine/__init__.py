"""Engines that unroll a cell over time and backpropagate through time with taps."""

from bptt.engine._unroll import ENGINES, EngineName, require_generic, unroll

__all__ = ["ENGINES", "EngineName", "require_generic", "unroll"]

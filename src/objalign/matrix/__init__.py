"""Layers x models: ``objalign matrix`` aligns every vision layer with every text layer of several models, with
every store computed once and the best layer pair's p-value corrected for having been chosen."""

from objalign.matrix.config import MatrixConfig, ModelSpec, load_matrix
from objalign.matrix.study import run_matrix

__all__ = ["MatrixConfig", "ModelSpec", "load_matrix", "run_matrix"]

"""Moved to :mod:`hippo_peft.experiments.synthetic` (hippo_peft 0.3); this import path stays: it is that module."""
import importlib
import sys

sys.modules[__name__] = importlib.import_module("hippo_peft.experiments.synthetic")

"""Experiments that drive nnU-Net's commands: the benchmark and its report, the demo, the phantoms, and the
helpers they share (running nnU-Net's console commands, linking raw datasets)."""

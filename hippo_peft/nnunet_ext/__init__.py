"""Folder for nnU-Net's ``nnUNet_extTrainer`` variable (``hippo-peft env`` prints the export line).

nnU-Net imports every module in this folder as a top-level module and looks for the requested trainer name;
the one module here re-exports our trainers, whose real home is :mod:`hippo_peft.trainers`.
"""

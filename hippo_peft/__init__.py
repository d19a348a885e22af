"""hippo_peft: parameter-efficient adaptation of MONAI UNETR / SwinUNETR to hippocampus segmentation, inside nnU-Net.

Layout: the library lives here; ``trainers/`` and ``planners/`` of the source tree are installed as
``hippo_peft.trainers`` and ``hippo_peft.planners`` (setup.cfg ``package_dir``). Work on a source checkout through an
editable install (``pip install -e .``, as ``scripts/setup.sh`` does): it maps those two folders too.
"""
__version__ = "0.2.0"

"""hippo_peft: parameter-efficient adaptation of MONAI UNETR / SwinUNETR to hippocampus segmentation, inside nnU-Net.

Layout: the library lives here; ``trainers/`` and ``planners/`` of the source tree are installed as
``hippo_peft.trainers`` and ``hippo_peft.planners`` (setup.cfg ``package_dir``).
"""
import os as _os

__version__ = "0.2.0"

# Imported from a source checkout (Python started in the repo root), this folder shadows the installed package and
# the mapped subpackages would be missing: let `hippo_peft.trainers` / `.planners` resolve to the folders beside it.
_checkout = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_checkout, "setup.cfg")) and _os.path.isdir(_os.path.join(_checkout, "trainers")):
    __path__.append(_checkout)  # noqa: F821 (module __path__)

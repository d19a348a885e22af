"""Re-exports hippo_peft's trainers for nnU-Net's nnUNet_extTrainer lookup."""
import difflib as _difflib

from hippo_peft.trainers import *  # noqa: F401,F403
from hippo_peft.trainers import __all__ as _OURS


def __getattr__(name):
    # nnU-Net asks `hasattr(module, trainer_name)`. A near-miss of one of our names would end in nnU-Net's generic
    # "could not find trainer"; say what we have instead.
    close = _difflib.get_close_matches(name, _OURS, n=3, cutoff=0.8)
    if close and not name.startswith("__"):
        raise RuntimeError(f"Unknown hippo_peft trainer '{name}'. Did you mean {' or '.join(close)}? "
                           f"hippo_peft's trainers: {', '.join(_OURS)}.")
    raise AttributeError(name)

"""Re-exports hippo_peft's trainers for nnU-Net's nnUNet_extTrainer lookup."""
import difflib as _difflib

import hippo_peft.trainers.budget  # noqa: F401  (the budget variants' factory)

from hippo_peft.trainers import *  # noqa: F401,F403
from hippo_peft.trainers import __all__ as _OURS


def __getattr__(name):
    from hippo_peft import trainers as _trainers
    if _trainers.budget.BUDGET_PATTERN.match(name):
        try:
            return getattr(_trainers, name)  # `<trainer>_<N>it` budget variants are made on request
        except AttributeError:
            pass
    # nnU-Net asks `hasattr(module, trainer_name)`. A near-miss of one of our names would end in nnU-Net's generic
    # "could not find trainer"; say what we have instead.
    close = _difflib.get_close_matches(name, _OURS, n=3, cutoff=0.8)
    if close and not name.startswith("__"):
        raise RuntimeError(f"Unknown hippo_peft trainer '{name}'. Did you mean {' or '.join(close)}? "
                           f"hippo_peft's trainers: {', '.join(_OURS)}.")
    raise AttributeError(name)

"""Re-exports hippo_peft's trainers for nnU-Net's nnUNet_extTrainer lookup."""
import difflib as _difflib
import logging as _logging

import hippo_peft.trainers.budget  # noqa: F401  (the budget variants' factory)

from hippo_peft.trainers import *  # noqa: F401,F403
from hippo_peft.trainers import __all__ as _OURS

_log = _logging.getLogger(__name__)
_HINTED: set[str] = set()


def __getattr__(name):
    from hippo_peft import trainers as _trainers
    if _trainers.budget.BUDGET_PATTERN.match(name):
        try:
            return getattr(_trainers, name)  # `<trainer>_<N>it` budget variants are made on request
        except AttributeError:
            pass
    # nnU-Net asks `hasattr(module, trainer_name)` of every module in every nnUNet_extTrainer folder, and hasattr only
    # swallows AttributeError: anything else would end the whole lookup, also for a user's own trainer in a later
    # folder whose name is close to one of ours. So always AttributeError; a near-miss of one of our names gets a
    # hint on stderr (once), which the user sees next to nnU-Net's generic "could not find trainer".
    if not name.startswith("__") and name not in _HINTED:
        close = _difflib.get_close_matches(name, _OURS, n=3, cutoff=0.8)
        if close:
            _HINTED.add(name)
            _log.warning("hippo_peft has no trainer '%s'. Did you mean %s? (Ignore this if the trainer is your "
                         "own, in another nnUNet_extTrainer folder.) hippo_peft's trainers: %s.",
                         name, " or ".join(close), ", ".join(_OURS))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

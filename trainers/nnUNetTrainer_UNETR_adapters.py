"""Former home of the UNETR adaptation trainers (hippo_peft < 0.3), kept so that its import path still works: every
UNETR trainer is now written out in :mod:`hippo_peft.trainers.nnUNetTrainer_UNETR`."""
from hippo_peft.trainers.nnUNetTrainer_UNETR import *  # noqa: F401,F403
from hippo_peft.trainers.nnUNetTrainer_UNETR import ADAPTER_TRAINERS as TRAINERS  # noqa: F401
from hippo_peft.trainers.nnUNetTrainer_UNETR import nnUNetTrainer_UNETR_Adapter  # noqa: F401

"""Former home of the SwinUNETR adaptation trainers (hippo_peft < 0.3), kept so that its import path still works: every
SwinUNETR trainer is now written out in :mod:`hippo_peft.trainers.nnUNetTrainer_SwinUNETR`."""
from hippo_peft.trainers.nnUNetTrainer_SwinUNETR import *  # noqa: F401,F403
from hippo_peft.trainers.nnUNetTrainer_SwinUNETR import ADAPTER_TRAINERS as TRAINERS  # noqa: F401
from hippo_peft.trainers.nnUNetTrainer_SwinUNETR import nnUNetTrainer_SwinUNETR_Adapter  # noqa: F401

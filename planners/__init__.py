"""Planners for hippo_peft's backbones (installed as ``hippo_peft.planners``)."""
from hippo_peft.planners.transformer_planner import (PlansExistError, default_plans_name,  # noqa: F401
                                                     nnUNetPlannerTransformer)

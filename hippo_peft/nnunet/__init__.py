"""hippo_peft's glue to nnU-Net: what we write into and read from nnU-Net's plans, checkpoints and folders."""

"""What hippo_peft adds to nnU-Net's checkpoints: one key, written by the adaptation trainers after nnU-Net's own save
and read by the adapter-file tools (``export-adapter``, ``merge``) and by ``--c``."""

# {"method", "config", "optimizer_groups", "trainable", "pretrained_weights_loaded", "base_fingerprint"}
CHECKPOINT_KEY = "hippo_peft_adapter"

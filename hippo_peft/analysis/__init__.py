"""After prediction: volumes and quality flags of label maps, segmentation metrics, classification from volumes."""

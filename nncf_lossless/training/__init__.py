"""Fine-tuning around the controller: the FP32 reference, the epoch loop, checkpoint selection, weight tuning."""

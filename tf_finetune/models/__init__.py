"""Loading models and tokenizers, LoRA and its PEFT files, PyTorch weights, SavedModels."""

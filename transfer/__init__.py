"""cebench transfer harnesses: classification, detection and segmentation on a (frozen or fine-tuned)
encoder from `pretrain`."""

"""cebench.transfer: classification, detection and segmentation harnesses on a (frozen or
fine-tuned) encoder from `cebench.pretrain`. Installed as `cebench.transfer`."""

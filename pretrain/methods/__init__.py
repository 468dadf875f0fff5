"""Pretraining methods as registered units (solo-learn's `methods/`, timm's model registry).

    from cebench.pretrain.methods import get_method, list_methods, register_method
    method_cls = get_method("context-encoder")
    method = method_cls(cfg, device, dist, classes=[])       # builds its networks and optimizers
    metrics = method.step(images, labels, step)              # one optimisation step
    rows = method.sample_rows(images)                        # its sample grid (or None)
    encoder, name, kwargs = method.encoder()                 # what goes into encoder.pt

Adding a method is one new file holding its networks, its step and its flags (`uses_labels`,
`uses_fill`, `needs_mask`, `inpaints`, `adversarial`, `inpaint_refusal`, the configs it picks):
subclass `PretrainMethod`, decorate it with `@register_method("name")`, and import it here (or anywhere before the run starts, as
tests/test_methods.py does with a toy method). `cebench pretrain --method`, the config check and
the suites' arm validation all read this registry.
"""

from cebench.pretrain.methods import (  # noqa: F401
    autoencoder,
    context_encoder,
    masked_patches,
    relative_position,
    rotation,
    supervised,
)
from cebench.pretrain.methods.base import (
    PretrainMethod,
    get_method,
    list_methods,
    register_method,
)

__all__ = ["PretrainMethod", "get_method", "list_methods", "register_method"]

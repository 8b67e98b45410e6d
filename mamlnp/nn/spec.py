"""A model from the JSON-able description a run's config keeps (config["model"]), and back.

Dimension legend: P parameters, B conv blocks.

Two kinds, told apart by the key "kind":

    {"sizes": [784, 256, 128, 64, 64, 5], "activation": "relu", "loss": …, "batch_norm": True, …}
        no "kind" (or "kind": "mlp"): ``MLP(**spec)`` (every run before the ConvNet has this form)
    {"kind": "conv", "in_shape": [1, 28, 28], "channels": [64, 64, 64, 64], "ways": 5, …}
        ``ConvNet(**spec without "kind")``

``model_from_spec`` checks the description before anything is allocated: a dict of the
kind's arguments only, at most MAX_BLOCKS blocks, a ConvNet's ε at least the MLP's BN_EPS_MIN
(below it 1/√(σ² + ε) of a constant channel overflows), and the model's own checks (ConvNet
refuses a θ that would not fit in memory from its sizes alone, before allocating it).
"""
from ..errors import InputError
from .convnet import ConvNet
from .mlp import BN_EPS_MIN, MLP

KINDS = ("mlp", "conv")
MAX_BLOCKS = 32           # a description with more conv blocks than this is refused unread


def kind_of(spec):
    """"mlp" or "conv" for a config's model description (a dict); InputError otherwise."""
    if not isinstance(spec, dict):
        raise InputError(f"model: expected a dict describing the network, got {spec!r:.80}")
    kind = spec.get("kind", "mlp")
    if kind not in KINDS:
        raise InputError(f"model.kind: expected one of {list(KINDS)}, got {kind!r:.40}")
    return kind


def model_from_spec(spec, name="model"):
    """The MLP or ConvNet a config's "model" dict describes; InputError naming ``name``."""
    kind = kind_of(spec)
    args = {k: v for k, v in spec.items() if k != "kind"}
    if kind == "conv":
        channels = args.get("channels")
        if isinstance(channels, (list, tuple)) and len(channels) > MAX_BLOCKS:
            raise InputError(f"{name}.channels: expected at most {MAX_BLOCKS} conv blocks, got "
                             f"{len(channels)}")
    cls = ConvNet if kind == "conv" else MLP
    try:
        model = cls(**args)
    except TypeError as exc:                                      # a key the class lacks
        raise InputError(f"{name}: expected arguments of mamlnp.{cls.__name__}, got "
                         f"{sorted(args)} ({exc})") from None
    if kind == "conv" and model.bn_eps < BN_EPS_MIN:
        raise InputError(f"{name}.bn_eps: expected at least {BN_EPS_MIN:g} (1/sqrt(var + eps) "
                         f"of a constant channel must stay finite), got {model.bn_eps!r}")
    return model


def spec_of(model):
    """The JSON-able description of ``model``: MLP.config() (unchanged), or for a ConvNet
    its config() with "kind": "conv"."""
    if isinstance(model, ConvNet):
        return {"kind": "conv", **model.config()}
    return model.config()


def describe(spec):
    """'1-40-40-1 relu' for an MLP, 'conv 64-64-64-64 relu' for a ConvNet."""
    if kind_of(spec) == "conv":
        return "conv " + "-".join(str(c) for c in spec["channels"]) + " " + spec["activation"]
    return "-".join(str(n) for n in spec["sizes"]) + " " + spec["activation"]

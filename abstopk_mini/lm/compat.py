r"""Do an SAE, a harvest and a model belong together? :func:`check_inputs`, the one check every
command and API function runs before it works on them.

Four fields must agree wherever they are known:

* ``model``: the model's name (a local model directory by its resolved path);
* ``layer``: the block whose output is read;
* ``hook``: the hook's name (``blocks.L.hook_resid_post``; the package reads the residual stream);
* ``d_in``: the width (the SAE's ``d_in``, the harvest's ``d_model``, the model's ``d_model``).

Where each comes from: an SAE's config (``model_name``, ``hook_layer``, ``hook_name``, ``d_in``;
an SAE trained through the API may leave the first three unset, then they are not compared), a
harvest's manifest (``model``, ``layer``, ``hook_name``, ``d_model``), a model (a
:class:`~abstopk_mini.lm.models.LoadedModel`, or a name whose shape is read without loading its
weights: the registry's :data:`~abstopk_mini.lm.models.KNOWN_SHAPES` or a local ``config.json``),
and a layer the caller asks for. The first source that knows a field sets it (in the order SAE,
harvest, layer, model); a later one that disagrees raises a ValueError naming the field, both values, where each came from and what to pass instead::

    check_inputs(sae, "runs/acts/gemma-3-270m-L6-...", model="gemma-3-270m")   # -> Inputs(...)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

__all__ = ["Inputs", "check_inputs", "model_key", "RESID_HOOK"]

#: the hook this package reads (harvest, splice, steering): the residual stream after block L
RESID_HOOK = "blocks.{layer}.hook_resid_post"
FIELDS = ("model", "layer", "hook", "d_in")
_FIELD_NAME = {"model": "model", "layer": "layer", "hook": "hook", "d_in": "width"}
_WHAT = {"model": "the model", "layer": "the layer", "hook": "the hook", "d_in": "the width"}
# how each kind of source states a value, per field ({v}: the value)
_SAYS = {
    "sae": {"model": "was trained on model {v}", "layer": "was trained on layer {v}", "hook": "was trained on hook {v}",
            "d_in": "reads width d_in={v}"},
    "harvest": {"model": "was harvested from model {v}", "layer": "was harvested at layer {v}",
                "hook": "was harvested at hook {v}", "d_in": "holds activations of width {v} (d_model={v})"},
    "layer": {"layer": "asks for layer {v}"},
    "model": {"model": "is {v}", "d_in": "has d_model={v}", "hook": "is read at hook {v}"},
}


class Inputs(NamedTuple):
    """What the inputs agree on (None where no input says)."""

    model: str | None
    layer: int | None
    hook: str | None
    d_in: int | None


def model_key(name) -> str | None:
    """How a model is named when compared: a local directory by its resolved path, else the name."""
    if name is None:
        return None
    text = os.fspath(name)
    local = Path(text).expanduser()
    return str(local.resolve()) if (os.sep in text or text.startswith((".", "~"))) and local.is_dir() else text


def _flag(name: str) -> bool:
    """Whether a label names a command-line flag (then the fixes are written as flags)."""
    return "--" in name


class _Source(NamedTuple):
    kind: str             # "sae", "harvest", "layer" or "model" (how it states its values, _SAYS)
    label: str            # where the values come from, e.g. "the SAE of --sae 'x'"
    values: dict          # field -> value (None: unknown)
    fix: str              # what to do when this source disagrees ('{want}' is the agreed value)

    def says(self, field: str, value) -> str:
        if self.kind == "layer" and not _flag(self.label):  # an API argument: "layer=1"
            return f"{self.label}={_show(value)}"
        return f"{self.label} " + _SAYS[self.kind][field].format(v=_show(value))


def _sae_source(sae, name: str) -> _Source:
    cfg = getattr(sae, "cfg", sae)
    values = {"model": model_key(getattr(cfg, "model_name", None)), "layer": getattr(cfg, "hook_layer", None),
              "hook": getattr(cfg, "hook_name", None), "d_in": getattr(cfg, "d_in", None)}
    return _Source("sae", name, values, "pass an SAE trained on {field} {want}")


def _harvest_source(harvest, name: str, flag: bool) -> _Source:
    from .shards import ShardDataset, read_manifest

    if isinstance(harvest, ShardDataset):
        manifest = harvest.manifest
    elif isinstance(harvest, dict):
        manifest = harvest
    else:
        manifest = read_manifest(harvest)
    values = {"model": model_key(manifest.get("model")), "layer": manifest.get("layer"),
              "hook": manifest.get("hook_name"), "d_in": manifest.get("d_model")}
    how = "`harvest --model M --layer L`" if flag else "am.activations.harvest / runs.store.harvest_spec"
    return _Source("harvest", name, values,
                   "pass a harvest whose {field} is {want} (" + how + "), or an SAE trained on this harvest")


def _model_source(model, name: str) -> tuple[_Source, int | None]:
    """The model's values and its block count (None when unknown without loading it)."""
    from .models import model_shape

    info = getattr(model, "info", None)
    if info is not None:  # a LoadedModel
        key, d_model, n_layers = model_key(info.name), info.d_model, info.n_layers
    else:
        shape = model_shape(model)
        key, d_model, n_layers = model_key(model), (shape[1] if shape else None), (shape[0] if shape else None)
    values = {"model": key, "layer": None, "hook": None, "d_in": d_model}
    fix = ("pass --model {want} (or leave --model out) or another SAE" if _flag(name) else
           "pass the model the SAE and the activations come from ({field} {want})")
    return _Source("model", name, values, fix), n_layers


def _show(value) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _agree(sources: list[_Source], fields=FIELDS) -> dict:
    agreed: dict = {}
    for field in fields:
        first = None
        for src in sources:
            value = src.values.get(field)
            if value is None:
                continue
            if first is None:
                first = src
                agreed[field] = value
            elif value != agreed[field]:
                want = _show(agreed[field])
                raise ValueError(
                    f"{src.says(field, value)} but {first.says(field, agreed[field])}: the inputs do not belong "
                    f"together ({_WHAT[field]} differs); " + src.fix.format(field=_FIELD_NAME[field], want=want))
    return agreed


def check_inputs(sae=None, harvest=None, model=None, layer: int | None = None, *, names: dict | None = None,
                 reads_model: bool = True, model_fix: str | None = None) -> Inputs:
    """Check that ``sae``, ``harvest``, ``model`` and ``layer`` agree on model, layer, hook and width.

    sae: an SAE or SAEConfig; harvest: a harvest directory, its manifest dict or a ShardDataset;
    model: a LoadedModel, or a model name / directory (its shape read without loading weights, when
    it is known offline); layer: the block asked for. Any may be None (not compared).
    names: labels for the messages, e.g. ``{"sae": "--sae 'x'", "layer": "--layer"}`` (flags, from
    the CLI) or the API's argument names (the default). reads_model: the caller runs the model at
    the hook (splice, steering, contexts), so the SAE's hook must be the residual stream
    :data:`RESID_HOOK` of its layer, and the layer must be a block of the model. model_fix: what
    to do when the model disagrees (default: pass the model the SAE and the activations come from).

    Returns the agreed :class:`Inputs`; raises ValueError naming the first field that differs,
    both values, where each comes from, and the fix.
    """
    names = {"sae": "the SAE", "harvest": "the harvest", "model": "the model", "layer": "layer"} | (names or {})
    if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int)):
        raise TypeError(f"{names['layer']} must be an int; got {type(layer).__name__} {layer!r}")
    sources, n_layers = [], None
    if sae is not None:
        sources.append(_sae_source(sae, names["sae"]))
    if harvest is not None:
        sources.append(_harvest_source(harvest, names["harvest"], _flag(names["harvest"])))
    if layer is not None:
        fix = ("pass {flag} {want} (or leave {flag} out)" if _flag(names["layer"]) else "pass {flag}={want} (or None)")
        sources.append(_Source("layer", names["layer"], {"layer": layer}, fix.replace("{flag}", names["layer"])))
    if model is not None:
        src, n_layers = _model_source(model, names["model"])
        sources.append(src._replace(fix=model_fix) if model_fix else src)
    agreed = _agree(sources)
    at = agreed.get("layer")
    if at is not None and at < 0:
        raise ValueError(f"{names['layer']} must be >= 0 (a block index); got {at}")
    if at is not None and n_layers is not None and at >= n_layers:
        raise ValueError(
            f"layer {at} is not a block of {names['model']} {_show(agreed.get('model'))}, which has n_layers = "
            f"{n_layers} (0 <= layer < {n_layers}): the inputs do not belong together; "
            + (model_fix or "pass the model the SAE and the activations come from, or a layer below that"))
    if reads_model and model is not None and at is not None:
        resid = RESID_HOOK.format(layer=at)
        _agree(sources + [_Source("model", f"{names['model']} at layer {at} (this package reads the residual stream)",
                                  {"hook": resid}, "this package reads only the residual stream after a block "
                                                   f"(blocks.L.hook_resid_post); pass an SAE trained on {resid!r}")],
               fields=("hook",))
    return Inputs(agreed.get("model"), at, agreed.get("hook"), agreed.get("d_in"))

"""Import stylegan2-ada-pytorch network snapshots (``network-snapshot-*.pkl``, NVlabs' released ``.pkl``) into
nat-gan's ``stylegan2``.

The snapshot is read by :mod:`natgan.importers.nvlabs_pickle` (no code from the file runs). The generator
must be what nat-gan's StyleGAN2 computes: RGB, ``skip`` synthesis, ``z_dim == w_dim``, FIR ``[1, 3, 3, 1]``,
and when class-conditional (``c_dim > 0``) the official label layers at their default widths (embedding
``w_dim`` wide, ``cmap_dim`` = the 4x4 width; the D label mapping's depth and lr multiplier are read:
``model.d_mapping_layers`` / ``d_mapping_lr``); anything else is refused with the reason. The widths come from the weight shapes, whatever ``channel_base``/``channel_max`` made them; the mapping
depth from the weights too (``--cfg=cifar``'s 2 layers); the D's ``architecture`` ('resnet', 'orig' as
``--cfg=cifar``, 'skip') and its minibatch-stddev group and channel count from its constructor kwargs, stored
as ``model.d_architecture``, ``mbstd_group``, ``mbstd_channels``; G's and D's ``conv_clamp`` (one value) as
``model.conv_clamp``. Renaming (NVlabs -> ours, which are rosinality's):

=======================================  ==================================================================
``mapping.fc{i}.{weight,bias}``          ``style.{i+1}.{weight,bias}``; ``mapping.w_avg`` -> truncation centre
``mapping.embed`` (c_dim > 0)           ``label_embed.embed`` (concatenated with the normalised z)
``synthesis.b4.const [C,4,4]``           ``input.input [1,C,4,4]``
``synthesis.b4.conv1`` / ``.torgb``      ``conv1`` / ``to_rgb1``
``synthesis.b{2^(k+3)}.conv0/conv1``     ``convs.{2k}`` (up; its 3x3 kernel flipped, see below) / ``convs.{2k+1}``
``synthesis.b{2^(k+3)}.torgb``           ``to_rgbs.{k}``
layer ``weight [O,I,k,k]``               ``conv.weight [1,O,I,k,k]``; ``affine`` -> ``conv.modulation``;
                                         ``bias`` -> ``activate.bias`` (ToRGB: ``bias [1,3,1,1]``);
                                         ``noise_strength`` -> ``noise.weight``; ``noise_const`` -> ``noises.noise_j``
D ``b{R}.fromrgb``, ``b{r}.conv0/conv1/skip``  ``convs.0``, ``convs.{j}.conv1/conv2/skip`` (no ``skip`` in 'orig'/'skip')
D 'skip': ``b{r}.fromrgb`` (r < R), ``b4.fromrgb``  ``convs.{j}.from_rgb``, ``final_from_rgb``
D ``b4.conv/fc/out``                     ``final_conv``, ``final_linear.0``, ``final_linear.1``
D ``mapping.embed`` / ``mapping.fc{i}``  ``projection.mapping.embed.embed`` / ``projection.mapping.layers.{i}``
                                         (``b4.out`` then emits cmap features; logit = <x, cmap> / sqrt(cmap_dim))
=======================================  ==================================================================

The up-sampling conv: NVlabs' transposed convolution applies its kernel as a true convolution (TF's
``conv2d_transpose`` of the flipped kernel), rosinality's ``conv_transpose2d`` as stored; rosinality's own
``convert_weight.py`` flips these kernels for the same reason. NVlabs snapshots hold no optimizer state and no
training settings (those are in ``training_options.json``), so the recipe gets StyleGAN2 config-f training
values and says so.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch

from natgan.errors import CheckpointError
from natgan.importers.common import plain, step_from_filename
from natgan.importers.nvlabs_records import (PersistentRecord, cannot_express, check_network, class_count,
                                             is_count, minibatch_stddev_head, state_dict)
from natgan.importers.stylegan2_family import Imported, assemble, plan_stylegan2, stylegan2_train_settings
from natgan.models.conditioning import D_MAPPING_LAYERS
from natgan.models.stylegan2_layers import D_ARCHITECTURES

KIND = "stylegan2-ada"
FIR = torch.tensor([1.0, 3.0, 3.0, 1.0])


def _kwargs(record: PersistentRecord, key: str) -> dict[str, Any]:
    value = record.init_kwargs.get(key) or {}
    return dict(value) if isinstance(value, dict) else {}


def _refuse(src: str, what: str) -> CheckpointError:
    return cannot_express(src, what, "stylegan2")


def check_generator(g: PersistentRecord, src: str) -> dict[str, Any]:
    """The G constructor kwargs, refused when they describe something nat-gan's stylegan2 does not compute."""
    kw = check_network(g, "Generator", "stylegan2", src, conditional=True)
    mapping = _kwargs(g, "mapping_kwargs")
    # stylegan2-ada nests the synthesis kwargs; stylegan3's networks_stylegan2.Generator takes them flat
    synthesis = {**{k: v for k, v in kw.items() if k not in ("mapping_kwargs", "synthesis_kwargs")},
                 **_kwargs(g, "synthesis_kwargs")}
    if mapping.get("layer_features") not in (None, kw.get("w_dim")):
        raise _refuse(src, f"mapping layer_features = {mapping['layer_features']} differs from w_dim")
    if mapping.get("embed_features") not in (None, kw.get("w_dim")):
        raise _refuse(src, f"mapping embed_features = {mapping['embed_features']} differs from w_dim (nat-gan's "
                           f"label embedding is w_dim wide, the official default)")
    if synthesis.get("architecture", "skip") != "skip":
        raise _refuse(src, f"synthesis architecture '{synthesis['architecture']}' (only 'skip' = config-f)")
    # legacy.py states these for converted TensorFlow networks
    for where, kwargs in (("mapping_kwargs", mapping), ("synthesis_kwargs", synthesis)):
        if kwargs.get("activation", "lrelu") != "lrelu":
            raise _refuse(src, f"G {where}.activation = {kwargs['activation']!r} (only 'lrelu')")
    if synthesis.get("use_noise", True) is not True:
        raise _refuse(src, f"G synthesis_kwargs.use_noise = {synthesis['use_noise']!r} (nat-gan's synthesis has "
                           f"noise inputs)")
    return {"mapping": mapping, "synthesis": synthesis, "c_dim": class_count(kw, src, "G")}


def _label_mapping(d: PersistentRecord, src: str) -> dict[str, Any]:
    """The conditional D's label mapping (``mapping_kwargs``, official ``MappingNetwork`` defaults where
    absent): depth and lr multiplier become ``model.d_mapping_layers`` / ``d_mapping_lr`` (stylegan2-ada-pytorch
    trains 8 / 0.01; a TensorFlow stylegan2-ada D converted by its ``legacy.py`` has 0 / 0.1); its widths must be
    the cmap width nat-gan uses."""
    mapping = _kwargs(d, "mapping_kwargs")
    layers, lr = mapping.get("num_layers", D_MAPPING_LAYERS), mapping.get("lr_multiplier", 0.01)
    if not is_count(layers, 0):
        raise _refuse(src, f"D mapping_kwargs.num_layers = {layers!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise _refuse(src, f"D mapping_kwargs.lr_multiplier = {lr!r}")
    if mapping.get("activation", "lrelu") != "lrelu":
        raise _refuse(src, f"D mapping_kwargs.activation = {mapping['activation']!r} (only 'lrelu')")
    widths = {key: mapping.get(key) for key in ("embed_features", "layer_features")}
    return {"d_mapping_layers": layers, "d_mapping_lr": float(lr), "cmap_dim": d.init_kwargs.get("cmap_dim"),
            **widths}


def check_discriminator(d: PersistentRecord, src: str) -> dict[str, Any]:
    """The D constructor kwargs nat-gan's stylegan2 needs (architecture, minibatch-stddev head, c_dim), refused
    with the reason when they describe a discriminator it does not compute."""
    kw = check_network(d, "Discriminator", "stylegan2", src, conditional=True)
    epilogue, block = _kwargs(d, "epilogue_kwargs"), _kwargs(d, "block_kwargs")
    c_dim = class_count(kw, src, "D")
    label_mapping = _label_mapping(d, src) if c_dim else {}
    architecture = kw.get("architecture", "resnet")
    if architecture not in D_ARCHITECTURES:
        raise _refuse(src, f"D architecture {architecture!r} (nat-gan has {', '.join(map(repr, D_ARCHITECTURES))})")
    for where, kwargs in (("block_kwargs", block), ("epilogue_kwargs", epilogue)):
        if kwargs.get("activation", "lrelu") != "lrelu":
            raise _refuse(src, f"D {where}.activation = {kwargs['activation']!r} (only 'lrelu')")
    return {**minibatch_stddev_head(epilogue, src, "stylegan2"), "architecture": architecture, "c_dim": c_dim,
            "conv_clamp": kw.get("conv_clamp"), "label_mapping": label_mapping}


def check_label_mapping(mapping: dict[str, Any], d: dict[str, torch.Tensor], src: str) -> dict[str, Any]:
    """The conditional D's label mapping against its weights (nat-gan names): the cmap width is the 4x4 width
    (official default ``cmap_dim``), every mapping layer as wide, as many layers as ``num_layers`` says.
    Returns the model config fields."""
    if not mapping:
        return {}
    width = d["final_linear.0.weight"].shape[0]
    for key in ("cmap_dim", "embed_features", "layer_features"):
        if mapping[key] not in (None, width):
            raise _refuse(src, f"D {key} = {mapping[key]!r} differs from the 4x4 width {width} (nat-gan's label "
                               f"mapping is that wide, the official default)")
    stored = sum(1 for k in d if re.fullmatch(r"projection\.mapping\.layers\.\d+\.weight", k))
    if stored != mapping["d_mapping_layers"]:
        raise CheckpointError(f"{src}: D: mapping_kwargs.num_layers = {mapping['d_mapping_layers']} but the file "
                              f"holds {stored} label mapping layers")
    return {"d_mapping_layers": mapping["d_mapping_layers"], "d_mapping_lr": mapping["d_mapping_lr"]}


def conv_clamp(g_clamp: Any, d_clamp: Any, has_d: bool, src: str) -> float | None:
    """The one ``model.conv_clamp`` of G and D (train.py gives both the same value: 256, or none without
    mixed precision); differing or non-numeric values are refused."""
    for which, clamp in (("G", g_clamp), ("D", d_clamp)):
        if clamp is not None and (isinstance(clamp, bool) or not isinstance(clamp, (int, float))
                                  or not math.isfinite(clamp) or clamp <= 0):
            raise _refuse(src, f"{which} conv_clamp = {clamp!r}")
    if has_d and g_clamp != d_clamp:
        raise _refuse(src, f"G conv_clamp = {g_clamp} but D conv_clamp = {d_clamp} (one model.conv_clamp for both)")
    return None if g_clamp is None else float(g_clamp)


def _check_filters(sd: dict[str, torch.Tensor], src: str, which: str) -> None:
    want = torch.outer(FIR, FIR) / 64
    for key, value in sd.items():
        if key.endswith("resample_filter"):
            f = value.float()
            f = torch.outer(f, f) if f.ndim == 1 else f
            if f.shape != want.shape or not torch.allclose(f / f.sum(), want, atol=1e-7):
                raise _refuse(src, f"{which}: '{key}' is not the FIR filter [1, 3, 3, 1]")


def _layer(out: dict[str, torch.Tensor], sd: dict[str, torch.Tensor], theirs: str, ours: str, *,
           flip: bool = False, noise: str | None = None) -> None:
    """One NVlabs SynthesisLayer -> rosinality StyledConv (``noise`` = its noise buffer name)."""
    weight = sd[f"{theirs}.weight"]
    out[f"{ours}.conv.weight"] = (weight.flip([2, 3]) if flip else weight).unsqueeze(0)
    out[f"{ours}.conv.modulation.weight"] = sd[f"{theirs}.affine.weight"]
    out[f"{ours}.conv.modulation.bias"] = sd[f"{theirs}.affine.bias"]
    out[f"{ours}.noise.weight"] = sd[f"{theirs}.noise_strength"].reshape(1)
    out[f"{ours}.activate.bias"] = sd[f"{theirs}.bias"]
    if noise is not None and f"{theirs}.noise_const" in sd:
        const = sd[f"{theirs}.noise_const"]
        out[noise] = const.reshape(1, 1, *const.shape[-2:])


def _torgb(out: dict[str, torch.Tensor], sd: dict[str, torch.Tensor], theirs: str, ours: str) -> None:
    out[f"{ours}.conv.weight"] = sd[f"{theirs}.weight"].unsqueeze(0)
    out[f"{ours}.conv.modulation.weight"] = sd[f"{theirs}.affine.weight"]
    out[f"{ours}.conv.modulation.bias"] = sd[f"{theirs}.affine.bias"]
    out[f"{ours}.bias"] = sd[f"{theirs}.bias"].reshape(1, -1, 1, 1)


def convert_generator(sd: dict[str, torch.Tensor], src: str, which: str
                      ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """NVlabs G state -> (nat-gan stylegan2 G state, w_avg). Unknown keys are errors naming them."""
    _check_filters(sd, src, which)
    out: dict[str, torch.Tensor] = {}
    try:
        for key in sd:
            m = re.fullmatch(r"mapping\.fc(\d+)\.(weight|bias)", key)
            if m:
                out[f"style.{int(m.group(1)) + 1}.{m.group(2)}"] = sd[key]
            m = re.fullmatch(r"mapping\.embed\.(weight|bias)", key)
            if m:
                out[f"label_embed.embed.{m.group(1)}"] = sd[key]
        out["input.input"] = sd["synthesis.b4.const"].unsqueeze(0)
        _layer(out, sd, "synthesis.b4.conv1", "conv1", noise="noises.noise_0")
        _torgb(out, sd, "synthesis.b4.torgb", "to_rgb1")
        resolutions = sorted(int(m.group(1)) for k in sd if (m := re.fullmatch(r"synthesis\.b(\d+)\.torgb\.weight", k)))
        for k, res in enumerate(r for r in resolutions if r > 4):
            if res != 2 ** (k + 3):
                raise CheckpointError(f"{src}: {which}: synthesis blocks {resolutions} are not 4, 8, 16, …")
            _layer(out, sd, f"synthesis.b{res}.conv0", f"convs.{2 * k}", flip=False, noise=f"noises.noise_{2 * k + 1}")
            _layer(out, sd, f"synthesis.b{res}.conv1", f"convs.{2 * k + 1}", noise=f"noises.noise_{2 * k + 2}")
            _torgb(out, sd, f"synthesis.b{res}.torgb", f"to_rgbs.{k}")
    except KeyError as exc:
        raise CheckpointError(f"{src}: {which}: missing key '{exc.args[0]}'") from None
    known = re.compile(r"mapping\.((fc\d+|embed)\.(weight|bias)|w_avg)|synthesis\.b\d+\.(const|resample_filter|"
                       r"(conv0|conv1)\.(weight|bias|noise_strength|noise_const|resample_filter|affine\.(weight|bias))|"
                       r"torgb\.(weight|bias|affine\.(weight|bias)))")
    for key in sd:
        if not known.fullmatch(key):
            raise CheckpointError(f"{src}: {which}: unexpected key '{key}' (no counterpart in nat-gan's stylegan2)")
    return out, sd.get("mapping.w_avg")


def convert_discriminator(sd: dict[str, torch.Tensor], src: str, architecture: str = "resnet"
                          ) -> dict[str, torch.Tensor]:
    """NVlabs D state (``architecture`` 'resnet', 'orig' or 'skip') -> nat-gan (rosinality-named) D state.

    Every tensor of the file must be used (FIR filters aside, checked above): a key the architecture has no
    place for, e.g. a ``skip`` conv in an 'orig' D, is an error naming it, never silently dropped.
    """
    _check_filters(sd, src, "D")
    resolutions = sorted({int(m.group(1)) for k in sd if (m := re.match(r"b(\d+)\.", k))}, reverse=True)
    top = resolutions[0] if resolutions else 0
    if resolutions and (resolutions != [top >> i for i in range(len(resolutions))] or resolutions[-1] != 4):
        raise CheckpointError(f"{src}: D: blocks {', '.join(f'b{r}' for r in resolutions)} are not "
                              f"b{top}, b{top // 2}, ..., b4")
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def conv(theirs: str, ours: str, index: int = 0) -> None:
        """An official conv layer -> nat-gan's ConvLayer ``ours``: its conv at ``index`` (1 after a down-sampling
        blur), the bias in the activation that follows."""
        out[f"{ours}.{index}.weight"], out[f"{ours}.{index + 1}.bias"] = sd[f"{theirs}.weight"], sd[f"{theirs}.bias"]
        used.update((f"{theirs}.weight", f"{theirs}.bias"))

    try:
        conv(f"b{top}.fromrgb", "convs.0")
        for j, res in enumerate((r for r in resolutions if r > 4), start=1):
            if architecture == "skip" and res < top:
                conv(f"b{res}.fromrgb", f"convs.{j}.from_rgb")
            conv(f"b{res}.conv0", f"convs.{j}.conv1")
            conv(f"b{res}.conv1", f"convs.{j}.conv2", index=1)
            if architecture == "resnet":
                out[f"convs.{j}.skip.1.weight"] = sd[f"b{res}.skip.weight"]
                used.add(f"b{res}.skip.weight")
        if architecture == "skip":
            conv("b4.fromrgb", "final_from_rgb")
        conv("b4.conv", "final_conv")
        for theirs, ours in (("fc", "0"), ("out", "1")):
            for name in ("weight", "bias"):
                out[f"final_linear.{ours}.{name}"] = sd[f"b4.{theirs}.{name}"]
                used.add(f"b4.{theirs}.{name}")
        for key in sd:                          # conditional: the label mapping network of the projection head
            m = re.fullmatch(r"mapping\.(embed|fc(\d+))\.(weight|bias)", key)
            if m:
                ours = "embed.embed" if m.group(1) == "embed" else f"layers.{m.group(2)}"
                out[f"projection.mapping.{ours}.{m.group(3)}"] = sd[key]
                used.add(key)
    except KeyError as exc:
        raise CheckpointError(f"{src}: D: missing key '{exc.args[0]}' (a '{architecture}' discriminator)") from None
    for key in sd:
        if key not in used and not re.fullmatch(r"b\d+\.((fromrgb|conv0|conv1|skip|conv)\.)?resample_filter", key):
            raise CheckpointError(f"{src}: D: unexpected key '{key}' (no counterpart in nat-gan's stylegan2 "
                                  f"'{architecture}' discriminator)")
    return out


def import_stylegan2_ada(snapshot: dict[str, Any], src: str, size: int | None = None, *, step: int | None = None
                         ) -> dict[str, Any]:
    """Convert a snapshot read by :func:`natgan.importers.nvlabs_pickle.read_snapshot` to a v1 checkpoint."""
    assumptions: list[str] = []
    g_ema_rec = snapshot["G_ema"]
    kwargs = check_generator(g_ema_rec, src)
    g_ema, w_avg = convert_generator(state_dict(g_ema_rec, src), src, "G_ema")
    g = None
    if isinstance(snapshot.get("G"), PersistentRecord):
        check_generator(snapshot["G"], src)
        g, _ = convert_generator(state_dict(snapshot["G"], src), src, "G")
    d, d_model, d_clamp = None, {}, None
    if isinstance(snapshot.get("D"), PersistentRecord):
        d_kwargs = check_discriminator(snapshot["D"], src)
        if d_kwargs["c_dim"] != kwargs["c_dim"]:
            raise CheckpointError(f"{src}: G has c_dim = {kwargs['c_dim']} but D has c_dim = {d_kwargs['c_dim']}")
        d_model = {"mbstd_group": d_kwargs["mbstd_group"], "mbstd_channels": d_kwargs["mbstd_channels"],
                   "d_architecture": d_kwargs["architecture"]}
        d_clamp = d_kwargs["conv_clamp"]
        d = convert_discriminator(state_dict(snapshot["D"], src), src, d_kwargs["architecture"])
        d_model.update(check_label_mapping(d_kwargs["label_mapping"], d, src))
        if d_kwargs["architecture"] == "orig" and d_kwargs["mbstd_group"] == 32:
            assumptions.append("D architecture 'orig' with minibatch-stddev group 32 is what train.py --cfg=cifar "
                               "builds; its training values (batch 64, lr 0.0025, R1 gamma 0.01, EMA 500 kimg, no "
                               "path length or style mixing) are not in the file: set them with --set to fine-tune")
    model = plan_stylegan2(g_ema, d, src, size)
    if model["num_classes"] != kwargs["c_dim"]:
        raise CheckpointError(f"{src}: G_ema: c_dim = {kwargs['c_dim']} but the label embedding has "
                              f"{model['num_classes']} inputs")
    if model["num_classes"]:
        assumptions.append(f"class-conditional ({model['num_classes']} classes): NVlabs labels are class "
                           f"indices 0..{model['num_classes'] - 1} (the file stores no class names); the truncation "
                           f"centre is the official w_avg over all classes")
    lr_mlp = kwargs["mapping"].get("lr_multiplier", 0.01)
    model.update({"lr_mlp": float(lr_mlp), "blur_kernel": [1, 3, 3, 1], "mbstd_group": 4, **d_model,
                  "conv_clamp": conv_clamp(kwargs["synthesis"].get("conv_clamp"), d_clamp, d is not None, src)})
    assumptions.append("NVlabs snapshots store no training settings: the recipe's [train] is StyleGAN2 config-f's "
                       "(batch 32, lr 0.002, R1 10); set the run's own values with --set when fine-tuning")
    if step is None:
        kimg = re.search(r"network-snapshot-(\d+)", src)
        step = None if kimg is None else int(kimg.group(1)) * 1000 // 32
        if step is None:
            step = step_from_filename(src) or 0
            assumptions.append("training progress unknown (the file name has no kimg): step recorded as "
                               f"{step}")
        else:
            assumptions.append(f"step = {kimg.group(1)} kimg / batch 32 = {step}")
    training_set = snapshot.get("training_set_kwargs") or {}
    flip = bool(training_set.get("xflip", False)) if isinstance(training_set, dict) else False
    augment = snapshot.get("augment_pipe")
    ada_p = None
    if isinstance(augment, PersistentRecord):
        p = (augment.state.get("_buffers") or {}).get("p")
        ada_p = float(p) if isinstance(p, torch.Tensor) and p.numel() == 1 else None
        assumptions.append(f"the run used ADA (augment_pipe, p = {ada_p}); the imported recipe leaves it off "
                           f"(train.augment = \"none\"): --set train.augment=ada --set train.augment_p="
                           f"{ada_p if ada_p is not None else '<p>'} continues with nat-gan's ADA (p is kept under "
                           f"extra.import.ada_p)")
    train = stylegan2_train_settings(batch=32, iterations=max(781_250, step + 1), g_lr=0.002, d_lr=0.002, beta1=0.0,
                                     beta2=0.99, r1=10.0, r1_every=16, pl_weight=2.0, g_reg_every=4,
                                     style_mixing=0.9, lr_decay_start=max(781_250, step + 1))
    imported = Imported(
        model_name="stylegan2", model=model, g_ema=g_ema, g=g, d=d, train=train, data={"flip": flip},
        eval={"mode": "legacy_tensorflow"}, w_avg=w_avg, step=step, assumptions=assumptions, computed_buffers=True,
        info={"official_keys": sorted(map(str, snapshot)), "generator_kwargs": plain(g_ema_rec.init_kwargs),
              "training_set_kwargs": plain(training_set), "ada_p": ada_p,
              "layout": "NVlabs b{res}.conv0/conv1/torgb -> rosinality convs/to_rgbs (up-conv kernels flipped)"})
    if not math.isfinite(float(lr_mlp)):
        raise _refuse(src, f"mapping lr_multiplier {lr_mlp}")
    return assemble(imported, src, KIND)

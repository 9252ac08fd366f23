"""Import GANformer network snapshots (dorarad/gansformer ``pytorch_version``) into nat-gan's ``ganformer``.

The snapshot (``{G, D, Gs, dataset_args}``; ``Gs`` is the EMA generator) is read by
:mod:`natgan.importers.nvlabs_pickle`, so nothing from the file runs. nat-gan's GANformer is the official
network module for module; renaming:

=============================================  ==========================================================
``pos``                                        ``latent_pos``
``mapping.global_mlp.l{i}.fc{j}`` / ``out_layer``  ``mapping_network.global_mlp.layers.{i}.fc{j}`` / ``out``
``mapping.mlp.l{i}`` / ``sa{i}`` / ``out_layer``   ``mapping_network.local_mlp.layers.{i}`` / ``attention.{i}`` / ``out``
``mapping.embed`` (c_dim > 0)                  ``mapping_network.label_embed.embed`` (widens the global mapping input)
``synthesis.b4.const [C,4,4]``                 ``blocks.0.const.input [1,C,4,4]``
``synthesis.b{r}.conv{j}``                     ``blocks.{i}.conv{j}``: ``weight`` -> ``conv.weight`` (+ batch axis),
                                               ``affine`` -> ``conv.modulation``, ``biasAct.bias`` ->
                                               ``activate.bias``, ``noise_strength`` -> ``noise.weight``,
                                               ``noise_const [r,r]`` -> ``noise_const [1,1,r,r]``,
                                               ``transformer.*`` -> ``attention.*``
``synthesis.b{r}.skip`` / ``conv_last`` / ``torgb``  ``blocks.{i}.skip`` / ``conv_last.conv`` / ``torgb``
``mapping.w_avg [d]``                          truncation centre, the same for all ``k`` components
D (StyleGAN2 residual D, ``biasAct.bias``)     as for stylegan2-ada; conditional: ``b4.out`` has one logit per
                                               class and the label picks it (nat-gan's "direct" projection)
=============================================  ==========================================================

``w`` in nat-gan is the official ``ws [B, k, layers, d]`` with its two middle axes swapped and flattened
(``[B, layers, k*d]``); ``z`` is the official ``[B, k, d]`` flattened (global component last). The sinusoidal
``grid_pos`` buffers are recomputed by nat-gan (the images prove the convention); configurations nat-gan's
``ganformer`` does not have (gates, iterative centroids, other positional encodings, latent stem, …) are
refused with the reason.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from natgan.errors import CheckpointError
from natgan.importers.common import plain, step_from_filename
from natgan.importers.nvlabs_records import (PersistentRecord, cannot_express, check_network, class_count,
                                             minibatch_stddev_head, state_dict)
from natgan.importers.stylegan2_ada import FIR, convert_discriminator
from natgan.importers.stylegan2_family import Imported, assemble, stylegan2_train_settings, width_fields

KIND = "ganformer"

# official kwarg -> the only value nat-gan's ganformer computes (None: the kwarg may be absent)
_REQUIRED = {"architecture": "resnet", "transformer": True, "style": True, "local_noise": True,
             "latent_stem": False, "ltnt_gate": False, "img_gate": False, "iterative": False,
             "pos_type": "sinus", "shared": False}


def _refuse(src: str, what: str) -> CheckpointError:
    return cannot_express(src, what, "ganformer")


def _check_kwargs(g: PersistentRecord, src: str) -> dict[str, Any]:
    kw = check_network(g, "Generator", "ganformer", src, conditional=True)
    mapping = dict(kw.get("mapping_kwargs") or {})
    synthesis = dict(kw.get("synthesis_kwargs") or {})
    for key, want in _REQUIRED.items():
        for where, table in (("synthesis_kwargs", synthesis), ("mapping_kwargs", mapping)):
            if key in table and table[key] != want and not (key == "architecture" and where == "mapping_kwargs"):
                raise _refuse(src, f"{where}.{key} = {table[key]!r} (nat-gan computes {want!r})")
    if synthesis.get("architecture", "skip") != "resnet":
        raise _refuse(src, f"synthesis architecture {synthesis.get('architecture', 'skip')!r} (only 'resnet')")
    if not synthesis.get("transformer", False):
        raise _refuse(src, "the generator has no attention (the code's StyleGAN2 baseline)")
    if mapping.get("layer_dim") not in (None, kw.get("w_dim")):
        raise _refuse(src, f"mapping layer_dim = {mapping['layer_dim']} differs from w_dim")
    if mapping.get("embed_dim") not in (None, kw.get("z_dim")):
        raise _refuse(src, f"mapping embed_dim = {mapping['embed_dim']} differs from z_dim (nat-gan's label "
                           f"embedding is latent_dim wide, the official default)")
    return {"mapping": mapping, "synthesis": synthesis, "k": kw.get("k"), "w_dim": kw.get("w_dim"),
            "c_dim": class_count(kw, src, "Gs")}


def _rename_generator(sd: dict[str, torch.Tensor], src: str, which: str) -> tuple[dict[str, torch.Tensor], list[int]]:
    """Official G state -> nat-gan names; also returns the block resolutions (ascending)."""
    resolutions = sorted({int(m.group(1)) for k in sd if (m := re.match(r"synthesis\.b(\d+)\.", k))})
    index = {res: i for i, res in enumerate(resolutions)}
    out: dict[str, torch.Tensor] = {}
    rules = [
        (r"pos", lambda m: "latent_pos"),
        (r"mapping\.global_mlp\.l(\d+)\.(fc\d+\.(?:weight|bias))", lambda m: f"mapping_network.global_mlp.layers.{m[1]}.{m[2]}"),
        (r"mapping\.global_mlp\.l(\d+)\.(weight|bias)", lambda m: f"mapping_network.global_mlp.layers.{m[1]}.{m[2]}"),
        (r"mapping\.global_mlp\.out_layer\.(weight|bias)", lambda m: f"mapping_network.global_mlp.out.{m[1]}"),
        (r"mapping\.embed\.(weight|bias)", lambda m: f"mapping_network.label_embed.embed.{m[1]}"),
        (r"mapping\.mlp\.l(\d+)\.(fc\d+\.(?:weight|bias))", lambda m: f"mapping_network.local_mlp.layers.{m[1]}.{m[2]}"),
        (r"mapping\.mlp\.l(\d+)\.(weight|bias)", lambda m: f"mapping_network.local_mlp.layers.{m[1]}.{m[2]}"),
        (r"mapping\.mlp\.sa(\d+)\.(.+)", lambda m: f"mapping_network.local_mlp.attention.{m[1]}.{m[2]}"),
        (r"mapping\.mlp\.out_layer\.(weight|bias)", lambda m: f"mapping_network.local_mlp.out.{m[1]}"),
        (r"synthesis\.b(\d+)\.const", lambda m: f"blocks.{index[int(m[1])]}.const.input"),
        (r"synthesis\.b(\d+)\.(conv0|conv1|conv_last)\.weight", lambda m: f"blocks.{index[int(m[1])]}.{m[2]}.conv.weight"),
        (r"synthesis\.b(\d+)\.(conv0|conv1|conv_last)\.affine\.(weight|bias)",
         lambda m: f"blocks.{index[int(m[1])]}.{m[2]}.conv.modulation.{m[3]}"),
        (r"synthesis\.b(\d+)\.(conv0|conv1)\.biasAct\.bias", lambda m: f"blocks.{index[int(m[1])]}.{m[2]}.activate.bias"),
        (r"synthesis\.b(\d+)\.(conv0|conv1)\.noise_strength", lambda m: f"blocks.{index[int(m[1])]}.{m[2]}.noise.weight"),
        (r"synthesis\.b(\d+)\.(conv0|conv1)\.noise_const", lambda m: f"blocks.{index[int(m[1])]}.{m[2]}.noise_const"),
        (r"synthesis\.b(\d+)\.(conv0|conv1)\.transformer\.(.+)", lambda m: f"blocks.{index[int(m[1])]}.{m[2]}.attention.{m[3]}"),
        (r"synthesis\.b(\d+)\.skip\.weight", lambda m: f"blocks.{index[int(m[1])]}.skip.weight"),
        (r"synthesis\.b(\d+)\.torgb\.weight", lambda m: f"blocks.{index[int(m[1])]}.torgb.conv.weight"),
        (r"synthesis\.b(\d+)\.torgb\.affine\.(weight|bias)", lambda m: f"blocks.{index[int(m[1])]}.torgb.conv.modulation.{m[2]}"),
        (r"synthesis\.b(\d+)\.torgb\.biasAct\.bias", lambda m: f"blocks.{index[int(m[1])]}.torgb.bias"),
    ]
    dropped = re.compile(r"mapping\.w_avg|synthesis\.b\d+\.((conv0|conv1|conv_last|skip|torgb)\.)?resample_kernel|"
                         r"synthesis\.b\d+\.(conv0|conv1)\.(transformer\.)?grid_pos")
    for key, value in sd.items():
        if dropped.fullmatch(key):
            continue
        for pattern, target in rules:
            m = re.fullmatch(pattern, key)
            if m:
                name = target(m)
                break
        else:
            raise CheckpointError(f"{src}: {which}: unexpected key '{key}' (no counterpart in nat-gan's ganformer)")
        if name.endswith(".conv.weight"):
            value = value.unsqueeze(0)
        elif name.endswith("const.input"):
            value = value.unsqueeze(0)
        elif name.endswith("noise.weight"):
            value = value.reshape(1)
        elif name.endswith("noise_const"):
            value = value.reshape(1, 1, *value.shape[-2:])
        elif name.endswith("torgb.bias"):
            value = value.reshape(1, -1, 1, 1)
        out[name] = value
    for key, value in sd.items():
        if key.endswith("resample_kernel"):
            f = value.float()
            if f.shape != (4, 4) or not torch.allclose(f / f.sum(), torch.outer(FIR, FIR) / 64, atol=1e-7):
                raise _refuse(src, f"{which}: '{key}' is not the FIR filter [1, 3, 3, 1]")
    return out, resolutions


def _d_state(record: PersistentRecord, src: str) -> tuple[dict[str, torch.Tensor], int, Any]:
    kw = check_network(record, "Discriminator", "ganformer", src, conditional=True)
    if kw.get("architecture", "resnet") != "resnet":
        raise _refuse(src, f"D architecture '{kw['architecture']}' (only 'resnet')")
    head = minibatch_stddev_head(dict(kw.get("epilogue_kwargs") or {}), src, "ganformer")
    if head["mbstd_channels"] != 1:
        raise _refuse(src, f"D minibatch-stddev with {head['mbstd_channels']} channels (only 1)")
    # same network as stylegan2-ada's D; only the bias lives under 'biasAct'
    sd = {re.sub(r"\.biasAct\.bias$", ".bias", k): v for k, v in state_dict(record, src).items()}
    sd = {k.replace("resample_kernel", "resample_filter"): v for k, v in sd.items()}
    # conditional: b4.out emits one feature per class and the logit is the label's (nat-gan's "direct" projection)
    return convert_discriminator(sd, src), head["mbstd_group"], class_count(kw, src, "D")


def import_ganformer(snapshot: dict[str, Any], src: str, size: int | None = None, *, step: int | None = None
                     ) -> dict[str, Any]:
    """Convert a GANformer snapshot read by :func:`natgan.importers.nvlabs_pickle.read_snapshot` to v1."""
    assumptions: list[str] = []
    g_rec = snapshot["G_ema"]
    kw = _check_kwargs(g_rec, src)
    official = state_dict(g_rec, src)
    g_ema, resolutions = _rename_generator(official, src, "Gs")
    resolution = resolutions[-1]
    if size is not None and size != resolution:
        raise CheckpointError(f"{src}: --size is {size}, but the generator's last block is {resolution}x{resolution}")
    attn = [r for r in resolutions if f"synthesis.b{r}.conv1.transformer.to_queries.weight" in official]
    if not attn or attn != [r for r in resolutions if attn[0] <= r <= attn[-1]]:
        raise _refuse(src, f"attention at resolutions {attn} (nat-gan needs one contiguous range)")
    if resolutions != [4 * 2 ** i for i in range(len(resolutions))]:
        raise CheckpointError(f"{src}: Gs: synthesis blocks {resolutions} are not 4, 8, 16, …")
    widths = [int(official[f"synthesis.b{r}.conv1.weight"].shape[0]) for r in resolutions]
    synthesis, mapping = kw["synthesis"], kw["mapping"]
    k, d = int(kw["k"]), int(kw["w_dim"])
    kmeans = bool(synthesis.get("kmeans", False))
    model = {
        "resolution": resolution, "components": k - 1, "latent_dim": d,
        "attention": "duplex_kmeans" if kmeans else "simplex",
        "kmeans_iters": int(synthesis.get("kmeans_iters", 1)), "heads": int(synthesis.get("num_heads", 1)),
        "attention_dropout": float(synthesis.get("attention_dropout", 0.12)),
        "integration": synthesis.get("integration", "add"), "norm": synthesis.get("norm") or "none",
        "latent_pos": bool(synthesis.get("use_pos", False)), "attn_min_res": attn[0], "attn_max_res": attn[-1],
        "mapping_layers": int(mapping.get("num_layers", 8)), "mapping_resnet": bool(mapping.get("resnet", False)),
        "mapping_attention": bool(mapping.get("ltnt2ltnt", False)), "lr_mlp": float(mapping.get("lrmul", 0.01)),
        "channels": widths, "num_classes": kw["c_dim"],
        "conv_last": f"synthesis.b{resolution}.conv_last.weight" in official, "blur_kernel": [1, 3, 3, 1],
    }
    if not kmeans:
        assumptions.append("kmeans off: imported as nat-gan's 'simplex' attention")
    g = None
    if isinstance(snapshot.get("G"), PersistentRecord):
        _check_kwargs(snapshot["G"], src)
        g, _ = _rename_generator(state_dict(snapshot["G"], src), src, "G")
    d_state = None
    if isinstance(snapshot.get("D"), PersistentRecord):
        d_state, model["mbstd_group"], d_c_dim = _d_state(snapshot["D"], src)
        if d_c_dim != kw["c_dim"]:
            raise CheckpointError(f"{src}: Gs has c_dim = {kw['c_dim']!r} but D has c_dim = {d_c_dim!r}")
    model.update(width_fields(widths, d_state, resolution, src))
    w_avg = official.get("mapping.w_avg")
    if step is None:
        kimg = re.search(r"network-snapshot-(\d+)", src)
        step = int(kimg.group(1)) * 1000 // 32 if kimg else (step_from_filename(src) or 0)
        assumptions.append(f"step = {kimg.group(1)} kimg / batch 32 = {step}" if kimg else
                           f"training progress unknown (file name has no kimg): step recorded as {step}")
    assumptions.append("GANformer snapshots store no training settings: the recipe's [train] is the official "
                       "--ganformer-default's (batch 32, lr 0.002, R1 10, style mixing 0.9, no path length)")
    dataset = snapshot.get("dataset_args") or {}
    flip = bool(dataset.get("mirror_augment", False)) if isinstance(dataset, dict) else False
    train = stylegan2_train_settings(batch=32, iterations=max(781_250, step + 1), g_lr=0.002, d_lr=0.002,
                                     beta1=0.0, beta2=0.99, r1=10.0, r1_every=16, pl_weight=0.0, style_mixing=0.9,
                                     lr_decay_start=max(781_250, step + 1))
    imported = Imported(
        model_name="ganformer", model=model, g_ema=g_ema, g=g, d=d_state, train=train, data={"flip": flip},
        eval={"mode": "legacy_tensorflow"}, w_avg=None if w_avg is None else w_avg.reshape(-1).repeat(k),
        step=step, assumptions=assumptions, computed_buffers=True,
        info={"official_keys": sorted(map(str, snapshot)), "generator_kwargs": plain(g_rec.init_kwargs),
              "dataset_args": plain(dataset),
              "layout": "GANformer b{res}.conv0/conv1/transformer -> blocks.{i}.conv0/conv1/attention"})
    return assemble(imported, src, KIND)

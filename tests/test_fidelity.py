"""Non-default settings checked against the official code's rules (derived by hand from each reference).

At default settings nat-gan matches the official code to ~1e-13; these four settings deviated:
StyleGAN2 channel multiplier 4, minibatch-stddev with an indivisible batch, GANformer k-means attention
with several heads and HiT at 128 px.
"""

import math

import pytest
import torch

from natgan import recipe as recipes
from natgan.errors import ConfigError
from natgan.models import count_params, create
from natgan.models.ganformer_attention import ImageLatentAttention
from natgan.models.layers import minibatch_stddev
from natgan.models.stylegan2_layers import channels_for, rosinality_channels
from natgan.train.batch_checks import check_discriminator_batch


# ------------------------------------------------------------------ StyleGAN2 channel_multiplier 4
# rosinality's stylegan2-pytorch: channels = {4..32: 512, 64: 256m, 128: 128m, 256: 64m, 512: 32m, 1024: 16m}.
def rosinality_table(m: int) -> dict[int, int]:
    return {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * m, 128: 128 * m, 256: 64 * m, 512: 32 * m, 1024: 16 * m}


@pytest.mark.parametrize("m", [1, 2, 4])
def test_width_table_is_rosinalitys(m):
    assert {r: rosinality_channels(r, m) for r in rosinality_table(m)} == rosinality_table(m)


def test_multipliers_1_and_2_are_unchanged():
    for m in (1, 2):
        assert all(rosinality_channels(2 ** i, m) == channels_for(2 ** i, m) for i in range(2, 11))


def test_channel_multiplier_4_reaches_1024_channels_at_64px():
    pair = create("stylegan2", resolution=64, channel_multiplier=4, style_dim=16, n_mlp=1)
    G, D = pair.generator, pair.discriminator
    assert G.convs[-1].conv.weight.shape[1:3] == (1024, 1024)       # the 64 px conv, [1, out, in, k, k]
    assert G.convs[-2].conv.weight.shape[1:3] == (1024, 512)        # 32 px (512) -> 64 px (1024)
    assert D.convs[0][0].weight.shape[0] == 1024                # fromRGB at 64 px mirrors G
    with torch.no_grad():
        assert G(torch.randn(1, 16)).shape == (1, 3, 64, 64)


def test_channel_max_still_narrows_test_models():
    G = create("stylegan2", resolution=16, style_dim=16, n_mlp=2, channel_max=16).generator
    assert G.convs[-1].conv.weight.shape[1:3] == (16, 16)


# ------------------------------------------------------------------ minibatch standard deviation
def hand_mbstd(x: torch.Tensor, group: int) -> torch.Tensor:
    """Official rule: group = min(group, batch); sample i is in group member i // (B/G) of column i % (B/G)."""
    b = x.shape[0]
    g = min(group, b)
    cols = b // g
    out = torch.empty(b)
    for col in range(cols):
        members = x[col::cols]                                    # [g, C, H, W]
        out[col::cols] = members.var(0, unbiased=False).add(1e-8).sqrt().mean()
    return out


@pytest.mark.parametrize("batch", [2, 3, 4, 8])
def test_mbstd_uses_min_of_group_and_batch(batch):
    x = torch.randn(batch, 6, 4, 4)
    y = minibatch_stddev(x, group=4)
    torch.testing.assert_close(y[:, :6], x)
    torch.testing.assert_close(y[:, 6].mean(dim=(1, 2)), hand_mbstd(x, 4))


def test_mbstd_refuses_an_indivisible_batch():
    with pytest.raises(ValueError, match="group 4 does not divide the batch 6"):
        minibatch_stddev(torch.randn(6, 4, 4, 4), group=4)


@pytest.mark.parametrize("name", ["stylegan2", "stylenat"])
def test_indivisible_per_gpu_batch_is_a_config_error(name):
    D = create(name, resolution=16, style_dim=16, n_mlp=2,
               **({"channel_max": 16} if name == "stylegan2" else
                  {"channels": [32, 32, 32], "min_heads": 2, "kernel_size": 3, "d_channels": [16, 16, 16]})
               ).discriminator
    for ok in (1, 2, 3, 4, 8, 12):
        check_discriminator_batch(D, ok)
    with pytest.raises(ConfigError, match="train.batch_per_gpu.*group 4 does not divide the per-GPU batch 6"):
        check_discriminator_batch(D, 6)
    check_discriminator_batch(create("hit", **HIT_TINY).discriminator, 6)  # HiT's D has no mbstd head


def test_trainer_refuses_the_batch_before_training(tmp_path):
    from natgan.train import Trainer

    r = recipes.from_dict({"model": {"name": "stylegan2", "resolution": 16, "style_dim": 16, "n_mlp": 2,
                                     "channel_max": 16},
                           "data": {"path": str(tmp_path / "missing.lmdb")},
                           "train": {"batch": 12, "batch_per_gpu": 6}})
    with pytest.raises(ConfigError, match="train.batch_per_gpu"):
        Trainer(r, tmp_path / "run", show_progress=False)


# ------------------------------------------------------------------ GANformer k-means attention, heads > 1
def test_kmeans_points_concatenate_then_split_into_heads():
    """Official ``compute_centroids``: ``cat([q_content, q_position], -1)`` over all channels, *then*
    ``transpose_for_scores`` into heads of ``2 * size_head``: with 2 heads and C = 8, head 0 gets the
    8 content channels and head 1 the 8 position channels."""
    torch.manual_seed(3)
    layer = ImageLatentAttention(8, 4, num_latents=3, resolution=4, heads=2, dropout=0.0).eval()
    with torch.no_grad():
        layer.att_weight.uniform_(0.5, 1.5)
    q_content, q_position = torch.randn(2, 16, 8), torch.randn(16, 8)
    points = torch.cat([q_content, q_position.expand(2, -1, -1)], dim=-1)         # [B, n, 16]
    scale = 1 / math.sqrt(4)
    expected = torch.stack([
        (points[..., 8 * h:8 * (h + 1)] * layer.att_weight[h]) @ layer.centroids[0, h].T * scale
        for h in range(2)], dim=1)
    with torch.no_grad():
        got = layer.kmeans_logits(q_content, q_position, scale)
    torch.testing.assert_close(got, expected)


def test_single_head_layout_is_unchanged():
    torch.manual_seed(4)
    layer = ImageLatentAttention(8, 4, num_latents=3, resolution=4, heads=1, dropout=0.0).eval()
    q_content, q_position = torch.randn(2, 16, 8), torch.randn(16, 8)
    points = torch.cat([q_content, q_position.expand(2, -1, -1)], dim=-1)
    with torch.no_grad():
        expected = (points * layer.att_weight[0]) @ layer.centroids[0, 0].T * 0.5
        torch.testing.assert_close(layer.kmeans_logits(q_content, q_position, 0.5)[:, 0], expected)


# ------------------------------------------------------------------ HiT at 128 px
HIT_TINY = dict(resolution=16, low_res_stages=1, widths=[32, 16], heads=[4, 2], depths=[1, 1], block_sizes=[4],
                z_dim=16, d_channel_multiplier=1, d_max_channels=16)


def test_hit_128_is_the_official_128_config():
    """hit-gan's 128 configuration (its ImageNet-128 command: latent 256, D multiplier 1): widths
    512/512/256/128/128, heads 16/8/4/4/4, depth 2 everywhere = 32.8666 M G and 23.88 M D parameters."""
    pair = create("hit-b-128", z_dim=256, d_channel_multiplier=1)
    stages = pair.config.stages()
    assert [s.width for s in stages] == [512, 512, 256, 128, 128]
    assert [s.heads for s in stages] == [16, 8, 4, 4, 4]
    assert [s.depth for s in stages] == [2, 2, 2, 2, 2]
    assert round(count_params(pair.generator) / 1e6, 4) == 32.8666
    assert round(count_params(pair.discriminator) / 1e6, 2) == 23.88
    assert create("hit-b", resolution=128).config.stages() == create("hit-b-128").config.stages()


def test_hit_256_and_1024_still_follow_table_9():
    assert [s.width for s in create("hit-b").config.stages()] == [512, 512, 256, 128, 64, 64]

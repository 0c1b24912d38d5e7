"""EdgeTAM's network: the parts it adds to ``SAM2Base``, written after its official code (the
EdgeTAM repository, repackaged on PyPI as ``edgetam-dimos``) with the same module and parameter
names, so that ``edgetam.pt`` loads with strict key matching. The official network is configured
in its ``configs/edgetam.yaml``; ``build`` makes the same one in Python.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import timm
import torch
import torch.nn.functional as F
from sam2.modeling.backbones.image_encoder import FpnNeck, ImageEncoder
from sam2.modeling.memory_attention import MemoryAttention, MemoryAttentionLayer
from sam2.modeling.memory_encoder import CXBlock, Fuser, MaskDownSampler, MemoryEncoder
from sam2.modeling.position_encoding import PositionEmbeddingSine, compute_axial_cis
from sam2.modeling.sam.transformer import Attention, RoPEAttention
from sam2.modeling.sam2_base import SAM2Base
from timm.models import reparameterize_model
from torch import Tensor, nn

TRUNK = "repvit_m1.dist_in1k"
LATENTS = 256  # per kind (global and 2D): 512 memory tokens per frame
LATENT_GRID = 16  # the 2D latents form a 16x16 grid
MEMORY_DIM = 64


class TimmTrunk(nn.Module):
    """RepViT-M1 from timm, its four stages' features (strides 4 to 32), created without
    downloading ImageNet weights: the checkpoint holds the trunk.

    RepViT's training-time branches (conv + batch norm, RepVGG-style parallel convs) fold into
    single convolutions for inference: ``reparameterize`` keeps such a fused copy beside the
    module, outside its parameters, so ``state_dict`` still has the checkpoint's keys. Loading
    weights drops the copy (the unfused body runs until the next ``reparameterize``).
    """

    def __init__(self, name: str = TRUNK, stages: tuple[int, ...] = (0, 1, 2, 3)) -> None:
        super().__init__()
        self.body = timm.create_model(name, pretrained=False, in_chans=3, features_only=True, out_indices=stages)
        self.channel_list: list[int] = self.body.feature_info.channels()[::-1]  # type: ignore[union-attr,operator]
        self._fused: list[nn.Module] = []  # a plain list, so not a submodule
        self.register_load_state_dict_post_hook(lambda module, _: module._fused.clear())  # type: ignore[no-untyped-call]

    def reparameterize(self) -> None:
        self._fused[:] = [reparameterize_model(self.body).eval()]

    def _apply(self, fn: Any, recurse: bool = True) -> TimmTrunk:  # .to(), .half(): the copy follows
        super()._apply(fn, recurse)  # type: ignore[no-untyped-call]
        for fused in self._fused:
            fused._apply(fn, recurse)  # type: ignore[no-untyped-call]
        return self

    def forward(self, x: Tensor) -> list[Tensor]:
        body = self._fused[0] if self._fused and not self.training else self.body
        return list(body(x))


def _rotate(x: Tensor, freqs: Tensor, frames: int) -> Tensor:
    """Rotary encoding of ``x`` [B, heads, N, C], N = ``frames`` equal chunks whose last
    ``len(freqs)`` tokens are rotated (a frame's 2D latents) and the rest left as they are (its
    global latents): the official ``apply_rotary_enc_v2``."""
    b, heads, n, c = x.shape
    if n == 0:
        return x
    per_frame, rotated = n // frames, freqs.shape[0]
    chunks = x.view(b, heads, frames, per_frame, c)
    plain, turn = chunks[..., : per_frame - rotated, :], chunks[..., per_frame - rotated :, :]
    z = torch.view_as_complex(turn.float().reshape(b, heads, frames, rotated, c // 2, 2))
    out = torch.view_as_real(z * freqs).flatten(-2).type_as(x)
    return torch.cat([plain, out], dim=3).view(b, heads, n, c)


class RoPEAttentionV2(Attention):  # type: ignore[misc]  # sam2 is untyped
    """Cross-attention to perceiver memories: the queries' rotary grid is the frame's feature
    map, the keys' the 16x16 latent grid repeated for every memory frame; object-pointer tokens
    (the last ``num_k_exclude_rope`` keys) are not rotated."""

    def __init__(
        self,
        *args: Any,
        rope_theta: float = 10000.0,
        q_sizes: tuple[int, int] = (64, 64),
        k_sizes: tuple[int, int] = (LATENT_GRID, LATENT_GRID),
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        cis = partial(compute_axial_cis, dim=self.internal_dim // self.num_heads, theta=rope_theta)
        self.freqs_cis_q = cis(end_x=q_sizes[0], end_y=q_sizes[1])
        self.freqs_cis_k = cis(end_x=k_sizes[0], end_y=k_sizes[1])

    def forward(self, q: Tensor, k: Tensor, v: Tensor, num_k_exclude_rope: int = 0, rope_k_repeat: int = 1) -> Tensor:
        q = self._separate_heads(self.q_proj(q), self.num_heads)
        k = self._separate_heads(self.k_proj(k), self.num_heads)
        v = self._separate_heads(self.v_proj(v), self.num_heads)
        self.freqs_cis_q = self.freqs_cis_q.to(q.device)
        self.freqs_cis_k = self.freqs_cis_k.to(q.device)
        q = _rotate(q, self.freqs_cis_q, 1)
        n_rope = k.size(-2) - num_k_exclude_rope
        k = torch.cat([_rotate(k[:, :, :n_rope], self.freqs_cis_k, rope_k_repeat), k[:, :, n_rope:]], dim=2)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout_p if self.training else 0.0)
        return self.out_proj(self._recombine_heads(out))


class PerceiverMemoryAttentionLayer(MemoryAttentionLayer):  # type: ignore[misc]  # sam2 is untyped
    """A memory-attention layer whose cross-attention knows how many memory frames it reads."""

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        pos: Tensor | None = None,
        query_pos: Tensor | None = None,
        num_k_exclude_rope: int = 0,
        num_spatial_mem: int = 1,
    ) -> Tensor:
        tgt = self._forward_sa(tgt, query_pos)
        attended = self.norm2(tgt)
        attended = self.cross_attn_image(
            q=attended + query_pos if self.pos_enc_at_cross_attn_queries else attended,
            k=memory + pos if self.pos_enc_at_cross_attn_keys and pos is not None else memory,
            v=memory,
            num_k_exclude_rope=num_k_exclude_rope,
            rope_k_repeat=num_spatial_mem,
        )
        tgt = tgt + self.dropout2(attended)
        mlp = self.linear2(self.dropout(self.activation(self.linear1(self.norm3(tgt)))))
        return tgt + self.dropout3(mlp)


class PerceiverMemoryAttention(MemoryAttention):  # type: ignore[misc]  # sam2 is untyped
    """``MemoryAttention`` taking ``num_spatial_mem``, the number of memory frames (not tokens)."""

    def forward(
        self,
        curr: Tensor | list[Tensor],
        memory: Tensor,
        curr_pos: Tensor | list[Tensor] | None = None,
        memory_pos: Tensor | None = None,
        num_obj_ptr_tokens: int = 0,
        num_spatial_mem: int = 1,
    ) -> Tensor:
        if isinstance(curr, list):
            assert isinstance(curr_pos, list) and len(curr) == len(curr_pos) == 1
            curr, curr_pos = curr[0], curr_pos[0]
        assert curr_pos is not None and memory_pos is not None and not isinstance(curr_pos, list)
        output = curr + 0.1 * curr_pos if self.pos_enc_at_input else curr
        # batch first, as the layers expect
        output, curr_pos = output.transpose(0, 1), curr_pos.transpose(0, 1)
        memory, memory_pos = memory.transpose(0, 1), memory_pos.transpose(0, 1)
        for layer in self.layers:
            output = layer(
                tgt=output,
                memory=memory,
                pos=memory_pos,
                query_pos=curr_pos,
                num_k_exclude_rope=num_obj_ptr_tokens,
                num_spatial_mem=num_spatial_mem,
            )
        return self.norm(output).transpose(0, 1)


def _feed_forward(dim: int, mult: int) -> nn.Sequential:
    return nn.Sequential(
        nn.LayerNorm(dim), nn.Linear(dim, dim * mult, bias=False), nn.GELU(), nn.Linear(dim * mult, dim, bias=False)
    )


def _heads(x: Tensor, heads: int) -> Tensor:
    b, n, c = x.shape
    return x.reshape(b, n, heads, c // heads).transpose(1, 2)


def _merge_heads(x: Tensor) -> Tensor:
    b, heads, n, c = x.shape
    return x.transpose(1, 2).reshape(b, n, heads * c)


class PerceiverAttention(nn.Module):
    """Latents attend to a frame's memory tokens (with their positions added to keys and values)."""

    def __init__(self, dim: int, dim_head: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm_x = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim_head * heads, bias=False)
        self.to_kv = nn.Linear(dim, dim_head * heads * 2, bias=False)
        self.to_out = nn.Linear(dim_head * heads, dim, bias=False)

    def forward(self, latents: Tensor, x: Tensor, pos: Tensor | None = None) -> Tensor:
        q = _heads(self.to_q(self.norm_latents(latents)), self.heads)
        k, v = (_heads(t, self.heads) for t in self.to_kv(self.norm_x(x)).chunk(2, dim=-1))
        if pos is not None:
            pos = _heads(pos, self.heads)
            k, v = k + pos, v + pos
        return self.to_out(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


class LatentSelfAttention(nn.Module):
    def __init__(self, dim: int, dim_head: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim_head * heads, bias=False)
        self.to_kv = nn.Linear(dim, dim_head * heads * 2, bias=False)
        self.to_out = nn.Linear(dim_head * heads, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(x)
        q = _heads(self.to_q(x), self.heads)
        k, v = (_heads(t, self.heads) for t in self.to_kv(x).chunk(2, dim=-1))
        return self.to_out(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


class PerceiverLayer(nn.Module):
    def __init__(self, dim: int, dim_head: int, heads: int, ff_mult: int) -> None:
        super().__init__()
        self.attn = PerceiverAttention(dim, dim_head, heads)
        self.ff = _feed_forward(dim, ff_mult)
        self.self_attn = LatentSelfAttention(dim, dim_head, heads)
        self.self_ff = _feed_forward(dim, ff_mult)

    def forward(self, latents: Tensor, x: Tensor, pos: Tensor | None = None) -> Tensor:
        latents = self.attn(latents, x, pos) + latents
        latents = self.ff(latents) + latents
        latents = self.self_attn(latents) + latents
        return self.self_ff(latents) + latents


class SpatialPerceiver(nn.Module):
    """Compresses a frame's memory map [B, 64, H, W] into 512 tokens: 256 global latents that
    attend to the whole map, and 256 latents on a 16x16 grid, each attending to its own window
    (so the 2D ones keep their place and get a sine position; the global ones get none)."""

    def __init__(self, dim: int = MEMORY_DIM, depth: int = 2, dim_head: int = 64, heads: int = 1, ff_mult: int = 4):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(LATENTS, dim))
        self.latents_2d = nn.Parameter(torch.randn(LATENT_GRID * LATENT_GRID, dim))
        self.position_encoding = PositionEmbeddingSine(dim, normalize=True, scale=None, temperature=10000)
        self.layers = nn.ModuleList([PerceiverLayer(dim, dim_head, heads, ff_mult) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, pos: Tensor) -> tuple[Tensor, Tensor]:
        b, c, h, w = x.shape
        tokens = x.permute(0, 2, 3, 1).flatten(1, 2)
        latents = self.latents.unsqueeze(0).expand(b, -1, -1)
        for layer in self.layers:
            latents = layer(latents, tokens, pos.permute(0, 2, 3, 1).flatten(1, 2))
        window = h // LATENT_GRID
        windows = x.permute(0, 2, 3, 1).reshape(b, LATENT_GRID, window, LATENT_GRID, window, c)
        windows = windows.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)
        grid = self.latents_2d.unsqueeze(0).expand(b, -1, -1).reshape(-1, 1, c)
        for layer in self.layers:
            grid = layer(grid, windows)
        grid_map = grid.view(b, LATENT_GRID, LATENT_GRID, c).permute(0, 3, 1, 2)
        grid_pos = self.position_encoding(grid_map).permute(0, 2, 3, 1).flatten(1, 2)
        out = torch.cat([self.norm(latents), self.norm(grid_map.permute(0, 2, 3, 1).flatten(1, 2))], dim=1)
        return out, torch.cat([torch.zeros_like(latents), grid_pos], dim=1)


class EdgeTAMBase(SAM2Base):  # type: ignore[misc]  # sam2 is untyped
    """``SAM2Base`` whose memories pass through the spatial perceiver. The streaming tracker
    assembles memories itself (with ``Family.memory_tokens``); SAM2Base's own assembly, which
    would flatten (512, 64) tokens as an H x W map, is refused rather than run wrong."""

    def __init__(self, *args: Any, spatial_perceiver: SpatialPerceiver, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spatial_perceiver = spatial_perceiver

    def _encode_new_memory(self, *args: Any, **kwargs: Any) -> tuple[Tensor, list[Tensor]]:
        features, pos = super()._encode_new_memory(*args, **kwargs)
        features, pos[0] = self.spatial_perceiver(features, pos[0])
        return features, pos

    def _prepare_memory_conditioned_features(self, frame_idx: int, is_init_cond_frame: bool, *args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        if not is_init_cond_frame:
            raise NotImplementedError("EdgeTAM memories are assembled by StreamingTracker, not by SAM2Base")
        return super()._prepare_memory_conditioned_features(frame_idx, is_init_cond_frame, *args, **kwargs)


def _sine(dim: int) -> PositionEmbeddingSine:
    return PositionEmbeddingSine(dim, normalize=True, scale=None, temperature=10000)


def build(image_size: int) -> EdgeTAMBase:
    """EdgeTAM at ``image_size`` with fresh weights, configured as the official video predictor
    configures it (``configs/edgetam.yaml`` and ``build_sam2_video_predictor``'s postprocessing)."""
    side = image_size // 16  # the stride-16 feature map the memory attention works on
    encoder = ImageEncoder(
        trunk=TimmTrunk(),
        neck=FpnNeck(
            position_encoding=_sine(256),
            d_model=256,
            backbone_channel_list=[384, 192, 96, 48],
            fpn_top_down_levels=[2, 3],  # levels 0 and 1 use the trunk's features directly
            fpn_interp_model="nearest",
        ),
        scalp=1,
    )
    layer = PerceiverMemoryAttentionLayer(
        activation="relu",
        cross_attention=RoPEAttentionV2(
            embedding_dim=256,
            num_heads=1,
            downsample_rate=1,
            dropout=0.1,
            kv_in_dim=MEMORY_DIM,
            q_sizes=(side, side),
            k_sizes=(LATENT_GRID, LATENT_GRID),
        ),
        d_model=256,
        dim_feedforward=2048,
        dropout=0.1,
        pos_enc_at_attn=False,
        pos_enc_at_cross_attn_keys=True,
        pos_enc_at_cross_attn_queries=False,
        self_attention=RoPEAttention(
            rope_theta=10000.0, feat_sizes=(side, side), embedding_dim=256, num_heads=1, downsample_rate=1, dropout=0.1
        ),
    )
    memory_encoder = MemoryEncoder(
        out_dim=MEMORY_DIM,
        position_encoding=_sine(MEMORY_DIM),
        mask_downsampler=MaskDownSampler(kernel_size=3, stride=2, padding=1),
        fuser=Fuser(CXBlock(dim=256, kernel_size=7, padding=3, layer_scale_init_value=1e-6, use_dwconv=True), 2),
    )
    return EdgeTAMBase(
        image_encoder=encoder,
        memory_attention=PerceiverMemoryAttention(d_model=256, pos_enc_at_input=True, layer=layer, num_layers=2),
        memory_encoder=memory_encoder,
        spatial_perceiver=SpatialPerceiver(),
        num_maskmem=7,
        image_size=image_size,
        sigmoid_scale_for_mem_enc=20.0,
        sigmoid_bias_for_mem_enc=-10.0,
        use_mask_input_as_output_without_sam=True,
        directly_add_no_mem_embed=True,
        use_high_res_features_in_sam=True,
        multimask_output_in_sam=True,
        iou_prediction_use_sigmoid=True,
        use_obj_ptrs_in_encoder=True,
        add_tpos_enc_to_obj_ptrs=False,
        only_obj_ptrs_in_the_past_for_eval=True,
        pred_obj_scores=True,
        pred_obj_scores_mlp=True,
        fixed_no_obj_ptr=True,
        multimask_output_for_tracking=True,
        use_multimask_token_for_obj_ptr=True,
        multimask_min_pt_num=0,
        multimask_max_pt_num=1,
        use_mlp_for_obj_ptr_proj=True,
        # what build_sam2_video_predictor's postprocessing sets
        binarize_mask_from_pts_for_mem_enc=True,
        sam_mask_decoder_extra_args={
            "dynamic_multimask_via_stability": True,
            "dynamic_multimask_stability_delta": 0.05,
            "dynamic_multimask_stability_thresh": 0.98,
        },
    ).eval()

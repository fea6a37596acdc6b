"""The layers of a face ViT: patch embedding, attention, MLP, pre-norm block."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Attention", "Block", "DropPath", "Mlp", "PatchEmbed"]


# --------------------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------------------


class DropPath(nn.Module):
    """Stochastic depth per sample (training only; identity in eval)."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens: (B, C, H, W) -> (B, N, D), row-major token order.

    Args:
        patch_size: Kernel and stride of the projection.
        in_chans: Input channels.
        embed_dim: Output token width.
    """

    def __init__(self, patch_size: int = 9, in_chans: int = 3, embed_dim: int = 512) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention, qkv without bias, proj with bias.

    One implementation for both uses: fused ``scaled_dot_product_attention`` normally, the
    explicit ``softmax(q k^T * scale) v`` when the caller asks for the attention maps.

    Args:
        dim: Token width D.
        num_heads: Number of heads; head_dim = D // num_heads, scale = head_dim ** -0.5.
        qkv_bias: Bias on the fused qkv projection.
        fp32_attention: Under autocast, upcast q, k, v and run attention in float32 (what the
            insightface/TransFace reference does); the output is cast back for ``proj``.
    """

    def __init__(
        self, dim: int, num_heads: int = 8, qkv_bias: bool = False, fp32_attention: bool = True
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.fp32_attention = fp32_attention
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, return_attention: bool = False) -> tuple[Tensor, Tensor | None]:
        """(B, N, D) -> ((B, N, D), attention (B, heads, N, N) or None)."""
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        in_dtype = q.dtype
        upcast = False
        if not torch.jit.is_scripting():
            upcast = self.fp32_attention and in_dtype != torch.float32 and _autocast_on(x)
        if upcast:
            out, attn = _attention_fp32(q, k, v, self.scale, return_attention)
            out = out.to(in_dtype)
        else:
            out, attn = _attention(q, k, v, self.scale, return_attention)
        return self.proj(out.transpose(1, 2).reshape(b, n, c)), attn


def _attention(
    q: Tensor, k: Tensor, v: Tensor, scale: float, return_attention: bool
) -> tuple[Tensor, Tensor | None]:
    if return_attention:
        attn = ((q @ k.transpose(-2, -1)) * scale).softmax(dim=-1)
        return attn @ v, attn
    return F.scaled_dot_product_attention(q, k, v, scale=scale), None


@torch.jit.unused
def _autocast_on(x: Tensor) -> bool:
    if x.device.type == "meta":  # autocast has no meta dispatch key
        return False
    return torch.is_autocast_enabled(x.device.type)


@torch.jit.unused
def _attention_fp32(
    q: Tensor, k: Tensor, v: Tensor, scale: float, return_attention: bool
) -> tuple[Tensor, Tensor | None]:
    with torch.autocast(device_type=q.device.type, enabled=False):
        return _attention(q.float(), k.float(), v.float(), scale, return_attention)


class Mlp(nn.Module):
    """fc1 -> ReLU6 -> fc2.

    Args:
        dim: Input and output width.
        hidden: Hidden width.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.ReLU6()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``.

    Args:
        dim: Token width.
        num_heads: Attention heads.
        mlp_hidden: MLP hidden width.
        qkv_bias: Bias on the qkv projection.
        norm_eps: LayerNorm epsilon.
        drop_path: Stochastic-depth probability (training only).
        fp32_attention: See :class:`Attention`.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_hidden: int,
        qkv_bias: bool = False,
        norm_eps: float = 1e-5,
        drop_path: float = 0.0,
        fp32_attention: bool = True,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, fp32_attention=fp32_attention)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, mlp_hidden)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_attention(x, False)[0]

    def forward_with_attention(
        self, x: Tensor, return_attention: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """The block's only implementation; also returns the attention map when asked."""
        y, attn = self.attn(self.norm1(x), return_attention)
        x = x + self.drop_path(y)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x, attn

"""Independent references for the model tests: a direct functional implementation of
docs/protocols.md §1 (written from the spec, sharing no code with vitfree.models) and
random-weight helpers.

A helper module, not a test module (hence no ``test_`` prefix): several test files and
model_fixtures.py import it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _ln(x: Tensor, sd: dict[str, Tensor], name: str) -> Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], eps=1e-5)


def _bn_eval(x: Tensor, sd: dict[str, Tensor], name: str) -> Tensor:
    mean, var = sd[f"{name}.running_mean"], sd[f"{name}.running_var"]
    return (x - mean) / torch.sqrt(var + 2e-5) * sd[f"{name}.weight"] + sd[f"{name}.bias"]


def reference_head(tokens: Tensor, sd: dict[str, Tensor]) -> tuple[Tensor, Tensor | None, Tensor]:
    """Head of section 1 on block output (B, N, D): (embedding, token weights, weighted tokens)."""
    b = tokens.shape[0]
    y = _ln(tokens, sd, "norm")
    weights = None
    if "senet.0.weight" in sd:
        s = torch.relu(y.reshape(b, -1) @ sd["senet.0.weight"].T)
        weights = torch.sigmoid(s @ sd["senet.2.weight"].T)  # (B, N): one weight per token
        y = y * weights[:, :, None]
    f = y.reshape(b, -1) @ sd["feature.0.weight"].T
    f = _bn_eval(f, sd, "feature.1")
    f = f @ sd["feature.2.weight"].T
    return _bn_eval(f, sd, "feature.3"), weights, y


def reference_forward(
    sd: dict[str, Tensor], x: Tensor, num_heads: int = 8, collect_attention: bool = False
) -> dict[str, object]:
    """Every exit of the model in ``sd`` on images ``x`` (B, 3, 112, 112).

    Returns a dict with ``exits`` {k: (B, 512)} for k = 1..depth, ``tokens`` {k: (B, N, D)}
    (block outputs) and, if asked, ``attention`` {k: (B, heads, N, N)}.
    """
    w = sd["patch_embed.proj.weight"]
    d, p = w.shape[0], w.shape[-1]
    b = x.shape[0]
    t = F.conv2d(x, w, sd["patch_embed.proj.bias"], stride=p)  # (B, D, g, g)
    t = t.reshape(b, d, -1).transpose(1, 2) + sd["pos_embed"]  # row-major tokens
    n = t.shape[1]
    hd = d // num_heads
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    exits, tokens, attention = {}, {}, {}
    for i in range(depth):
        pre = f"blocks.{i}."
        h = _ln(t, sd, pre + "norm1")
        qkv = h @ sd[pre + "attn.qkv.weight"].T
        if pre + "attn.qkv.bias" in sd:
            qkv = qkv + sd[pre + "attn.qkv.bias"]
        qkv = qkv.reshape(b, n, 3, num_heads, hd)
        q, k, v = (qkv[:, :, j].transpose(1, 2) for j in range(3))  # (B, H, N, hd)
        a = torch.softmax((q @ k.transpose(-1, -2)) * (hd**-0.5), dim=-1)
        o = (a @ v).transpose(1, 2).reshape(b, n, d)
        t = t + o @ sd[pre + "attn.proj.weight"].T + sd[pre + "attn.proj.bias"]
        h = _ln(t, sd, pre + "norm2")
        h = torch.clamp(h @ sd[pre + "mlp.fc1.weight"].T + sd[pre + "mlp.fc1.bias"], 0.0, 6.0)
        t = t + h @ sd[pre + "mlp.fc2.weight"].T + sd[pre + "mlp.fc2.bias"]
        tokens[i + 1] = t
        exits[i + 1] = reference_head(t, sd)[0]
        if collect_attention:
            attention[i + 1] = a
    return {"exits": exits, "tokens": tokens, "attention": attention}


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Fill every parameter and buffer with random values of a realistic scale.

    Linear/conv weights ~ N(0, 1/fan_in) (attention logits of order 1, so softmax is far
    from uniform), LayerNorm/BatchNorm affine around (1, 0), BatchNorm running statistics
    random (mean ~ N(0, 0.5), var in [0.5, 2]) so the eval-mode BN is exercised.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if not t.is_floating_point():
                continue
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "running_var":
                val = 0.5 + 1.5 * torch.rand(t.shape, generator=g)
            elif leaf == "running_mean":
                val = 0.5 * torch.randn(t.shape, generator=g)
            elif t.dim() == 1 and leaf == "weight":  # LayerNorm / BatchNorm scale
                val = 1.0 + 0.2 * torch.randn(t.shape, generator=g)
            elif t.dim() == 1:  # biases
                val = 0.1 * torch.randn(t.shape, generator=g)
            elif name in ("pos_embed", "mask_token"):
                val = 0.5 * torch.randn(t.shape, generator=g)
            else:
                fan_in = math.prod(t.shape[1:])
                val = torch.randn(t.shape, generator=g) / math.sqrt(fan_in)
            t.copy_(val.to(t.dtype))
    return model


def rel_err(a: Tensor, b: Tensor) -> float:
    """max |a - b| / max |b|: the relative error used by the fidelity tests."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max())


def images(b: int = 2, seed: int = 0, size: int = 112) -> Tensor:
    """``b`` random images in [-1, 1), the range of normalised faces, for a given seed."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g) * 2 - 1

"""Face-recognition Vision Transformers (insightface arcface_torch / TransFace / LVFace layout)
with training-free early exits.

The layer order, numerics and state_dict names follow PROTOCOLS.md section 1, so checkpoints
published for insightface's ``vit_*`` backbones, TransFace (with its ``senet`` token weighting)
and LVFace load with ``load_state_dict(strict=True)``:

* Conv2d(3, D, 9, stride 9) patch embedding -> 144 tokens, learned ``pos_embed``, no class token;
* pre-norm blocks ``x + proj(attn(LN1(x)))``, ``x + fc2(ReLU6(fc1(LN2(x))))``;
* head: ``norm`` -> [``senet`` token weights] -> flatten all tokens -> ``feature``
  (Linear, BatchNorm1d, Linear, BatchNorm1d) -> raw 512-d embedding.

Early exits (PROTOCOLS.md section 2): exit ``k`` (1-based) is the head applied to the output
of ``blocks[k - 1]``; negative ``k`` counts from the end (``-1`` is the last block).  Exit
``depth`` is the unchanged model.

Differences from the timm conventions this module otherwise follows, and why:

* ``norm`` belongs to the *head*: an exit-specific head carries its own LayerNorm, so
  :meth:`VisionTransformer.forward_features` returns the un-normalised tokens of the last
  block and :meth:`VisionTransformer.forward_head` applies ``norm``/``senet``/``feature``.
* Exits are 1-based (block ``k`` is exit ``k``) while
  :meth:`VisionTransformer.forward_intermediates` keeps timm's 0-based ``indices``.

Speed: attention goes through ``F.scaled_dot_product_attention`` (fused kernels on CPU and
GPU); the explicit ``softmax(q k^T)`` path runs only when attention maps are requested, in
the same module.  ``forward_exits`` runs the blocks once, up to the deepest exit, and pushes
all exits that share the checkpoint's head through it as one batch, so the head's large
``144*D x D`` weight is read once rather than once per exit.
"""

import copy
import dataclasses
import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Union

import torch
from torch import Tensor, nn

from vitfree.models.config import VARIANTS, ViTConfig, get_config
from vitfree.models.heads import ExitHead, _make_feature, _make_senet
from vitfree.models.layers import Attention, Block, DropPath, Mlp, PatchEmbed, _autocast_on

if TYPE_CHECKING:
    from os import PathLike

__all__ = [
    "VARIANTS",
    "Attention",
    "Block",
    "DropPath",
    "ExitHead",
    "Mlp",
    "PatchEmbed",
    "ViTConfig",
    "VisionTransformer",
    "create_model",
    "get_config",
    "vit_b",
    "vit_b_dp005_mask_005",
    "vit_h",
    "vit_l",
    "vit_l_dp005_mask_005",
    "vit_s",
    "vit_s_dp005_mask_0",
    "vit_t",
    "vit_t_dp005_mask0",
]

HeadChoice = Literal["auto", "shared", "exit"]


# --------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------


class VisionTransformer(nn.Module):
    """Face ViT with training-free early exits.

    Input: (B, 3, 112, 112) float tensors normalised as ``(x / 255 - 0.5) / 0.5``
    (see :func:`vitfree.models.preprocess`).  Output of :meth:`forward`: the raw
    (un-normalised) (B, num_features) embedding of the full-depth model.

    Exits: :meth:`forward_exits` (several from one pass), :meth:`forward_exit`,
    :meth:`truncate` (a deployable depth-k model), :meth:`forward_intermediates` (tokens and
    attention maps for analysis), :meth:`exit_costs`; exit-specific heads with
    :meth:`set_exit_heads` / :meth:`load_exit_heads`.

    Mixed precision on GPU: call the model inside ``torch.autocast("cuda", torch.bfloat16)``
    (or ``torch.float16``).  The linear layers then run in that dtype while attention
    (``fp32_attention``, default on) and the head stay in float32, which is what the
    insightface/TransFace reference does at evaluation time; the residual stream stays fp32.

    Args:
        img_size: Input height and width.
        patch_size: Patch size (9 for insightface/TransFace/LVFace).
        in_chans: Input channels.
        embed_dim: Token width D.
        depth: Number of blocks.
        num_heads: Attention heads.
        mlp_ratio: MLP hidden width / D.
        qkv_bias: Bias on the qkv projection.
        num_features: Embedding size.
        senet: Add TransFace's ``senet`` token weighting to the head.
        mask_token: Keep the training-only ``mask_token`` parameter (present in checkpoints).
        norm_eps: LayerNorm epsilon.
        bn_eps: BatchNorm1d epsilon in the head.
        drop_path_rate: Stochastic depth for training (linearly increasing over blocks).
        fp32_attention: Under autocast, run attention in float32 like the reference.
    """

    def __init__(
        self,
        img_size: int = 112,
        patch_size: int = 9,
        in_chans: int = 3,
        embed_dim: int = 512,
        depth: int = 12,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        num_features: int = 512,
        senet: bool = False,
        mask_token: bool = True,
        norm_eps: float = 1e-5,
        bn_eps: float = 2e-5,
        drop_path_rate: float = 0.0,
        fp32_attention: bool = True,
    ) -> None:
        super().__init__()
        cfg = ViTConfig(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=in_chans,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            num_features=num_features,
            senet=senet,
            mask_token=mask_token,
            norm_eps=norm_eps,
            bn_eps=bn_eps,
            drop_path_rate=drop_path_rate,
            fp32_attention=fp32_attention,
        )
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if cfg.grid_size < 1:
            raise ValueError(f"patch_size {patch_size} is larger than img_size {img_size}")
        self.config = cfg
        #: Name of the variant this model was built from, when known (set by the factories).
        self.arch: str | None = None
        self.img_size = img_size
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.num_patches = cfg.num_patches
        self.num_features = num_features

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_patches, embed_dim))
        self.mask_token: nn.Parameter | None = (
            nn.Parameter(torch.zeros(1, 1, embed_dim)) if mask_token else None
        )
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads,
                cfg.mlp_hidden,
                qkv_bias=qkv_bias,
                norm_eps=norm_eps,
                drop_path=rates[i],
                fp32_attention=fp32_attention,
            )
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.senet: nn.Sequential | None = _make_senet(cfg) if senet else None
        self.feature = _make_feature(cfg)
        #: Exit-specific heads keyed by ``str(exit)`` (1-based); empty for a plain checkpoint,
        #: so it adds no state_dict keys and strict loading of published files still works.
        self.exit_heads = nn.ModuleDict()
        self._init_weights()

    @classmethod
    def from_config(cls, cfg: ViTConfig) -> "VisionTransformer":
        """Build an (untrained) model from a :class:`ViTConfig`."""
        return cls(**dataclasses.asdict(cfg))

    def _init_weights(self) -> None:
        # Same scheme as the reference (trunc-normal 0.02 for Linear and pos_embed), so a
        # freshly built model is a sensible starting point; checkpoints overwrite it anyway.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.mask_token is not None:
            nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    # ---------------------------------------------------------------- input and exits

    @property
    def depth(self) -> int:
        return len(self.blocks)

    @torch.jit.unused
    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor image batch, got {type(x).__name__}")
        size, c = self.img_size, self.in_chans
        want = f"(B, {c}, {size}, {size})"
        if x.dim() != 4:
            raise ValueError(f"expected a {want} image batch, got shape {tuple(x.shape)}")
        if x.shape[1] != c:
            hint = ""
            if x.shape[-1] == c:
                hint = " (looks channels-last: use x.permute(0, 3, 1, 2) or preprocess())"
            raise ValueError(
                f"expected {c} channels in dim 1 of a {want} batch, got {x.shape[1]}"
                f" (shape {tuple(x.shape)}){hint}"
            )
        if x.shape[2] != size or x.shape[3] != size:
            raise ValueError(
                f"expected {size}x{size} images, got {x.shape[2]}x{x.shape[3]}; "
                f"align and crop faces to {size}x{size} first"
            )
        if not x.is_floating_point():
            raise TypeError(
                f"expected a floating-point image batch normalised as (x / 255 - 0.5) / 0.5, "
                f"got dtype {x.dtype}; use vitfree.models.preprocess() on uint8 images"
            )
        want_dtype = self.pos_embed.dtype
        if x.dtype != want_dtype:
            raise TypeError(
                f"input dtype {x.dtype} does not match the model's parameters ({want_dtype}); "
                f"convert with x.to({want_dtype}) or use torch.autocast for mixed precision"
            )

    @torch.jit.unused
    def resolve_exit(self, k: Any) -> int:
        """1-based block index of exit ``k`` (negative counts from the end)."""
        if isinstance(k, bool) or not _is_int(k):
            raise TypeError(f"exits must be integers, got {k!r} ({type(k).__name__})")
        k = operator.index(k)
        d = self.depth
        if k == 0 or not -d <= k <= d:
            raise ValueError(
                f"exit {k} is out of range for a {d}-block model: "
                f"use 1..{d} (1-based) or -{d}..-1 (from the end)"
            )
        return k if k > 0 else d + 1 + k

    @torch.jit.unused
    def resolve_exits(self, exits: Iterable[int] | None) -> list[int]:
        """1-based block indices of ``exits`` in the given order; ``None`` means all blocks."""
        if exits is None:
            return list(range(1, self.depth + 1))
        if isinstance(exits, (str, bytes)) or not isinstance(exits, Iterable):
            if _is_int(exits):
                raise TypeError(
                    f"exits must be a sequence of integers, e.g. [{exits!r}], got {exits!r}"
                )
            raise TypeError(f"exits must be a sequence of integers, got {exits!r}")
        resolved = [self.resolve_exit(k) for k in exits]
        if not resolved:
            raise ValueError(f"exits is empty: ask for at least one of 1..{self.depth}")
        return resolved

    # ---------------------------------------------------------------- forward passes

    def _embed(self, x: Tensor) -> Tensor:
        if not torch.jit.is_scripting():
            self._check_input(x)
        return self.patch_embed(x) + self.pos_embed

    def forward_features(self, x: Tensor) -> Tensor:
        """Images (B, 3, H, W) -> output tokens of the last block (B, N, D), before ``norm``."""
        x = self._embed(x)
        for blk in self.blocks:
            x = blk(x)
        return x

    def forward_head(self, x: Tensor) -> Tensor:
        """Block output tokens (B, N, D) -> embedding (B, num_features) with the shared head.

        Under autocast the head runs in float32 like the reference evaluation (one GEMM).
        """
        if not torch.jit.is_scripting() and _autocast_on(x):
            return self._forward_head_fp32(x)
        x = self.norm(x)
        senet = self.senet
        if senet is not None:
            x = x * senet(x.flatten(1)).unsqueeze(-1)
        return self.feature(x.flatten(1))

    @torch.jit.unused
    def _forward_head_fp32(self, x: Tensor) -> Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.forward_head(x.float())

    def forward(self, x: Tensor) -> Tensor:
        """Images (B, 3, H, W) -> full-depth embedding (B, num_features)."""
        return self.forward_head(self.forward_features(x))

    @torch.jit.unused
    def forward_transface(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """TransFace's forward: (embedding, softmax(token weights), per-token std).

        Only for models with ``senet``; evaluation needs the embedding alone (:meth:`forward`).
        """
        if self.senet is None:
            raise ValueError("forward_transface needs a model with a TransFace senet head")
        t = self.norm(self.forward_features(x))
        w = self.senet(t.flatten(1))
        t = t * w.unsqueeze(-1)
        return self.feature(t.flatten(1)), w.softmax(dim=1), t.std(dim=2)

    @torch.jit.unused
    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = True,
        intermediates_only: bool = False,
        return_attention: bool = False,
    ) -> Any:
        """Tokens (and optionally attention maps) of chosen blocks, from one pass.

        timm semantics: ``indices`` are 0-based block indices (negative from the end), an int
        ``n`` means the last ``n`` blocks, ``None`` all blocks.  With ``stop_early`` the pass
        stops after the deepest requested block.

        Args:
            x: Image batch (B, 3, H, W).
            indices: Blocks to return (see above).
            norm: Apply the shared ``norm`` to each returned token tensor.
            stop_early: Do not run blocks past the deepest requested one.
            intermediates_only: Return only the intermediates.
            return_attention: Also return each requested block's attention probabilities
                (B, heads, N, N), computed explicitly as softmax(q k^T * scale).

        Returns:
            ``intermediates`` (list of (B, N, D), in block order) if ``intermediates_only``,
            else ``(final, intermediates)`` where ``final`` is the un-normalised output of
            the last block run; with ``return_attention`` a list of attention maps is
            appended to the returned tuple (``(intermediates, attentions)`` or
            ``(final, intermediates, attentions)``).
        """
        take = self._take_indices(indices)
        take_set = set(take)
        last = max(take) + 1 if stop_early else self.depth
        x = self._embed(x)
        tokens: list[Tensor] = []
        attentions: list[Tensor] = []
        blocks: list[Block] = list(self.blocks)  # type: ignore[arg-type]
        for i in range(last):
            wanted = i in take_set
            if return_attention and wanted:
                x, attn = blocks[i].forward_with_attention(x, True)
            else:  # through __call__, so forward hooks on blocks fire
                x, attn = blocks[i](x), None
            if wanted:
                tokens.append(self.norm(x) if norm else x)
                if attn is not None:
                    attentions.append(attn)
        if intermediates_only:
            return (tokens, attentions) if return_attention else tokens
        return (x, tokens, attentions) if return_attention else (x, tokens)

    @torch.jit.unused
    def _take_indices(self, indices: int | Sequence[int] | None) -> list[int]:
        d = self.depth
        if indices is None:
            return list(range(d))
        if _is_int(indices) and not isinstance(indices, bool):
            n = operator.index(indices)  # type: ignore[arg-type]
            if not 1 <= n <= d:
                raise ValueError(f"indices={n} asks for the last {n} blocks of a {d}-block model")
            return list(range(d - n, d))
        out = []
        for i in indices:  # type: ignore[union-attr]
            if isinstance(i, bool) or not _is_int(i):
                raise TypeError(f"block indices must be integers, got {i!r}")
            j = operator.index(i)
            if not -d <= j < d:
                raise ValueError(
                    f"block index {j} is out of range for a {d}-block model "
                    f"(0-based: 0..{d - 1} or -{d}..-1)"
                )
            out.append(j % d)
        if not out:
            raise ValueError("indices is empty")
        return sorted(set(out))

    @torch.jit.unused
    def forward_exits(
        self,
        x: Tensor,
        exits: Iterable[int] | None = None,
        heads: HeadChoice = "auto",
    ) -> dict[int, Tensor]:
        """Embeddings at several exits from one pass that stops at the deepest one.

        Args:
            x: Image batch (B, 3, H, W), normalised.
            exits: Exits to compute, 1-based (negative from the end); ``None`` = every block.
            heads: ``"auto"``: an exit-specific head where one is loaded, else the shared head;
                ``"shared"``: always the checkpoint's head (training-free);
                ``"exit"``: exit-specific heads only (error if one is missing).

        Returns:
            ``{k: (B, num_features) embedding}`` keyed by the exits as given.
        """
        if (
            exits is not None
            and isinstance(exits, Iterable)
            and not isinstance(exits, (str, bytes))
        ):
            exits = list(exits)  # iterate once even if given a generator
        wanted = self.resolve_exits(exits)
        keys = wanted if exits is None else [operator.index(k) for k in exits]
        use_exit_head = {k: self._use_exit_head(k, heads) for k in wanted}
        unique = sorted(set(wanted))
        deepest = unique[-1]
        x = self._embed(x)
        tokens: dict[int, Tensor] = {}
        for i in range(deepest):
            x = self.blocks[i](x)
            if i + 1 in use_exit_head:
                tokens[i + 1] = x
        out: dict[int, Tensor] = {}
        shared = [k for k in unique if not use_exit_head[k]]
        batchable = not (self.training and self.feature.training)
        if len(shared) > 1 and batchable:
            # One pass of the shared head over all exits: the head's first Linear has
            # 144*D x D weights (151 MB for vit_s), so reading it once instead of once per
            # exit is what keeps "all exits from one pass" close to the cost of one forward.
            # Eval-mode BatchNorm is per sample, so batching exits does not mix them.
            emb = self.forward_head(torch.cat([tokens[k] for k in shared]))
            out.update(zip(shared, emb.chunk(len(shared))))
        else:
            for k in shared:
                out[k] = self.forward_head(tokens[k])
        for k in unique:
            if use_exit_head[k]:
                out[k] = self.exit_heads[str(k)](tokens[k])
        return {k_in: out[k] for k_in, k in zip(keys, wanted)}

    @torch.jit.unused
    def forward_exit(self, x: Tensor, exit: int, heads: HeadChoice = "auto") -> Tensor:
        """Embedding at a single exit (B, num_features); runs only ``exit`` blocks."""
        k = self.resolve_exit(exit)
        return self.forward_exits(x, [k], heads=heads)[k]

    # ---------------------------------------------------------------- exit heads

    @torch.jit.unused
    def _use_exit_head(self, k: int, heads: str) -> bool:
        if heads not in ("auto", "shared", "exit"):
            raise ValueError(f"heads must be 'auto', 'shared' or 'exit', got {heads!r}")
        have = str(k) in self.exit_heads
        if heads == "exit" and not have:
            loaded = sorted(int(j) for j in self.exit_heads) or "none"
            raise ValueError(
                f"no exit-specific head for exit {k} (loaded: {loaded}); "
                f"use heads='auto' or 'shared', or load one with load_exit_heads()"
            )
        return have and heads != "shared"

    @torch.jit.unused
    def new_exit_head(self) -> ExitHead:
        """A freshly initialised :class:`ExitHead` that fits this model (same device/dtype)."""
        ref = self.pos_embed
        return ExitHead(self.config).to(device=ref.device, dtype=ref.dtype)

    @torch.jit.unused
    def set_exit_heads(self, heads: Mapping[int, ExitHead | Mapping[str, Tensor]]) -> None:
        """Install exit-specific heads, given as modules or head state_dicts.

        Every head is checked against this model (keys and shapes) before any is installed;
        a head that does not fit raises :class:`vitfree.models.CheckpointError` naming the
        exit and the offending tensors.  Existing heads for other exits are kept.
        """
        from vitfree.models.checkpoint import CheckpointError, describe_mismatch

        staged: dict[str, ExitHead] = {}
        for k_in, head in heads.items():
            try:
                k = self.resolve_exit(int(k_in) if isinstance(k_in, str) else k_in)
            except (TypeError, ValueError) as e:
                raise CheckpointError(f"exit head key {k_in!r}: {e}") from None
            sd = head.state_dict() if isinstance(head, nn.Module) else dict(head)
            new = self.new_exit_head()
            problem = describe_mismatch(sd, new.state_dict())
            if problem:
                raise CheckpointError(
                    f"exit head for exit {k} does not fit this model "
                    f"({self.config.describe()}):\n{problem}"
                )
            new.load_state_dict(sd, strict=True)
            new.train(self.training)
            staged[str(k)] = new
        for key, mod in staged.items():
            self.exit_heads[key] = mod

    @torch.jit.unused
    def clear_exit_heads(self) -> None:
        """Remove all exit-specific heads (back to the training-free shared head)."""
        self.exit_heads = nn.ModuleDict()

    @torch.jit.unused
    def load_exit_heads(self, path: Union[str, "PathLike[str]"]) -> None:
        """Load exit-specific heads from a file written by :func:`save_exit_heads`."""
        from vitfree.models.checkpoint import read_exit_heads

        self.set_exit_heads(read_exit_heads(path))

    @torch.jit.unused
    def save_exit_heads(self, path: Union[str, "PathLike[str]"]) -> None:
        """Write this model's exit-specific heads (see :func:`save_exit_heads`)."""
        from vitfree.models.checkpoint import save_exit_heads

        save_exit_heads(path, {int(k): h for k, h in self.exit_heads.items()})

    # ---------------------------------------------------------------- truncation

    @torch.jit.unused
    def truncate(
        self, exit: int, heads: HeadChoice = "auto", copy_weights: bool = False
    ) -> "VisionTransformer":
        """A ``VisionTransformer`` with only the first ``exit`` blocks and the exit's head.

        Its ``forward(x)`` is exit ``exit`` of this model, it holds exactly that many blocks,
        and its state_dict is a valid checkpoint of a depth-``exit`` model.  It exports to
        ONNX and TorchScript (see :func:`vitfree.models.export_onnx`).

        Args:
            exit: Exit to keep, 1-based (negative from the end).
            heads: Which head to use, as in :meth:`forward_exits`.
            copy_weights: Deep-copy the weights; by default they are shared with this model
                (no extra memory, and in-place changes show in both).
        """
        k = self.resolve_exit(exit)
        head = self.exit_heads[str(k)] if self._use_exit_head(k, heads) else self
        norm: nn.LayerNorm = head.norm  # type: ignore[assignment]
        senet: nn.Sequential | None = head.senet  # type: ignore[assignment]
        feature: nn.Sequential = head.feature  # type: ignore[assignment]
        with torch.device("meta"):
            small = VisionTransformer.from_config(self.config.replace(depth=k))
        small.patch_embed = self.patch_embed
        small.pos_embed = self.pos_embed
        small.mask_token = self.mask_token
        small.blocks = nn.ModuleList(list(self.blocks[:k]))
        small.norm = norm
        small.senet = senet
        small.feature = feature
        small.arch = f"{self.arch}@exit{k}" if self.arch else None
        small.train(self.training)
        if copy_weights:
            small = copy.deepcopy(small)
        return small

    @torch.jit.unused
    def exit_costs(self, exits: Iterable[int] | None = None) -> list[Any]:
        """Per-exit FLOPs and parameters; see :func:`vitfree.models.exit_costs`."""
        from vitfree.models.costs import exit_costs

        return exit_costs(self, exits)

    @torch.jit.unused
    def extra_repr(self) -> str:
        name = f"arch={self.arch}, " if self.arch else ""
        return name + self.config.describe()


def _is_int(x: Any) -> bool:
    try:
        operator.index(x)
    except TypeError:
        return False
    return True


# --------------------------------------------------------------------------------------
# factories
# --------------------------------------------------------------------------------------


def create_model(name: str, *, senet: bool = False, **overrides: Any) -> VisionTransformer:
    """Build a named variant with random weights (``create_model("vit_s", senet=True)``).

    Args:
        name: A key of :data:`VARIANTS`.
        senet: Add TransFace's ``senet`` token weighting.
        **overrides: Other :class:`ViTConfig` fields (e.g. ``drop_path_rate=0.05``).
    """
    model = VisionTransformer.from_config(get_config(name, senet=senet, **overrides))
    model.arch = name
    return model


def vit_t(*, senet: bool = False, **kwargs: Any) -> VisionTransformer:
    """insightface vit_t: D=256, 12 blocks (19.1M parameters)."""
    return create_model("vit_t", senet=senet, **kwargs)


def vit_s(*, senet: bool = False, **kwargs: Any) -> VisionTransformer:
    """insightface vit_s / TransFace-S (with ``senet=True``): D=512, 12 blocks (76.0M)."""
    return create_model("vit_s", senet=senet, **kwargs)


def vit_b(*, senet: bool = False, **kwargs: Any) -> VisionTransformer:
    """insightface vit_b / TransFace-B: D=512, 24 blocks (113.8M)."""
    return create_model("vit_b", senet=senet, **kwargs)


def vit_l(*, senet: bool = False, **kwargs: Any) -> VisionTransformer:
    """vit_l / TransFace-L: D=768, 24 blocks."""
    return create_model("vit_l", senet=senet, **kwargs)


def vit_h(*, senet: bool = False, **kwargs: Any) -> VisionTransformer:
    """vit_h: D=1024, 48 blocks."""
    return create_model("vit_h", senet=senet, **kwargs)


def vit_t_dp005_mask0(*, senet: bool = False, **kwargs: Any) -> VisionTransformer:
    """insightface WebFace42M config name for vit_t (same inference architecture)."""
    return create_model("vit_t_dp005_mask0", senet=senet, **kwargs)


def vit_s_dp005_mask_0(*, senet: bool = False, **kwargs: Any) -> VisionTransformer:
    """insightface WebFace42M / TransFace config name for vit_s (same architecture)."""
    return create_model("vit_s_dp005_mask_0", senet=senet, **kwargs)


def vit_b_dp005_mask_005(*, senet: bool = False, **kwargs: Any) -> VisionTransformer:
    """insightface WebFace42M config name for vit_b (same architecture)."""
    return create_model("vit_b_dp005_mask_005", senet=senet, **kwargs)


def vit_l_dp005_mask_005(*, senet: bool = False, **kwargs: Any) -> VisionTransformer:
    """insightface WebFace42M config name for vit_l (same architecture)."""
    return create_model("vit_l_dp005_mask_005", senet=senet, **kwargs)

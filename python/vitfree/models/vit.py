"""Face-recognition Vision Transformers (insightface arcface_torch / TransFace / LVFace layout)
with training-free early exits.

The layer order, numerics and state_dict names follow docs/protocols.md §1, so checkpoints
published for insightface's ``vit_*`` backbones, TransFace (with its ``senet`` token weighting)
and LVFace load with ``load_state_dict(strict=True)``:

* Conv2d(3, D, 9, stride 9) patch embedding -> 144 tokens, learned ``pos_embed``, no class token;
* pre-norm blocks ``x + proj(attn(LN1(x)))``, ``x + fc2(ReLU6(fc1(LN2(x))))``;
* head: ``norm`` -> [``senet`` token weights] -> flatten all tokens -> ``feature``
  (Linear, BatchNorm1d, Linear, BatchNorm1d) -> raw 512-d embedding.

Early exits (docs/protocols.md §2): exit ``k`` (1-based) is the head applied to the output
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

from vitfree.errors import CheckpointError, InputError, InputTypeError
from vitfree.models.backbone import ViTBackbone
from vitfree.models.config import VARIANTS, ViTConfig, _is_int, get_config, resolve_exit
from vitfree.models.costs import ExitCost, exit_costs
from vitfree.models.files import (
    backbone_fingerprint,
    describe_mismatch,
    read_exit_heads_file,
    save_exit_heads,
)
from vitfree.models.heads import (
    ExitHead,
    Head,
    HeadSpec,
    _make_feature,
    _make_senet,
    fp32_under_autocast,
)
from vitfree.models.layers import Attention, Block, DropPath, Mlp, PatchEmbed

if TYPE_CHECKING:
    from os import PathLike

__all__ = [
    "VARIANTS",
    "Attention",
    "Block",
    "DropPath",
    "ExitHead",
    "Intermediates",
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


@dataclasses.dataclass
class Intermediates:
    """What :meth:`VisionTransformer.intermediates` returns (one type, whatever is asked).

    Attributes:
        tokens: ``{exit: (B, N, D)}`` output of each requested block (1-based), normalised
            with the shared ``norm`` when asked.
        attentions: ``{exit: (B, heads, N, N)}`` attention probabilities of each requested
            block; empty unless asked.
        last: (B, N, D) un-normalised output of the last block run.
    """

    tokens: dict[int, Tensor]
    attentions: dict[int, Tensor]
    last: Tensor


# --------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------


class VisionTransformer(ViTBackbone):
    """Face ViT with training-free early exits.

    Input: (B, 3, 112, 112) float tensors normalised as ``(x / 255 - 0.5) / 0.5``
    (see :func:`vitfree.models.preprocess`).  Output of :meth:`forward`: the raw
    (un-normalised) (B, num_features) embedding of the full-depth model.

    Exits: :meth:`forward_exits` (several from one pass), :meth:`forward_exit`,
    :meth:`truncate` (a deployable depth-k model), :meth:`intermediates` (tokens and
    attention maps for analysis), :meth:`exit_costs`; exit-specific heads (any
    :class:`vitfree.models.heads.Head`) with :meth:`set_exit_heads` / :meth:`load_exit_heads`.
    Block stepping (:meth:`embed`, :meth:`run_blocks`, :meth:`head_at`) is inherited from
    :class:`vitfree.models.backbone.ViTBackbone` and is what the exits are built on.

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
        super().__init__(cfg)
        # The checkpoint's head keeps its published names (norm, senet, feature) at the top
        # level, so strict loading of insightface/TransFace/LVFace files works.
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.senet: nn.Sequential | None = _make_senet(cfg) if senet else None
        self.feature = _make_feature(cfg)
        #: Exit-specific heads keyed by ``str(exit)`` (1-based); empty for a plain checkpoint,
        #: so it adds no state_dict keys and strict loading of published files still works.
        self.exit_heads = nn.ModuleDict()
        #: The heads file of the installed exit heads (:meth:`load_exit_heads`), for reports.
        self.exit_heads_file: str | None = None
        self._init_weights()

    @classmethod
    def from_config(cls, cfg: ViTConfig) -> "VisionTransformer":
        """Build an (untrained) model from a :class:`ViTConfig`."""
        return cls(**dataclasses.asdict(cfg))

    # ---------------------------------------------------------------- heads

    def _head_embed(self, x: Tensor) -> Tensor:
        # The checkpoint head written out (vitfree.models.heads.checkpoint_embed), because
        # TorchScript cannot pass modules to a function; the two are tested equal.
        x = self.norm(x)
        senet = self.senet
        if senet is not None:
            x = x * senet(x.flatten(1)).unsqueeze(-1)
        return self.feature(x.flatten(1))

    def forward_head(self, x: Tensor) -> Tensor:
        """Block output tokens (B, N, D) -> embedding (B, num_features) with the shared head.

        Under autocast the head runs in float32 like the reference evaluation (the one head
        path of every head: :func:`vitfree.models.heads.fp32_under_autocast`).
        """
        if not torch.jit.is_scripting():
            return self._forward_head_eager(x)
        return self._head_embed(x)

    @torch.jit.unused
    def _forward_head_eager(self, x: Tensor) -> Tensor:
        return fp32_under_autocast(self._head_embed, x)

    @torch.jit.unused
    def head_at(self, tokens: Tensor, exit: int, heads: HeadChoice = "auto") -> Tensor:
        """Embedding (B, num_features) of exit ``exit`` from that block's tokens (B, N, D).

        Args:
            tokens: output of block ``exit`` (from :meth:`run_blocks`), before any norm.
            exit: the exit, 1-based (negative from the end).
            heads: which head, as in :meth:`forward_exits`.
        """
        k = self.resolve_exit(exit)
        if self._use_exit_head(k, heads):
            head: Head = self.exit_heads[str(k)]  # type: ignore[assignment]
            return head(tokens)
        return self.forward_head(tokens)

    def forward(self, x: Tensor) -> Tensor:
        """Images (B, 3, H, W) -> full-depth embedding (B, num_features)."""
        return self.forward_head(self.forward_features(x))

    @torch.jit.unused
    def forward_transface(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """TransFace's forward: (embedding, softmax(token weights), per-token std).

        Only for models with ``senet``; evaluation needs the embedding alone (:meth:`forward`).
        The embedding comes from the one head path (:meth:`forward_head`); the token weights
        and the std of the weighted tokens are computed beside it, in float32 under autocast.
        """
        senet = self.senet
        if senet is None:
            raise InputError("forward_transface needs a model with a TransFace senet head")
        tokens = self.forward_features(x)

        def weights_and_std(t: Tensor) -> Tensor:
            t = self.norm(t)
            w = senet(t.flatten(1))
            return torch.cat([w, (t * w.unsqueeze(-1)).std(dim=2)], dim=1)

        both = fp32_under_autocast(weights_and_std, tokens)
        w, std = both.split(self.num_patches, dim=1)
        return self.forward_head(tokens), w.softmax(dim=1), std

    # ---------------------------------------------------------------- intermediates

    @torch.jit.unused
    def intermediates(
        self,
        x: Tensor,
        exits: Iterable[int] | None = None,
        *,
        norm: bool = False,
        attention: bool = False,
        stop_early: bool = True,
    ) -> Intermediates:
        """Tokens (and optionally attention maps) after chosen blocks, from one pass.

        Args:
            x: Image batch (B, 3, H, W).
            exits: Blocks to return, 1-based exits (negative from the end); None = all.
            norm: Apply the shared ``norm`` to each returned token tensor (as exits see them).
            attention: Also return each requested block's head-wise attention probabilities
                (B, heads, N, N), computed explicitly as softmax(q k^T * scale).
            stop_early: Do not run blocks past the deepest requested one.

        Returns:
            :class:`Intermediates`: ``tokens`` {exit: (B, N, D)}, ``attentions``
            {exit: (B, heads, N, N)} (empty unless ``attention``), ``last`` the un-normalised
            output of the last block run.
        """
        take = sorted(set(self.resolve_exits(None if exits is None else list(exits))))
        return self._intermediates(x, take, norm, attention, stop_early)

    @torch.jit.unused
    def _intermediates(
        self, x: Tensor, take: list[int], norm: bool, attention: bool, stop_early: bool
    ) -> Intermediates:
        take_set = set(take)
        last = take[-1] if stop_early else self.depth
        t = self.embed(x)
        tokens: dict[int, Tensor] = {}
        attentions: dict[int, Tensor] = {}
        blocks: list[Block] = list(self.blocks)  # type: ignore[arg-type]
        for k in range(1, last + 1):
            wanted = k in take_set
            if attention and wanted:
                t, attn = blocks[k - 1].forward_with_attention(t, True)
                if attn is not None:
                    attentions[k] = attn
            else:
                t = self.run_blocks(t, k - 1, k)
            if wanted:
                tokens[k] = self.norm(t) if norm else t
        return Intermediates(tokens=tokens, attentions=attentions, last=t)

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
        """timm-compatible form of :meth:`intermediates` (0-based ``indices``).

        timm semantics: ``indices`` are 0-based block indices (negative from the end), an int
        ``n`` means the last ``n`` blocks, ``None`` all blocks.  With ``stop_early`` the pass
        stops after the deepest requested block.  Prefer :meth:`intermediates`, which has one
        return type and 1-based exits like the rest of vitfree.

        Returns:
            ``intermediates`` (list of (B, N, D), in block order) if ``intermediates_only``,
            else ``(final, intermediates)`` where ``final`` is the un-normalised output of
            the last block run; with ``return_attention`` a list of attention maps is
            appended to the returned tuple (``(intermediates, attentions)`` or
            ``(final, intermediates, attentions)``).
        """
        take = self._take_indices(indices)
        out = self._intermediates(x, take, norm, return_attention, stop_early)
        tokens = [out.tokens[k] for k in take]
        attentions = [out.attentions[k] for k in take if k in out.attentions]
        if intermediates_only:
            return (tokens, attentions) if return_attention else tokens
        return (out.last, tokens, attentions) if return_attention else (out.last, tokens)

    @torch.jit.unused
    def _take_indices(self, indices: int | Sequence[int] | None) -> list[int]:
        """timm's 0-based ``indices`` -> sorted 1-based exits, through the one exit resolver."""
        d = self.depth
        if indices is None:
            return list(range(1, d + 1))
        if _is_int(indices) and not isinstance(indices, bool):
            n = operator.index(indices)  # type: ignore[arg-type]
            if not 1 <= n <= d:
                raise InputError(f"indices={n} asks for the last {n} blocks of a {d}-block model")
            return list(range(d - n + 1, d + 1))
        out = []
        for i in indices:  # type: ignore[union-attr]
            if isinstance(i, bool) or not _is_int(i):
                raise InputTypeError(f"block indices must be integers, got {i!r}")
            j = operator.index(i)
            try:
                out.append(resolve_exit(j + 1 if j >= 0 else j, d))
            except ValueError:
                raise InputError(
                    f"block index {j} is out of range for a {d}-block model "
                    f"(0-based: 0..{d - 1} or -{d}..-1)"
                ) from None
        if not out:
            raise InputError("indices is empty")
        return sorted(set(out))

    # ---------------------------------------------------------------- exits

    @torch.jit.unused
    def forward_exits(
        self,
        x: Tensor,
        exits: Iterable[int] | None = None,
        heads: HeadChoice = "auto",
    ) -> dict[int, Tensor]:
        """Embeddings at several exits from one pass that stops at the deepest one.

        Built on block stepping: :meth:`embed`, then :meth:`run_blocks` from exit to exit,
        then each exit's head.

        Args:
            x: Image batch (B, 3, H, W), normalised.
            exits: Exits to compute, 1-based (negative from the end); ``None`` = every block.
            heads: ``"auto"``: an exit-specific head where one is loaded, else the shared head;
                ``"shared"``: always the checkpoint's head (training-free);
                ``"exit"``: exit-specific heads only (error if one is missing).

        Returns:
            ``{k: (B, num_features) embedding}`` keyed by the exits as given, one entry per
            distinct value (``[3, 3]`` gives ``{3: ...}``; ``[12, -1]`` gives both keys, the
            block computed once).
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
        t = self.embed(x)
        tokens: dict[int, Tensor] = {}
        done = 0
        for k in unique:
            t = self.run_blocks(t, done, k)
            tokens[k] = t
            done = k
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
                out[k] = self.head_at(tokens[k], k, heads)
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
            raise InputError(f"heads must be 'auto', 'shared' or 'exit', got {heads!r}")
        have = str(k) in self.exit_heads
        if heads == "exit" and not have:
            loaded = sorted(int(j) for j in self.exit_heads) or "none"
            raise InputError(
                f"no exit-specific head for exit {k} (loaded: {loaded}); "
                f"use heads='auto' or 'shared', or load one with load_exit_heads()"
            )
        return have and heads != "shared"

    @torch.jit.unused
    def new_exit_head(self, kind: str = "copy", **options: Any) -> Head:
        """A freshly initialised head of ``kind`` that fits this model (same device/dtype).

        ``kind="copy"`` (default) is an :class:`ExitHead`; other registered kinds take their
        own ``options`` (see :func:`vitfree.models.heads.head_kinds`).
        """
        ref = self.pos_embed
        head = Head.create(kind, self.config, **options).to(device=ref.device, dtype=ref.dtype)
        head.bind(self)  # kinds that share the model's head weights take them here
        return head

    @torch.jit.unused
    def set_exit_heads(self, heads: Mapping[int, Head | HeadSpec | Mapping[str, Tensor]]) -> None:
        """Install exit-specific heads, given as head modules, :class:`HeadSpec` or state_dicts.

        A plain state_dict is a ``"copy"`` head (:class:`ExitHead`).  Every head is rebuilt
        for this model from its kind and options and loaded strictly, so each is checked
        (keys and shapes) before any is installed; one that does not fit raises
        :class:`vitfree.errors.CheckpointError` naming the exit and the offending tensors.
        Existing heads for other exits are kept.  Kinds that share the model's head weights
        (``"lora"``, ``"norms"``) are bound to this model (:meth:`Head.bind`).
        """
        staged: dict[str, Head] = {}
        for k_in, head in heads.items():
            try:
                k = self.resolve_exit(int(k_in) if isinstance(k_in, str) else k_in)
            except (TypeError, ValueError) as e:
                raise CheckpointError(f"exit head key {k_in!r}: {e}") from None
            if isinstance(head, Head):
                spec = HeadSpec(head.kind, head.options(), head.state_dict())
            elif isinstance(head, HeadSpec):
                spec = head
            elif isinstance(head, nn.Module):
                raise CheckpointError(
                    f"exit head for exit {k} is a {type(head).__name__}, not a "
                    f"vitfree.models.heads.Head; give a Head or its state_dict"
                )
            else:
                spec = HeadSpec("copy", {}, dict(head))
            try:
                new = self.new_exit_head(spec.kind, **spec.options)
            except (TypeError, ValueError) as e:
                raise CheckpointError(f"exit head for exit {k}: {e}") from None
            problem = describe_mismatch(spec.state_dict, new.state_dict())
            if problem:
                raise CheckpointError(
                    f"exit head for exit {k} does not fit this model "
                    f"({self.config.describe()}):\n{problem}"
                )
            new.load_state_dict(spec.state_dict, strict=True)
            new.train(self.training)
            staged[str(k)] = new
        for key, mod in staged.items():
            self.exit_heads[key] = mod
        self.exit_heads_file = None  # heads given here; load_exit_heads records its file after

    @torch.jit.unused
    def clear_exit_heads(self) -> None:
        """Remove all exit-specific heads (back to the training-free shared head)."""
        self.exit_heads = nn.ModuleDict()
        self.exit_heads_file = None

    @torch.jit.unused
    def load_exit_heads(
        self, path: Union[str, "PathLike[str]"], *, check_backbone: bool = True
    ) -> None:
        """Load exit-specific heads from a file written by :meth:`save_exit_heads` (or by
        :func:`vitfree.finetune.finetune`).

        Args:
            path: the heads file.
            check_backbone: refuse a file that records another backbone's fingerprint
                (:func:`vitfree.models.files.backbone_fingerprint`): heads trained on other
                weights see other tokens (and ``"lora"``/``"norms"`` heads use the model's
                own head weights).  Files without a fingerprint are accepted.

        Raises:
            CheckpointError: another backbone, or heads that do not fit this model.
        """
        f = read_exit_heads_file(path)
        if check_backbone and f.backbone is not None:
            mine = backbone_fingerprint(self)
            if f.backbone != mine:
                raise CheckpointError(
                    f"{path} holds exit heads trained on another backbone (fingerprint "
                    f"{f.backbone}, this model {mine}"
                    + (f"; trained with {f.info['model']}" if f.info.get("model") else "")
                    + "): load the model they were trained on, or pass check_backbone=False "
                    "(heads see other tokens on other weights)"
                )
        self.set_exit_heads(f.heads)  # type: ignore[arg-type]
        self.exit_heads_file = str(path)

    @torch.jit.unused
    def save_exit_heads(
        self, path: Union[str, "PathLike[str]"], info: Mapping[str, Any] | None = None
    ) -> None:
        """Write this model's exit-specific heads (format: :mod:`vitfree.models.files`), with
        this model's backbone fingerprint and, when given, a JSON-like description ``info``."""
        save_exit_heads(
            path,
            {int(k): h for k, h in self.exit_heads.items()},
            backbone=backbone_fingerprint(self),
            info=info,
        )

    # ---------------------------------------------------------------- truncation

    @torch.jit.unused
    def truncate(
        self, exit: int, heads: HeadChoice = "auto", copy_weights: bool = False
    ) -> "VisionTransformer":
        """A ``VisionTransformer`` with only the first ``exit`` blocks and the exit's head.

        Its ``forward(x)`` is exit ``exit`` of this model, it holds exactly that many blocks,
        and its state_dict is a valid checkpoint of a depth-``exit`` model.  It exports to
        ONNX and TorchScript (see :func:`vitfree.models.export_onnx`).  An exit head is
        installed through :meth:`Head.checkpoint_modules`.

        Args:
            exit: Exit to keep, 1-based (negative from the end).
            heads: Which head to use, as in :meth:`forward_exits`.
            copy_weights: Deep-copy the weights; by default they are shared with this model
                (no extra memory, and in-place changes show in both).
        """
        k = self.resolve_exit(exit)
        if self._use_exit_head(k, heads):
            head: Head = self.exit_heads[str(k)]  # type: ignore[assignment]
            norm, senet, feature = head.checkpoint_modules()
        else:
            norm, senet, feature = self.norm, self.senet, self.feature
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
    def exit_costs(self, exits: Iterable[int] | None = None) -> list[ExitCost]:
        """Per-exit FLOPs and parameters; see :func:`vitfree.models.exit_costs`."""
        return exit_costs(self.config.replace(depth=self.depth), exits)

    @torch.jit.unused
    def extra_repr(self) -> str:
        name = f"arch={self.arch}, " if self.arch else ""
        return name + self.config.describe()


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

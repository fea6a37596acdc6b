"""Reproducing the community's IJB-B/C evaluation scripts, convention for convention.

Two insightface scripts produce most published IJB-B/C tables, and they do not compute the
same thing from the same weights (docs/reproduce.md):

=============  =====================================================  =====================
preset         script                                                 differs in
=============  =====================================================  =====================
``eval_ijbc``  ``recognition/arcface_torch/eval_ijbc.py`` (default)   pixels ``(x/255-0.5)/0.5``
``ijb_evals``  ``recognition/_evaluation_/ijb/ijb_evals.py``          pixels ``(x-127.5)/128``, 1:N grid
=============  =====================================================  =====================

A :class:`Preset` is a typed record of every convention its script sets (:class:`Conventions`):
the pixel scaling, the arithmetic and template of the 5-point alignment, the N/D/F mode(s) of
template aggregation, the TAR@FAR rule and the FAR (and FPIR) grid.  :func:`apply_preset`
applies one under explicit overrides (an explicit value always wins) and returns a
:class:`Reproduction`, which says which convention came from where and is recorded in
``results.json``.

Modes are named as ``ijb_evals.py -B`` prints them, ``N{0,1}D{0,1}F{0,1}``: N1 = L2-normalise
each image feature before aggregation, D1 = weight it by the detector score, F1 = add the
flipped image's feature.  (arcface_torch's ``eval_ijbc.py`` and the older insightface IJB
notebooks use other names for the same switches: their "N1" keeps the norm, i.e. is N0 here,
and their "F2" adds the flip, i.e. is F1 here.  Both scripts' default is N0D1F1.)

This module needs numpy only.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import product
from typing import TYPE_CHECKING, Any

import numpy as np

from vitfree.data.align import ALIGN_DTYPES, TEMPLATES
from vitfree.errors import InputError

if TYPE_CHECKING:
    from vitfree.evaluate import IJBOptions

__all__ = [
    "ALL_MODES",
    "DEFAULT_PRESET",
    "PRESETS",
    "TAR_RULES",
    "Conventions",
    "FaceInput",
    "Mode",
    "Preset",
    "Reproduction",
    "apply_preset",
    "parse_modes",
]

#: The eight modes in the order ``ijb_evals.py -B`` runs and prints them
#: (``product([True, False], repeat=3)`` over normalise, detector score, flip).
ALL_MODES: tuple[str, ...] = tuple(
    f"N{n:d}D{d:d}F{f:d}" for n, d, f in product([1, 0], [1, 0], [1, 0])
)

#: The TAR@FAR rules (docs/protocols.md §3.7): ``"nearest"`` (both scripts) and ``"at_most"``.
TAR_RULES = ("nearest", "at_most")

#: Pixel scalings (:data:`vitfree.models.preprocess.PIXEL_SCALINGS`, repeated here so that
#: this module needs no torch).
_PIXEL_FORMULAS = {"div255": "(x / 255 - 0.5) / 0.5", "div128": "(x - 127.5) * 0.0078125"}

_MODE_RE = re.compile(r"N([01])D([01])F([01])")


@dataclass(frozen=True)
class Mode:
    """One N/D/F setting of template aggregation (docs/protocols.md §3.5).

    Attributes:
        normalize_images: N1: L2-normalise each image feature (after adding the flip).
        use_faceness: D1: multiply each image feature by its detector score.
        use_flip: F1: add the flipped image's feature.
    """

    normalize_images: bool
    use_faceness: bool
    use_flip: bool

    @property
    def name(self) -> str:
        """``"N0D1F1"`` style."""
        return f"N{self.normalize_images:d}D{self.use_faceness:d}F{self.use_flip:d}"

    @classmethod
    def parse(cls, text: str) -> Mode:
        """``"N0D1F1"`` -> Mode (case-insensitive)."""
        m = _MODE_RE.fullmatch(str(text).strip().upper())
        if m is None:
            raise InputError(
                f"mode {text!r} is not N{{0,1}}D{{0,1}}F{{0,1}} (e.g. N0D1F1: no per-image "
                f"normalisation, detector score on, flip on), nor 'all'"
            )
        return cls(m.group(1) == "1", m.group(2) == "1", m.group(3) == "1")

    def options(self) -> dict[str, bool]:
        """The :class:`vitfree.evaluate.IJBOptions` fields this mode sets."""
        return {
            "normalize_images": self.normalize_images,
            "use_faceness": self.use_faceness,
            "use_flip": self.use_flip,
        }


def parse_modes(modes: str | Iterable[str]) -> tuple[str, ...]:
    """``"all"`` -> :data:`ALL_MODES`; ``"N0D1F1,N1D1F1"`` (or a sequence) -> those, checked,
    each once, in the order given.

    Raises:
        InputError: a name that is not ``N{0,1}D{0,1}F{0,1}``, or no mode at all.
    """
    items = [p for p in modes.replace(" ", "").split(",") if p] if isinstance(modes, str) else list(modes)
    if any(str(p).lower() == "all" for p in items):
        if len(items) > 1:
            raise InputError(f"modes: 'all' cannot be combined with other modes, got {modes!r}")
        return ALL_MODES
    names = tuple(dict.fromkeys(Mode.parse(p).name for p in items))
    if not names:
        raise InputError("modes: give at least one mode (e.g. N0D1F1) or 'all'")
    return names


@dataclass(frozen=True)
class FaceInput:
    """How a loose crop becomes the network's input: alignment and pixel scaling.

    Attributes:
        align_dtype: arithmetic of the similarity estimate, ``"float32"`` (scikit-image on
            float32 points, as the scripts run it) or ``"float64"``
            (:func:`vitfree.data.align.estimate_similarity`).
        template: name in :data:`vitfree.data.align.TEMPLATES` of the destination points.
        pixel_scaling: ``"div255"`` or ``"div128"`` (:mod:`vitfree.models.preprocess`).

    The default is what vitfree did before presets existed (float64 alignment to the §3.3
    template, ``(x/255-0.5)/0.5``); a feature store without a record was made that way.
    """

    align_dtype: str = "float64"
    template: str = "arcface"
    pixel_scaling: str = "div255"

    def __post_init__(self) -> None:
        if self.align_dtype not in ALIGN_DTYPES:
            raise InputError(f"align_dtype must be one of {ALIGN_DTYPES}, got {self.align_dtype!r}")
        if self.template not in TEMPLATES:
            raise InputError(f"template must be one of {tuple(TEMPLATES)}, got {self.template!r}")
        if self.pixel_scaling not in _PIXEL_FORMULAS:
            raise InputError(
                f"pixel_scaling must be one of {tuple(_PIXEL_FORMULAS)}, got {self.pixel_scaling!r}"
            )

    def template_points(self) -> np.ndarray:
        """The destination points, (5, 2), in the dtype the template is written in."""
        return TEMPLATES[self.template]

    def as_dict(self) -> dict[str, Any]:
        """JSON form (the manifest of a feature store, results.json)."""
        return {
            "align_dtype": self.align_dtype,
            "template": self.template,
            "template_points": [[float(v) for v in row] for row in self.template_points()],
            "pixel_scaling": self.pixel_scaling,
            "pixel_formula": _PIXEL_FORMULAS[self.pixel_scaling],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> FaceInput:
        """Inverse of :meth:`as_dict`; None (a store made before presets) is the default."""
        if not d:
            return cls()
        return cls(str(d["align_dtype"]), str(d["template"]), str(d["pixel_scaling"]))


@dataclass(frozen=True)
class Conventions:
    """Every convention a preset sets.

    Attributes:
        pixel_scaling: ``"div255"`` or ``"div128"``.
        align_dtype: ``"float32"`` or ``"float64"``.
        template: the alignment template's name (:data:`vitfree.data.align.TEMPLATES`).
        modes: the N/D/F modes to evaluate (:data:`ALL_MODES` names).
        tar_rule: ``"nearest"`` or ``"at_most"`` (the rule the table shows; results.json has
            both).
        fars: FAR targets of the 1:1 table.
        fpirs: FPIR targets of the 1:N table.
    """

    pixel_scaling: str
    align_dtype: str
    template: str
    modes: tuple[str, ...]
    tar_rule: str
    fars: tuple[float, ...]
    fpirs: tuple[float, ...]

    def __post_init__(self) -> None:
        FaceInput(self.align_dtype, self.template, self.pixel_scaling)  # checks those three
        if self.tar_rule not in TAR_RULES:
            raise InputError(f"tar_rule must be one of {TAR_RULES}, got {self.tar_rule!r}")
        parse_modes(self.modes)
        for name, grid in (("fars", self.fars), ("fpirs", self.fpirs)):
            hi_ok = (lambda v: v <= 1.0) if name == "fpirs" else (lambda v: v < 1.0)
            if not grid or not all(isinstance(v, float) and 0.0 < v and hi_ok(v) for v in grid):
                raise InputError(f"{name} must be numbers in (0, 1{']' if name == 'fpirs' else ')'}, got {grid!r}")

    @property
    def face_input(self) -> FaceInput:
        """Alignment and pixel scaling."""
        return FaceInput(self.align_dtype, self.template, self.pixel_scaling)

    def as_dict(self) -> dict[str, Any]:
        """JSON form: every convention, with the formula and template points spelled out."""
        return {
            **self.face_input.as_dict(),
            "modes": list(self.modes),
            "tar_rule": self.tar_rule,
            "fars": list(self.fars),
            "fpirs": list(self.fpirs),
        }


@dataclass(frozen=True)
class Preset:
    """A community script and the conventions it uses.

    Attributes:
        name: ``"eval_ijbc"`` or ``"ijb_evals"``.
        script: the script, as a path in the insightface repository.
        conventions: what it does (:class:`Conventions`).
        notes: what else about the script matters when comparing with it.
    """

    name: str
    script: str
    conventions: Conventions
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "script": self.script, "notes": list(self.notes)}


#: FAR grid of both scripts' 1:1 table: ``[10 ** -k for k in 6..1]``, as they write it.
_SCRIPT_FARS: tuple[float, ...] = tuple(10.0**-k for k in range(6, 0, -1))


def _ijb_evals_fpirs() -> tuple[float, ...]:
    # ijb_evals.py run_model_test_1N: fars_cal = [10 ** x for x in np.arange(-4, 0, 4 / 100)]
    # + [1], shown at every 25th point.  np.arange accumulates rounding, so the shown values
    # are 1e-4, 0.001000000000000002, 0.01000000000000004, 0.10000000000000062 and 1: using
    # them as computed keeps the FPIR threshold index int(n * far) - 1 identical.
    cal = [float(10 ** x) for x in np.arange(-4, 0, 4 / 100)] + [1.0]
    return tuple(cal[::25])


#: vitfree's own 1:N grid (docs/protocols.md §4.2); arcface_torch's eval_ijbc.py has no 1:N.
_VITFREE_FPIRS: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1)

PRESETS: dict[str, Preset] = {
    "eval_ijbc": Preset(
        "eval_ijbc",
        "recognition/arcface_torch/eval_ijbc.py",
        Conventions(
            pixel_scaling="div255",
            align_dtype="float32",
            template="eval_ijbc",
            modes=("N0D1F1",),
            tar_rule="nearest",
            fars=_SCRIPT_FARS,
            fpirs=_VITFREE_FPIRS,
        ),
        (
            "cv2.imread (BGR), landmarks parsed to float32, template [30.2946, ...] + 8 in "
            "float32, scikit-image SimilarityTransform on float32 points, cv2.warpAffine "
            "(bilinear, border 0), BGR -> RGB",
            "pixels: torch float32 x.div_(255).sub_(0.5).div_(0.5); image and flip in one batch",
            "its switches are named differently: use_norm_score=True ('N1') keeps the norms "
            "(N0 here), flip added ('F2') is F1 here; its default is N0D1F1",
            "TAR: the ROC point whose FPR is nearest each FAR (ties: the larger FPR, then the "
            "larger TPR)",
            "no 1:N identification: the FPIR grid is vitfree's (docs/protocols.md §4.2)",
        ),
    ),
    "ijb_evals": Preset(
        "ijb_evals",
        "recognition/_evaluation_/ijb/ijb_evals.py",
        Conventions(
            pixel_scaling="div128",
            align_dtype="float32",
            template="ijb_evals",
            modes=("N0D1F1",),
            tar_rule="nearest",
            fars=_SCRIPT_FARS,
            fpirs=_ijb_evals_fpirs(),
        ),
        (
            "cv2.imread (BGR), landmarks parsed to float32 (numpy string cast), template "
            "with 70.729904 in float32 (equal to eval_ijbc's), scikit-image SimilarityTransform "
            "on float32 points, cv2.warpAffine (bilinear, border 0), BGR -> RGB",
            "pixels: numpy float32 (x - 127.5) * 0.0078125, i.e. /128 (not /127.5), for "
            "TorchScript, ONNX and Keras models; image and flip in separate batches",
            "-B runs the eight modes N{0,1}D{0,1}F{0,1} (--modes all); N1 = normalise image "
            "features, F1 = add the flip; its default is N0D1F1",
            "TAR: np.argmin(|fpr - FAR|) on the reversed ROC: the same nearest rule",
            "1:N (-N): always N0D1F1 in the script; FPIRs 1e-4 .. 1 from its 101-point grid",
        ),
    ),
}

DEFAULT_PRESET = "eval_ijbc"

#: Names of the conventions :func:`apply_preset` accepts as explicit overrides.
_OVERRIDABLE = ("pixel_scaling", "align_dtype", "modes", "tar_rule", "fars", "fpirs")


@dataclass(frozen=True)
class Reproduction:
    """A preset applied under explicit overrides (:func:`apply_preset`).

    Attributes:
        preset: the preset.
        conventions: what is in force: the preset's conventions with the overrides applied.
        explicit: names of the conventions that were set explicitly (they differ from or
            confirm the preset's; either way the explicit value is the one used).
    """

    preset: Preset
    conventions: Conventions
    explicit: tuple[str, ...] = ()

    @property
    def face_input(self) -> FaceInput:
        return self.conventions.face_input

    @property
    def modes(self) -> tuple[str, ...]:
        return self.conventions.modes

    def options(self, mode: str | None = None, base: IJBOptions | None = None) -> IJBOptions:
        """The :class:`vitfree.evaluate.IJBOptions` of ``mode`` (default: the first), with
        this reproduction's FARs, FPIRs and TAR rule; ``base`` gives the rest (search, ranks)."""
        from vitfree.evaluate import IJBOptions

        c = self.conventions
        m = Mode.parse(mode or c.modes[0])
        return dataclasses.replace(
            base or IJBOptions(),
            normalize_images=m.normalize_images,
            use_faceness=m.use_faceness,
            use_flip=m.use_flip,
            fars=c.fars,
            fpirs=c.fpirs,
            tar_rule=c.tar_rule,
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON form for ``results.json``: the preset, its script, every convention in force,
        and for each convention whether the preset or an explicit option set it."""
        d = self.conventions.as_dict()
        preset_d = self.preset.conventions.as_dict()
        return {
            "preset": self.preset.name,
            "script": self.preset.script,
            "conventions": d,
            "set_by": {
                k: ("explicit" if _base_field(k) in self.explicit else "preset") for k in d
            },
            "preset_conventions": preset_d,
            "notes": list(self.preset.notes),
        }


def _base_field(key: str) -> str:
    # the as_dict keys that spell out one convention
    return {
        "template": "align_dtype",
        "template_points": "align_dtype",
        "pixel_formula": "pixel_scaling",
    }.get(key, key)


def _floats(name: str, values: Sequence[float]) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a sequence of numbers, got {values!r}") from None


def apply_preset(
    preset: str | Preset | Reproduction = DEFAULT_PRESET,
    *,
    pixel_scaling: str | None = None,
    align_dtype: str | None = None,
    modes: str | Iterable[str] | None = None,
    tar_rule: str | None = None,
    fars: Sequence[float] | None = None,
    fpirs: Sequence[float] | None = None,
    normalize_images: bool | None = None,
    use_faceness: bool | None = None,
    use_flip: bool | None = None,
) -> Reproduction:
    """The conventions of ``preset`` with every explicit value (not None) put over them.

    Args:
        preset: ``"eval_ijbc"`` (arcface_torch ``eval_ijbc.py``, the default) or
            ``"ijb_evals"`` (insightface ``ijb_evals.py``), a :class:`Preset`, or a
            :class:`Reproduction` to override further.
        pixel_scaling: ``"div255"`` ``(x/255-0.5)/0.5`` or ``"div128"`` ``(x-127.5)*0.0078125``.
        align_dtype: ``"float32"`` (the preset's template, scikit-image's float32 arithmetic)
            or ``"float64"`` (vitfree's float64 estimate to the docs/protocols.md §3.3
            template).
        modes: ``"all"``, ``"N0D1F1,N1D1F1"`` or a sequence of mode names.
        tar_rule: ``"nearest"`` or ``"at_most"``.
        fars, fpirs: the 1:1 FAR and 1:N FPIR grids.
        normalize_images, use_faceness, use_flip: change one switch of the preset's mode
            (``--normalize-images``, ``--no-faceness``, ``--no-flip``); not together with
            ``modes``.

    Raises:
        InputError: an unknown preset or value, or ``modes`` together with one of the
            single switches.
    """
    explicit: list[str] = []
    if isinstance(preset, Reproduction):
        base, conv, explicit = preset.preset, preset.conventions, list(preset.explicit)
    elif isinstance(preset, Preset):
        base, conv = preset, preset.conventions
    else:
        if preset not in PRESETS:
            raise InputError(
                f"unknown preset {preset!r}; known: {', '.join(PRESETS)} (the script each "
                f"reproduces: {', '.join(p.script for p in PRESETS.values())})"
            )
        base = PRESETS[preset]
        conv = base.conventions
    changes: dict[str, Any] = {}
    if pixel_scaling is not None:
        changes["pixel_scaling"] = pixel_scaling
    if align_dtype is not None:
        changes["align_dtype"] = align_dtype
        # float32: the script's own template; float64: vitfree's float64 estimate and template
        changes["template"] = base.conventions.template if align_dtype == "float32" else "arcface"
    if tar_rule is not None:
        changes["tar_rule"] = tar_rule
    if fars is not None:
        changes["fars"] = _floats("fars", fars)
    if fpirs is not None:
        changes["fpirs"] = _floats("fpirs", fpirs)
    switches = {
        "normalize_images": normalize_images,
        "use_faceness": use_faceness,
        "use_flip": use_flip,
    }
    given = {k: v for k, v in switches.items() if v is not None}
    if modes is not None:
        if given:
            flags = {"normalize_images": "--normalize-images", "use_faceness": "--no-faceness",
                     "use_flip": "--no-flip"}  # fmt: skip
            raise InputError(
                f"give the modes either as a list (--modes / modes={modes!r}) or as single "
                f"switches ({', '.join(f'{flags[k]} / {k}' for k in given)}), not both"
            )
        changes["modes"] = parse_modes(modes)
    elif given:
        new = []
        for name in conv.modes:
            m = dataclasses.replace(Mode.parse(name), **given)
            new.append(m.name)
        changes["modes"] = tuple(dict.fromkeys(new))
    conv = dataclasses.replace(conv, **changes)
    for k in changes:
        if k in _OVERRIDABLE and k not in explicit:
            explicit.append(k)
    return Reproduction(base, conv, tuple(explicit))

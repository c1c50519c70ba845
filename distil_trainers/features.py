"""Feature-level distillation: which intermediate representations of the student are matched to which of the teacher,
with which loss (MKD-BERT as used in Breazu and Virlan (2025), TinyBERT's attention maps).

A match is a small record, written in Python, YAML or JSON::

    {"student_layer": 2, "teacher_layer": 4, "feature": "hidden", "loss": "similarity_kl", "weight": 1.0}

Layers are numbered as in Transformers' ``hidden_states``: 0 is the output of the embedding layer and ``i`` (1..N) the
output of the ``i``-th transformer layer. ``feature`` is one of

* ``"embeddings"``: the embedding-layer output (layer 0 of both models; the layers may be omitted);
* ``"hidden"``: the token representations after layer ``i`` (``hidden_states[i]``, ``(B, L, H)``);
* ``"cls"``: the first-token ([CLS]) vector of ``hidden_states[i]`` (``(B, H)``);
* ``"attention"``: the attention probabilities of layer ``i`` (1..N, ``attentions[i - 1]``, ``(B, heads, L, L)``).

and ``loss`` one of ``"kl"`` (KL between softmax-normalised vectors), ``"similarity_kl"`` (KL between token-similarity
matrices), ``"mse"``, ``"cosine"`` (token features and [CLS]) or ``"attention_mse"`` (attention maps; ``"mse"`` is
accepted as its alias). The math is in :mod:`distil_trainers.losses`.

When the hidden sizes differ, the matches that compare vectors (``kl``, ``mse``, ``cosine``) get a learned linear
projection from the student's width to the teacher's (one per match); ``similarity_kl`` compares ``L x L`` matrices
and needs none. The projections live in a :class:`FeatureDistiller`, which the trainers keep beside the student in one
:class:`~distil_trainers.trainers.wrapper.DistillationModel` (trained with it, never saved inside the student
checkpoint; see ``DistillationArguments.feature_matches``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

import torch
from torch import nn

from . import losses

__all__ = [
    "FEATURES",
    "MATCH_LOSSES",
    "PROJECTIONS_NAME",
    "FeatureDistiller",
    "StudentFeatureDistillers",
    "FeatureMatch",
    "ModelDims",
    "model_dimensions",
    "parse_feature_matches",
    "parse_student_feature_matches",
    "uniform_layer_map",
    "uniform_matches",
    "validate_matches",
]

FEATURES = ("embeddings", "hidden", "cls", "attention")
MATCH_LOSSES: dict[str, tuple[str, ...]] = {
    "embeddings": ("kl", "similarity_kl", "mse", "cosine"),
    "hidden": ("kl", "similarity_kl", "mse", "cosine"),
    "cls": ("kl", "mse", "cosine"),
    "attention": ("attention_mse",),
}
# losses that compare vectors of the same width (a projection is needed when the widths differ)
_VECTOR_LOSSES = ("kl", "mse", "cosine")
PROJECTIONS_NAME = "projections.safetensors"


@dataclass(frozen=True)
class FeatureMatch:
    """One feature-matching term: ``weight * loss(student feature at student_layer, teacher feature at
    teacher_layer)``. See the module docstring for the layer numbering and the allowed ``feature`` / ``loss`` pairs.

    Args:
        student_layer: layer of the student (0 = embedding output; for ``attention`` 1..N). Defaults to 0 for
            ``feature="embeddings"``; required otherwise.
        teacher_layer: layer of the teacher, numbered the same way.
        feature: ``"embeddings"``, ``"hidden"``, ``"cls"`` or ``"attention"``.
        loss: ``"kl"``, ``"similarity_kl"``, ``"mse"``, ``"cosine"`` or ``"attention_mse"``.
        weight: non-negative weight of the term in the feature loss.
        temperature: softmax temperature of ``kl`` / ``similarity_kl`` (no ``T^2`` factor).
    """

    student_layer: int | None = None
    teacher_layer: int | None = None
    feature: str = "hidden"
    loss: str = "mse"
    weight: float = 1.0
    temperature: float = 1.0

    def __post_init__(self):
        feature = str(self.feature)
        if feature not in FEATURES:
            raise ValueError(f"Unknown feature {self.feature!r} in a feature match; use one of {FEATURES}.")
        loss = str(self.loss)
        if feature == "attention" and loss == "mse":
            loss = "attention_mse"
        if loss not in MATCH_LOSSES[feature]:
            raise ValueError(
                f"Loss {self.loss!r} does not apply to feature {feature!r}; use one of {MATCH_LOSSES[feature]}."
            )
        object.__setattr__(self, "feature", feature)
        object.__setattr__(self, "loss", loss)
        for side in ("student_layer", "teacher_layer"):
            value = getattr(self, side)
            if value is None:
                if feature != "embeddings":
                    raise ValueError(f"A {feature!r} feature match needs {side} (0 = embedding output, i = layer i).")
                value = 0
            if isinstance(value, bool) or not isinstance(value, int) and not (isinstance(value, float) and value.is_integer()):
                raise ValueError(f"{side} must be an integer, got {value!r}.")
            value = int(value)
            if feature == "embeddings" and value != 0:
                raise ValueError(
                    f"feature 'embeddings' is the embedding-layer output (layer 0); got {side}={value}. "
                    "Use feature 'hidden' for the output of a transformer layer."
                )
            if value < 0:
                raise ValueError(f"{side} must be >= 0, got {value}.")
            object.__setattr__(self, side, value)
        weight = float(self.weight)
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"The weight of a feature match must be a finite number >= 0, got {self.weight!r}.")
        object.__setattr__(self, "weight", weight)
        temperature = float(self.temperature)
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"The temperature of a feature match must be > 0, got {self.temperature!r}.")
        object.__setattr__(self, "temperature", temperature)

    @property
    def name(self) -> str:
        """A short name, used as the logging key ``loss_feature/<name>``: e.g. ``hidden_kl_s2_t4``,
        ``attention_mse_s1_t2``, ``embeddings_kl``."""
        if self.feature == "embeddings":
            return f"embeddings_{self.loss}"
        kind = self.loss if self.loss.startswith(self.feature) else f"{self.feature}_{self.loss}"
        return f"{kind}_s{self.student_layer}_t{self.teacher_layer}"

    @property
    def token_level(self) -> bool:
        """Whether the loss compares token positions (then both models must see the same tokens)."""
        return self.feature != "cls"

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> FeatureMatch:
        known = {f.name for f in fields(cls)}
        unknown = set(spec) - known
        if unknown:
            raise ValueError(f"Unknown keys {sorted(unknown)} in feature match {dict(spec)}; known keys: {sorted(known)}.")
        return cls(**spec)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_feature_matches(spec: Any) -> list[FeatureMatch]:
    """Feature matches from ``None`` (none), a JSON string, a dict (one match), a :class:`FeatureMatch`, or a list of
    those."""
    if spec is None:
        return []
    if isinstance(spec, str):
        text = spec.strip()
        if not text:
            return []
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"feature_matches must be JSON (a list of objects such as "
                f'[{{"student_layer": 2, "teacher_layer": 4, "feature": "hidden", "loss": "kl"}}]): {e}'
            ) from e
    if isinstance(spec, (FeatureMatch, Mapping)):
        spec = [spec]
    if not isinstance(spec, Iterable):
        raise ValueError(f"feature_matches must be a list of matches, got {type(spec).__name__}.")
    out = []
    for item in spec:
        if isinstance(item, FeatureMatch):
            out.append(item)
        elif isinstance(item, Mapping):
            out.append(FeatureMatch.from_dict(item))
        else:
            raise ValueError(f"Each feature match must be a dict or a FeatureMatch, got {item!r}.")
    return out


def _is_per_student(spec: Any) -> bool:
    """A mapping whose keys are not match fields (``{"minilm": [...], "bert": [...]}``) names matches per student."""
    if not isinstance(spec, Mapping) or not spec:
        return False
    known = {f.name for f in fields(FeatureMatch)}
    return not (set(spec) & known) and all(isinstance(v, (list, tuple, Mapping, str)) or v is None for v in spec.values())


def parse_student_feature_matches(
    spec: Any, student_names: Iterable[str] | None = None
) -> list[FeatureMatch] | dict[str, list[FeatureMatch]]:
    """Feature matches for one student (anything :func:`parse_feature_matches` takes: a list) or per student of a
    mutual-learning group: ``{"minilm": [match, ...], "bert": [...]}`` (a JSON string too). A list applies to every
    student. With ``student_names``, unknown names raise a ValueError listing the students."""
    if isinstance(spec, str) and spec.strip():
        try:
            decoded = json.loads(spec)
        except json.JSONDecodeError:
            decoded = None
        if _is_per_student(decoded):
            spec = decoded
    if not _is_per_student(spec):
        return parse_feature_matches(spec)
    per_student = {str(name): parse_feature_matches(matches) for name, matches in spec.items()}
    if student_names is not None:
        names = list(student_names)
        unknown = sorted(set(per_student) - set(names))
        if unknown:
            raise ValueError(f"feature_matches names unknown students {unknown}; the students are {names}.")
    return {name: matches for name, matches in per_student.items() if matches}


def uniform_layer_map(num_student_layers: int, num_teacher_layers: int, include_embeddings: bool = False) -> dict[int, int]:
    """``{student_layer: teacher_layer}`` spreading the student's layers evenly over the teacher's (TinyBERT's
    ``g(m) = m * N / M``, rounded up): student layer ``m`` (1..M) maps to teacher layer ``ceil(m * N / M)``, so the
    last layers always meet. ``include_embeddings`` adds ``0 -> 0``. E.g. 3 student and 6 teacher layers:
    ``{1: 2, 2: 4, 3: 6}``."""
    m_layers, n_layers = int(num_student_layers), int(num_teacher_layers)
    if m_layers < 1 or n_layers < 1:
        raise ValueError(f"Layer counts must be >= 1, got student {num_student_layers}, teacher {num_teacher_layers}.")
    mapping = {0: 0} if include_embeddings else {}
    mapping.update({m: -(-m * n_layers // m_layers) for m in range(1, m_layers + 1)})
    return mapping


def uniform_matches(
    num_student_layers: int,
    num_teacher_layers: int,
    feature: str = "hidden",
    loss: str = "kl",
    weight: float = 1.0,
    temperature: float = 1.0,
) -> list[FeatureMatch]:
    """One match per student layer (1..M) against :func:`uniform_layer_map`'s teacher layer."""
    return [
        FeatureMatch(student_layer=s, teacher_layer=t, feature=feature, loss=loss, weight=weight, temperature=temperature)
        for s, t in uniform_layer_map(num_student_layers, num_teacher_layers).items()
    ]


class ModelDims(NamedTuple):
    num_layers: int
    hidden_size: int
    num_heads: int | None


def model_dimensions(model_or_config: Any) -> ModelDims:
    """Number of transformer layers, hidden size and attention heads of a model (or config); for a
    :class:`~distil_trainers.models.MultiTaskModel` those of its encoder."""
    config = getattr(model_or_config, "config", model_or_config)
    encoder = getattr(config, "encoder", None)
    if encoder is not None and not isinstance(encoder, dict) and _first(encoder, ("num_hidden_layers", "n_layers")):
        config = encoder
    layers = _first(config, ("num_hidden_layers", "n_layers", "num_layers"))
    hidden = _first(config, ("hidden_size", "dim", "d_model"))
    heads = _first(config, ("num_attention_heads", "n_heads"))
    if layers is None or hidden is None:
        raise ValueError(f"Cannot read the number of layers and the hidden size from a {type(config).__name__}.")
    return ModelDims(int(layers), int(hidden), None if heads is None else int(heads))


def _first(config: Any, names: Iterable[str]) -> Any:
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return None


def _layer_range(feature: str, num_layers: int) -> tuple[int, int]:
    return (1, num_layers) if feature == "attention" else (0, num_layers)


def validate_matches(matches: Iterable[FeatureMatch], student: ModelDims, teacher: ModelDims) -> None:
    """Raise a ValueError naming the valid range if a match refers to a layer that a model does not have."""
    for index, match in enumerate(matches):
        for side, dims, layer in (("student", student, match.student_layer), ("teacher", teacher, match.teacher_layer)):
            low, high = _layer_range(match.feature, dims.num_layers)
            if not low <= layer <= high:
                meaning = (
                    "attention maps of layers 1..N" if match.feature == "attention"
                    else "0 = embedding output, i = output of layer i"
                )
                raise ValueError(
                    f"Feature match #{index} ({match.name}): {side}_layer={layer} does not exist. The {side} has "
                    f"{dims.num_layers} transformer layers, so {side}_layer must be in {low}..{high} for feature "
                    f"{match.feature!r} ({meaning})."
                )


class FeatureDistiller(nn.Module):
    """Computes the weighted feature loss of a list of :class:`FeatureMatch` from the outputs of the student and the
    teacher, and holds the learned projections (``projections``, an ``nn.ModuleDict``) for matches whose hidden sizes
    differ.

    Args:
        matches: the matches (anything :func:`parse_feature_matches` accepts); at least one.
        student: the student model (or its config / :class:`ModelDims`).
        teacher: the teacher model (or its config / :class:`ModelDims`).

    ``forward(student_outputs, teacher_outputs, mask, num_items_in_batch)`` returns ``(loss, components)``:
    ``loss = sum_i weight_i * loss_i`` and ``components = {match.name: loss_i}`` (unweighted). The outputs are model
    outputs (or dicts) with ``hidden_states`` and/or ``attentions``, as returned with ``output_hidden_states=True`` /
    ``output_attentions=True`` (see :attr:`output_kwargs`).
    """

    def __init__(self, matches: Any, student: Any, teacher: Any):
        super().__init__()
        self.matches = parse_feature_matches(matches)
        if not self.matches:
            raise ValueError("FeatureDistiller needs at least one feature match.")
        self.student_dims = student if isinstance(student, ModelDims) else model_dimensions(student)
        self.teacher_dims = teacher if isinstance(teacher, ModelDims) else model_dimensions(teacher)
        validate_matches(self.matches, self.student_dims, self.teacher_dims)
        self.names = []
        for match in self.matches:
            name, k = match.name, 2
            while name in self.names:
                name, k = f"{match.name}_{k}", k + 1
            self.names.append(name)
        self.projections = nn.ModuleDict()
        s_width, t_width = self.student_dims.hidden_size, self.teacher_dims.hidden_size
        for name, match in zip(self.names, self.matches):
            if match.loss in _VECTOR_LOSSES and match.feature != "attention" and s_width != t_width:
                self.projections[name] = nn.Linear(s_width, t_width)

    # ---- what the models must return ----------------------------------------------------------------------------

    @property
    def needs_hidden_states(self) -> bool:
        return any(m.feature != "attention" for m in self.matches)

    @property
    def needs_attentions(self) -> bool:
        return any(m.feature == "attention" for m in self.matches)

    @property
    def output_kwargs(self) -> dict[str, bool]:
        """Keyword arguments asking a model for what the matches need (and nothing else)."""
        out = {}
        if self.needs_hidden_states:
            out["output_hidden_states"] = True
        if self.needs_attentions:
            out["output_attentions"] = True
        return out

    # ---- the loss -----------------------------------------------------------------------------------------------

    def forward(
        self,
        student_outputs: Any,
        teacher_outputs: Any,
        mask: torch.Tensor | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
        reduction: str = "mean",
    ) -> tuple[Any, dict[str, Any]]:
        """``mask``: ``(B, L)`` valid tokens of the sequences to count (the attention mask; rows of sequences that
        should not count, e.g. unlabelled ones, all False). ``num_items_in_batch``: the number of counted sequences
        over all accumulation micro-batches (see :func:`distil_trainers.losses.reduce_per_item`). With
        ``reduction="sum"`` the total and the components are :class:`~distil_trainers.losses.LossSum` (every match
        counts the same sequences: those with at least one valid token)."""
        s_hidden = self._collect(student_outputs, "student", "hidden_states") if self.needs_hidden_states else None
        t_hidden = self._collect(teacher_outputs, "teacher", "hidden_states") if self.needs_hidden_states else None
        s_attn = self._collect(student_outputs, "student", "attentions") if self.needs_attentions else None
        t_attn = self._collect(teacher_outputs, "teacher", "attentions") if self.needs_attentions else None
        seq_mask = None if mask is None else mask.bool().any(-1)

        total, components = None, {}
        for name, match in zip(self.names, self.matches):
            if match.feature == "attention":
                s, t = s_attn[match.student_layer - 1], t_attn[match.teacher_layer - 1]
            else:
                s, t = s_hidden[match.student_layer], t_hidden[match.teacher_layer]
            if match.token_level:
                s_len = s.shape[-2] if match.feature == "attention" else s.shape[1]
                t_len = t.shape[-2] if match.feature == "attention" else t.shape[1]
                if s_len != t_len:
                    raise ValueError(
                        f"Feature match {name}: the student sees {s_len} tokens per sequence but the teacher {t_len}. "
                        "Token-level matches need both models to read the same tokens (same tokenizer and padding); "
                        "with different tokenizers only feature 'cls' can be matched."
                    )
            if name in self.projections:
                s = self.projections[name](s)
            value = self._loss(match, s, t, mask, seq_mask, num_items_in_batch, reduction)
            components[name] = value
            weighted = value.total * match.weight if reduction == "sum" else value * match.weight
            total = weighted if total is None else total + weighted
        if reduction == "sum":
            return losses.LossSum(total, next(iter(components.values())).count), components
        return total, components

    @staticmethod
    def _loss(match: FeatureMatch, s, t, mask, seq_mask, num_items_in_batch, reduction: str = "mean"):
        n, r = num_items_in_batch, reduction
        if match.feature == "attention":
            # TinyBERT matches head by head; with different head counts the head-averaged maps are compared
            average = s.shape[1] != t.shape[1]
            return losses.attention_mse_loss(s, t, mask, n, r, average_heads=average)
        if match.feature == "cls":
            return losses.cls_vector_loss(s, t, match.loss, match.temperature, seq_mask, n, r)
        if match.loss == "kl":
            return losses.hidden_kl_loss(s, t, mask, match.temperature, n, r)
        if match.loss == "similarity_kl":
            return losses.similarity_kl_loss(s, t, mask, match.temperature, n, r)
        if match.loss == "mse":
            return losses.hidden_mse_loss(s, t, mask, n, r)
        return losses.hidden_cosine_loss(s, t, mask, n, r)

    def _collect(self, outputs: Any, role: str, key: str) -> tuple[torch.Tensor, ...]:
        value = outputs.get(key) if isinstance(outputs, Mapping) else getattr(outputs, key, None)
        dims = self.student_dims if role == "student" else self.teacher_dims
        if not value:
            if key == "attentions":
                raise ValueError(
                    f"The {role} returned no attentions. Attention matches need the eager attention implementation: "
                    "load the model with attn_implementation='eager' or call model.set_attn_implementation('eager')."
                )
            raise ValueError(f"The {role} returned no hidden_states; call it with output_hidden_states=True.")
        expected = dims.num_layers + (1 if key == "hidden_states" else 0)
        if len(value) != expected:
            raise ValueError(
                f"The {role} returned {len(value)} {key} but its config says {dims.num_layers} layers "
                f"(expected {expected})."
            )
        return value

    # ---- saving -------------------------------------------------------------------------------------------------

    def save_projections(self, directory: str | os.PathLike, state_dict: Mapping[str, Any] | None = None) -> str | None:
        """Write the projections to ``<directory>/projections.safetensors`` (with the matches in its metadata);
        nothing when there are none. ``state_dict``: this module's state to write (e.g. gathered by DeepSpeed /
        FSDP; default: the current one). Returns the path written."""
        if len(self.projections) == 0:
            return None
        from safetensors.torch import save_file

        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, PROJECTIONS_NAME)
        if state_dict is None:
            state_dict = self.state_dict()
        state = {k[len("projections."):]: v.detach().contiguous().cpu() for k, v in state_dict.items()
                 if k.startswith("projections.")}
        metadata = {"feature_matches": json.dumps([m.to_dict() for m in self.matches])}
        save_file(state, path, metadata=metadata)
        return path

    def load_projections(self, directory: str | os.PathLike) -> bool:
        """Load ``<directory>/projections.safetensors`` if it exists; returns whether it did."""
        path = os.path.join(directory, PROJECTIONS_NAME)
        if len(self.projections) == 0 or not os.path.isfile(path):
            return False
        from safetensors.torch import load_file

        self.projections.load_state_dict(load_file(path))
        return True

    # the protocol of the extra modules of :class:`~distil_trainers.trainers.wrapper.DistillationModel`
    save_to = save_projections
    load_from = load_projections


class StudentFeatureDistillers(nn.Module):
    """The feature matching of a group of students (mutual learning): one :class:`FeatureDistiller` per student that
    has matches, against the same teacher, in one module (one optimizer entry, one DDP wrapper).

    ``forward(student_outputs, teacher_outputs, masks, num_items_in_batch)`` takes ``{name: outputs}`` and
    ``{name: mask}`` and returns ``{name: (loss, components)}`` for the students with matches. Projections are saved per
    student, to ``<directory>/<name>/projections.safetensors`` (beside that student's own checkpoint folder).
    """

    def __init__(self, distillers: Mapping[str, FeatureDistiller]):
        super().__init__()
        if not distillers:
            raise ValueError("StudentFeatureDistillers needs at least one student with feature matches.")
        self.distillers = nn.ModuleDict(dict(distillers))

    @property
    def needs_hidden_states(self) -> bool:
        return any(d.needs_hidden_states for d in self.distillers.values())

    @property
    def needs_attentions(self) -> bool:
        return any(d.needs_attentions for d in self.distillers.values())

    @property
    def output_kwargs(self) -> dict[str, bool]:
        """What the teacher must return: the union of every student's needs."""
        out = {}
        for distiller in self.distillers.values():
            out.update(distiller.output_kwargs)
        return out

    def student_output_kwargs(self, name: str) -> dict[str, bool]:
        return self.distillers[name].output_kwargs if name in self.distillers else {}

    def forward(
        self,
        student_outputs: Mapping[str, Any],
        teacher_outputs: Any,
        masks: Mapping[str, torch.Tensor | None],
        num_items_in_batch: int | torch.Tensor | None = None,
        reduction: str = "mean",
    ) -> dict[str, tuple[Any, dict[str, Any]]]:
        return {
            name: distiller(student_outputs[name], teacher_outputs, masks.get(name), num_items_in_batch, reduction)
            for name, distiller in self.distillers.items()
        }

    def save_projections(self, directory: str | os.PathLike, state_dict: Mapping[str, Any] | None = None) -> list[str]:
        """Every student's projections to ``<directory>/<name>/projections.safetensors`` (``state_dict``: this
        module's state to write; default: the current one)."""
        written = []
        for name, distiller in self.distillers.items():
            prefix = f"distillers.{name}."
            own = None if state_dict is None else {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
            written.append(distiller.save_projections(os.path.join(directory, name), own))
        return [path for path in written if path is not None]

    def load_projections(self, directory: str | os.PathLike) -> bool:
        """Load every student's projections that exist; returns whether all students with projections had theirs."""
        found = [d.load_projections(os.path.join(directory, name)) for name, d in self.distillers.items() if len(d.projections)]
        return all(found)

    save_to = save_projections
    load_from = load_projections

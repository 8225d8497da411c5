"""Prompt templates (profile, history, candidate list, instruction) and their loader.

A template is one YAML file in ``prompts/templates/`` (selected by name, e.g. ``compact`` or
``cragru``) or anywhere on disk (selected by path): copy one, edit it, pass its path. Rendering
fills ``{placeholders}`` with :meth:`str.format`; literal braces are written ``{{`` ``}}``.

:meth:`PromptTemplate.render` returns the system text and the user text;
:meth:`PromptTemplate.model_input` turns them into the exact string a model continues: through
the tokenizer's chat template for chat models, as plain text for base models, followed by the
answer prefix (the model's answer is a JSON object ``{"item": score, ...}``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from llmrec.errors import LlmrecError

ANSWER_OPEN = '{"'
# The one template choice shared by tuning (``llmrec adapters tune``) and serving: adapters
# record the template they were tuned with and serving reads it from there; without adapters
# serving uses this default. ``compact`` only suits single-token item ids (the toolkit's own
# model); models that spell ids as text fall back to ``TEXT_TEMPLATE``.
DEFAULT_TEMPLATE = "compact"
TEXT_TEMPLATE = "cragru"
#: templates written for a pretrained chat LLM (SmolLM2's recipe); they never seed a vocabulary
#: the toolkit trains (:func:`vocabulary_templates`), so shipping one changes no built model
CHAT_ONLY_TEMPLATES = ("cragru-chat",)
SECTIONS = ("profile", "history", "candidates", "instruction")


class TemplateError(LlmrecError, ValueError):
    """A template file is missing, unreadable or malformed."""


@dataclass(frozen=True)
class PromptTemplate:
    """One prompt layout. Every text field is a :meth:`str.format` pattern."""

    name: str
    profile: str
    history: str
    history_item: str
    candidates: str
    candidate_item: str
    instruction: str
    description: str = ""
    system: str = ""
    sections: tuple[str, ...] = SECTIONS
    section_separator: str = "\n"
    profile_empty: str = ""
    profile_fields: tuple[str, ...] | None = None
    attribute: str = "{name} {value}"
    attribute_separator: str = ", "
    attribute_names: Mapping[str, str] = field(default_factory=dict)
    history_empty: str = ""
    history_separator: str = "\n"
    history_group: str = ""
    history_group_separator: str = ""
    candidate_separator: str = "\n"
    answer_lead: str = ""
    source: str = ""

    # ------------------------------------------------------------------ rendering
    def render_profile(self, attributes: Mapping[str, Any]) -> str:
        """Profile section from the *visible* attributes only (the caller drops forgotten ones)."""
        names = self.profile_fields if self.profile_fields is not None else tuple(attributes)
        parts = [
            self.attribute.format(name=self.attribute_names.get(a, a), value=attributes[a])
            for a in names
            if a in attributes
        ]
        if not parts:
            return self.profile_empty
        return self.profile.format(attributes=self.attribute_separator.join(parts))

    def render_history(self, items: Sequence[Mapping[str, Any]]) -> str:
        """History section. With ``history_group`` the entries are grouped by rating (highest
        first, order kept inside a group) and each group is written once with its rating."""
        if not items:
            return self.history_empty
        if not self.history_group:
            body = self.history_separator.join(self.history_item.format(**it) for it in items)
            return self.history.format(items=body, n=len(items))
        groups: dict[str, list[str]] = {}
        for it in items:
            groups.setdefault(str(it["rating"]), []).append(self.history_item.format(**it))
        keys = sorted(groups, key=lambda r: (_as_number(r), r), reverse=True)
        body = self.history_group_separator.join(
            self.history_group.format(rating=k, items=self.history_separator.join(groups[k]))
            for k in keys
        )
        return self.history.format(items=body, n=len(items))

    def render_candidates(self, items: Sequence[Mapping[str, Any]]) -> str:
        body = self.candidate_separator.join(self.candidate_item.format(**it) for it in items)
        return self.candidates.format(items=body, n=len(items))

    def render(
        self,
        attributes: Mapping[str, Any],
        history: Sequence[Mapping[str, Any]],
        candidates: Sequence[Mapping[str, Any]],
        top_k: int = 10,
    ) -> tuple[str, str]:
        """``(system, user)`` texts. History/candidate entries hold the item placeholders."""
        parts = {
            "profile": self.render_profile(attributes),
            "history": self.render_history(history),
            "candidates": self.render_candidates(candidates),
            "instruction": self.instruction.format(n_candidates=len(candidates), top_k=top_k),
        }
        body = self.section_separator.join(parts[s] for s in self.sections if parts[s])
        return self.system, body

    def model_input(self, tokenizer: Any, system: str, user: str) -> str:
        """The text a model continues: chat template if the tokenizer has one, else plain text.

        Always ends with :attr:`answer_prefix`, so the next token the model writes is the
        start of the first item id.
        """
        if getattr(tokenizer, "chat_template", None):
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": user}
            ]
            text = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        else:
            text = (system + self.section_separator if system else "") + user
        return text + self.answer_prefix

    @property
    def answer_prefix(self) -> str:
        return self.answer_lead + ANSWER_OPEN

    def static_text(self) -> str:
        """The template's fixed words (used to seed a tokenizer; no user data)."""
        return " ".join(
            str(getattr(self, f.name))
            for f in fields(self)
            if isinstance(getattr(self, f.name), str) and f.name not in ("name", "source")
        )


def _as_number(s: str) -> float:
    try:
        return float(s)
    except ValueError:
        return float("-inf")


def templates_dir() -> Path:
    """Folder of the templates shipped with the package."""
    return Path(str(resources.files("prompts") / "templates"))


def list_templates() -> list[str]:
    """Names of the shipped templates."""
    return sorted(p.stem for p in templates_dir().glob("*.yaml"))


def vocabulary_templates() -> list[str]:
    """The shipped templates whose fixed words seed the toolkit's own tokenizers/vocabularies
    (every shipped template except :data:`CHAT_ONLY_TEMPLATES`)."""
    return [n for n in list_templates() if n not in CHAT_ONLY_TEMPLATES]


def default_template(single_token_items: bool = True) -> str:
    """The template used when none is named: :data:`DEFAULT_TEMPLATE`, unless it needs
    single-token item ids the model lacks (then :data:`TEXT_TEMPLATE`)."""
    if DEFAULT_TEMPLATE == "compact" and not single_token_items:
        return TEXT_TEMPLATE
    return DEFAULT_TEMPLATE


def template_ref(name_or_path: str | Path) -> str:
    """How a template is named in an adapter config: a shipped name as is, a file as an absolute
    path, so the reference means the same file from any working directory (the config file
    stores one inside the workspace relative to it: :func:`llmrec.llm.adapters.stored_location`)."""
    p = Path(name_or_path)
    return str(name_or_path) if not p.suffix else str(p.resolve())


def load_template(name_or_path: str | Path) -> PromptTemplate:
    """Load a template by shipped name (``compact``, ``cragru``) or by file path."""
    p = Path(name_or_path)
    if not p.suffix:
        p = templates_dir() / f"{name_or_path}.yaml"
    if not p.is_file():
        known = ", ".join(list_templates())
        raise TemplateError(f"prompt template {name_or_path!r} not found (shipped: {known})")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise TemplateError(f"{p}: unreadable template ({exc})") from None
    if not isinstance(raw, dict):
        raise TemplateError(f"{p}: a template must be a YAML mapping")
    known_fields = {f.name for f in fields(PromptTemplate)}
    extra = set(raw) - known_fields
    if extra:
        raise TemplateError(f"{p}: unknown template field(s): {', '.join(sorted(extra))}")
    raw.setdefault("name", p.stem)
    raw["source"] = str(p)
    for key in ("sections", "profile_fields"):
        if raw.get(key) is not None:
            raw[key] = tuple(raw[key])
    for s in raw.get("sections", ()):
        if s not in SECTIONS:
            raise TemplateError(f"{p}: unknown section {s!r} (known: {', '.join(SECTIONS)})")
    try:
        tpl = PromptTemplate(**raw)
    except TypeError as exc:
        raise TemplateError(f"{p}: {exc}") from None
    _check(tpl, p)
    return tpl


def _check(tpl: PromptTemplate, path: Path) -> None:
    """Render once with dummy values so a broken placeholder fails at load time."""
    item = {"item": "<i1>", "title": "T", "year": "2000", "genres": "G", "rating": 5, "rank": 1}
    try:
        tpl.render({"age": 30, "gender": "F"}, [item], [item], top_k=10)
        tpl.render({}, [], [item], top_k=10)
    except (KeyError, IndexError, ValueError) as exc:
        raise TemplateError(f"{path}: bad placeholder in template ({exc!r})") from None


__all__ = [
    "ANSWER_OPEN",
    "DEFAULT_TEMPLATE",
    "TEXT_TEMPLATE",
    "default_template",
    "template_ref",
    "PromptTemplate",
    "TemplateError",
    "list_templates",
    "load_template",
    "templates_dir",
]

"""Prompt templates: shipped ones, the loader, profile hiding, grouping, chat vs plain text."""

from __future__ import annotations

import numpy as np
import pytest

from llmrec.data.requests import ForgetRequest
from llmrec.llm.catalog import Catalog, ItemVerbalizer
from llmrec.llm.prompt import PromptBuilder, UserContext, answer_text
from prompts import ANSWER_OPEN, TemplateError, list_templates, load_template, templates_dir

ITEM = {"item": "<i1>", "title": "Heat", "year": "1995", "genres": "Crime", "rating": "5"}


class PlainTok:
    chat_template = None


class ChatTok:
    chat_template = "{% for m in messages %}<{{m.role}}>{{m.content}}{% endfor %}<assistant>"

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        body = "".join(f"<{m['role']}>{m['content']}" for m in messages)
        return body + ("<assistant>" if add_generation_prompt else "")


def test_shipped_templates_load_and_render():
    assert {"compact", "cragru"} <= set(list_templates())
    for name in list_templates():
        t = load_template(name)
        system, user = t.render({"age": 30, "gender": "F"}, [ITEM], [ITEM | {"rank": 1}])
        assert user and t.model_input(PlainTok(), system, user).endswith(ANSWER_OPEN)


def test_profile_shows_only_visible_attributes(tiny):
    from llmrec.data.retained import RetainedView

    view = RetainedView.full(tiny)
    req = ForgetRequest("attribute", users=("u1",), attributes=("gender",))
    view.apply(req, 1)
    t = load_template("cragru")
    u1 = tiny.user_index("u1")
    shown = t.render_profile(view.visible_attributes(u1))
    assert "gender" not in shown and "occupation" in shown
    u0 = tiny.user_index("u0")
    assert "gender" in t.render_profile(view.visible_attributes(u0))
    assert t.render_profile({}) == t.profile_empty


def test_history_grouped_by_rating_in_compact():
    t = load_template("compact")
    items = [ITEM | {"item": f"<i{k}>", "rating": r} for k, r in enumerate(["4", "5", "4", "1"])]
    assert t.render_history(items) == "history 5:<i1> 4:<i0><i2> 1:<i3>"


def test_chat_and_plain_renderings():
    t = load_template("cragru")
    system, user = t.render({"age": 30}, [ITEM], [ITEM | {"rank": 1}], top_k=5)
    chat = t.model_input(ChatTok(), system, user)
    assert chat.startswith("<system>You are") and "<assistant>Answer: " + ANSWER_OPEN in chat
    plain = t.model_input(PlainTok(), system, user)
    assert plain.startswith("You are") and plain.endswith("Answer: " + ANSWER_OPEN)
    assert "5 best" in user and "Heat (1995) | Crime | rating 5" in user


def test_user_templates_by_path_and_errors(tmp_path):
    src = (templates_dir() / "compact.yaml").read_text()
    p = tmp_path / "mine.yaml"
    p.write_text(src.replace('instruction: "top {top_k}"', 'instruction: "best {top_k} please"'))
    t = load_template(str(p))
    assert t.name == "compact" and "best 7 please" in t.render({}, [], [ITEM | {"rank": 1}], 7)[1]
    with pytest.raises(TemplateError):
        load_template("no-such-template")
    bad = tmp_path / "bad.yaml"
    bad.write_text(src.replace('"{item}"', '"{nope}"'))
    with pytest.raises(TemplateError):
        load_template(str(bad))
    bad.write_text(src + "\nsurprise: 1\n")
    with pytest.raises(TemplateError):
        load_template(str(bad))
    bad.write_text("- just\n- a list\n")
    with pytest.raises(TemplateError):
        load_template(str(bad))


def test_builder_truncates_history_to_fit(tiny):
    from transformers import AutoTokenizer  # noqa: F401  (only the interface is used)

    class CharTok(PlainTok):  # one token per character (batch interface, as HF tokenizers)
        bos_token_id = None

        def __call__(self, text, add_special_tokens=False):
            ids = lambda t: list(range(len(t)))  # noqa: E731
            return {"input_ids": [ids(t) for t in text] if isinstance(text, list) else ids(text)}

    cat = Catalog.from_dataset(tiny)
    b = PromptBuilder("cragru", cat, ItemVerbalizer(cat), CharTok())
    ctx = UserContext(0, {"age": 20}, np.arange(8), np.full(8, 4.0), np.arange(3))
    full = b.text(ctx)
    short = b.text(ctx, max_tokens=len(full) - 50)
    assert len(short) <= len(full) - 50 and short.endswith(ANSWER_OPEN)
    assert "Candidate movies" in short  # history is shortened, candidates never
    # exactly the greedy fill: the longest history prefix that fits, not a coarse guess
    n = max(k for k in range(9) if len(b.render(ctx, k)) <= len(full) - 50)
    assert short == b.render(ctx, n) and 0 < n < 8
    # the search finds the greedy fill for every budget and uneven entry lengths (long titles
    # at the front), encoding far fewer prompts than there are history lengths
    ctx = UserContext(0, {"age": 20}, np.arange(40) % 8, np.full(40, 4.0), np.arange(3))
    lens = [len(b.render(ctx, k)) for k in range(41)]
    calls = []
    render = b.render
    b.render = lambda c, k=None, labels=None: calls.append(k) or render(c, k, labels)
    for limit in range(lens[0], lens[40] + 2):
        calls.clear()
        b.limit = limit
        enc = b.encode(ctx, reserve=0)
        want = max(k for k in range(41) if lens[k] <= limit)
        assert enc.n_history == want and enc.text == render(ctx, want)
        assert len(calls) <= 9


def test_answer_text():
    assert answer_text(["<i1>", "<i2>"]) == '<i1>": 10, "<i2>": 9}'
    assert ANSWER_OPEN + answer_text(["a"], [0.5]) == '{"a": 0.5}'

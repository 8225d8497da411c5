"""Forget scenarios of the comparison harness: what is forgotten, and by whom."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmrec.data.requests import (
    ForgetRequest,
    interactions_request,
    load_requests,
    select_interactions,
    select_users,
    user_interactions_request,
)
from llmrec.data.retained import RetainedView
from llmrec.data.split import TRAIN
from llmrec.errors import LlmrecError
from llmrec.workspace import Workspace

_SCENARIO = re.compile(r"^(random|core|edge):(\d+(?:\.\d+)?)%(users|interactions)$")
_STREAM = re.compile(r"^stream:(\d+)$")


@dataclass(frozen=True)
class Scenario:
    """A forget scenario: ``random:5%users``, ``core:10%interactions``, ``attribute:gender,age``,
    ``stream:N`` (N single-user requests arriving one at a time) or the path of a request file."""

    spec: str
    kind: str
    how: str = ""
    fraction: float = 0.0
    attributes: tuple[str, ...] = ()
    path: str | None = None
    count: int = 0

    @classmethod
    def parse(cls, spec: str) -> Scenario:
        st = _STREAM.match(spec.strip())
        if st:
            if int(st.group(1)) < 1:
                raise LlmrecError(f"scenario {spec!r}: a stream needs at least one request")
            return cls(spec, "stream", "random", count=int(st.group(1)))
        m = _SCENARIO.match(spec.strip())
        if m:
            frac = float(m.group(2)) / 100
            if not 0 < frac <= 1:
                raise LlmrecError(f"scenario {spec!r}: percentage must be in (0, 100]")
            return cls(spec, m.group(3), m.group(1), frac)
        if spec.startswith("attribute:"):
            attrs = tuple(a.strip() for a in spec.split(":", 1)[1].split(",") if a.strip())
            if not attrs:
                raise LlmrecError(f"scenario {spec!r} names no attribute")
            return cls(spec, "attribute", attributes=attrs)
        if Path(spec).is_file():
            return cls(spec, "file", path=spec)
        raise LlmrecError(
            f"unknown scenario {spec!r}: expected random|core|edge:N%users, random|core|edge:N%interactions, "
            "attribute:a,b, stream:N or a request file"
        )

    def build(
        self, ws: Workspace, view: RetainedView, seed: int
    ) -> tuple[list[ForgetRequest], np.ndarray]:
        """The requests and the forgotten users (owners of the forgotten data)."""
        ds = ws.dataset
        train = ws.split.mask(TRAIN, view.keep)
        if self.kind == "users":
            users = select_users(ds, self.fraction, self.how, seed, mask=train)
            return [user_interactions_request(ds, users)], users
        if self.kind == "interactions":
            rows = select_interactions(ds, self.fraction, self.how, seed, mask=train)
            return [interactions_request(ds, rows)], np.unique(ds.inter_user[rows])
        if self.kind == "attribute":
            req = ForgetRequest.from_dict(
                {"kind": "attribute", "attributes": list(self.attributes)}
            )
            req.validate(ds)
            return [req], np.zeros(0, dtype=np.int64)
        reqs = load_requests(self.path)
        for r in reqs:
            r.validate(ds)
        after = view.copy()
        for r in reqs:
            after.apply(r)
        gone = np.flatnonzero(view.keep & ~after.keep)
        return reqs, np.unique(ds.inter_user[gone])


#: a scenario kind -> the request kind its requests have (``None``: any, a request file)
REQUEST_KIND = {
    "users": "interactions",
    "stream": "interactions",
    "interactions": "interactions",
    "attribute": "attribute",
}

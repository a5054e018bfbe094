"""The published export files as pydantic models: the writers validate every file against these before
writing it, and the tests validate the demo's exports with them.

annotations.json       {feature: Annotation}                 (Majestrino)
group_assignments.json {feature: [group ids]}                (Majestrino)
groups.json            {group id: GroupName}
feature_labels.jsonl   one FeatureLabel per line             (Baguettotron)
feature_data.json      FeatureData                           (Baguettotron)
summary.json           Summary"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, RootModel


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Annotation(Strict):  # Majestrino annotations.json values
    bin: int | None
    bin_name: str | None
    title: str
    description: str
    consistency: Literal["high", "medium", "low"]
    reasoning: str


class GroupName(Strict):
    name: str
    description: str


class FeatureLabel(Strict):  # Baguettotron feature_labels.jsonl lines
    feature: int
    interp: str
    autointerp: str
    confidence: Literal["confident", "tentative", "dead"]


class FeatureRow(Strict):  # Baguettotron feature_data.json features[]
    i: int
    x: float | None
    y: float | None
    x3: float | None
    y3: float | None
    z3: float | None
    d: float | None
    mx: float | None
    mn: float | None
    """Non-finite numbers are written as null."""
    c: int


class FeatureData(Strict):
    features: list[FeatureRow]
    meta: dict


class Distribution(Strict):
    count: int
    mean: float
    median: float
    min: float
    max: float
    p10: float
    p25: float
    p75: float
    p90: float
    histogram: dict[str, list[float]] | dict[str, list[int]]


class Summary(BaseModel):  # summary.json (the atlas card's figures); nested parts are free-form
    d_in: int
    d_sae: int
    k: int | None
    features: dict[str, int | float | None]
    reconstruction: dict[str, float | int | None]
    labels: dict
    confidence: dict[Literal["confident", "tentative", "dead"], int]
    scores: dict[Literal["detection", "embedding"], dict[str, int | Distribution | None]]
    llm: dict
    taxonomy: dict


Annotations = RootModel[dict[str, Annotation]]
GroupAssignments = RootModel[dict[str, list[int]]]
Groups = RootModel[dict[str, GroupName]]
FeatureLabels = RootModel[list[FeatureLabel]]

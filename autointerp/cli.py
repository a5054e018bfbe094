"""The command line: parse arguments, load the config, call the pipeline. No logic lives here."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path
from typing import NoReturn

from autointerp import __version__, threads
from autointerp.errors import AutointerpError

COMMANDS = {
    "run": "all stages in order: mine, explain, score, taxonomy, report, export",
    "mine": "encode the corpus through the SAE; store per-feature statistics and examples",
    "merge": "combine the shard files of `mine --shard i/n` runs into the database",
    "explain": "label every live feature (LLM or the offline tag labeler)",
    "score": "detection-score every label on held-out examples (and, optionally, by embedding similarity)",
    "taxonomy": "assign semantic groups and bins",
    "report": "write the static HTML atlas from the database",
    "export": "write annotations.json, group_assignments.json, groups.json, feature_labels.jsonl, "
              "feature_data.json and summary.json",
    "status": "per stage: done, failed, left; LLM tokens and cost",
}
STAGE_OF_COMMAND = {"run": ["mine", "explain", "score", "taxonomy", "report", "export"]}


def _path(text: str) -> Path:
    """A path argument, checked as the config's path keys are (autointerp.paths): not empty, no NUL, not
    a pipe or device."""
    from autointerp import paths

    if why := paths.problem(text):
        raise argparse.ArgumentTypeError(f"{text!r} is {why}")
    return Path(text)


def demo_config() -> Path:
    from autointerp import demo
    return Path(demo.__file__).parent / "demo.toml"


OPTION_GROUPS = {
    "run": ("db", "llm", "select", "mine", "sae", "redo", "bundle", "retry"),
    "mine": ("db", "select", "mine", "sae", "shard", "redo"),
    "merge": ("db", "mine", "sae", "redo"),
    "explain": ("db", "llm", "select", "redo", "retry"),
    "score": ("db", "llm", "select", "redo"),
    "taxonomy": ("db", "llm", "select", "redo"),
    "report": ("db", "redo", "bundle"),
    "export": ("db", "redo"),
    "status": ("db",),
}
"""Which option groups each subcommand takes (argparse parents): a subcommand offers only the options it
uses, so `export --llm openai` is refused instead of silently ignored. A new option joins a group, or
a new group listed under the subcommands that use it."""
READ_ONLY = ("report", "export", "status")
"""Commands that show what earlier stages stored: they never create a database."""
AFTER_MINE = ("explain", "score", "taxonomy", "report", "export")
"""Commands that work on mined features: with no database, or nothing mined in it, they refuse and name
`mine` (a mistyped --db must not become an empty database and "0 done")."""


class Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (the house rule for every error a user can meet)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"autointerp: error: {self.prog}: {message} (see `{self.prog} --help`)\n")


def _group(name: str) -> argparse.ArgumentParser:
    """The parent parser of one option group."""
    p = Parser(add_help=False)
    if name == "db":
        p.add_argument("--db", help="database: a SQLite file path or any SQLAlchemy URL")
        p.add_argument("--out", type=_path, help="output folder (atlas in OUT/atlas, exports in OUT/export)")
    elif name == "llm":
        from autointerp.llm.registry import choices
        p.add_argument("--llm", choices=choices(), help="LLM provider (plugins add theirs)")
        p.add_argument("--model", help="model name for the provider")
        p.add_argument("--base-url", help="OpenAI-compatible server URL")
        p.add_argument("--max-cost", type=float, help="stop before spending more than this many USD")
        p.add_argument("--batch", action="store_true", default=None,
                       help="send LLM requests through the provider's batch API (half price, within 24 h); "
                            "a re-run resumes polling the jobs already submitted")
        p.add_argument("--prompts", type=_path, help="folder of prompt templates overriding the bundled ones")
    elif name == "select":
        p.add_argument("--features", help='feature subset, e.g. "0-99,200"')
        p.add_argument("--limit", type=int, help="at most this many features per stage")
    elif name == "mine":
        p.add_argument("--device", help="torch device for mining: auto, cpu, cuda")
    elif name == "sae":
        _add_sae_options(p)
    elif name == "shard":
        p.add_argument("--shard", help="mine only shard i of n (e.g. 0/4) into OUT/shards; then run merge")
        p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                       help="mine the shards as tasks on a Ray cluster (ADDRESS, else RAY_ADDRESS or a local one) and merge")
    elif name == "redo":
        p.add_argument("--redo", action="append", default=[], choices=list(STAGE_OF_COMMAND["run"]),
                       help="forget this stage's output (and what depends on it) and do it again; repeatable")
    elif name == "bundle":
        p.add_argument("--bundle", action="store_true", default=None,
                       help="also pack the atlas into one file, OUT/atlas.tar, for publishing")
    elif name == "retry":
        p.add_argument("--retry-failed", action="store_true",
                       help="also retry labels the offline labeler failed on before (its failures are final: "
                            "the same input fails the same way)")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="autointerp", description="Label, validate and publish the features of a sparse autoencoder. "
        "With no config, commands use the bundled demo (corpus and SAE).")
    parser.add_argument("--version", action="version", version=f"autointerp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    common = Parser(add_help=False)
    common.add_argument("config", nargs="?", type=_path, help="TOML config file (default: the bundled demo)")
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    groups = {name: _group(name) for name in dict.fromkeys(g for names in OPTION_GROUPS.values() for g in names)}
    for name, help_text in COMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text,
                       parents=[common, *(groups[g] for g in OPTION_GROUPS[name])])
    p = sub.add_parser("inspect-sae", help="describe an SAE checkpoint: format, shapes, activation rule, dtype, "
                       "parameters, dead-looking features", description="Load an SAE checkpoint (local files only) "
                       "and describe it as autointerp understands it.")
    p.add_argument("path", type=_path, help="checkpoint folder or file, or a folder of several (see --sae-layer)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    _add_sae_options(p)
    _add_extract_parser(sub)
    return parser


def _add_extract_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("extract", help="write a corpus from a local transformers model: a hooked layer's activations "
                       "over audio files or texts", description="Run a local Hugging Face transformers model over "
                       "audio files or texts and write a hooked layer's activations in the corpus format "
                       "(vectors-NNNNN.npy, items.jsonl, corpus.toml). Needs the extra: pip install 'autointerp[extract]'.")
    p.add_argument("model", type=_path, help="local model folder (config.json, weights, feature extractor or tokenizer)")
    p.add_argument("inputs", type=_path, help="a folder of audio files, a manifest (.csv/.tsv/.jsonl/.parquet: id, "
                   "audio or text, start, end, tags) or a .txt file (one text per line)")
    p.add_argument("--out", type=_path, required=True, help="output folder")
    p.add_argument("--layer", required=True, help="module path of the hooked layer, e.g. encoder.layers.6, h.3")
    p.add_argument("--pool", choices=["mean", "none"], default="mean",
                   help="mean: one vector per clip or text window; none: one per frame or token (default mean)")
    p.add_argument("--max-seconds", type=float, help="audio window length (default 30)")
    p.add_argument("--context-tokens", type=int, help="text window length in tokens (default min(512, model's))")
    p.add_argument("--batch", type=int, default=8, help="windows per forward pass (default 8)")
    p.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32", help="model dtype")
    p.add_argument("--audio-root", type=_path, help="folder a manifest's audio paths are relative to")
    p.add_argument("--sae", type=_path, help="SAE checkpoint to name in corpus.toml (makes it ready for `mine`)")
    p.add_argument("--shard-mb", type=float, default=256.0, help="size of each vectors-NNNNN.npy shard (default 256)")
    p.add_argument("--overwrite", action="store_true", help="replace a corpus already in the output folder")
    p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS", help="extract and mine on a Ray cluster (ADDRESS, "
                   "else RAY_ADDRESS or a local one), each task its slice of the inputs; needs --sae or --config")
    p.add_argument("--config", type=_path, help="run config whose [sae], [mine], [output], [cluster] apply to --ray's mining")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def _add_sae_options(p: argparse.ArgumentParser) -> None:
    from typing import get_args

    from autointerp.config import SAEConfig

    fields = SAEConfig.model_fields
    p.add_argument("--sae-format", choices=get_args(fields["format"].annotation),
                   help="checkpoint layout (default: detected from the files)")
    p.add_argument("--sae-layer", help="which SAE of a folder of several: sub-folder name or layer number")
    p.add_argument("--trust-pickle", action="store_true", default=None,
                   help="allow full unpickling of .pt files a safe load refuses (runs code from the file)")
    p.add_argument("--sae-precision", choices=get_args(fields["precision"].annotation),
                   help="dtype to hold and multiply the SAE weights in (default float32)")


FLAGS = {"llm.provider": "--llm", "llm.model": "--model", "llm.base_url": "--base-url", "llm.max_cost": "--max-cost",
         "llm.batch": "--batch", "output.db": "--db", "output.dir": "--out", "select.features": "--features",
         "select.limit": "--limit", "sae.device": "--device", "sae.format": "--sae-format", "sae.layer": "--sae-layer",
         "sae.trust_pickle": "--trust-pickle", "sae.precision": "--sae-precision", "output.bundle": "--bundle",
         "explain.prompts_dir": "--prompts", "explain.retry_failed": "--retry-failed",
         "cluster.engine": "--ray", "cluster.address": "--ray"}
"""Config key each command-line option overrides (a bad value is blamed on the option, not the file)."""


def _overrides(args: argparse.Namespace) -> dict:
    values = {"llm.provider": "llm", "llm.model": "model", "llm.base_url": "base_url", "llm.max_cost": "max_cost",
              "llm.batch": "batch", "output.db": "db", "select.features": "features", "select.limit": "limit",
              "sae.device": "device", "sae.format": "sae_format", "sae.layer": "sae_layer",
              "sae.trust_pickle": "trust_pickle", "sae.precision": "sae_precision", "output.bundle": "bundle"}
    out = {key: getattr(args, name, None) for key, name in values.items()}
    # paths given on the command line are relative to the current folder, not to the config file (made
    # absolute, not resolved: a link is followed where the path is used, and a loop refused there)
    if out["output.db"] and "://" not in out["output.db"]:
        out["output.db"] = os.path.abspath(Path(out["output.db"]).expanduser())
    out["output.dir"] = os.path.abspath(args.out) if getattr(args, "out", None) else None
    out["explain.prompts_dir"] = os.path.abspath(args.prompts) if getattr(args, "prompts", None) else None
    out["explain.retry_failed"] = True if getattr(args, "retry_failed", False) else None
    ray = getattr(args, "ray", None)
    out["cluster.engine"], out["cluster.address"] = ("ray", ray or None) if ray is not None else (None, None)
    return out


def _load(config_path: Path, overrides: dict):
    """The config with the command line's overrides; a bad option value is blamed on the option."""
    from autointerp.config import load_config
    from autointerp.errors import ConfigError
    try:
        return load_config(config_path, overrides)
    except ConfigError:
        load_config(config_path, {k: v for k, v in overrides.items() if k in ("output.dir",)})  # the file's own fault?
        for key, value in overrides.items():
            if value is None or key == "output.dir":
                continue
            try:
                load_config(config_path, {key: value, "output.dir": overrides.get("output.dir")})
            except ConfigError as exc:
                reason = str(exc).split(f"= {value!r}: ", 1)[-1].removeprefix("Value error, ")
                raise ConfigError(f"{FLAGS[key]} {value}: {reason}") from None
        raise


def main(argv: list[str] | None = None) -> int:
    threads.configure()  # before torch is imported: passive OpenMP waits, threads for the usable CPUs
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        args, extra = parser.parse_known_args(["run", *(argv if argv is not None else sys.argv[1:])])
    if extra:  # an option of another subcommand: say whose options these are, not just "unrecognized"
        parser.exit(2, f"autointerp: error: `{args.command}` does not take {' '.join(x for x in extra if x.startswith('-')) or ' '.join(extra)} "
                       f"(see `autointerp {args.command} --help` for the options it uses)\n")
    try:
        return _main(args)
    except AutointerpError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"autointerp: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("autointerp: interrupted; finished work is saved, run the same command again to continue", file=sys.stderr)
        return 130


def _main(args: argparse.Namespace) -> int:
    if args.command == "extract":
        from autointerp.extract import ExtractOptions, extract
        names = ExtractOptions.__dataclass_fields__
        result = extract(ExtractOptions(**{k: v for k, v in vars(args).items() if k in names}))
        print(f"extract: {result.items} items, {result.rows} rows x {result.dim} in {result.shards} shard(s); "
              f"config: {result.config}\n{result.config_text}", end="")
        return 0
    if args.command == "inspect-sae":
        from autointerp.sae.inspect import inspect_sae
        print(inspect_sae(args.path, args.sae_format or "auto", args.sae_layer, bool(args.trust_pickle),
                          args.sae_precision or "float32"))
        return 0
    overrides = _overrides(args)
    config_path = args.config
    if config_path is None:
        config_path = demo_config()
        if overrides["output.dir"] is None:
            overrides["output.dir"] = str(Path.cwd() / "autointerp-demo")
        offline = overrides["llm.provider"] in (None, "offline")
        print(f"autointerp: no config given, using the bundled {'offline ' if offline else ''}demo ({config_path})",
              file=sys.stderr)
    config = _load(config_path, overrides)
    stages = STAGE_OF_COMMAND.get(args.command, [args.command])
    if {"explain", "score", "taxonomy"} & set(stages) and config.llm.provider != "offline":
        from autointerp.llm import check_llm
        check_llm(config.llm)  # every missing thing at once, before the slow imports below
    existing = args.command in READ_ONLY or args.command in AFTER_MINE
    if existing:
        from autointerp.status import require_database
        require_database(config, args.command)
    from autointerp.progress import Step
    with Step("autointerp: starting (importing torch and the stages)"):
        from autointerp.pipeline import Pipeline
        from autointerp.store.engine import Store

    pipeline = Pipeline(config, shard=getattr(args, "shard", None))
    if args.command != "status":
        pipeline.check(stages)
    store = Store(config.db_url, create=not existing)
    pipeline.store = store
    try:
        if args.command == "status":
            from autointerp.pipeline import RUN_ORDER, stages as all_stages
            from autointerp.status import render_status
            registry = all_stages(pipeline)
            print(render_status(store, [registry[name] for name in RUN_ORDER]))
            return 0
        if args.command in AFTER_MINE:
            from autointerp.status import require_mined
            require_mined(store, args.command)
        with store.exclusive(args.command):
            pipeline.run(args.command, stages, args.redo, report=lambda line: print(line, file=sys.stderr))
        if "report" in stages:
            print(f"atlas: {(pipeline.atlas_dir / 'index.html').resolve().as_uri()}")
        if "export" in stages:
            print(f"exports: {pipeline.export_dir.resolve()}")
        return 0
    finally:
        store.close()

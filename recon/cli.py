"""Entry points' flag parsing: ``--help`` lists the flags and the config's keys and exits 0; a bad flag or config
key is one ``error:`` line (with the nearest valid key) and exit 2, never a traceback."""

from __future__ import annotations

import re
import sys

from absl import app, flags

HELP = ("--help", "-h", "-?", "--helpshort", "--helpfull")


def config_keys(config, prefix: str = "") -> list[str]:
    """``key = value`` lines for every leaf of an ml_collections config."""
    lines = []
    for key, value in sorted(config.items()):
        if hasattr(value, "items"):
            lines += config_keys(value, f"{prefix}{key}.")
        else:
            lines.append(f"  --config.{prefix}{key}={value!r}")
    return lines


def describe(error: Exception, argv: list[str]) -> str:
    """One line for a flag-parsing error; for a misspelled config key, the flag and the key meant."""
    raw = str(error)
    text = raw.replace("\\n", " ").replace("\n", " ").strip()
    if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    match = re.search(r'Did you mean "(\w+)" instead of "(\w+)"', text)
    for arg in argv[1:]:
        name = arg.split("=", 1)[0]
        parts = name.split(".")
        if match and name.startswith("--config.") and match.group(2) in parts:
            fixed = ".".join(match.group(1) if p == match.group(2) else p for p in parts)
            return f"{name}: no such setting; did you mean {fixed}?"
    bad = re.search(r"'(\w+)'", raw)
    if bad:
        for arg in argv[1:]:
            if arg.startswith("--config.") and bad.group(1) in arg.split("=", 1)[0].split("."):
                return f"{arg.split('=', 1)[0]}: no such setting (--help lists them)"
    return text


def parse(argv: list[str]) -> list[str]:
    if any(a in HELP for a in argv[1:]):
        main = sys.modules["__main__"]
        print((main.__doc__ or "").strip() + "\n")
        print(flags.FLAGS.main_module_help())
        try:
            flags.FLAGS([a for a in argv if a not in HELP])
            config = flags.FLAGS["config"].value if "config" in flags.FLAGS else None
        except Exception:  # noqa: BLE001  (help is printed whatever the other flags say)
            config = None
        if hasattr(config, "items"):  # a config file's keys (an entry point's --config may be a plain path)
            print("\nconfig keys (override any with --config.KEY=VALUE):")
            print("\n".join(config_keys(config)))
        sys.exit(0)
    try:
        return flags.FLAGS(argv)
    except Exception as error:  # noqa: BLE001  (absl flag errors, ml_collections key and type errors)
        print(f"error: {describe(error, argv)}", file=sys.stderr)
        sys.exit(2)


def define_config(name: str, default: str | None, help_text: str) -> None:
    """``config_flags.DEFINE_config_file``, whose ``--NAME.KEY=VALUE`` overrides are read when it is called: a bad
    key there is one ``error:`` line and exit 2 too."""
    from ml_collections import config_flags

    try:
        config_flags.DEFINE_config_file(name, default, help_text)
    except Exception as error:  # noqa: BLE001  (ml_collections key and type errors)
        print(f"error: {describe(error, sys.argv)}", file=sys.stderr)
        sys.exit(2)


def run(main) -> None:
    """``absl.app.run(main)`` with the parsing above."""
    app.run(main, flags_parser=parse)


def only_flags(argv: list[str], *required: str) -> None:
    """For an entry point that takes no positional argument: raise an ``InputError`` (one line, exit 2 under
    ``user_errors_exit``) for a stray argument or a missing required flag."""
    from recon.errors import InputError

    if len(argv) > 1:
        raise InputError(f"unexpected arguments {argv[1:]}: every setting is a --flag")
    for name in required:
        if not flags.FLAGS[name].value:
            raise InputError(f"--{name} is required")

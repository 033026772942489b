"""Arguments shared by the ``fct`` subcommands, so every command words them the same way."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from fct_registry._redact import first_line
from fct_registry.cli import COMMANDS
from fct_registry.errors import DataError, FctError
from fct_registry.registry.store import check_readable, resolve_tracking_uri

if TYPE_CHECKING:  # numpy is imported when a file is loaded: parsers stay fast
    import numpy as np


def add_command(
    subparsers: argparse._SubParsersAction, name: str, description: str, epilog: str
) -> argparse.ArgumentParser:
    """Subcommand ``name``'s parser: the help line ``fct --help`` lists (``COMMANDS``), and its
    description and examples printed as written."""
    return subparsers.add_parser(
        name,
        help=COMMANDS[name],
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_json(
    parser: argparse.ArgumentParser, what: str = "the summary", help: str | None = None
) -> None:
    """``--json``: print ``what`` as JSON instead of text (``what=""``: "print as JSON")."""
    help = help or " ".join(filter(None, ("print", what, "as JSON")))
    parser.add_argument("--json", action="store_true", help=help)


def add_device(
    parser: argparse.ArgumentParser,
    default: str = "auto",
    help: str = "cpu, cuda or auto (default: auto)",
) -> None:
    """``--device``: where torch computes (``fct_registry.device`` resolves ``auto``)."""
    parser.add_argument("--device", default=default, help=help)


def add_no_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_outputs(parser: argparse.ArgumentParser, help: str, metavar: str | None = None) -> None:
    """``--outputs``: the root of the pipeline's outputs (``dvc repro`` writes them there)."""
    parser.add_argument("--outputs", type=Path, default=Path("outputs"), metavar=metavar, help=help)


def add_destination(parser: argparse.ArgumentParser, help: str) -> None:
    """``--out DST``: where a job writes a gallery (``fct embed``, ``upgrade``, ``gallery
    import``, ``gallery add-side-info``)."""
    parser.add_argument("--out", required=True, metavar="DST", help=help)


def add_tracking_uri(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="MLflow tracking and registry URI (default: $MLFLOW_TRACKING_URI, else "
        "sqlite:///mlflow.db in the working directory; `make` sets it to the project's)",
    )


def check_positive(**flags: int | None) -> None:
    """Each given ``--flag`` value, when set, is at least 1 (``check_positive(batch_size=n)``)."""
    for name, value in flags.items():
        if value is not None and value < 1:
            flag = "--" + name.replace("_", "-")
            raise FctError(f"{flag} must be a positive number, got {value}")


def check_not_negative(**flags: int) -> None:
    """Each given ``--flag`` value is 0 or more (``check_not_negative(workers=n)``)."""
    for name, value in flags.items():
        if value < 0:
            raise FctError(f"--{name.replace('_', '-')} must be 0 or more, got {value}")


def check_file(flag: str, path: Path | None) -> None:
    """A local input named on the command line exists (URIs such as ``s3://`` are not checked)."""
    if path is not None and "://" not in str(path) and not Path(path).exists():
        raise FctError(f"{flag} file {path} does not exist; check the path")


def check_store(tracking_uri: str | None) -> None:
    """A read-only command has a tracking store to read (it never creates an empty one)."""
    check_readable(resolve_tracking_uri(tracking_uri))


def load_npy(path: Path, flag: str, *, kinds: str = "iuf") -> np.ndarray:
    """The array in a ``.npy`` file named by ``flag``, refused with one line when it is not a
    plain array of numbers (object and string arrays, ``.npz`` archives, other files).

    ``kinds``: accepted NumPy dtype kinds (``"iuf"``: integers and floats; ``"iu"`` for labels).
    """
    import numpy as np

    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:  # object arrays, truncated or other files
        raise DataError(
            f"{flag} file {path} is not a readable .npy array of numbers ({first_line(exc)}); "
            "write it with numpy.save from a numeric array"
        ) from None
    if not isinstance(array, np.ndarray):
        raise DataError(f"{flag} file {path} is an .npz archive; save one array with numpy.save")
    if array.dtype.kind not in kinds:
        what = "float embeddings" if "f" in kinds else "integer class ids or class names"
        numbers = "" if array.dtype.kind in "biufc" else ", not numbers"
        raise DataError(
            f"{flag} file {path} holds {array.dtype} values{numbers}; save {what} with numpy.save"
        )
    return array

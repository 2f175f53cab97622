"""What the pages need beyond the standard library: Jinja2 and plotly.js (the `report` extra)."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import TYPE_CHECKING

from wtb.errors import WtbError

if TYPE_CHECKING:
    from jinja2 import Environment

EXTRA_FIX = "pip install 'wtb[report]'"


def _missing(what: str, exc: ImportError) -> WtbError:
    return WtbError(f"reports need {what}, which is not installed ({exc})", fix=EXTRA_FIX)


@cache
def plotly_js() -> str:
    """plotly.min.js as the `plotly` package ships it (a few MB, embedded once per page)."""
    try:
        bundle = resources.files("plotly") / "package_data" / "plotly.min.js"
        return bundle.read_text(encoding="utf-8")
    except (ImportError, FileNotFoundError) as exc:
        raise _missing("Plotly's JavaScript (the plotly package)", ImportError(str(exc))) from exc


@cache
def environment() -> Environment:
    """The templates, autoescaped whatever their names end with."""
    try:
        from jinja2 import Environment, PackageLoader, StrictUndefined
    except ImportError as exc:
        raise _missing("Jinja2", exc) from exc
    return Environment(
        loader=PackageLoader("wtb.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )

"""`wtb driver` (and `python -m wtb.driver`): the batch driver's command line, as the
operator submits it as a Ray job. The work is `wtb.pipeline.drive`."""

from __future__ import annotations

import logging
import sys

import click

from wtb.cli.options import ACTORS, CONCURRENCY, RAY_ADDRESS
from wtb.errors import ExitCode, Terminated, WtbError
from wtb.pipeline.drive import drive, log


@click.command(name="driver")
@click.option("--run", "run_key", required=True, help="Key of the recorded run to execute.")
@RAY_ADDRESS
@ACTORS
@CONCURRENCY
def driver(
    run_key: str, ray_address: str | None, actors: int | None, concurrency: int | None
) -> None:
    """Run a batch recorded in the result store on Ray (the operator's Ray job).

    The database comes from WTB_DATABASE_URL; credentials never go on the command line.
    """
    from wtb.settings import get_settings

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    log.setLevel(logging.INFO)
    try:
        url = get_settings().database_url
        if not url:
            raise WtbError(
                "WTB_DATABASE_URL is not set",
                fix="set it to the result store's URL (credentials may go in PGPASSWORD)",
            )
        complete = drive(
            run_key,
            database_url=url,
            ray_address=ray_address,
            actors=actors,
            concurrency=concurrency,
        )
    except WtbError as exc:
        _report(exc)
        sys.exit(exc.exit_code)
    except Terminated:
        log.info("run %s: terminated; recorded results are kept, run it again to finish", run_key)
        sys.exit(ExitCode.TERMINATED)
    sys.exit(ExitCode.OK if complete else ExitCode.INCOMPLETE)


def _report(exc: WtbError) -> None:
    click.secho("error: ", fg="red", bold=True, err=True, nl=False)
    click.echo(str(exc), err=True)


def main() -> None:
    driver(prog_name="python -m wtb.driver")


if __name__ == "__main__":
    main()

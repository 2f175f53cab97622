"""`python -m wtb.driver`: the batch driver, as the operator submits it as a Ray job (images
and submitted jobs name this module). The command is `wtb.cli.driver`; the work is
`wtb.pipeline.drive`."""

from wtb.cli.driver import main

if __name__ == "__main__":
    main()

"""`wtb-operator`: run the operator (cluster-wide, one replica, no peering)."""

from __future__ import annotations

import logging
import sys

import kopf


def main() -> None:
    from wtb.settings import get_settings

    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    import wtb_operator  # noqa: F401  (registers the handlers)

    namespaces = [n.strip() for n in settings.watch_namespaces.split(",") if n.strip()]
    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=True,
        liveness_endpoint=settings.liveness_endpoint,
    )


if __name__ == "__main__":
    main()

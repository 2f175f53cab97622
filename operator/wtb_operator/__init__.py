"""WTB's Kubernetes operator: Kopf handlers over the `wtb` engine.

One module per resource kind (`batchtest`, `workflow`), the admission webhook
(`admission`, with its server in `webhook_server`), and the operator's settings
(`configure`). The handlers read the cluster,
call `wtb` (which decides), and write status; they run no user code.
"""

from wtb.settings import get_settings
from wtb_operator import batchtest, configure, workflow

if get_settings().webhook_port:
    from wtb_operator import admission  # noqa: F401  (registers the validating webhook)

__all__ = ["batchtest", "configure", "workflow"]

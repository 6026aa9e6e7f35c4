"""``tierlog.client``: the documented short import of tierlog's Python client.

    from tierlog.client import Agent, AsyncAgent, Operator

The code lives in ``tierlog.adapters.client``; this package only re-exports its public
names (the same objects, so ``except tierlog.client.NotFound`` catches what
``tierlog.adapters.client`` raises).
"""

from tierlog.adapters.client import *  # noqa: F403  (the face is that package's __all__)
from tierlog.adapters.client import __all__ as __all__

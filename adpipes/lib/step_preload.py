"""Work every step process would otherwise repeat, done once in the server steps fork from.

The step executor (``adpipes.definitions.STEP_EXECUTOR``) forks each step from a forkserver
that imports the modules listed in its ``preload_modules``; this is one of them, and nothing
else imports it (the CLI, the webserver and the daemon do not pay for it). pandera imports its
pandas backends (some 110 modules, hypothesis's strategies among them) at a process's first
validation: 0.6-0.7 s of every step that validates, measured on the 2-core development machine.
One small validation here loads them in the forkserver, so every forked step starts with them.

Not done here: ``gc.freeze`` (a forked step's first collection copies ~54 MB of the server's pages
into the step; frozen, 8 MB). Measured end to end at 300K events per platform, the run took 5 s
longer with it (56 s against 51 s), for 25-40 MB less peak memory.
"""

import pandas as pd
import pandera.pandas as pa

pa.DataFrameSchema({"preloaded": pa.Column(int, pa.Check.ge(0))}).validate(
    pd.DataFrame({"preloaded": [1]}), lazy=True)

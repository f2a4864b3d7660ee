"""Work every step process would otherwise repeat, done once in the server steps fork from.

The step executor (``adpipes.definitions.STEP_EXECUTOR``) forks each step from a forkserver
that imports the modules listed in its ``preload_modules``; this is one of them, and nothing
else imports it (the CLI, the webserver and the daemon do not pay for it). pandera imports its
pandas backends (some 110 modules, hypothesis's strategies among them) at a process's first
validation: 0.6-0.7 s of every step that validates, measured on the 2-core development machine.
One small validation here loads them in the forkserver, so every forked step starts with them.

Last, everything the forkserver holds is moved out of the garbage collector's reach
(``gc.freeze``, made for servers that fork): a forked step's first collection otherwise wrote
to every object's header, copying some 54 MB of the forkserver's pages into each step process
(private memory of a forked step after one collection: 62 MB, frozen 8 MB).
"""

import gc

import pandas as pd
import pandera.pandas as pa

pa.DataFrameSchema({"preloaded": pa.Column(int, pa.Check.ge(0))}).validate(
    pd.DataFrame({"preloaded": [1]}), lazy=True)

gc.collect()
gc.freeze()

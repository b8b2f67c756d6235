"""Suite-wide settings.

The test problems are small (at most a few hundred rows); multithreaded BLAS
only adds synchronisation cost there, and with pytest-xdist's two workers on
two cores it oversubscribes the machine. One BLAS thread per worker.
"""

import matplotlib
from threadpoolctl import threadpool_limits

matplotlib.use("Agg")
threadpool_limits(limits=1)

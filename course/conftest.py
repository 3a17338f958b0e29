"""nbval settings for the chapters.

Each chapter runs in a fresh kernel with one intra-op thread: a float sum is then reduced in
one order whatever the machine's core count, so training runs are bit-for-bit repeatable and
the stored outputs match a fresh run strictly. The chapters were executed the same way.
"""

import os

os.environ["OMP_NUM_THREADS"] = "1"

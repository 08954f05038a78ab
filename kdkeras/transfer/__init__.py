"""Knowledge transfer through weights: a smaller student from the teacher's parameters.

- `keep_blocks` / `find_blocks`: depth, keep a subset of repeated blocks.
- `prune_width`: width, keep the most important units and filters and slice
  every weight that depends on them.
- `low_rank`: replace Dense / Conv kernels by truncated-SVD factors.
- `shrink`: all three in one call, with a printed summary.

Every function takes a Functional or Sequential `keras.Model` and returns a
new plain Functional `keras.Model` made of stock Keras layers, initialised
from the teacher's weights; none of them imports the distiller or export
code.
"""

from kdkeras.transfer.depth import Block
from kdkeras.transfer.depth import find_blocks
from kdkeras.transfer.depth import keep_blocks
from kdkeras.transfer.low_rank import low_rank
from kdkeras.transfer.shrink import shrink
from kdkeras.transfer.width import prune_width

__all__ = [
    "Block",
    "find_blocks",
    "keep_blocks",
    "low_rank",
    "prune_width",
    "shrink",
]

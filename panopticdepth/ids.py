"""The library's panoptic id encoding, shared by the model's post-processing, the file readers and
writers, and the evaluation CLI. Depends on nothing, so that `modeling` (which knows no files) and
`io` / `data` can all import it.

A panoptic id is `train_id * LABEL_DIVISOR + instance` (instance 0 for stuff and crowd regions);
VOID pixels (no class) carry `VOID_ID`; per-pixel semantic maps use `IGNORE_LABEL` for them.
"""

LABEL_DIVISOR = 1000
VOID_ID = 32000  # 32 * LABEL_DIVISOR; fits in a uint16 PNG
IGNORE_LABEL = 255

"""``python -m resnet_mlops.models [docs/MODELS.md]``: print the model table, or regenerate it in that file."""

import sys

from resnet_mlops.models.summary import models_markdown, write_table

if len(sys.argv) > 1:
    write_table(sys.argv[1])
else:
    print(models_markdown())
